//! TLS configuration from PEM files.

use anyhow::{bail, Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Installs the one process-wide crypto provider (ring). Safe to call twice.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The client-side TLS acceptor for the PostgreSQL listener.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read TLS certificate `{}`", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot parse TLS certificate `{}`", cert.display()))?;
    if certs.is_empty() {
        bail!("no certificate in `{}`", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read TLS private key `{}`", key.display()))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not form a valid pair")?;
    Ok(Arc::new(config))
}

/// TLS to a target, verified against a CA bundle.
pub fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("cannot read CA file `{}`", ca_file.display()))?
    {
        let cert = cert.with_context(|| format!("cannot parse CA file `{}`", ca_file.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("invalid CA certificate in `{}`", ca_file.display()))?;
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}
