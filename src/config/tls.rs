//! Upstream's TLS object (`TLSConfig`), the same shape wherever a TLS setting lives: the
//! listeners (`http_server.tls`, `http_server.internal_tls`), the engines (`engine.redis.tls`,
//! `engine.redis.sentinel_tls`, `broker.nats.tls`) and the proxies (`<proxy>.http.tls`).
//!
//! Owns: these key names and their defaults. Must not: read the PEM values or build rustls
//! configs (that is the top-level `tls` module), or import from `mod.rs`.

use serde::de::MapAccess;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::codec::{self, Plain, Section, SectionVisitor};
use super::section::section;

section! {
    /// A TLS object. PEM values are PEM text, base64 of PEM text, or a path to a PEM file.
    pub struct Tls {
        /// Use TLS here.
        enabled: bool [Plain] = false,
        /// Certificate chain: the server's on a listener, the client's on a connection.
        cert_pem: String [Plain] = String::new(),
        /// The private key of `cert_pem`.
        key_pem: String [Plain] = String::new(),
        /// Client side: the CA to verify the server with (instead of the system roots).
        server_ca_pem: String [Plain] = String::new(),
        /// Server side: the CA client certificates must chain to; setting it requires one
        /// from every client (mutual TLS).
        client_ca_pem: String [Plain] = String::new(),
        /// Client side: accept any server certificate (testing only).
        insecure_skip_verify: bool [Plain] = false,
        /// Client side: the name to verify the server's certificate for (and send as SNI).
        server_name: String [Plain] = String::new(),
    }
}
