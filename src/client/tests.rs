//! Tests of a subscription's last step on its shard, driven through the connections part of a
//! real shard.

use std::sync::Arc;

use super::conn::ConnKey;
use super::queue::Batch;
use super::session::{Session, Sub, SubFlags};
use super::Env;
use crate::protocol::SubscribeResult;
use crate::shard::id::ShardId;
use crate::shard::Shard;
use crate::transport::Transport;

fn test_shard(queue_max_size: usize) -> Shard {
    let mut cfg = crate::config::Config::default();
    cfg.client.token.hmac_secret_key = "k".into();
    cfg.client.queue_max_size = queue_max_size;
    let v = Arc::new(crate::auth::TokenVerifier::for_connections(&cfg.client).unwrap());
    let ns = Arc::new(crate::channel::Namespaces::new(&cfg.channel).unwrap());
    let env = Env::new(Arc::new(cfg), ns, (v.clone(), v), Arc::default());
    Shard::new(ShardId(0), 1, env, Arc::default(), Arc::default())
}

/// A connected client subscribed to `channel` in its session.
fn connected(shard: &mut Shard, channel: &Arc<str>) -> ConnKey {
    let key = shard.open_conn(Transport::WebSocket { native_ping: false }, false, Vec::new());
    {
        let session = Session {
            client: uuid::Uuid::from_u128(1),
            user: Arc::from("u"),
            conn_info: None,
            subs: vec![Sub::new(Arc::clone(channel), SubFlags::default())],
            expire_at: None,
            counted: false,
            token_channels: 0,
            server_refresh: false,
            refreshing: false,
        };
        shard.conns().set_connected(key, session);
    }
    key
}

/// A connected client whose subscribe (command `id`) to `news` completes at once.
fn subscribed_to_news(shard: &mut Shard, id: u32) -> ConnKey {
    let ch: Arc<str> = Arc::from("news");
    let key = connected(shard, &ch);
    shard.with_clients(|c| {
        c.begin_subscription(&ch);
        c.complete_subscription(key, &ch, id, SubscribeResult::default());
    });
    key
}

#[test]
fn a_client_dropped_by_its_own_subscribe_reply_does_not_stay_in_the_hub() {
    // The queue holds less than a subscribe reply frame, so queuing the reply disconnects
    // the client with 3008; it must not join the hub afterwards.
    let mut shard = test_shard(4);
    let key = subscribed_to_news(&mut shard, 1);
    assert_eq!(shard.conns().get(key).unwrap().closing.as_ref().map(|d| d.code), Some(3008));
    assert!(shard.with_clients(|c| c.hub.subscribers("news").is_empty()));
    shard.with_clients(|c| c.remove_conn(key));
    assert_eq!(shard.with_clients(|c| c.hub.channel_count()), 0, "nothing left behind");
}

#[test]
fn subscribe_completion_joins_the_hub_after_the_reply() {
    let mut shard = test_shard(1 << 20);
    let key = subscribed_to_news(&mut shard, 7);
    assert_eq!(shard.with_clients(|c| c.hub.subscribers("news").to_vec()), vec![key]);
    let Some(Batch::One(frame)) = shard.conns().get_mut(key).unwrap().take_batch() else {
        panic!()
    };
    assert_eq!(&frame[2..], br#"{"id":7,"subscribe":{}}"#);
}

#[test]
fn connections_are_indexed_by_user_until_removed() {
    let mut shard = test_shard(1 << 20);
    let mut open = |user: &str| {
        let key = shard.open_conn(Transport::WebSocket { native_ping: false }, false, Vec::new());
        let session = Session {
            client: uuid::Uuid::new_v4(),
            user: Arc::from(user),
            conn_info: None,
            subs: Vec::new(),
            expire_at: None,
            counted: false,
            token_channels: 0,
            server_refresh: false,
            refreshing: false,
        };
        assert!(shard.conns().set_connected(key, session));
        key
    };
    let (a1, a2, b) = (open("alice"), open("alice"), open("bob"));
    assert_eq!(shard.conns().of_user("alice"), [a1, a2]);
    assert_eq!(shard.conns().of_user("bob"), [b]);
    assert!(shard.conns().of_user("carol").is_empty());
    shard.conns().remove(a1);
    assert_eq!(shard.conns().of_user("alice"), [a2]);
    shard.conns().remove(a2);
    shard.conns().remove(b);
    assert_eq!(shard.conns().users().count(), 0, "no user outlives its connections");
}
