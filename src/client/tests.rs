//! Tests of a subscription's last step on its shard, driven through the connections part
//! without a shard around it.

use std::sync::Arc;

use super::conn::{ConnKey, State};
use super::flight::Flights;
use super::queue::Batch;
use super::session::{Session, Sub, SubFlags};
use super::{Clients, Env, Resume, Stats};
use crate::client::conn::Conns;
use crate::hub::Hub;
use crate::protocol::SubscribeResult;
use crate::shard::id::ShardId;
use crate::shard::mesh::Mesh;
use crate::transport::Transport;

/// The parts a client command borrows, owned by the test.
struct Parts {
    env: Env,
    conns: Conns,
    hub: Hub,
    mesh: Mesh,
    flights: Flights<Resume>,
    stats: Stats,
}

impl Parts {
    fn new(queue_max_size: usize) -> Parts {
        let mut cfg = crate::config::Config::default();
        cfg.client.token.hmac_secret_key = "k".into();
        cfg.client.queue_max_size = queue_max_size;
        let v = Arc::new(crate::auth::TokenVerifier::for_connections(&cfg.client).unwrap());
        let ns = Arc::new(crate::channel::Namespaces::new(&cfg.channel).unwrap());
        Parts {
            env: Env::new(Arc::new(cfg), ns, (v.clone(), v)),
            conns: Conns::default(),
            hub: Hub::default(),
            mesh: Mesh::new(ShardId(0), 1),
            flights: Flights::default(),
            stats: Stats::default(),
        }
    }

    fn clients(&mut self) -> Clients<'_> {
        Clients {
            env: &self.env,
            conns: &mut self.conns,
            hub: &mut self.hub,
            mesh: &mut self.mesh,
            flights: &mut self.flights,
            stats: &mut self.stats,
            keys_retry: false,
        }
    }

    /// A connected client subscribed to `channel` in its session.
    fn connected(&mut self, channel: &Arc<str>) -> ConnKey {
        let key = self.conns.insert(Transport::WebSocket { native_ping: false }, false);
        if let Some(c) = self.conns.get_mut(key) {
            c.state = State::Connected(Session {
                client: uuid::Uuid::from_u128(1),
                user: Arc::from("u"),
                conn_info: None,
                subs: vec![Sub::new(Arc::clone(channel), SubFlags::default())],
                expire_at: None,
                counted: false,
                token_channels: 0,
            });
        }
        key
    }

    /// A connected client whose subscribe (command `id`) to `news` completes at once.
    fn subscribed_to_news(&mut self, id: u32) -> ConnKey {
        let ch: Arc<str> = Arc::from("news");
        let key = self.connected(&ch);
        let mut clients = self.clients();
        clients.begin_subscription(&ch);
        clients.complete_subscription(key, &ch, id, SubscribeResult::default());
        key
    }
}

#[test]
fn a_client_dropped_by_its_own_subscribe_reply_does_not_stay_in_the_hub() {
    // The queue holds less than a subscribe reply frame, so queuing the reply disconnects
    // the client with 3008; it must not join the hub afterwards.
    let mut p = Parts::new(4);
    let key = p.subscribed_to_news(1);
    assert_eq!(p.conns.get(key).unwrap().closing.as_ref().map(|d| d.code), Some(3008));
    assert!(p.hub.subscribers("news").is_empty());
    p.clients().remove_conn(key);
    assert_eq!(p.hub.channel_count(), 0, "nothing left behind");
}

#[test]
fn subscribe_completion_joins_the_hub_after_the_reply() {
    let mut p = Parts::new(1 << 20);
    let key = p.subscribed_to_news(7);
    assert_eq!(p.hub.subscribers("news"), &[key]);
    let Some(Batch::One(frame)) = p.conns.get_mut(key).unwrap().take_batch() else { panic!() };
    assert_eq!(&frame[2..], br#"{"id":7,"subscribe":{}}"#);
}
