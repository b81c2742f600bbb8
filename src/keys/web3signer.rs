//! Web3Signer's key configuration directory, read for a migration (`hsm-signer import
//! web3signer`): one YAML file per key (or several keys as documents of one file, separated by
//! `---`), of the two types that hold the key itself:
//!
//! ```yaml
//! type: "file-keystore"
//! keyType: "BLS"
//! keystoreFile: "/etc/web3signer/keystores/validator_1.json"
//! keystorePasswordFile: "/etc/web3signer/keystores/validator_1.txt"
//! ---
//! type: "file-raw"
//! keyType: "BLS"
//! privateKey: "0x25295f0d1d592a90b333e26e85149708208e9f8e8bc18f6c77bd62f8ad7a6866"
//! ```
//!
//! Every other type (HashiCorp Vault, Azure, AWS KMS, a YubiHSM, Interlock, PKCS#11 …) keeps
//! its key elsewhere; a directory that holds one is refused as a whole, so that no migration
//! moves some keys and silently leaves others. The files are read as the flat YAML these
//! definitions are: `key: value` lines, quoted or not, comments, documents; anything else
//! (nested maps, lists, block scalars) is refused with its line. Relative paths are taken from
//! the file's own directory.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::error::{Result, SignerError};

/// Largest key configuration file read (Web3Signer's are a few hundred bytes).
const MAX_FILE: u64 = 1024 * 1024;

/// Where one key definition was found: its file and its document (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The YAML file.
    pub file: PathBuf,
    /// Its document, from 1.
    pub document: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.document > 1 {
            write!(f, "{} (document {})", self.file.display(), self.document)
        } else {
            write!(f, "{}", self.file.display())
        }
    }
}

/// One key definition.
pub enum Definition {
    /// `file-keystore`: an EIP-2335 keystore and the file holding its password.
    Keystore {
        /// `keystoreFile`.
        keystore: PathBuf,
        /// `keystorePasswordFile`.
        password_file: PathBuf,
    },
    /// `file-raw`: the secret itself, 32 bytes.
    Raw {
        /// `privateKey`.
        secret: Zeroizing<[u8; 32]>,
    },
}

impl std::fmt::Debug for Definition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Definition::Keystore {
                keystore,
                password_file,
            } => f
                .debug_struct("Keystore")
                .field("keystore", keystore)
                .field("password_file", password_file)
                .finish(),
            Definition::Raw { .. } => f.write_str("Raw { secret: [redacted] }"),
        }
    }
}

/// The key definitions of a directory, in file-name order.
#[derive(Debug, Default)]
pub struct KeyConfig {
    /// Each definition and where it was found.
    pub keys: Vec<(Origin, Definition)>,
}

impl KeyConfig {
    /// How many of each type.
    pub fn counts(&self) -> (usize, usize) {
        let keystores = self
            .keys
            .iter()
            .filter(|(_, d)| matches!(d, Definition::Keystore { .. }))
            .count();
        (keystores, self.keys.len() - keystores)
    }
}

fn bad(origin: &Path, line: usize, why: impl std::fmt::Display) -> SignerError {
    SignerError::Invalid(format!("{}, line {line}: {why}", origin.display()))
}

/// A scalar value: quotes removed (no escapes inside double quotes: none of these values needs
/// one), an unquoted value up to a ` #` comment.
fn scalar(raw: &str) -> std::result::Result<String, &'static str> {
    let raw = raw.trim();
    for q in ['"', '\''] {
        if let Some(rest) = raw.strip_prefix(q) {
            let (value, after) = rest.split_once(q).ok_or("an unterminated quoted value")?;
            let after = after.trim();
            if !(after.is_empty() || after.starts_with('#')) {
                return Err("text after a quoted value");
            }
            if q == '"' && value.contains('\\') {
                return Err("an escape sequence in a quoted value");
            }
            return Ok(value.to_owned());
        }
    }
    let value = raw.split(" #").next().unwrap_or("").trim();
    if value.starts_with(['[', '{', '|', '>', '&', '*', '!']) {
        return Err(
            "a value that is not a plain scalar (flow collection, block scalar, anchor or tag)",
        );
    }
    Ok(value.to_owned())
}

/// The documents of a flat YAML file: each a list of (key, value, line).
type Document = Vec<(String, Zeroizing<String>, usize)>;

fn documents(path: &Path, text: &str) -> Result<Vec<Document>> {
    let mut docs = vec![Vec::new()];
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim_end();
        if trimmed.trim_start().is_empty() || trimmed.trim_start().starts_with('#') {
            continue;
        }
        if trimmed == "---" {
            docs.push(Vec::new());
            continue;
        }
        if trimmed == "..." {
            continue;
        }
        if trimmed.starts_with([' ', '\t']) || trimmed.starts_with('-') {
            return Err(bad(
                path,
                n,
                "nested or list content: key definitions are flat `key: value` lines",
            ));
        }
        let (key, value) = trimmed
            .split_once(':')
            .ok_or_else(|| bad(path, n, "expected `key: value`"))?;
        let value = scalar(value).map_err(|why| bad(path, n, why))?;
        if value.is_empty() {
            return Err(bad(
                path,
                n,
                format!(
                    "{} has no value (nested maps are not key definitions)",
                    key.trim()
                ),
            ));
        }
        if let Some(doc) = docs.last_mut() {
            doc.push((key.trim().to_owned(), Zeroizing::new(value), n));
        }
    }
    docs.retain(|d| !d.is_empty());
    Ok(docs)
}

fn field<'a>(doc: &'a Document, key: &str) -> Option<&'a str> {
    doc.iter()
        .find(|(k, _, _)| k == key)
        .map(|(_, v, _)| v.as_str())
}

/// A path of a definition: as written if absolute, else from the file's directory.
fn resolve(file: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_owned()
    } else {
        file.parent().unwrap_or(Path::new(".")).join(p)
    }
}

fn definition(path: &Path, document: usize, doc: &Document) -> Result<Definition> {
    let at = Origin {
        file: path.to_owned(),
        document,
    };
    let kind = field(doc, "type").ok_or_else(|| {
        SignerError::Invalid(format!("{at}: no `type`: not a Web3Signer key definition"))
    })?;
    if let Some(key_type) = field(doc, "keyType") {
        if !key_type.eq_ignore_ascii_case("BLS") {
            return Err(SignerError::Invalid(format!(
                "{at}: keyType {key_type:?}: only BLS validator keys are migrated (an SECP256K1 \
                 key signs execution-layer transactions, which this signer does not)"
            )));
        }
    }
    let need = |key: &str| {
        field(doc, key).ok_or_else(|| SignerError::Invalid(format!("{at}: {kind} without `{key}`")))
    };
    match kind {
        "file-keystore" => Ok(Definition::Keystore {
            keystore: resolve(path, need("keystoreFile")?),
            password_file: resolve(path, need("keystorePasswordFile")?),
        }),
        "file-raw" => {
            let hex = need("privateKey")?;
            let mut secret = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(hex.strip_prefix("0x").unwrap_or(hex), secret.as_mut()).map_err(
                |_| {
                    SignerError::Invalid(format!(
                        "{at}: privateKey is not 32 bytes of hex (0x and 64 digits)"
                    ))
                },
            )?;
            Ok(Definition::Raw { secret })
        }
        other => Err(SignerError::Invalid(format!(
            "{at}: type {other:?} keeps its key outside the file (only file-keystore and \
             file-raw are migrated): move that key by its own procedure and take the file out \
             of the directory; nothing was imported"
        ))),
    }
}

/// Read every `.yaml`/`.yml` file of `dir` (other files are ignored, as Web3Signer ignores
/// them). Any file that is not a key definition this can migrate fails the whole read.
pub fn read_dir(dir: &Path) -> Result<KeyConfig> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(SignerError::io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| {
                    e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml")
                })
        })
        .collect();
    files.sort();
    let mut config = KeyConfig::default();
    for file in files {
        let len = std::fs::metadata(&file)
            .map_err(SignerError::io(&file))?
            .len();
        if len > MAX_FILE {
            return Err(SignerError::Invalid(format!(
                "{}: {len} bytes, more than a key definition ({MAX_FILE} at most)",
                file.display()
            )));
        }
        let text = Zeroizing::new(std::fs::read_to_string(&file).map_err(SignerError::io(&file))?);
        for (i, doc) in documents(&file, &text)?.iter().enumerate() {
            let def = definition(&file, i + 1, doc)?;
            config.keys.push((
                Origin {
                    file: file.clone(),
                    document: i + 1,
                },
                def,
            ));
        }
    }
    Ok(config)
}

/// A `keystorePasswordFile`'s password (a trailing newline is not part of it).
pub fn read_password(path: &Path) -> Result<SecretString> {
    let raw = Zeroizing::new(std::fs::read_to_string(path).map_err(SignerError::io(path))?);
    Ok(SecretString::from(
        raw.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn both_types_are_read_from_files_and_documents_with_paths_from_the_files_directory() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.yaml",
            "# a validator\ntype: \"file-keystore\"\nkeyType: BLS\nkeystoreFile: 'ks/v1.json'\nkeystorePasswordFile: /abs/v1.txt # its password\n",
        );
        write(
            dir.path(),
            "b.yml",
            "---\ntype: file-raw\nprivateKey: \"0x25295f0d1d592a90b333e26e85149708208e9f8e8bc18f6c77bd62f8ad7a6866\"\n---\ntype: file-raw\nkeyType: \"BLS\"\nprivateKey: 25295f0d1d592a90b333e26e85149708208e9f8e8bc18f6c77bd62f8ad7a6867\n...\n",
        );
        write(dir.path(), "notes.txt", "type: hashicorp\n");
        let config = read_dir(dir.path()).unwrap();
        assert_eq!(config.counts(), (1, 2));
        match &config.keys[0].1 {
            Definition::Keystore {
                keystore,
                password_file,
            } => {
                assert_eq!(keystore, &dir.path().join("ks/v1.json"));
                assert_eq!(password_file, Path::new("/abs/v1.txt"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(config.keys[2].0.document, 2);
        match &config.keys[2].1 {
            Definition::Raw { secret } => assert_eq!(secret[31], 0x67),
            other => panic!("{other:?}"),
        }
        // The secret never shows in debug output.
        assert!(!format!("{config:?}").contains("25295f"));
    }

    #[test]
    fn what_cannot_be_migrated_is_refused_naming_the_file_and_line() {
        let cases = [
            (
                "type: hashicorp\nkeyType: BLS\n",
                "type \"hashicorp\" keeps its key outside",
            ),
            (
                "type: file-raw\nkeyType: SECP256K1\nprivateKey: 0x01\n",
                "only BLS validator keys",
            ),
            (
                "type: file-raw\nprivateKey: 0x1234\n",
                "not 32 bytes of hex",
            ),
            (
                "type: file-keystore\nkeystoreFile: a.json\n",
                "without `keystorePasswordFile`",
            ),
            (
                "type: file-raw\nprivateKey:\n  nested: 1\n",
                "line 2: privateKey has no value",
            ),
            (
                "type: file-raw\nprivateKey: \"0x12\n",
                "line 2: an unterminated quoted value",
            ),
            ("keyType: BLS\n", "no `type`"),
            (
                "type: [file-raw]\n",
                "line 1: a value that is not a plain scalar",
            ),
        ];
        for (text, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), "k.yaml", text);
            let e = read_dir(dir.path()).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.contains("k.yaml"), "{e}");
            assert!(!e.contains("0x12\""), "a secret echoed: {e}");
        }
    }
}
