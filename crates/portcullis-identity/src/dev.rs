//! The dev issuer: the gateway signs its own tokens with a local ed25519 key,
//! for development and tests where no identity provider is at hand.
//!
//! Its tokens are verified through the same path as an OpenID provider's (a
//! JWK is built from the public key), and only by a [`crate::Verifier`] that
//! was given the dev issuer.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::IdentityError;
use crate::jwks::{KeyFamily, VerificationKey};
use crate::settings::DevIssuerSettings;
use crate::token::{base64url, now_seconds};

/// The dev issuer, with its signing key.
#[derive(Clone)]
pub struct DevIssuer {
    issuer: String,
    audience: String,
    key_id: String,
    public_key: [u8; 32],
    encoding_key: EncodingKey,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// Loads the key from `settings.key_path`, or creates it (mode 0600) when
    /// the file does not exist. The file holds the 32-byte seed in hex, or a
    /// PKCS#8 key (PEM or DER); anything else is an error, never replaced.
    pub fn load_or_create(settings: DevIssuerSettings) -> Result<DevIssuer, IdentityError> {
        if settings.issuer.is_empty() || settings.audience.is_empty() {
            return Err(IdentityError::InvalidSettings {
                reason: "the dev issuer needs a non-empty issuer and audience".to_owned(),
            });
        }
        let path = settings.key_path.as_path();
        let signing_key = match fs::read(path) {
            Ok(contents) => {
                warn_if_readable_by_others(path);
                parse_key(&contents).map_err(|reason| dev_key_error(path, reason))?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => create_key(path)?,
            Err(error) => return Err(dev_key_error(path, error.to_string())),
        };
        Self::from_signing_key(settings.issuer, settings.audience, &signing_key)
    }

    fn from_signing_key(
        issuer: String,
        audience: String,
        signing_key: &SigningKey,
    ) -> Result<DevIssuer, IdentityError> {
        let public_key = signing_key.verifying_key().to_bytes();
        let der = signing_key
            .to_pkcs8_der()
            .map_err(|error| IdentityError::Signing {
                reason: error.to_string(),
            })?;
        let digest = Sha256::digest(public_key);
        let key_id: String = digest
            .iter()
            .take(8)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Ok(DevIssuer {
            issuer,
            audience,
            key_id,
            public_key,
            encoding_key: EncodingKey::from_ed_der(der.as_bytes()),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The `kid` of every token: the first 16 hex digits of the SHA-256 of the
    /// public key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key as a JWKS document, for anyone who wants to verify dev
    /// tokens elsewhere.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "use": "sig",
            "alg": "EdDSA",
            "kid": self.key_id,
            "x": base64url(&self.public_key),
        }]})
    }

    pub(crate) fn verification_key(&self) -> VerificationKey {
        VerificationKey {
            kid: Some(self.key_id.clone()),
            alg: Some(Algorithm::EdDSA),
            family: KeyFamily::Ed25519,
            key: DecodingKey::from_ed_der(&self.public_key),
        }
    }

    /// Signs an EdDSA token for `user`: `iss`, `aud`, `sub` = user, `email` =
    /// user when it contains `@`, `groups`, `iat`, `nbf`, `exp` = now + ttl.
    pub fn issue(
        &self,
        user: &str,
        groups: &[String],
        ttl: Duration,
    ) -> Result<String, IdentityError> {
        if user.is_empty() {
            return Err(IdentityError::Signing {
                reason: "the user name is empty".to_owned(),
            });
        }
        let now = now_seconds();
        let mut claims = json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user,
            "groups": groups,
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add(ttl.as_secs()),
        });
        if user.contains('@') {
            claims["email"] = json!(user);
        }
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key_id.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding_key).map_err(|error| {
            IdentityError::Signing {
                reason: error.to_string(),
            }
        })
    }
}

fn dev_key_error(path: &Path, reason: String) -> IdentityError {
    IdentityError::DevKey {
        path: path.to_owned(),
        reason,
    }
}

/// Reads a key in one of the accepted forms.
fn parse_key(contents: &[u8]) -> Result<SigningKey, String> {
    if let Ok(text) = std::str::from_utf8(contents) {
        let text = text.trim();
        if text.len() == 64 && text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            let mut seed = [0u8; 32];
            for (index, byte) in seed.iter_mut().enumerate() {
                let pair = text
                    .get(index * 2..index * 2 + 2)
                    .ok_or_else(|| "the hex key is cut short".to_owned())?;
                *byte = u8::from_str_radix(pair, 16).map_err(|error| error.to_string())?;
            }
            return Ok(SigningKey::from_bytes(&seed));
        }
        if let Some(body) = text
            .strip_prefix("-----BEGIN PRIVATE KEY-----")
            .and_then(|rest| rest.strip_suffix("-----END PRIVATE KEY-----"))
        {
            let base64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map_err(|_| "the PEM key is not valid base64".to_owned())?;
            return SigningKey::from_pkcs8_der(&der)
                .map_err(|error| format!("the PEM key is not an ed25519 PKCS#8 key: {error}"));
        }
    }
    SigningKey::from_pkcs8_der(contents).map_err(|_| {
        "the file is malformed: expected 64 hex digits (the ed25519 seed) or a PKCS#8 ed25519 key"
            .to_owned()
    })
}

/// Creates a new key file with mode 0600 from the start (never a chmod
/// afterwards, which would leave a window where others can read it).
fn create_key(path: &Path) -> Result<SigningKey, IdentityError> {
    let signing_key = SigningKey::generate(&mut rand::rngs::OsRng);
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        fs::create_dir_all(parent).map_err(|error| dev_key_error(path, error.to_string()))?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|error| dev_key_error(path, format!("could not create it: {error}")))?;
    let hex: String = signing_key
        .to_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    file.write_all(format!("{hex}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| dev_key_error(path, format!("could not write it: {error}")))?;
    tracing::info!(path = %path.display(), "created a new dev issuer key");
    Ok(signing_key)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = fs::metadata(path) {
            if metadata.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the dev issuer key is readable by other users: anyone who reads it can sign tokens (chmod 600 it)"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> DevIssuerSettings {
        DevIssuerSettings {
            issuer: "portcullis-dev".to_owned(),
            audience: "portcullis".to_owned(),
            key_path: dir.join("keys/dev.key"),
        }
    }

    #[test]
    fn creates_the_key_with_mode_0600_and_loads_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let first = DevIssuer::load_or_create(settings(dir.path())).unwrap();
        let path = dir.path().join("keys/dev.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let second = DevIssuer::load_or_create(settings(dir.path())).unwrap();
        assert_eq!(first.key_id(), second.key_id());
        assert_eq!(first.key_id().len(), 16);
    }

    #[test]
    fn reads_pkcs8_keys() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let der = key.to_pkcs8_der().unwrap();
        let path = dir.path().join("keys/dev.key");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, der.as_bytes()).unwrap();
        let from_der = DevIssuer::load_or_create(settings(dir.path())).unwrap();

        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der.as_bytes())
        );
        fs::write(&path, pem).unwrap();
        let from_pem = DevIssuer::load_or_create(settings(dir.path())).unwrap();
        assert_eq!(from_der.key_id(), from_pem.key_id());
    }

    #[test]
    fn refuses_a_malformed_key_file_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/dev.key");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "not a key\n").unwrap();
        let error = DevIssuer::load_or_create(settings(dir.path())).unwrap_err();
        assert!(matches!(error, IdentityError::DevKey { .. }), "{error}");
        assert!(error.to_string().contains("malformed"), "{error}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "not a key\n");
    }

    #[test]
    fn issues_tokens_with_the_documented_claims() {
        let dir = tempfile::tempdir().unwrap();
        let dev = DevIssuer::load_or_create(settings(dir.path())).unwrap();
        let token = dev
            .issue(
                "alice@example.com",
                &["eng".to_owned()],
                Duration::from_secs(60),
            )
            .unwrap();
        let claims = crate::token::insecure_claims(&token).unwrap();
        assert_eq!(claims["iss"], "portcullis-dev");
        assert_eq!(claims["aud"], "portcullis");
        assert_eq!(claims["sub"], "alice@example.com");
        assert_eq!(claims["email"], "alice@example.com");
        assert_eq!(claims["groups"], json!(["eng"]));
        let exp = claims["exp"].as_u64().unwrap();
        let iat = claims["iat"].as_u64().unwrap();
        assert_eq!(exp - iat, 60);

        let token = dev.issue("bob", &[], Duration::from_secs(60)).unwrap();
        let claims = crate::token::insecure_claims(&token).unwrap();
        assert!(claims.get("email").is_none());
    }
}
