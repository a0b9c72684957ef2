//! Brokers: where a channel's publications are ordered and kept, and how nodes reach each other.
//! `memory` keeps everything on each channel's home shard (one node); `redis` keeps history and
//! presence in Redis and carries publications between nodes over Redis PUB/SUB; `nats` carries
//! publications between nodes over NATS (no history); `control` is the node-to-node message set. Brokers never touch connections.

pub mod control;
pub mod memory;
pub mod nats;
pub mod redis;
