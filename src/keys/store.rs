//! The directory of key files: loaded whole at start-up, written atomically (temp file, fsync,
//! rename, fsync of the directory), so a crash leaves either the old file or the new one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Result, SignerError};
use crate::keys::record::{KeyRecord, PublicKeyBytes};

/// All validator keys the signer holds, by public key.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    dir: PathBuf,
    keys: BTreeMap<PublicKeyBytes, Arc<KeyRecord>>,
}

/// Read and check one key file.
fn read_record(path: &Path) -> Result<KeyRecord> {
    let bad = |reason: String| SignerError::KeyRecord {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(SignerError::io(path))?;
    let record: KeyRecord = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    record.validate().map_err(bad)?;
    let expected = record.file_name();
    if path.file_name().and_then(|n| n.to_str()) != Some(expected.as_str()) {
        return Err(bad(format!(
            "file name does not match its pubkey (expected {expected})"
        )));
    }
    Ok(record)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(SignerError::io(dir))
}

impl KeyStore {
    /// Load every `0x….json` in `dir` (created if missing). Files that fail to load are
    /// returned beside the store, so one bad file does not take the other keys down.
    pub fn load(dir: &Path) -> Result<(KeyStore, Vec<SignerError>)> {
        std::fs::create_dir_all(dir).map_err(SignerError::io(dir))?;
        let mut keys = BTreeMap::new();
        let mut errors = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(SignerError::io(dir))?;
        for entry in entries {
            let entry = entry.map_err(SignerError::io(dir))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with("0x") && name.ends_with(".json")) {
                continue;
            }
            match read_record(&path) {
                Ok(r) => {
                    keys.insert(r.pubkey, Arc::new(r));
                }
                Err(e) => errors.push(e),
            }
        }
        Ok((
            KeyStore {
                dir: dir.to_owned(),
                keys,
            },
            errors,
        ))
    }

    /// Load, failing on the first bad file (for CLI commands that must see everything).
    pub fn load_strict(dir: &Path) -> Result<KeyStore> {
        let (store, mut errors) = Self::load(dir)?;
        match errors.pop() {
            Some(e) => Err(e),
            None => Ok(store),
        }
    }

    /// Directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A key by pubkey.
    pub fn get(&self, pubkey: &PublicKeyBytes) -> Option<&Arc<KeyRecord>> {
        self.keys.get(pubkey)
    }

    /// Whether a key is present.
    pub fn contains(&self, pubkey: &PublicKeyBytes) -> bool {
        self.keys.contains_key(pubkey)
    }

    /// All keys in pubkey order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<KeyRecord>> {
        self.keys.values()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Write a new key file atomically and add it. Refuses to overwrite an existing key.
    pub fn insert(&mut self, record: KeyRecord) -> Result<()> {
        record.validate().map_err(|reason| SignerError::KeyRecord {
            path: self.dir.join(record.file_name()),
            reason,
        })?;
        let path = self.dir.join(record.file_name());
        if self.keys.contains_key(&record.pubkey) || path.exists() {
            return Err(SignerError::Invalid(format!(
                "key {} is already in the store",
                record.pubkey
            )));
        }
        // A temporary name of this process and call alone (another process, or another store
        // on this directory, may be importing the same key right now)…
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".{}.{}-{}.tmp",
            record.file_name(),
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|e| SignerError::Internal(format!("serialising key file: {e}")))?;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&json).and_then(|_| f.sync_all()));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(SignerError::io(&tmp)(e));
        }
        // …published under the key's name only if that name is free: a hard link never
        // replaces a file, so of two concurrent imports of one key exactly one succeeds.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(SignerError::Invalid(format!(
                    "key {} is already in the store",
                    record.pubkey
                )))
            }
            Err(e) => return Err(SignerError::io(&path)(e)),
        }
        fsync_dir(&self.dir)?;
        self.keys.insert(record.pubkey, Arc::new(record));
        Ok(())
    }

    /// Remove the file of a key that is *not* loaded (it failed to load, or was deleted through
    /// the Keymanager API and its file restored), so that an explicit re-import can write a
    /// fresh one. Returns whether there was a file. Refuses a loaded key.
    pub(crate) fn remove_stale_file(&self, pubkey: &PublicKeyBytes) -> Result<bool> {
        if self.keys.contains_key(pubkey) {
            return Err(SignerError::Invalid(format!(
                "key {pubkey} is loaded; delete it instead"
            )));
        }
        let path = self.dir.join(format!("{pubkey}.json"));
        match std::fs::remove_file(&path) {
            Ok(()) => {
                fsync_dir(&self.dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(SignerError::io(&path)(e)),
        }
    }

    /// Drop a key from this in-memory set only; its file stays (used to keep keys that were
    /// deleted through the Keymanager API out of the signing set, whatever is on disk).
    pub fn forget(&mut self, pubkey: &PublicKeyBytes) -> Option<Arc<KeyRecord>> {
        self.keys.remove(pubkey)
    }

    /// Remove a key file. The envelope is gone with it; the custody key stays on the device.
    pub fn delete(&mut self, pubkey: &PublicKeyBytes) -> Result<Arc<KeyRecord>> {
        let record = self
            .keys
            .remove(pubkey)
            .ok_or_else(|| SignerError::UnknownKey(pubkey.to_string()))?;
        let path = self.dir.join(record.file_name());
        std::fs::remove_file(&path).map_err(SignerError::io(&path))?;
        fsync_dir(&self.dir)?;
        Ok(record)
    }
}
