//! What the brokers' link tasks report to their shard, through its inboxes: Redis replies,
//! failed commands and PUB/SUB frames; what NATS brought for channels. Each report goes to the
//! engine part, and what the engine leaves in the outbox is done at once.
//!
//! Must not: keep state of its own (the links' protocol state is the engine's and its tasks').

use crate::broker::nats;
use crate::broker::redis::io::Event as RedisEvent;
use crate::shard::engine::Engine;
use crate::shard::Shard;

impl Shard {
    /// The engine part, for boot: adding brokers and waiting for their links.
    pub fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Publishes a control message to every node (Redis or NATS); nothing with one node.
    pub fn publish_control(&mut self, data: &[u8]) {
        self.metrics.broker_sent(crate::metrics::BrokerMessage::Control);
        self.engine.publish_control(data);
    }

    /// Reports from the Redis link tasks, in the order they happened.
    pub fn redis_events(&mut self, events: Vec<RedisEvent>) {
        for event in events {
            if matches!(event, RedisEvent::Failed(_) | RedisEvent::Refused(_)) {
                // Only a broken link reports these.
                *self.metrics.broker_connection_errors.entry("redis").or_default() += 1;
            }
            self.engine.redis_event(event, &mut self.out);
            self.flush_effects();
        }
        self.settle();
    }

    /// What the NATS link task read for channels, in order.
    pub fn nats_inputs(&mut self, inputs: Vec<nats::io::Input>) {
        for input in inputs {
            if matches!(input, nats::io::Input::Lost) {
                *self.metrics.broker_connection_errors.entry("nats").or_default() += 1;
            }
            self.engine.nats_input(input, &mut self.out);
            self.flush_effects();
        }
        self.settle();
    }
}
