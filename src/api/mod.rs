//! Server HTTP API (spec §3): request/response codecs in [`types`], execution in [`exec`]
//! (routing, publish, broadcast, batch) and [`query`] (presence, history, channels, info); what a
//! request produces, independent of HTTP, in [`response`].
//! Must not touch connections; publishes go to the channel's home shard through `Shard`.

pub mod exec;
pub mod query;
pub mod response;
pub mod types;

pub use exec::{handle_head, handle_http};
