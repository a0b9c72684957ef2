//! Rotor (work in progress skeleton).
pub mod http;
pub mod transport;
