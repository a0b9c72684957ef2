//! TLS settings of `https://` proxy endpoints: the system's root certificates plus an optional
//! CA (`http.tls.server_ca_pem`), and an optional client certificate (`cert_pem`/`key_pem`),
//! on rustls with the same ring provider the JWKS fetcher uses.
//!
//! Owns: turning a `ProxyTls` section into a rustls client config once, at start. Must not:
//! verify less than rustls does by default (`insecure_skip_verify` is refused: it would fail
//! open).

use std::sync::Arc;

use base64::Engine as _;
use futures_rustls::pki_types::pem::PemObject;
use futures_rustls::pki_types::{CertificateDer, PrivateKeyDer};
use futures_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::config::ProxyTls;

/// A PEM setting as upstream accepts it: the PEM text itself, a file path, or base64 of the
/// PEM text.
fn pem_bytes(value: &str) -> Result<Vec<u8>, String> {
    if value.contains("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    if let Ok(bytes) = std::fs::read(value) {
        return Ok(bytes);
    }
    match base64::engine::general_purpose::STANDARD.decode(value.trim()) {
        Ok(bytes) if bytes.windows(10).any(|w| w == b"-----BEGIN") => Ok(bytes),
        _ => Err("is neither PEM text, a readable file, nor base64 of PEM text".to_owned()),
    }
}

/// The client config for a proxy; an error is `(key under http.tls, message)`.
pub fn client_config(t: &ProxyTls) -> Result<ClientConfig, (&'static str, String)> {
    if t.insecure_skip_verify {
        return Err((
            "insecure_skip_verify",
            "is not supported by rotor (give the backend's CA in server_ca_pem instead)".into(),
        ));
    }
    let mut roots = RootCertStore::empty();
    // A root the system store cannot parse is skipped, as every TLS client does.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if !t.server_ca_pem.is_empty() {
        let pem = pem_bytes(&t.server_ca_pem).map_err(|m| ("server_ca_pem", m))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| ("server_ca_pem", e.to_string()))?;
            roots.add(cert).map_err(|e| ("server_ca_pem", e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(("server_ca_pem", "holds no certificate".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("enabled", e.to_string()))?
        .with_root_certificates(roots);
    if t.cert_pem.is_empty() != t.key_pem.is_empty() {
        return Err(("cert_pem", "cert_pem and key_pem go together".into()));
    }
    if t.cert_pem.is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let cert_pem = pem_bytes(&t.cert_pem).map_err(|m| ("cert_pem", m))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ("cert_pem", e.to_string()))?;
    let key_pem = pem_bytes(&t.key_pem).map_err(|m| ("key_pem", m))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| ("key_pem", e.to_string()))?;
    builder.with_client_auth_cert(chain, key).map_err(|e| ("cert_pem", e.to_string()))
}
