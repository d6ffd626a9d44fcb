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

/// A key to certify: one `authorized_keys` style key alone on its line (no
/// options before it, no second key), of a kind and strength OpenSSH
/// still trusts: no DSA, no RSA under 2048 bits.
fn certifiable(line: &str) -> Result<PublicKey, String> {
    let line = line.trim();
    if line.contains(['\n', '\r']) {
        return Err("give one public key, on one line".into());
    }
    let algorithm = line.split_whitespace().next().unwrap_or_default();
    let key = PublicKey::from_openssh(line).map_err(|e| {
        format!("`{algorithm}` ...: not a public key, `ssh-ed25519 AAAA... comment` as in a .pub file: {e}")
    })?;
    const MIN_RSA_BITS: usize = 2048;
    let weak = match key.key_data() {
        ssh_key::public::KeyData::Dsa(_) => Some("DSA keys are no longer trusted by OpenSSH"),
        ssh_key::public::KeyData::Rsa(rsa) if rsa_bits(rsa) < MIN_RSA_BITS => {
            Some("RSA keys need 2048 bits or more")
        }
        _ => None,
    };
    match weak {
        Some(why) => Err(format!(
            "{why}: make a new key with `ssh-keygen -t ed25519` and ask again"
        )),
        None => Ok(key),
    }
}

/// The size of an RSA key's modulus, in bits.
fn rsa_bits(key: &ssh_key::public::RsaPublicKey) -> usize {
    let bytes = key.n().as_positive_bytes().unwrap_or_default();
    match bytes.first() {
        Some(first) => bytes.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
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
        let subject = certifiable(public_key)?;
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
    /// `trusts` says whether the identity provider that vouched for the
    /// holder is trusted now: a certificate outlives neither the token it
    /// was signed for nor the trust in its issuer.
    pub fn verify(
        &self,
        certificate: &Certificate,
        trusts: impl Fn(&str) -> bool,
    ) -> Result<portcullis_core::Principal, String> {
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
        if !trusts(&identity.issuer) {
            return Err(format!(
                "the certificate was signed for a token of `{}`, an issuer this gateway no longer trusts: log in again",
                identity.issuer
            ));
        }
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
        let trusted = |issuer: &str| issuer == "https://idp";
        let p = ca.verify(&cert, trusted).unwrap();
        assert_eq!(p.id, "alice@example.com");
        assert_eq!(p.groups, ["eng"]);
        assert_eq!(p.expires_at, until);
        assert!(other.verify(&cert, trusted).is_err());
        // Once its issuer is no longer trusted (taken out of the
        // configuration, the dev issuer turned off), neither is it.
        let error = ca.verify(&cert, |_| false).unwrap_err();
        assert!(error.contains("no longer trusts"), "{error}");
        // Expired tokens get no certificate.
        assert!(ca.sign(&user_key(), &principal(), 10).is_err());
    }

    #[test]
    fn only_one_strong_key_alone_on_its_line_is_certified() {
        let ca = CertificateAuthority::new(PrivateKey::from(Ed25519Keypair::from_seed(&[1; 32])));
        let until = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let rsa_1024 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCYspG35JNpaDWT6Qhk6ZXc3yHkZHJALTZ/eCCDkAhXeiLbGoZJyj6kHDPDWijR1v25vwO7ZM4N21f/V3iiLMLVtrW/Z+fynLfvBgWAciptCjV2bYaqd2AlQxd9zHpEXZDWmJrTjfr+IBUTSIXAjfUEdKUJ8RV0XDsioKUxYCOhqw== short";
        let dsa = "ssh-dss AAAAB3NzaC1kc3MAAACBAPD31Lhpy3qwqm9mY36YqYwawJPd0rEQ484CMnLZ8VXOatfFXKWjtys+GI2vfM4qRQjPNRwf7jz50cGq9iGpdL55+2QktCNJulC1m1p5HfOTwTsGC0D31LTjyyHuZayQeZA89U9y5fPEVmAYSfIWvA4sKnRG1gdAauZcknafK0QbAAAAFQCg+L+lJu/3JytkcyKL3y0stkUWNwAAAIAIxaf1Ovc1BsDxFbzXMKbHpPGZT38lEgrT/pFOu47UjN3dErtC1YWINpwRlbkwOFSmWzo/mnHNJCYuSZDoJbPEVQ1m9e+zo7o0kZBhjjMgDmGQLhtbwGHo974cCV9C1aHjIdySe1qJxp7y1tLTxB7zT5Z4DCvzTVfVBbPc3XOe3wAAAIBFqLKZoRoDIFROn63N5FOQmJfp3GHQfzHpE+D0hblLdAgLYAn6FmowtE/3iH1zpxdijFZ8r38SzWYsgd2J3Uu5liam44yiVfsMeXZd/VcHojPyAQ6LkxWbkQrcseu9plhWB7hoCvT5iFGZM+CpIAQcuUN37JpznITgppzSx6ActQ== dsa";
        let rsa_2048 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDEHYgReY0W1I+3VT0hexoctHBmh+9p9uU/i2AlVRoskSfa5bGUVf6b0vjdyBjIlRwKV9dTAbjMIY+cOtzWZvTmT73NkF32RQoiH46wUupP3AH6OH6bEp/hHtJvdSTMgsJY1vsuhbD/vfoALbucHiBhUBF3hAImSm08wQ6o49SPDmKQj0pcAJ8yYjQPUjBD4fxtDvvaeIQUJFG2qQ4hXAT2Maw015GtNk7dfNgPCaejz9lKHFeNYlt4aDRaj0SyCACXw07/r5BWA1EOJ2BU972Aq68boDcfscsbljuNDkvzafrlvppC4Qf7Q6IKnZSVuvWEpFPkjiNT8XMcQscshXyl ok";
        for (key, why) in [(rsa_1024, "2048 bits"), (dsa, "DSA")] {
            let error = ca.sign(key, &principal(), until).unwrap_err();
            assert!(error.contains(why), "{error}");
        }
        assert!(ca.sign(rsa_2048, &principal(), until).is_ok());
        let key = user_key();
        for line in [
            format!("command=\"x\",no-pty {key}"),
            format!("{key}\n{key}"),
        ] {
            assert!(ca.sign(&line, &principal(), until).is_err(), "{line}");
        }
        assert!(ca.sign(&format!("{key}\n"), &principal(), until).is_ok());
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
