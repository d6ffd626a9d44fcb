//! The gateway's own SSH keys: its host key, and the certificate authority
//! that signs short-lived user certificates. Both are ed25519 keys in the
//! data directory (OpenSSH format, mode 0600), made on first start, so the
//! host key clients pin does not change across restarts.

use russh::keys::ssh_key::{self, certificate, private::Ed25519Keypair, LineEnding};
use russh::keys::{Certificate, HashAlg};
pub use russh::keys::{PrivateKey, PublicKey};
use std::path::Path;

/// Loads the key at `path`, or makes one there.
pub fn load_or_create(path: &Path) -> Result<PrivateKey, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(&text)
            .map_err(|e| format!("`{}` is not an OpenSSH private key: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = PrivateKey::from(Ed25519Keypair::from_seed(&rand::random::<[u8; 32]>()));
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| format!("cannot encode a new key: {e}"))?;
            write_private(path, text.as_bytes())?;
            Ok(key)
        }
        Err(e) => Err(format!("cannot read `{}`: {e}", path.display())),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create `{}`: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

/// A public key from a `known_hosts` or `authorized_keys` style line:
/// `[host]:port ssh-ed25519 AAAA... comment`; a leading host name is
/// skipped.
pub fn parse_public(line: &str) -> Result<PublicKey, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let start = words
        .iter()
        .position(|w| w.starts_with("ssh-") || w.starts_with("ecdsa-") || w.starts_with("sk-"))
        .ok_or_else(|| format!("`{line}` holds no public key (expected `ssh-ed25519 AAAA...`)"))?;
    let text = words[start..].join(" ");
    PublicKey::from_openssh(&text).map_err(|e| format!("`{line}` is not a public key: {e}"))
}

/// The SHA-256 fingerprint OpenSSH prints (`SHA256:...`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The extension of a user certificate that carries the identity the
/// gateway verified when it signed it.
pub const IDENTITY_EXTENSION: &str = "identity@portcullis";

/// Signs user certificates: `portcullis ssh-cert` trades a verified token
/// for one, valid no longer than the token.
#[derive(Clone)]
pub struct CertificateAuthority {
    key: std::sync::Arc<PrivateKey>,
}

impl CertificateAuthority {
    pub fn new(key: PrivateKey) -> CertificateAuthority {
        CertificateAuthority {
            key: std::sync::Arc::new(key),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key().clone()
    }

    /// A certificate for `public_key` (one line, OpenSSH format) naming
    /// `principal`, valid from a minute ago until `valid_before` (Unix
    /// seconds).
    pub fn sign(
        &self,
        public_key: &str,
        principal: &portcullis_core::Principal,
        valid_before: u64,
    ) -> Result<String, String> {
        let subject = parse_public(public_key)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if valid_before <= now {
            return Err("the token has expired".into());
        }
        let identity = serde_json::to_string(&Identity::from(principal))
            .map_err(|e| format!("cannot encode the identity: {e}"))?;
        let err = |e: ssh_key::Error| format!("cannot build the certificate: {e}");
        let mut builder = certificate::Builder::new(
            rand::random::<[u8; 32]>().to_vec(),
            subject.key_data().clone(),
            now.saturating_sub(60),
            valid_before,
        )
        .map_err(err)?;
        builder
            .serial(rand::random())
            .map_err(err)?
            .cert_type(certificate::CertType::User)
            .map_err(err)?
            .key_id(principal.id.clone())
            .map_err(err)?
            .all_principals_valid()
            .map_err(err)?
            .extension(IDENTITY_EXTENSION, identity)
            .map_err(err)?
            .extension("permit-pty", "")
            .map_err(err)?
            .extension("permit-port-forwarding", "")
            .map_err(err)?;
        let certificate = builder.sign(self.key.as_ref()).map_err(err)?;
        certificate
            .to_openssh()
            .map_err(|e| format!("cannot encode the certificate: {e}"))
    }

    /// The identity a certificate this authority signed carries, if it is
    /// valid now.
    pub fn verify(&self, certificate: &Certificate) -> Result<portcullis_core::Principal, String> {
        let ca = self.key.public_key().fingerprint(HashAlg::Sha256);
        certificate.validate([&ca]).map_err(|_| {
            "the certificate is not signed by this gateway, or has expired".to_string()
        })?;
        if certificate.cert_type() != certificate::CertType::User {
            return Err("not a user certificate".into());
        }
        if !certificate.critical_options().is_empty() {
            return Err(
                "the certificate carries critical options this gateway does not know".into(),
            );
        }
        let identity = certificate
            .extensions()
            .get(IDENTITY_EXTENSION)
            .ok_or("the certificate carries no identity")?;
        let identity: Identity = serde_json::from_str(identity)
            .map_err(|e| format!("the certificate's identity does not parse: {e}"))?;
        Ok(identity.into_principal(certificate.valid_before()))
    }
}

/// What a certificate says about its holder: what the token said.
#[derive(serde::Serialize, serde::Deserialize)]
struct Identity {
    id: String,
    subject: String,
    #[serde(default)]
    email: Option<String>,
    groups: Vec<String>,
    issuer: String,
}

impl From<&portcullis_core::Principal> for Identity {
    fn from(p: &portcullis_core::Principal) -> Identity {
        Identity {
            id: p.id.clone(),
            subject: p.subject.clone(),
            email: p.email.clone(),
            groups: p.groups.clone(),
            issuer: p.issuer.clone(),
        }
    }
}

impl Identity {
    fn into_principal(self, expires_at: u64) -> portcullis_core::Principal {
        portcullis_core::Principal {
            id: self.id,
            subject: self.subject,
            email: self.email,
            groups: self.groups,
            issuer: self.issuer,
            expires_at,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn principal() -> portcullis_core::Principal {
        portcullis_core::Principal {
            id: "alice@example.com".into(),
            subject: "alice".into(),
            email: Some("alice@example.com".into()),
            groups: vec!["eng".into()],
            issuer: "https://idp".into(),
            expires_at: 0,
        }
    }

    fn user_key() -> String {
        PrivateKey::from(Ed25519Keypair::from_seed(&[3; 32]))
            .public_key()
            .to_openssh()
            .unwrap()
    }

    #[test]
    fn a_certificate_carries_the_identity_and_only_this_ca_vouches_for_it() {
        let ca = CertificateAuthority::new(PrivateKey::from(Ed25519Keypair::from_seed(&[1; 32])));
        let other =
            CertificateAuthority::new(PrivateKey::from(Ed25519Keypair::from_seed(&[2; 32])));
        let until = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let text = ca.sign(&user_key(), &principal(), until).unwrap();
        let cert = Certificate::from_openssh(&text).unwrap();
        let p = ca.verify(&cert).unwrap();
        assert_eq!(p.id, "alice@example.com");
        assert_eq!(p.groups, ["eng"]);
        assert_eq!(p.expires_at, until);
        assert!(other.verify(&cert).is_err());
        // Expired tokens get no certificate.
        assert!(ca.sign(&user_key(), &principal(), 10).is_err());
    }

    #[test]
    fn known_hosts_lines_give_their_key() {
        let key = user_key();
        assert_eq!(
            parse_public(&format!("[127.0.0.1]:22 {key}")).unwrap(),
            parse_public(&key).unwrap()
        );
        assert!(parse_public("nothing here").is_err());
    }
}
