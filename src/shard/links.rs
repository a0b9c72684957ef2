//! What the brokers' link tasks report to their shard: connections made and lost, Redis
//! replies and PUB/SUB frames, NATS operations. Each report goes to the engine part, and what
//! the engine leaves in the outbox is done at once.
//!
//! Must not: keep state of its own (the links' protocol state is the engine's).

use redis_protocol::resp2::types::BytesFrame;

use crate::broker::nats;
use crate::shard::engine::Engine;
use crate::shard::Shard;

impl Shard {
    /// The engine part, for boot: adding brokers and waiting for their links.
    pub fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Publishes a control message to every node (Redis or NATS); nothing with one node.
    pub fn publish_control(&mut self, data: &[u8]) {
        self.engine.publish_control(data);
    }

    /// The reply to the oldest outstanding command of a Redis command link; `false` when no
    /// command was waiting (the connection is out of step and must be dropped).
    pub fn redis_reply(&mut self, server: usize, frame: BytesFrame) -> bool {
        let ok = self.engine.redis_reply(server, frame, &mut self.out);
        self.flush_effects();
        ok
    }

    /// A Redis command link is connected and its scripts are loaded.
    pub fn redis_commands_up(&mut self, server: usize, shas: Vec<String>) {
        self.engine.redis_commands_up(server, shas);
    }

    /// A Redis command link broke.
    pub fn redis_commands_down(&mut self, server: usize) {
        self.engine.redis_commands_down(server, &mut self.out);
        self.flush_effects();
    }

    /// A Redis PUB/SUB link is connected.
    pub fn redis_pubsub_up(&mut self, server: usize) {
        // Shard 0 listens to the control channels.
        let control = self.id().0 == 0;
        self.engine.redis_pubsub_up(server, control);
    }

    /// A Redis PUB/SUB link broke.
    pub fn redis_pubsub_down(&mut self, server: usize) {
        self.engine.redis_pubsub_down(server, &mut self.out);
        self.flush_effects();
    }

    /// A frame from a Redis PUB/SUB link.
    pub fn redis_incoming(&mut self, server: usize, frame: BytesFrame) {
        self.engine.redis_incoming(server, frame, &mut self.out);
        self.flush_effects();
    }

    /// The NATS connection is (again) up.
    pub fn nats_up(&mut self) {
        self.engine.nats_connected();
    }

    /// The NATS connection broke.
    pub fn nats_down(&mut self) {
        self.engine.nats_disconnected();
    }

    /// One operation from the NATS server.
    pub fn nats_op(&mut self, op: nats::Op) {
        self.engine.nats_op(op, &mut self.out);
        self.flush_effects();
    }
}
