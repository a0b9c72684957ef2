//! Rotor: a thread-per-core, Centrifugo-compatible real-time messaging server.
//!
//! # Shards and ownership
//!
//! Every shard is one glommio executor (io_uring) on one core. A shard owns the connections it
//! accepted and never shares them; other shards reach its state only through one message type,
//! [`shard::msg::ShardMsg`], sent over bounded lock-free single-producer rings (glommio channel
//! meshes: a *main* lane and a *reply* lane, so answers never queue behind fan-out).
//!
//! | State | Owner |
//! |---|---|
//! | a connection, its session, its outbound queue | the shard that accepted it |
//! | channel → local subscribers ([`hub::Hub`]) | every shard, for its own connections |
//! | a channel's interest set (which shards have subscribers), stream position, history, presence, idempotency keys | the channel's **home shard**, `fnv1a(name) % shards` ([`shard::id::home_of`]) |
//! | a user's connection count (`client.user_connection_limit`) | the user's home shard, same hash |
//! | configuration | an immutable `Arc<Config>` cloned into every shard |
//! | payloads that cross cores | immutable `Arc<Publication>` (one allocation for all shards) |
//!
//! Connections are spread over shards by the kernel (`SO_REUSEPORT`, the default), or, with
//! `runtime.placement = "round_robin"`, shard 0 accepts and hands the k-th connection to shard
//! k mod n, which tests use to put clients on chosen shards.
//!
//! # Life of a publication
//!
//! 1. A backend POSTs `/api/publish` on a connection that shard A owns. [`server`] parses the head
//!    with httparse, reads the body, and [`api`] checks the API key and decodes the request.
//! 2. A validates the channel against the namespaces ([`channel`]) and calls `Shard::call_home`
//!    with a `Call::Publish`: the request is parked in A's pending table (its id carries a
//!    generation, so a late answer never reaches a newer request) and sent to the channel's home
//!    shard H (handled inline when H = A).
//! 3. H applies `idempotency_key` and `version`, then orders the publication: with history on,
//!    the memory engine ([`broker::memory`]) assigns the next offset in the channel's epoch and
//!    keeps it in the history ring. H answers `Answer::Published` on the reply lane; A resumes the
//!    HTTP request and writes `{"result":{...}}`.
//!
//!    With the Redis engine ([`broker::redis`], several nodes), H instead queues one script call
//!    on its pipelined Redis connection: the script appends to the channel's Redis stream and
//!    PUBLISHes `__p1:<offset>:<epoch>__<protobuf>` on `<prefix>.client.<channel>`. H answers
//!    when the script's reply comes (or at once with a temporary error when Redis is down).
//!    Every node whose shards have subscribers has that channel's home shard subscribed over its
//!    own PUB/SUB connection, H of this node included; the message arrives there and continues
//!    at step 4, the same code path as the memory engine.
//! 4. H sends one `ShardMsg::Deliver` carrying the same `Event::Pub(Arc<Publication>)` to every
//!    shard in the channel's interest set (itself included, inline). Interest is kept by
//!    `Interest` messages that shards send on their first local subscribe and last local
//!    unsubscribe of a channel. Join and leave events travel the same way.
//! 5. Each receiving shard encodes the push once per encoding its subscribers need (JSON
//!    `{"push":{"channel":..,"pub":{..}}}`, Protobuf, or the bare push of unidirectional
//!    transports), builds the whole unmasked WebSocket frame once, and queues that shared frame
//!    on every local subscriber, each queue bounded in bytes by `client.queue_max_size`
//!    (overflow → disconnect 3008 slow). Queuing wakes the connection's writer task. In a
//!    channel with delta subscribers the shard also computes one fossil patch against the
//!    previous publication it delivered ([`client::delta`]) and shares those frames the same
//!    way.
//! 6. The pump handles every message already waiting in a lane before yielding, so writers run
//!    once per burst: a writer takes its whole queue and writes it with a single call. On
//!    WebSocket consecutive frames merge into one frame (newline-joined JSON); HTTP-streaming
//!    and SSE connections take the payloads behind the frame headers and frame them as lines or
//!    events in one chunk ([`transport::stream`]). A lone WebSocket frame is written as is,
//!    without a copy.
//!
//! # Life of a subscription that needs the home shard
//!
//! Presence, join/leave and stream positions (positioning, recovery) live on the home shard, so
//! such a subscribe asks it once (`Call::Subscribe`), after the `Interest` message on the same
//! lane. Until the answer comes, the subscriber's shard keeps the channel's events for it in the
//! hub. The answer travels on the main lane, behind every delivery H already sent to that shard,
//! so each publication up to the reported offset has arrived first. The shard then writes the
//! subscribe reply (recovered publications inside), and hands over the kept events with offsets
//! above what the reply covered: nothing is lost or doubled. A shard that finds itself behind
//! a reported offset, or sees an offset gap, lost a delivery: its positioned subscribers get
//! unsubscribe 2500 (disconnect 3010 for server-side ones) and recover. The periodic position
//! check (`client.channel_position_check_delay`) asks the same question for quiet channels.
//! `shard::sim_tests` checks all of this against a model under random interleavings. With Redis,
//! H holds both the interest acknowledgement and the position read until Redis confirms the
//! PUB/SUB subscription, so no publication can fall between the read and the subscription.
//!
//! Cross-shard sends never wait: a full lane spills into a per-peer FIFO that a forwarder task
//! drains in order; past `shard::SPILL_MAX` queued messages deliveries are dropped and counted
//! (clients recover by offset), requests are still queued.
//!
//! # Modules
//!
//! Sans-IO (no sockets, testable without a reactor): [`protocol`], [`http`],
//! [`transport::websocket`], [`hub`], [`broker`] (except its sockets: `broker::redis::io`,
//! Redis Cluster discovery in `broker::redis::topology`, and `broker::nats::io`), [`channel`],
//! [`auth`], [`config`], and the state machines in [`client`] and [`shard`]. Glommio lives in
//! [`server`], [`runtime`] and those broker sockets.

pub mod api;
pub mod auth;
pub mod broker;
pub mod channel;
pub mod cli;
pub mod client;
pub mod config;
pub mod http;
pub mod hub;
pub mod node;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod shard;
pub mod systemd;
pub mod transport;
