//! Criterion benches for the per-message hot paths: JWT verification, channel → home shard,
//! push encoding, and one shard's local fan-out to 10K subscribers (encode once, queue the same
//! frame on every connection, every writer takes its batch). Run: `cargo bench --bench hot_paths`.
//! Compare lines within one run; the machines are shared and absolute numbers are noisy.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rotor::auth::TokenVerifier;
use rotor::broker::Event;
use rotor::channel::Namespaces;
use rotor::client::conn::{Conn, ConnKey, State};
use rotor::client::queue::Batch;
use rotor::client::session::Session;
use rotor::client::Env;
use rotor::config::Config;
use rotor::protocol::{json, Publication, RawJson};
use rotor::shard::id::{home_of, ShardId};
use rotor::shard::Shard;
use serde_json::json;

const SECRET: &str = "bench-secret";
const RSA_PRIVATE_PEM: &str = include_str!("../src/auth/testdata/rsa_private.pem");
const RSA_PUBLIC_PEM: &str = include_str!("../src/auth/testdata/rsa_public.pem");

fn claims() -> serde_json::Value {
    json!({"sub": "42", "exp": 4_102_444_800u64, "info": {"name": "bench"}})
}

fn jwt(c: &mut Criterion) {
    let mut cfg = Config::default();
    cfg.client.token.hmac_secret_key = SECRET.into();
    let hs = TokenVerifier::for_connections(&cfg.client).unwrap();
    let hs_token = rotor::auth::encode_hs256(SECRET, &claims()).unwrap();
    let mut rs_cfg = Config::default();
    rs_cfg.client.token.rsa_public_key = RSA_PUBLIC_PEM.into();
    let rs = TokenVerifier::for_connections(&rs_cfg.client).unwrap();
    let rs_token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims(),
        &jsonwebtoken::EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap(),
    )
    .unwrap();
    let mut g = c.benchmark_group("jwt_verify");
    g.bench_function("hs256", |b| {
        b.iter(|| hs.verify_connection(black_box(&hs_token), 1_800_000_000).is_ok());
    });
    g.bench_function("rs256", |b| {
        b.iter(|| rs.verify_connection(black_box(&rs_token), 1_800_000_000).is_ok());
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    c.bench_function("home_of/chat:room-12345 over 16 shards", |b| {
        b.iter(|| home_of(black_box("chat:room-12345"), 16));
    });
}

fn publication() -> Publication {
    Publication {
        data: RawJson::from_value_str(&format!(r#"{{"text":"{}"}}"#, "x".repeat(80))).unwrap(),
        offset: 12345,
        ..Publication::default()
    }
}

fn encode(c: &mut Criterion) {
    let p = publication();
    c.bench_function("encode/publication push 100 B", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            json::encode_publication_push(black_box("chat:room-1"), &p, &mut out);
            out.len()
        });
    });
}

/// A shard with `n` connected subscribers of `channel` (each subscribed through the real
/// `subscribe` command), as the pump would see it.
fn shard_with_subscribers(n: usize, channel: &str) -> (Shard, Vec<ConnKey>) {
    let mut cfg = Config::default();
    cfg.client.token.hmac_secret_key = SECRET.into();
    cfg.channel.without_namespace.allow_subscribe_for_client = true;
    let verifier = Arc::new(TokenVerifier::for_connections(&cfg.client).unwrap());
    let namespaces = Arc::new(Namespaces::new(&cfg.channel).unwrap());
    let env = Env::new(Arc::new(cfg), namespaces, (verifier.clone(), verifier), Default::default());
    let mut shard = Shard::new(ShardId(0), 1, env, Arc::default(), Arc::default());
    let subscribe = format!(r#"{{"id":1,"subscribe":{{"channel":"{channel}"}}}}"#);
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let key = shard.open_conn(
            rotor::transport::Transport::WebSocket { native_ping: false },
            false,
            Vec::new(),
        );
        if let Some(conn) = shard.conns().get_mut(key) {
            conn.state = State::Connected(Session {
                client: uuid::Uuid::from_u128(i as u128),
                user: Arc::from("u"),
                conn_info: None,
                subs: Vec::new(),
                expire_at: None,
                counted: false,
                token_channels: 0,
                server_refresh: false,
                refreshing: false,
            });
        }
        let cmd = json::decode_frame(subscribe.as_bytes()).unwrap().remove(0);
        shard.client_command(key, cmd, 0);
        // The subscribe reply.
        shard.conns().get_mut(key).and_then(Conn::take_batch).unwrap();
        keys.push(key);
    }
    (shard, keys)
}

fn fanout(c: &mut Criterion) {
    let n = 10_000;
    let (mut shard, keys) = shard_with_subscribers(n, "news");
    let event = Event::Pub(Arc::new(publication()));
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("local 10K subscribers: encode once, enqueue, take batches", |b| {
        b.iter_batched(
            || (),
            |()| {
                shard.with_clients(|c| c.deliver("news", &event));
                let mut frames = 0;
                for k in &keys {
                    if let Some(Batch::One(_)) =
                        shard.conns().get_mut(*k).and_then(Conn::take_batch)
                    {
                        frames += 1;
                    }
                }
                assert_eq!(frames, n, "every subscriber got exactly one frame");
                frames
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, jwt, hashing, encode, fanout);
criterion_main!(benches);
