//! Client transports. Owns the byte formats that reach client sockets; never owns hub, channel or
//! broker state (the `server` connection loops drive transports with what the shard decided).

pub mod websocket;
