//! The user's token cache: the tokens of the last login, per issuer, so the
//! command line does not open a browser every time.
//!
//! One JSON file, `$XDG_CONFIG_HOME/portcullis/tokens.json` (or
//! `$HOME/.config/portcullis/tokens.json`). The file is created with mode
//! 0600 and replaced atomically (a new file with that mode, then a rename), so
//! it is never readable by others, not even for a moment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::IdentityError;
use crate::login::{LoginClient, Tokens};

const FILE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    version: u32,
    /// Keyed by the issuer's exact `iss`.
    issuers: BTreeMap<String, Tokens>,
}

/// The token cache file.
#[derive(Clone, Debug)]
pub struct TokenCache {
    path: PathBuf,
}

impl TokenCache {
    /// A cache in this file.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TokenCache { path: path.into() }
    }

    /// The cache in the user's configuration directory.
    pub fn in_config_dir() -> Result<Self, IdentityError> {
        let dir = config_dir(
            std::env::var_os("XDG_CONFIG_HOME"),
            std::env::var_os("HOME"),
        )?;
        Ok(TokenCache::new(dir.join("portcullis").join("tokens.json")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All cached tokens; none when the file does not exist yet.
    pub fn load(&self) -> Result<BTreeMap<String, Tokens>, IdentityError> {
        Ok(self.read()?.issuers)
    }

    /// The cached tokens of one issuer, fresh or not.
    pub fn get(&self, issuer: &str) -> Result<Option<Tokens>, IdentityError> {
        Ok(self.read()?.issuers.remove(issuer))
    }

    /// Saves the tokens of one issuer, keeping the others.
    pub fn store(&self, issuer: &str, tokens: &Tokens) -> Result<(), IdentityError> {
        let mut file = self.read()?;
        file.issuers.insert(issuer.to_owned(), tokens.clone());
        self.write(&file)
    }

    /// Forgets the tokens of one issuer (logout).
    pub fn remove(&self, issuer: &str) -> Result<(), IdentityError> {
        let mut file = self.read()?;
        if file.issuers.remove(issuer).is_some() {
            self.write(&file)?;
        }
        Ok(())
    }

    /// Tokens for the client (its issuer and id) that stay valid for at least
    /// `min_validity`: the cached ones, or new ones from the refresh token
    /// (stored before they are returned). `None` means a login is needed: no
    /// tokens, or expired ones that cannot be refreshed (the provider refused
    /// the refresh token, which is then forgotten).
    pub async fn get_fresh(
        &self,
        client: &LoginClient,
        min_validity: Duration,
    ) -> Result<Option<Tokens>, IdentityError> {
        let key = client.cache_key();
        let Some(tokens) = self.get(&key)? else {
            return Ok(None);
        };
        if tokens.is_fresh(min_validity) {
            return Ok(Some(tokens));
        }
        let Some(refresh_token) = &tokens.refresh_token else {
            return Ok(None);
        };
        match client.refresh(refresh_token).await {
            Ok(refreshed) => {
                self.store(&key, &refreshed)?;
                // Returned even when it lives shorter than `min_validity`:
                // a provider with short-lived tokens would otherwise force a
                // new login every time.
                Ok(Some(refreshed))
            }
            Err(error @ IdentityError::TokenEndpoint { .. }) => {
                tracing::info!(%error, "the refresh token was refused; a new login is needed");
                self.remove(&key)?;
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    fn error(&self, reason: impl ToString) -> IdentityError {
        IdentityError::TokenCache {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn read(&self) -> Result<CacheFile, IdentityError> {
        let contents = match fs::read(&self.path) {
            Ok(contents) => contents,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CacheFile {
                    version: FILE_VERSION,
                    issuers: BTreeMap::new(),
                })
            }
            Err(error) => return Err(self.error(error)),
        };
        let file: CacheFile = serde_json::from_slice(&contents)
            .map_err(|error| self.error(format!("the file is malformed: {error}")))?;
        if file.version != FILE_VERSION {
            return Err(self.error(format!(
                "the file has version {}, this program reads version {FILE_VERSION}",
                file.version
            )));
        }
        Ok(file)
    }

    fn write(&self, file: &CacheFile) -> Result<(), IdentityError> {
        let dir = self
            .path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        create_private_dir(dir).map_err(|error| self.error(error))?;

        let json = serde_json::to_vec_pretty(file).map_err(|error| self.error(error))?;
        let file_name = self
            .path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tokens.json".to_owned());
        let temporary = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        // A leftover from a crashed run would make `create_new` fail.
        let _ = fs::remove_file(&temporary);

        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = options.open(&temporary).and_then(|mut out| {
            out.write_all(&json)?;
            out.write_all(b"\n")?;
            out.sync_all()
        });
        if let Err(error) = written.and_then(|()| fs::rename(&temporary, &self.path)) {
            let _ = fs::remove_file(&temporary);
            return Err(self.error(error));
        }
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// `$XDG_CONFIG_HOME` when it is set to an absolute path (the XDG spec says to
/// ignore a relative one), else `$HOME/.config`.
fn config_dir(
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf, IdentityError> {
    if let Some(xdg) = xdg_config_home.map(PathBuf::from) {
        if xdg.is_absolute() {
            return Ok(xdg);
        }
    }
    match home.map(PathBuf::from) {
        Some(home) if !home.as_os_str().is_empty() => Ok(home.join(".config")),
        _ => Err(IdentityError::NoConfigDir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(expires_at: u64) -> Tokens {
        Tokens {
            id_token: "a.b.c".to_owned(),
            refresh_token: Some("r".to_owned()),
            expires_at,
        }
    }

    #[test]
    fn finds_the_config_dir() {
        assert_eq!(
            config_dir(Some("/x/config".into()), Some("/home/a".into())).unwrap(),
            PathBuf::from("/x/config")
        );
        assert_eq!(
            config_dir(Some("relative".into()), Some("/home/a".into())).unwrap(),
            PathBuf::from("/home/a/.config")
        );
        assert_eq!(
            config_dir(None, Some("/home/a".into())).unwrap(),
            PathBuf::from("/home/a/.config")
        );
        assert!(matches!(
            config_dir(None, None),
            Err(IdentityError::NoConfigDir)
        ));
    }

    #[test]
    fn stores_per_issuer_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(dir.path().join("portcullis/tokens.json"));
        assert!(cache.load().unwrap().is_empty());
        cache.store("https://a", &tokens(1)).unwrap();
        cache.store("https://b", &tokens(2)).unwrap();
        assert_eq!(cache.get("https://a").unwrap(), Some(tokens(1)));
        assert_eq!(cache.load().unwrap().len(), 2);
        cache.remove("https://a").unwrap();
        assert_eq!(cache.get("https://a").unwrap(), None);
        assert_eq!(cache.get("https://b").unwrap(), Some(tokens(2)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(cache.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dir_mode = fs::metadata(dir.path().join("portcullis"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dir_mode & 0o777, 0o700);
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("portcullis"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("tokens.json")]);
    }

    #[test]
    fn refuses_a_malformed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        fs::write(&path, "{").unwrap();
        let error = TokenCache::new(&path).load().unwrap_err();
        assert!(error.to_string().contains("malformed"), "{error}");
    }
}
