//! TLS settings turned into rustls configs: upstream's TLS object (`config::Tls`) for the
//! listeners (server side, with certificates reloadable on SIGHUP) and for Rotor's own
//! connections to Redis, NATS and proxy backends (client side). All on rustls with the ring
//! provider, the one the JWKS fetcher uses too.
//!
//! Owns: reading PEM values (text, base64 of text, or a file, in upstream's order), the
//! certificate a listener presents now, the client configs, and the stream type both sides
//! use (`Socket`). Must not: connect, accept or handshake (the tasks that own the sockets
//! do), or accept a setting it cannot honour: a bad PEM value is an error naming its key.

use std::sync::{Arc, RwLock};

use base64::Engine as _;
use futures_rustls::pki_types::pem::PemObject;
use futures_rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use futures_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use futures_rustls::rustls::crypto::{self, CryptoProvider};
use futures_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use futures_rustls::rustls::sign::CertifiedKey;
use futures_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
};
use futures_rustls::TlsAcceptor;

use crate::config::Tls;

mod socket;
pub use socket::Socket;

/// A TLS object that cannot be used: the key inside the object at fault, and why.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    /// The key inside the TLS object (`cert_pem`, `server_ca_pem`, ...).
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn err(key: &'static str, message: impl std::fmt::Display) -> TlsError {
    TlsError { key, message: message.to_string() }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

/// A PEM setting as upstream reads it: the PEM text itself, base64 of the PEM text, or a path
/// to a PEM file, tried in that order.
pub fn pem_bytes(key: &'static str, value: &str) -> Result<Vec<u8>, TlsError> {
    if value.contains("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(value.trim()) {
        if bytes.windows(10).any(|w| w == b"-----BEGIN") {
            return Ok(bytes);
        }
    }
    std::fs::read(value).map_err(|e| {
        err(key, format!("is neither PEM text, base64 of PEM text, nor a readable file ({e})"))
    })
}

fn cert_chain(key: &'static str, value: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = pem_bytes(key, value)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(key, e))?;
    if chain.is_empty() {
        return Err(err(key, "holds no certificate"));
    }
    Ok(chain)
}

fn private_key(value: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = pem_bytes("key_pem", value)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| err("key_pem", e))
}

fn roots(key: &'static str, value: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in cert_chain(key, value)? {
        roots.add(cert).map_err(|e| err(key, e))?;
    }
    Ok(roots)
}

/// The client config for a connection Rotor makes (Redis, NATS, a proxy backend): the
/// system's roots, or only `server_ca_pem` when given; a client certificate when `cert_pem`
/// and `key_pem` are given; no verification at all with `insecure_skip_verify`, as upstream.
pub fn client_config(t: &Tls) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| err("enabled", e))?;
    let builder = if t.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
    } else if t.server_ca_pem.is_empty() {
        let mut roots = RootCertStore::empty();
        // A root the system store cannot parse is skipped, as every TLS client does.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        builder.with_root_certificates(roots)
    } else {
        builder.with_root_certificates(roots("server_ca_pem", &t.server_ca_pem)?)
    };
    if t.cert_pem.is_empty() != t.key_pem.is_empty() {
        return Err(err("cert_pem", "cert_pem and key_pem go together"));
    }
    if t.cert_pem.is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let chain = cert_chain("cert_pem", &t.cert_pem)?;
    builder.with_client_auth_cert(chain, private_key(&t.key_pem)?).map_err(|e| err("cert_pem", e))
}

/// The server name a client config verifies: `server_name` when set, else the host dialled.
pub fn server_name(t: &Tls, host: &str) -> Result<ServerName<'static>, TlsError> {
    let name = if t.server_name.is_empty() { host } else { t.server_name.as_str() };
    ServerName::try_from(name.to_owned()).map_err(|e| err("server_name", e))
}

/// `insecure_skip_verify`: any certificate is taken for any name. Handshake signatures are
/// still checked, so the peer must at least hold the key of the certificate it sent.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A listener's TLS: the rustls server config every shard's acceptor shares, and the
/// certificate it presents, which `reload` swaps (SIGHUP) without touching open connections.
pub struct ServerTls {
    section: Tls,
    current: Arc<Current>,
    config: Arc<ServerConfig>,
}

/// The certificate presented now. Read once per handshake (not per message), so an
/// uncontended read lock costs nothing next to the handshake's public-key operations, and
/// lets the signal thread swap it while shards accept.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match self.0.read() {
            Ok(key) => Arc::clone(&key),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        })
    }
}

fn certified_key(t: &Tls, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    if t.cert_pem.is_empty() {
        return Err(err("cert_pem", "is required to serve TLS"));
    }
    if t.key_pem.is_empty() {
        return Err(err("key_pem", "is required to serve TLS"));
    }
    let chain = cert_chain("cert_pem", &t.cert_pem)?;
    CertifiedKey::from_der(chain, private_key(&t.key_pem)?, provider).map_err(|e| err("key_pem", e))
}

impl ServerTls {
    /// A listener's TLS from its TLS object: `cert_pem`/`key_pem` required, `client_ca_pem`
    /// makes a client certificate mandatory (mutual TLS, as upstream).
    pub fn new(t: &Tls) -> Result<ServerTls, TlsError> {
        let provider = provider();
        let key = certified_key(t, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| err("enabled", e))?;
        let builder = if t.client_ca_pem.is_empty() {
            builder.with_no_client_auth()
        } else {
            let roots = Arc::new(roots("client_ca_pem", &t.client_ca_pem)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| err("client_ca_pem", e))?;
            builder.with_client_cert_verifier(verifier)
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&current) as _);
        // HTTP/1.1 only: WebSocket, SSE, streaming and the API all run over it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls { section: t.clone(), current, config: Arc::new(config) })
    }

    /// An acceptor for one shard (it shares the config and so sees reloads).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }

    /// Reads `cert_pem` and `key_pem` again (files are re-read; text values give the same
    /// certificate) and presents the new pair to every later handshake. On error the old
    /// pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = Arc::new(certified_key(&self.section, &provider())?);
        match self.current.0.write() {
            Ok(mut current) => *current = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
        Ok(())
    }
}
