//! Rotor: a thread-per-core, Centrifugo-compatible real-time messaging server.
//!
//! # Shards and what they own
//!
//! Every shard is one glommio executor (io_uring) on one core: a [`shard::Shard`] built from
//! parts that each own their state. Other shards reach a part only by message
//! ([`shard::msg::ShardMsg`], stamped with its target in a [`shard::msg::Frame`]) over bounded
//! lock-free rings: a *main* lane and a *reply* lane, so answers never queue behind fan-out.
//!
//! | State | Owner (module) |
//! |---|---|
//! | a connection, its session, outbound queue, timers, commands in flight | the shard that accepted it ([`client`]: `conn`, `queue`, `session`, `flight`) |
//! | channel → local subscribers, registration with the home shard | every shard, for its own connections ([`hub`]) |
//! | a channel's interest set, this node's presence entries; a user's connection count | the channel's (user's) **home shard**, `fnv1a(name) % shards` ([`shard::id::home_of`], [`channel::home`]) |
//! | a channel's stream, history, idempotency results | the home shard's broker ([`broker::memory`]), or Redis ([`broker::redis`]) |
//! | lanes to other shards, spill queues, parked requests | the shard's mesh ([`shard::mesh`]) |
//! | configuration | an immutable `Arc<Config>` cloned into every shard |
//! | payloads that cross cores | immutable `Arc<Publication>` (one allocation for all shards) |
//!
//! Connections are spread over shards by the kernel (`SO_REUSEPORT`, the default), or, with
//! `runtime.placement = "round_robin"`, shard 0 accepts and hands the k-th connection to shard
//! k mod n, which tests use to put clients on chosen shards.
//!
//! # Life of a publication
//!
//! A backend POSTs `/api/publish` on a connection that shard A owns; the channel's home is H;
//! its subscribers sit on B and C.
//!
//! 1. `server::serve_connection` parses the head with httparse ([`http::parse_head`]), reads
//!    the body, and `server::route` calls [`api::exec::handle_http`], which checks the API key
//!    ([`api::exec::authorized`]) and runs [`api::exec::publish`]: `start_publish` validates the
//!    channel against the namespaces ([`channel::Namespaces::resolve`]) and the data format,
//!    builds a [`broker::PublishCall`] and sends `Call::Publish` with
//!    [`shard::Shard::call_home`]. The mesh parks the request (`Mesh::call_for_task`: its id
//!    carries a generation, so a late answer never reaches a newer request) and sends it to H
//!    (queued on A itself when H = A). The API task awaits [`shard::PendingAnswer`].
//! 2. H's pump (`shard::mesh::pump`) hands the frame to [`shard::Shard::receive`];
//!    `Shard::serve` gives the call to the home part, [`channel::home::Home::publish`], which
//!    hands it to the engine's broker ([`broker::Broker::publish`]). The memory broker
//!    (`Memory::publish`) applies `idempotency_key` and `version`, appends to the channel's
//!    stream ([`broker::stream::Stream::append`]: next offset in the epoch) and leaves two
//!    effects in the [`broker::Outbox`]: `Effect::Emit` (the publication) and then
//!    `Effect::Answer`. `Shard::flush_effects` sends one `ShardMsg::Deliver` to every shard in
//!    the channel's interest set (`Shard::emit`) and the answer to A on the reply lane.
//!
//!    With Redis ([`broker::redis`]) the broker instead queues one script call on H's pipelined
//!    command link: the script appends to the channel's Redis stream and PUBLISHes
//!    `__p1:<offset>:<epoch>__<protobuf>` on `<prefix>.client.<channel>`. The link task hands
//!    the reply to `Shard::redis_reply` (→ `Effect::Answer`), and the message, which comes back
//!    on every node's PUB/SUB link (H's included), to `Shard::redis_incoming` (→
//!    `Effect::Emit`): from there it is the same path as the memory broker.
//! 3. A's pump delivers the answer: `Mesh::answered` stores it and wakes the API task, which
//!    writes `{"result":{...}}`.
//! 4. B and C each get the `Deliver`: `Shard::receive` → [`client::Clients::deliver`].
//!    `Hub::observe` first checks the offset (a gap means a delivery to this shard was lost:
//!    `Clients::insufficient_state` sends its positioned subscribers to recovery), then
//!    [`hub::fanout::deliver`] encodes the push once per encoding its subscribers need
//!    ([`hub::encode::event_out`]; patches once per publication in a channel with delta
//!    subscribers, [`hub::delta`]), builds the whole unmasked WebSocket frame once, and queues
//!    that shared frame on every subscriber (`Conns::enqueue_as`; a connection that
//!    negotiated permessage-deflate gets the frame compressed, once per shard,
//!    [`transport::deflate::Compressor`]), each queue bounded by `client.queue_max_size` (a
//!    refusal closes with 3008 slow, after the loop).
//! 5. Queuing wakes the connection's writer (`server::conn::write_loop`). The pump handles
//!    every frame already in a lane before yielding, so writers run once per burst: a writer
//!    takes its whole queue (`Conn::take_batch`) and writes it with a single call. On WebSocket
//!    consecutive frames merge into one frame (newline-joined JSON; compressed frames go as
//!    they are); HTTP-streaming and SSE
//!    connections frame the payloads as lines or events ([`transport::stream`]).
//!
//! # Life of a subscribe with recovery
//!
//! 1. `server::read_loop` decodes a frame ([`protocol::json::decode_frame`]) and
//!    `server::conn::handle_commands` hands each command to
//!    [`shard::Shard::client_command`] → [`client::Clients::command`] → `Clients::subscribe`:
//!    token and permission checks (in a namespace with a subscribe proxy,
//!    `Clients::subscribe_proxy` asks the backend first, see Waiting), then
//!    `Clients::grant_subscribe`:
//!    the subscription's flags (`client::subscribe::sub_flags`),
//!    `Clients::add_sub` (the first local subscriber of the channel sends `ShardMsg::Interest` to
//!    H), and `Clients::subscribe_at_home`, which makes the hub keep the channel's events for
//!    this subscriber (`Hub::start_buffering`) and builds a [`broker::SubscribeCall`] with the
//!    history to read (`client::recovery::recover_from`, `Clients::recovery_query`).
//!    `Clients::ask_home` sends it and opens a flight ([`client::flight`]): the command's
//!    connection, the answer it waits for, and the closure that resumes it. The command
//!    returns `Step::Wait`; the reader takes no further command until the connection is idle
//!    again (`Shard::poll_idle`).
//! 2. On H, `Home::interest` records B and asks the broker to receive the channel
//!    ([`broker::Broker::want`]; Redis acknowledges only once its SUBSCRIBE is confirmed).
//!    `Home::subscribe` lets the subscribe pass the broker's gate
//!    ([`broker::Broker::gate`]: with Redis or NATS it waits until this node receives the
//!    channel, so no publication falls between the reply (or the position read) and the
//!    subscription), then
//!    `Home::subscribe_open` adds presence, emits the join and reads the position and the
//!    publications to recover ([`broker::Broker::read_position`]). The answer goes back on the
//!    main lane, behind every delivery H already sent to B.
//! 3. On B, `Mesh::answered` hands the answer to the flight (`Clients::answered`), which resumes
//!    `Clients::finish_subscribe`: `Clients::settle` decides the result (recovered, not, or
//!    error 112 when the client asked for it), the reply is queued, and `Clients::go_live` makes
//!    the subscriber live and hands over the events kept meanwhile with offsets above what the
//!    reply covered: nothing is lost or doubled. The flight ends, the connection is idle, the
//!    reader takes the next command.
//!
//! A shard that finds itself behind a reported offset, or sees an offset gap, lost a delivery:
//! its positioned subscribers get unsubscribe 2500 (disconnect 3010 for server-side ones) and
//! recover. The periodic position check (`Clients::check_positions`, every
//! `client.channel_position_check_delay`) asks the same question for quiet channels.
//! `shard::sim_tests` checks all of this against a model under random interleavings.
//!
//! # Waiting
//!
//! A command never blocks its shard: anything it waits for (another shard, a broker through
//! its home shard, a JWKS key fetch, an interest acknowledgement, a backend proxy) makes it a
//! flight that resumes on its connection's shard. A proxy call (`client::proxied`) queues a
//! `proxy::Job` in the shard's `proxy::Calls`; the shard's proxy task (`server::proxy`) runs
//! it on the shard's executor with its `proxy::http::Client` and hands the outcome back by
//! `Shard::proxy_answered`. Cross-shard sends never wait either: a full lane spills
//! into a per-peer FIFO drained in order by a forwarder task; past `shard::mesh::SPILL_MAX`
//! queued frames deliveries are dropped and counted (clients recover by offset) and requests
//! fail at once with a temporary error. A message a shard sends to itself is handled right
//! after the handler that sent it (`Shard::settle`), never inside it.
//!
//! # Layers
//!
//! Sans-IO (no sockets, testable without a reactor): [`protocol`], [`http`],
//! [`transport::websocket`], [`hub`], [`broker`] (except `broker::redis::io` and
//! `broker::nats::io`), [`channel`], [`client`], [`auth`] (key fetches run on a thread of
//! their own), [`config`], [`clock`], [`proxy`] (except `proxy::http`), and the parts of
//! [`shard`]. glommio lives in [`server`], `proxy::http`,
//! [`runtime`], `shard::mesh` (lanes, pump, forwarder), the broker link tasks, and the control
//! task of [`api::query`]. No file imports another in a cycle (`scripts/module-cycles.py`
//! checks it in the test command).

pub mod api;
pub mod auth;
pub mod broker;
pub mod channel;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod shard;
pub mod systemd;
pub mod tls;
pub mod transport;
