//! The checkpoint signing key, kept in the gateway's data directory.
//!
//! - `audit-signing.key`: the ed25519 private key (its 32-byte seed) as 64
//!   hex digits and a newline, mode 0600. Created on first start, never
//!   overwritten: an unreadable or malformed file is an error, because a
//!   new key would make every earlier checkpoint unverifiable.
//! - `audit-signing.pub`: the public key as 64 hex digits and a newline.
//!   This is what an auditor needs for `portcullis audit verify`; its hex is
//!   also the key id stored with each checkpoint.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::error::AuditError;

/// The private key's file name in the data directory.
pub const SIGNING_KEY_FILE: &str = "audit-signing.key";

/// The public key's file name in the data directory.
pub const VERIFYING_KEY_FILE: &str = "audit-signing.pub";

/// Refuses a data directory whose signing key exists but whose audit store
/// `store` does not: the key is made with the store's first start, so the
/// store was moved or deleted, and a new one would begin a log that
/// verifies while the old one is gone.
pub fn check_store_present(data_dir: &Path, store: &Path) -> Result<(), AuditError> {
    let key = data_dir.join(SIGNING_KEY_FILE);
    if key.exists() && !store.exists() {
        return Err(AuditError::Missing {
            path: store.to_owned(),
            key,
        });
    }
    Ok(())
}

/// Loads the signing key from `<data_dir>/audit-signing.key`, which must
/// exist (`audit export` signs where an export ends with it).
pub fn load_signing_key(data_dir: &Path) -> Result<SigningKey, AuditError> {
    let path = data_dir.join(SIGNING_KEY_FILE);
    match read_key_file(&path)? {
        Some(text) => parse_signing_key(&path, &text),
        None => Err(AuditError::KeyRead {
            path,
            source: ErrorKind::NotFound.into(),
        }),
    }
}

/// Loads the signing key from `<data_dir>/audit-signing.key`, or creates it
/// (and the data directory) when the file does not exist. Writes
/// `audit-signing.pub` when it is missing, and checks that it matches when
/// it is present.
pub fn load_or_create_signing_key(data_dir: &Path) -> Result<SigningKey, AuditError> {
    let private_path = data_dir.join(SIGNING_KEY_FILE);
    let key = match read_key_file(&private_path)? {
        Some(text) => parse_signing_key(&private_path, &text)?,
        None => create_signing_key(data_dir)?,
    };
    let public_path = data_dir.join(VERIFYING_KEY_FILE);
    match read_key_file(&public_path)? {
        Some(text) => {
            if parse_verifying_key(&public_path, &text)? != key.verifying_key() {
                return Err(AuditError::KeyPairMismatch {
                    private_path,
                    public_path,
                });
            }
        }
        None => write_public_key(data_dir, &key.verifying_key())?,
    }
    Ok(key)
}

/// Loads the public key from `<data_dir>/audit-signing.pub`.
pub fn load_verifying_key(data_dir: &Path) -> Result<VerifyingKey, AuditError> {
    load_verifying_key_file(&data_dir.join(VERIFYING_KEY_FILE))
}

/// Loads a public key from a file written as `audit-signing.pub` is (a copy
/// kept apart from the store, given to `audit verify --key`).
pub fn load_verifying_key_file(path: &Path) -> Result<VerifyingKey, AuditError> {
    match read_key_file(path)? {
        Some(text) => parse_verifying_key(path, &text),
        None => Err(AuditError::KeyRead {
            path: path.to_owned(),
            source: ErrorKind::NotFound.into(),
        }),
    }
}

/// The file's text, `None` when it does not exist.
fn read_key_file(path: &Path) -> Result<Option<String>, AuditError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuditError::KeyRead {
                path: path.to_owned(),
                source,
            })
        }
    };
    warn_if_readable_by_others(path);
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| AuditError::KeyMalformed {
            path: path.to_owned(),
            detail: "it is not text".to_owned(),
        })
}

fn decode_key_bytes(path: &Path, text: &str) -> Result<[u8; 32], AuditError> {
    let text = text.trim();
    let mut bytes = [0u8; 32];
    if text.len() != 64 {
        return Err(AuditError::KeyMalformed {
            path: path.to_owned(),
            detail: format!(
                "expected 64 hex digits, found {} characters",
                text.chars().count()
            ),
        });
    }
    hex::decode_to_slice(text, &mut bytes).map_err(|_| AuditError::KeyMalformed {
        path: path.to_owned(),
        detail: "it is not hexadecimal".to_owned(),
    })?;
    Ok(bytes)
}

fn parse_signing_key(path: &Path, text: &str) -> Result<SigningKey, AuditError> {
    Ok(SigningKey::from_bytes(&decode_key_bytes(path, text)?))
}

fn parse_verifying_key(path: &Path, text: &str) -> Result<VerifyingKey, AuditError> {
    VerifyingKey::from_bytes(&decode_key_bytes(path, text)?).map_err(|_| AuditError::KeyMalformed {
        path: path.to_owned(),
        detail: "it is not an ed25519 public key".to_owned(),
    })
}

fn create_signing_key(data_dir: &Path) -> Result<SigningKey, AuditError> {
    let path = data_dir.join(SIGNING_KEY_FILE);
    let write_error = |source| AuditError::KeyWrite {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(data_dir).map_err(write_error)?;
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let mut options = fs::OpenOptions::new();
    // `create_new`: if another process created the key meanwhile, use
    // theirs rather than overwrite it.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = match options.open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {
            return match read_key_file(&path)? {
                Some(text) => parse_signing_key(&path, &text),
                None => Err(write_error(error)),
            };
        }
        Err(error) => return Err(write_error(error)),
    };
    let text = format!("{}\n", hex::encode(key.to_bytes()));
    file.write_all(text.as_bytes()).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    tracing::info!(path = %path.display(), "created the audit signing key");
    Ok(key)
}

/// Writes the public key through a temporary file and a rename, so that a
/// crash never leaves a half-written file behind.
fn write_public_key(data_dir: &Path, key: &VerifyingKey) -> Result<(), AuditError> {
    let path = data_dir.join(VERIFYING_KEY_FILE);
    let temporary_path = data_dir.join(format!("{VERIFYING_KEY_FILE}.{}.tmp", std::process::id()));
    let write_error = |source| AuditError::KeyWrite {
        path: path.clone(),
        source,
    };
    let mut file = fs::File::create(&temporary_path).map_err(write_error)?;
    file.write_all(format!("{}\n", hex::encode(key.as_bytes())).as_bytes())
        .map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    fs::rename(&temporary_path, &path).map_err(write_error)?;
    Ok(())
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let is_private_key = path
        .file_name()
        .is_some_and(|name| name == SIGNING_KEY_FILE);
    if let Ok(metadata) = fs::metadata(path) {
        if is_private_key && metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "the audit signing key is readable by other users; restrict it with `chmod 600`"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_gone_from_beside_its_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("audit.db");
        // A first start: neither exists.
        check_store_present(dir.path(), &store).unwrap();
        load_or_create_signing_key(dir.path()).unwrap();
        std::fs::write(&store, b"").unwrap();
        check_store_present(dir.path(), &store).unwrap();
        std::fs::remove_file(&store).unwrap();
        let error = check_store_present(dir.path(), &store).unwrap_err();
        assert!(error.to_string().contains("is missing"), "{error}");
    }

    #[test]
    fn creates_a_private_key_file_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let key = load_or_create_signing_key(&data_dir).unwrap();

        let private_path = data_dir.join(SIGNING_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&private_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        }
        let text = fs::read_to_string(&private_path).unwrap();
        assert_eq!(text, format!("{}\n", hex::encode(key.to_bytes())));

        let public_text = fs::read_to_string(data_dir.join(VERIFYING_KEY_FILE)).unwrap();
        assert_eq!(
            public_text.trim(),
            hex::encode(key.verifying_key().as_bytes())
        );
        assert_eq!(load_verifying_key(&data_dir).unwrap(), key.verifying_key());

        // Loading again returns the same key and leaves the file alone.
        let again = load_or_create_signing_key(&data_dir).unwrap();
        assert_eq!(again.to_bytes(), key.to_bytes());
        assert_eq!(fs::read_to_string(&private_path).unwrap(), text);
    }

    #[test]
    fn a_malformed_private_key_is_an_error_and_is_not_replaced() {
        for content in ["not a key\n", "abcd\n", &"zz".repeat(32), ""] {
            let dir = tempfile::tempdir().unwrap();
            let private_path = dir.path().join(SIGNING_KEY_FILE);
            fs::write(&private_path, content).unwrap();
            let error = load_or_create_signing_key(dir.path()).unwrap_err();
            assert!(
                matches!(error, AuditError::KeyMalformed { .. }),
                "{content:?}: {error:?}"
            );
            assert!(error.to_string().contains("audit-signing.key"), "{error}");
            assert_eq!(fs::read_to_string(&private_path).unwrap(), content);
            assert!(!dir.path().join(VERIFYING_KEY_FILE).exists());
        }
    }

    #[test]
    fn a_private_key_that_is_not_text_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SIGNING_KEY_FILE), [0xff; 32]).unwrap();
        let error = load_or_create_signing_key(dir.path()).unwrap_err();
        assert!(
            matches!(error, AuditError::KeyMalformed { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn an_unreadable_private_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: reading fails even as root.
        fs::create_dir(dir.path().join(SIGNING_KEY_FILE)).unwrap();
        let error = load_or_create_signing_key(dir.path()).unwrap_err();
        assert!(matches!(error, AuditError::KeyRead { .. }), "{error:?}");
    }

    #[test]
    fn a_public_key_of_another_pair_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create_signing_key(dir.path()).unwrap();
        let other = SigningKey::from_bytes(&[42; 32]).verifying_key();
        fs::write(
            dir.path().join(VERIFYING_KEY_FILE),
            hex::encode(other.as_bytes()),
        )
        .unwrap();
        let error = load_or_create_signing_key(dir.path()).unwrap_err();
        assert!(
            matches!(error, AuditError::KeyPairMismatch { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn a_missing_public_key_is_written_again_and_a_malformed_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_signing_key(dir.path()).unwrap();
        let public_path = dir.path().join(VERIFYING_KEY_FILE);
        fs::remove_file(&public_path).unwrap();
        assert!(matches!(
            load_verifying_key(dir.path()),
            Err(AuditError::KeyRead { .. })
        ));
        load_or_create_signing_key(dir.path()).unwrap();
        assert_eq!(load_verifying_key(dir.path()).unwrap(), key.verifying_key());

        fs::write(&public_path, "0123").unwrap();
        assert!(matches!(
            load_verifying_key(dir.path()),
            Err(AuditError::KeyMalformed { .. })
        ));
        assert!(matches!(
            load_or_create_signing_key(dir.path()),
            Err(AuditError::KeyMalformed { .. })
        ));
    }

    #[test]
    fn surrounding_whitespace_in_key_files_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[5; 32]);
        fs::write(
            dir.path().join(SIGNING_KEY_FILE),
            format!("  {}\r\n", hex::encode(key.to_bytes())),
        )
        .unwrap();
        assert_eq!(
            load_or_create_signing_key(dir.path()).unwrap().to_bytes(),
            [5; 32]
        );
    }
}
