//! The key lifecycle: the gate every signing request passes (deleted keys refused, signatures
//! under way counted so a deletion can wait for them), the tombstones of keys deleted through
//! the Keymanager API (kept in the slashing database, honoured at start and at every reload),
//! and placing an imported key on its device(s).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::app::{Runtime, Signer};
use crate::error::SignerError;
use crate::keys::provision::{provision_threshold_with_path, Placement};
use crate::keys::{seal_share, KeyRecord, KeyStore, PublicKeyBytes, ShareId};
use crate::slashing::{SlashingError, SlashingProtection};

/// Which keys are deleted, and which signatures are under way: the gate every signing request
/// passes, and the lock that serialises changes of the key set (Keymanager calls and reloads).
#[derive(Debug, Default)]
pub struct KeyGate {
    /// Held while the key set changes: Keymanager POST and DELETE, and `/reload`.
    pub write: Arc<tokio::sync::Mutex<()>>,
    state: Mutex<GateState>,
    drained: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct GateState {
    deleted: HashSet<PublicKeyBytes>,
    in_flight: HashMap<PublicKeyBytes, usize>,
}

/// A signing request under way for a key; DELETE of the key waits until it is dropped.
pub struct SignPermit<'a> {
    gate: &'a KeyGate,
    pubkey: PublicKeyBytes,
}

impl Drop for SignPermit<'_> {
    fn drop(&mut self) {
        let mut st = self.gate.lock();
        if let Some(n) = st.in_flight.get_mut(&self.pubkey) {
            *n -= 1;
            if *n == 0 {
                st.in_flight.remove(&self.pubkey);
                drop(st);
                self.gate.drained.notify_waiters();
            }
        }
    }
}

impl KeyGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admit a signing request for `pubkey`; `None` when the key was deleted.
    pub fn enter(&self, pubkey: &PublicKeyBytes) -> Option<SignPermit<'_>> {
        let mut st = self.lock();
        if st.deleted.contains(pubkey) {
            return None;
        }
        *st.in_flight.entry(*pubkey).or_insert(0) += 1;
        Some(SignPermit {
            gate: self,
            pubkey: *pubkey,
        })
    }

    /// Whether `pubkey` is deleted.
    pub(crate) fn is_deleted(&self, pubkey: &PublicKeyBytes) -> bool {
        self.lock().deleted.contains(pubkey)
    }

    /// Refuse `keys` from now on (deleted here, or found deleted by another signer).
    pub fn mark_deleted(&self, keys: impl IntoIterator<Item = PublicKeyBytes>) {
        self.lock().deleted.extend(keys);
    }

    /// Refuse exactly `keys` from now on (the deletions the database records; a reload holds
    /// the Keymanager write lock, so no DELETE is half done meanwhile).
    pub(crate) fn replace_deleted(&self, keys: impl IntoIterator<Item = PublicKeyBytes>) {
        self.lock().deleted = keys.into_iter().collect();
    }

    /// Admit `keys` again (imported again).
    pub fn clear_deleted(&self, keys: &[PublicKeyBytes]) {
        let mut st = self.lock();
        for k in keys {
            st.deleted.remove(k);
        }
    }

    /// Refuse new signing requests for `keys`, then wait (at most `timeout`) until none is under
    /// way. Returns the keys still busy at the timeout.
    pub async fn stop(&self, keys: &[PublicKeyBytes], timeout: Duration) -> Vec<PublicKeyBytes> {
        self.mark_deleted(keys.iter().copied());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            // Registered before the check, so a permit dropped in between still wakes us.
            notified.as_mut().enable();
            let busy: Vec<PublicKeyBytes> = {
                let st = self.lock();
                keys.iter()
                    .filter(|k| st.in_flight.contains_key(k))
                    .copied()
                    .collect()
            };
            if busy.is_empty() {
                return busy;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return busy;
            }
        }
    }
}

/// Read the tombstones from the slashing database into the deny-list, then drop deleted keys
/// from `keys`, with a warning for each: a deliberate exclusion, not a load error (so health
/// stays up). Returns how many were dropped. Blocks: call from a blocking thread or at
/// start-up. `db` is read when the signer has no slashing protection of its own.
pub(crate) fn exclude_deleted(
    app: &Signer,
    db: Option<&SlashingProtection>,
    keys: &mut KeyStore,
) -> Result<usize, SlashingError> {
    if let Some(slashing) = app.slashing.as_ref().or(db) {
        // The database is the record: a key another signer imported again since (its mark
        // cleared there) signs here again after a reload, not only after a restart.
        let stored = slashing.deleted_keys()?;
        app.key_gate
            .replace_deleted(stored.into_iter().map(PublicKeyBytes));
    }
    let loaded: Vec<PublicKeyBytes> = keys.iter().map(|r| r.pubkey).collect();
    let mut dropped = 0;
    for pk in loaded {
        if app.key_gate.is_deleted(&pk) {
            keys.forget(&pk);
            dropped += 1;
            tracing::warn!(
                %pk,
                "key file ignored: the key was deleted through the Keymanager API and signs \
                 nothing until its keystore is imported again (POST /eth/v1/keystores)"
            );
        }
    }
    Ok(dropped)
}

impl Signer {
    /// Keep keys deleted through the Keymanager API out of the signing set: read the tombstones
    /// from the slashing database (the signer's own, else `db`: a signer running without
    /// slashing protection still honours deletions) and drop those keys from the loaded set. Call
    /// once at start-up (it blocks on the database). Returns how many loaded keys were dropped.
    pub(crate) fn exclude_deleted_keys(
        &self,
        db: Option<&SlashingProtection>,
    ) -> Result<usize, SlashingError> {
        let current = self.runtime();
        let mut keys = current.keys.clone();
        let dropped = exclude_deleted(self, db, &mut keys)?;
        if dropped > 0 {
            self.swap_keys(&current, keys, current.key_errors.clone());
        }
        Ok(dropped)
    }
}

/// Seal `sk` as `placement` says and write its key file (replacing a stale, unloaded one).
pub(crate) fn place_key(
    store: &mut KeyStore,
    devices: &crate::devices::Devices,
    placement: &Placement,
    pubkey: PublicKeyBytes,
    sk: &blst::min_pk::SecretKey,
    derivation_path: Option<String>,
) -> crate::Result<()> {
    store.remove_stale_file(&pubkey)?;
    match placement {
        Placement::Whole(device) => {
            let one = ShareId::ONE;
            let share = seal_share(devices.get(device)?, &pubkey, one, sk)?;
            let mut record = KeyRecord::whole(pubkey, share, "keymanager");
            record.derivation_path = derivation_path;
            store.insert(record)
        }
        Placement::Split(plan) => provision_threshold_with_path(
            store,
            devices,
            sk,
            plan.threshold,
            &plan.devices,
            plan.ids.as_deref(),
            "keymanager",
            derivation_path,
        )
        .map(|_| ()),
    }
}

/// A key decrypted for import, not placed yet.
pub(crate) struct NewKey {
    /// Its place in the caller's request (errors are returned by it).
    pub index: usize,
    /// The validator key.
    pub pubkey: PublicKeyBytes,
    /// The secret (wiped when dropped).
    pub secret: blst::min_pk::SecretKey,
    /// The EIP-2334 path its keystore named, if any.
    pub derivation_path: Option<String>,
}

/// Put imported keys live: each sealed as `placement` says and its key file written, then their
/// tombstones cleared in the slashing database (durably, before any of them can sign), then the
/// key set swapped with them in. `runtime` is the live set the caller checked the keys against
/// (it holds the key-set lock, `KeyGate::write`). Returns the keys kept out, by index, with
/// why: a key that could not be placed, or every placed key when the database could not record
/// the re-import (their files are removed again).
pub(crate) async fn install_keys(
    signer: &Signer,
    runtime: &Arc<Runtime>,
    slashing: &SlashingProtection,
    placement: Placement,
    keys: Vec<NewKey>,
) -> crate::Result<Vec<(usize, String)>> {
    let joined = |e: tokio::task::JoinError| SignerError::Internal(format!("internal error: {e}"));
    let mut refused = Vec::new();
    if keys.is_empty() {
        return Ok(refused);
    }
    let devices = runtime.scheduler.devices().clone();
    let mut store = runtime.keys.clone();
    let (mut store, placed) = tokio::task::spawn_blocking(move || {
        let placed: Vec<(usize, PublicKeyBytes, crate::Result<()>)> = keys
            .into_iter()
            .map(|k| {
                let r = place_key(
                    &mut store,
                    &devices,
                    &placement,
                    k.pubkey,
                    &k.secret,
                    k.derivation_path,
                );
                (k.index, k.pubkey, r)
            })
            .collect();
        (store, placed)
    })
    .await
    .map_err(joined)?;
    let mut imported = Vec::new();
    let mut placed_at = Vec::new();
    for (i, pk, r) in placed {
        match r {
            Ok(()) => {
                imported.push(pk);
                placed_at.push(i);
            }
            Err(e) => refused.push((i, e.to_string())),
        }
    }
    if imported.is_empty() {
        return Ok(refused);
    }
    // The explicit re-import: clear the tombstones, durably, before the keys can sign.
    let db = slashing.clone();
    let cleared_keys: Vec<[u8; 48]> = imported.iter().map(|k| k.0).collect();
    let cleared = tokio::task::spawn_blocking(move || db.clear_deleted(&cleared_keys))
        .await
        .map_err(joined)?;
    if let Err(e) = cleared {
        let message = format!("recording the re-import failed: {e}; the key was not imported");
        for pk in &imported {
            if let Err(e) = store.delete(pk) {
                tracing::error!(%pk, error = %e, "could not remove a half-imported key file");
            }
        }
        refused.extend(placed_at.into_iter().map(|i| (i, message.clone())));
        return Ok(refused);
    }
    signer.key_gate.clear_deleted(&imported);
    for pk in &imported {
        runtime.scheduler.forget_key(pk);
    }
    tracing::info!(
        count = imported.len(),
        "keys imported through the Keymanager API"
    );
    let key_errors = runtime
        .key_errors
        .iter()
        .filter(|e| !imported.iter().any(|pk| e.contains(&pk.to_string())))
        .cloned()
        .collect();
    signer.swap_keys(runtime, store, key_errors);
    Ok(refused)
}

/// What [`delete_keys`] did, per requested key (in order) where it is a list.
pub(crate) struct Deleted {
    /// The key was in the signing set.
    pub(crate) active: Vec<bool>,
    /// The key was known (active, on disk, or in the database) and is now tombstoned.
    pub(crate) known: Vec<bool>,
    /// Keys still signing when the drain timed out: not deleted, signing on as before.
    pub(crate) busy: Vec<PublicKeyBytes>,
    /// EIP-3076 interchange of the known keys, as recorded.
    pub(crate) interchange: String,
}

/// Delete keys (the Keymanager API's DELETE): no new signature from them, and those under way
/// waited for (at most `drain`; a key still busy then is not deleted); then, durably and in one
/// transaction, their tombstones and signing history; then their files removed and the key set
/// swapped without them.
pub(crate) async fn delete_keys(
    signer: &Signer,
    slashing: &SlashingProtection,
    pubkeys: &[PublicKeyBytes],
    drain: Duration,
) -> crate::Result<Deleted> {
    let joined = |e: tokio::task::JoinError| SignerError::Internal(format!("internal error: {e}"));
    let _write = signer.key_gate.write.lock().await;
    let runtime = signer.runtime();
    let active: Vec<bool> = pubkeys.iter().map(|k| runtime.keys.contains(k)).collect();
    let mut stopping: Vec<PublicKeyBytes> = pubkeys
        .iter()
        .zip(&active)
        .filter(|(_, a)| **a)
        .map(|(k, _)| *k)
        .collect();
    stopping.sort();
    stopping.dedup();
    // 1. No new signature from these keys; wait for those under way.
    let busy = signer.key_gate.stop(&stopping, drain).await;
    if !busy.is_empty() {
        // "deleted" promises that this signer signs nothing more with the key, and a signature
        // still under way could be released after the answer: such a key is not deleted (no
        // tombstone, no export), signs on as before, and the client may retry.
        signer.key_gate.clear_deleted(&busy);
        for pk in &busy {
            tracing::warn!(%pk, "Keymanager DELETE gave up on a key still signing after {drain:?}; the key stays active");
        }
    }
    // 2. Durably: tombstones and the signing history, in one transaction.
    let db = slashing.clone();
    // A key file that is on disk but not loaded (it failed to load) counts as known too.
    let dir = runtime.keys.dir().to_owned();
    let marks: Vec<(PublicKeyBytes, bool)> = pubkeys
        .iter()
        .copied()
        .zip(active.clone())
        .filter(|(k, _)| !busy.contains(k))
        .collect();
    let deletion = tokio::task::spawn_blocking(move || {
        let marks: Vec<([u8; 48], bool)> = marks
            .iter()
            .map(|(k, a)| (k.0, *a || dir.join(format!("{k}.json")).exists()))
            .collect();
        db.mark_deleted(&marks)
    })
    .await
    .map_err(joined)?
    .map_err(|e| {
        tracing::error!(error = %e, "Keymanager DELETE could not record the deletion");
        SignerError::Slashing(format!(
            "could not record the deletion: {e}; the keys are refused until restart, and \
                 their files are kept"
        ))
    })?;
    // Per requested key (a busy one: not attempted, so not known).
    let mut answered = deletion.known.iter().copied();
    let known: Vec<bool> = pubkeys
        .iter()
        .map(|k| !busy.contains(k) && answered.next().unwrap_or(false))
        .collect();
    // Known keys are now tombstoned: refuse them here too (not-active ones included).
    signer.key_gate.mark_deleted(
        pubkeys
            .iter()
            .zip(&known)
            .filter(|(_, known)| **known)
            .map(|(k, _)| *k),
    );
    // 3. Remove the key files and the keys from the signing set.
    let mut store = runtime.keys.clone();
    let removals: Vec<PublicKeyBytes> = pubkeys
        .iter()
        .zip(&known)
        .filter(|(_, known)| **known)
        .map(|(k, _)| *k)
        .collect();
    let store = tokio::task::spawn_blocking(move || {
        for pk in &removals {
            let removed = if store.contains(pk) {
                store.delete(pk).map(|_| true)
            } else {
                store.remove_stale_file(pk)
            };
            if let Err(e) = removed {
                // The tombstone already keeps the key from signing; the file is only clutter.
                tracing::warn!(%pk, error = %e, "deleted key's file could not be removed");
                store.forget(pk);
            }
        }
        store
    })
    .await
    .map_err(joined)?;
    for pk in stopping.iter().filter(|k| !busy.contains(k)) {
        runtime.scheduler.forget_key(pk);
    }
    signer.swap_keys(&runtime, store, runtime.key_errors.clone());
    Ok(Deleted {
        active,
        known,
        busy,
        interchange: deletion.interchange,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(b: u8) -> PublicKeyBytes {
        PublicKeyBytes([b; 48])
    }

    #[tokio::test]
    async fn stop_refuses_new_requests_and_waits_for_those_under_way() {
        let gate = Arc::new(KeyGate::default());
        let permit = gate.enter(&pk(1)).map(|p| p.pubkey);
        assert_eq!(permit, Some(pk(1)));
        // A permit held by another task: stop must wait for it.
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let g = gate.clone();
        let holder = tokio::spawn(async move {
            let _permit = g.enter(&pk(2)).expect("key 2 is not deleted");
            held_tx.send(()).unwrap();
            release_rx.await.unwrap();
        });
        held_rx.await.unwrap();
        let g = gate.clone();
        let stopper = tokio::spawn(async move { g.stop(&[pk(2)], Duration::from_secs(60)).await });
        // Until the holder lets go, new requests are refused and stop has not returned.
        while !gate.is_deleted(&pk(2)) {
            tokio::task::yield_now().await;
        }
        assert!(gate.enter(&pk(2)).is_none(), "a deleted key was admitted");
        assert!(!stopper.is_finished());
        release_tx.send(()).unwrap();
        holder.await.unwrap();
        assert_eq!(stopper.await.unwrap(), Vec::<PublicKeyBytes>::new());
        // Other keys are unaffected; clearing re-admits.
        assert!(gate.enter(&pk(3)).is_some());
        gate.clear_deleted(&[pk(2)]);
        assert!(gate.enter(&pk(2)).is_some());
    }

    #[tokio::test]
    async fn stop_reports_keys_still_busy_at_the_timeout() {
        let gate = KeyGate::default();
        let _permit = gate.enter(&pk(7)).unwrap();
        let busy = gate.stop(&[pk(7), pk(8)], Duration::from_millis(1)).await;
        assert_eq!(busy, vec![pk(7)]);
        assert!(gate.is_deleted(&pk(8)));
    }
}
