//! Channels: names, namespaces and client-side permissions (spec §5).
//!
//! Owns the pure, configuration-derived rules: which options a channel name maps to
//! (`name`) and whether a connection may subscribe, publish, or read presence and
//! history (`permission`); and, in [`home`], what a channel's home shard keeps and does for it.
//! Must not verify tokens, hold connection state, or do I/O.

pub mod home;
mod name;
mod permission;

pub use name::{check_name, Namespaces, Resolved};
pub use permission::{check_history, check_presence, check_publish, check_subscribe, Subject};

/// A channel configuration we cannot run with. Names the offending config key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelConfigError {
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// Refusal of a channel operation; [`ChannelError::code`] is the protocol error code.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    #[error("unknown channel")]
    UnknownChannel,
    #[error("bad request")]
    BadRequest,
    #[error("permission denied")]
    PermissionDenied,
    #[error("not available")]
    NotAvailable,
    /// The namespace sends this decision to its proxy (the caller calls it; 108 for a caller
    /// that cannot, as upstream answers without a proxy handler).
    #[error("decided by the proxy")]
    Proxied,
}

impl ChannelError {
    /// Protocol error code (spec §2.12). Local numbers until `protocol::codes` exists
    /// to import them from.
    pub fn code(self) -> u32 {
        match self {
            ChannelError::UnknownChannel => 102,
            ChannelError::PermissionDenied => 103,
            ChannelError::BadRequest => 107,
            ChannelError::NotAvailable | ChannelError::Proxied => 108,
        }
    }
}

#[cfg(test)]
mod tests;
