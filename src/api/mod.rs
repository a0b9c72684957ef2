//! Server HTTP API (spec §3): request/response codecs in [`types`], execution in [`exec`].
//! Must not touch connections; publishes go to the channel's home shard through `Shard`.

pub mod exec;
pub mod types;

pub use exec::handle_http;
