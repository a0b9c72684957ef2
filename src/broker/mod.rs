//! Brokers: where a channel's publications are ordered and kept. Only the memory engine exists so
//! far; it lives entirely on each channel's home shard. Brokers never touch connections.

pub mod memory;
