//! Clients: the connections part of a shard and the protocol commands that reach it.
//!
//! Owns, through its submodules: the connection table with each connection's session, outbound
//! queue and timers ([`conn`], [`queue`], [`session`], [`lifecycle`]), the commands in flight
//! ([`flight`]), and every client command (`connect`, `subscribe`, `publish`, … in `connect`,
//! [`subscribe`] (`sub_expiry` for expiry and `sub_refresh`), [`recovery`], [`query`],
//! [`command`], and `proxied` for the ones a backend proxy decides), server-side operations on
//! connections (`server_ops`) and emulated sessions ([`emulation`]).
//!
//! Handlers are methods of [`Clients`], a view that borrows only the parts a command touches:
//! the connections, the hub, the mesh (to ask other shards, home shards included: a command
//! never reads channel state directly, even when the home is this shard) and the flights. They
//! run to completion without I/O and leave their effects behind: queued bytes, woken tasks,
//! messages in the mesh. A command that must wait returns [`Step::Wait`] after opening a flight;
//! the flight resumes it when its answers arrive. The socket loops in `server` do the reading
//! and writing.
//!
//! Must not: perform I/O, block, or keep a reference into another shard's state.

pub mod command;
pub mod conn;
mod connect;
pub mod emulation;
pub mod flight;
pub mod lifecycle;
mod proxied;
pub mod query;
pub mod queue;
pub mod recovery;
pub mod rules;
pub mod send;
mod server_ops;
pub mod session;
mod sub_expiry;
pub mod subscribe;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;

use crate::auth::{KeysFetch, TokenVerifier};
use crate::channel::Namespaces;
use crate::client::conn::{ConnKey, Conns};
use crate::client::flight::{Flight, Flights};
use crate::clock::Clock;
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::{FrameType, ShardMetrics};
use crate::protocol::{codes, json, protobuf, Command, ReplyBody, Request};
use crate::proxy::{Calls, Proxies};
use crate::shard::id::ShardId;
use crate::shard::mesh::{Mesh, Waiter};
use crate::shard::msg::{Answer, Call};
use crate::transport::websocket;

/// Version string in `ConnectResult.version`.
pub const SERVER_VERSION: &str = concat!("rotor ", env!("CARGO_PKG_VERSION"));

/// What client commands read and never change: configuration, namespaces, token verifiers, and
/// the clock.
#[derive(Debug)]
pub struct Env {
    /// Immutable configuration shared by all shards.
    pub cfg: Arc<Config>,
    /// Resolved namespaces.
    pub namespaces: Arc<Namespaces>,
    /// Connection token verification (`client.token`).
    pub verifier: Arc<TokenVerifier>,
    /// Subscription token verification (`client.subscription_token` when enabled).
    pub sub_verifier: Arc<TokenVerifier>,
    /// The ping frames, built once and shared by every connection.
    pub pings: Pings,
    /// The shard's one time input.
    pub clock: Clock,
    /// Backend proxies (spec §9).
    pub proxies: Arc<Proxies>,
}

/// The protocol ping of each encoding as a shared WebSocket frame.
#[derive(Debug)]
pub struct Pings {
    /// JSON `{}`.
    pub json: Bytes,
    /// Protobuf: an empty delimited `Reply` (one zero byte).
    pub protobuf: Bytes,
}

impl Env {
    /// What commands read, for configuration `cfg`.
    pub fn new(
        cfg: Arc<Config>,
        namespaces: Arc<Namespaces>,
        verifiers: (Arc<TokenVerifier>, Arc<TokenVerifier>),
        proxies: Arc<Proxies>,
    ) -> Env {
        let pings = Pings {
            json: websocket::frame(websocket::OpCode::Text, json::PING),
            protobuf: websocket::frame(websocket::OpCode::Binary, protobuf::PING),
        };
        let (verifier, sub_verifier) = verifiers;
        Env { cfg, namespaces, verifier, sub_verifier, pings, clock: Clock::system(), proxies }
    }
}

/// What a command does once what it waited for is in: its answers, in the order asked.
pub type Resume = Box<dyn for<'c> FnOnce(&mut Clients<'c>, Vec<Option<Answer>>) -> Step>;

/// What the reader does after a command was handled.
#[derive(Debug)]
pub enum Step {
    /// Take the next command.
    Next,
    /// The connection is closing: take no more commands.
    Stop,
    /// The command is in flight: take the next one once the connection is idle again
    /// (`Shard::poll_idle`).
    Wait,
    /// The command waits for a JWKS key fetch: await `fetch`, report it with
    /// `Shard::keys_fetched(flight)`, then wait as for [`Step::Wait`].
    Fetch {
        /// The fetch.
        fetch: KeysFetch,
        /// The flight that runs the command again.
        flight: u64,
    },
    /// A token names a key not fetched yet (only between a handler and the dispatcher, which
    /// turns it into [`Step::Fetch`]).
    KeysPending {
        /// The token.
        token: String,
        /// A subscription token (else a connection token).
        subscription: bool,
    },
}

/// The parts of a shard a client command may touch.
pub struct Clients<'a> {
    /// Configuration, namespaces, verifiers.
    pub env: &'a Env,
    /// This shard's connections.
    pub conns: &'a mut Conns,
    /// This shard's subscriber index.
    pub hub: &'a mut Hub,
    /// Messages to other shards (and to this one's home channels).
    pub mesh: &'a mut Mesh,
    /// Commands in flight.
    pub flights: &'a mut Flights<Resume>,
    /// This shard's metrics.
    pub metrics: &'a mut ShardMetrics,
    /// Backend proxy calls waiting for the shard's HTTP client.
    pub calls: &'a mut Calls,
    /// Set while a command runs again after a JWKS key fetch: a key still missing is then an
    /// invalid token instead of another fetch.
    pub keys_retry: bool,
}

impl Clients<'_> {
    /// Asks shards for answers and parks `key`'s command until all are in; `resume` then gets
    /// them in the order of `calls`.
    pub fn wait_for(&mut self, key: ConnKey, calls: Vec<(ShardId, Call)>, resume: Resume) -> Step {
        let token = self.park(key, calls.len(), resume);
        for (index, (to, call)) in calls.into_iter().enumerate() {
            let index = u16::try_from(index).unwrap_or(u16::MAX);
            self.mesh.call(to, call, Waiter::Flight { token, index });
        }
        Step::Wait
    }

    /// Opens a flight that holds `key`'s reader until `resume` finishes the command; the flight
    /// lands after `answers` answers (or by `land` when it waits for something else).
    pub(super) fn park(&mut self, key: ConnKey, answers: usize, resume: Resume) -> u64 {
        let token = self.flights.open(Some(key), true, answers, resume);
        if let Some(c) = self.conns.get_mut(key) {
            c.busy = true;
        }
        token
    }

    /// Asks a channel's home shard and parks `key`'s command until it answers.
    pub fn ask_home(&mut self, key: ConnKey, channel: &str, call: Call, resume: Resume) -> Step {
        let home = self.mesh.home_of(channel);
        self.wait_for(key, vec![(home, call)], resume)
    }

    /// Asks a channel's home shard for something no reader waits on (a server-side
    /// subscription, a position check): `resume` runs when it answers.
    pub fn ask_home_detached(
        &mut self,
        key: Option<ConnKey>,
        channel: &str,
        call: Call,
        resume: Resume,
    ) {
        let token = self.flights.open(key, false, 1, resume);
        let home = self.mesh.home_of(channel);
        self.mesh.call(home, call, Waiter::Flight { token, index: 0 });
    }

    /// An answer of a flight arrived; resumes the flight once all are in.
    pub fn answered(&mut self, token: u64, index: u16, answer: Answer) {
        if let Some(flight) = self.flights.answer(token, index, answer) {
            self.resume(flight);
        }
    }

    /// A flight waiting for something other than answers may go on.
    pub fn land(&mut self, token: u64) {
        if let Some(flight) = self.flights.land(token) {
            self.resume(flight);
        }
    }

    /// Runs what a flight waited to do. When that finishes the command (rather than waiting
    /// again), its connection takes the next command.
    fn resume(&mut self, flight: Flight<Resume>) {
        let Flight { conn, blocks, resume, answers, .. } = flight;
        let step = resume(self, answers);
        let Some(key) = conn.filter(|_| blocks) else { return };
        match step {
            Step::Wait | Step::Fetch { .. } => {}
            Step::Next | Step::Stop | Step::KeysPending { .. } => {
                if let Some(c) = self.conns.get_mut(key) {
                    c.busy = false;
                    c.wake_reader();
                }
            }
        }
    }

    /// Handles one decoded command from a connection.
    pub fn command(&mut self, key: ConnKey, cmd: Command) -> Step {
        let Some(conn) = self.conns.get_mut(key) else { return Step::Stop };
        if conn.closing.is_some() {
            return Step::Stop;
        }
        let connected = conn.session().is_some();
        let id = cmd.id;
        let needs_id = !matches!(cmd.request, Request::Pong | Request::Send(_));
        if needs_id && id == 0 {
            return self.bad_request(key);
        }
        if needs_id && !self.keys_retry {
            // Timed until its reply goes out (`command_done`); a rerun after a key fetch
            // keeps the first start.
            let started = (FrameType::of_request(&cmd.request), self.conns.micros());
            if let Some(c) = self.conns.get_mut(key) {
                c.command = Some(started);
            }
        }
        // Commands that verify a token may have to wait for a key fetch and run again.
        let retry = match &cmd.request {
            Request::Connect(_) | Request::Refresh(_) | Request::SubRefresh(_) => Some(cmd.clone()),
            Request::Subscribe(r) if !r.token.is_empty() => Some(cmd.clone()),
            _ => None,
        };
        match (self.dispatch(key, id, connected, cmd), retry) {
            (Step::KeysPending { token, subscription }, Some(retry)) => {
                self.fetch_keys(key, &token, subscription, retry)
            }
            (Step::KeysPending { .. }, None) => Step::Next,
            (step, _) => step,
        }
    }

    /// A token names a key not fetched yet: the command becomes a flight that runs it again
    /// once the fetch ended (at once when no fetch is needed any more).
    fn fetch_keys(&mut self, key: ConnKey, token: &str, subscription: bool, cmd: Command) -> Step {
        let verifier = if subscription { &self.env.sub_verifier } else { &self.env.verifier };
        let fetch = verifier.fetch_keys(token);
        let resume: Resume = Box::new(move |c: &mut Clients<'_>, _| {
            c.keys_retry = true;
            let step = c.command(key, cmd);
            c.keys_retry = false;
            step
        });
        let flight = self.park(key, 0, resume);
        match fetch {
            Some(fetch) => Step::Fetch { fetch, flight },
            None => {
                self.land(flight);
                Step::Wait
            }
        }
    }

    fn dispatch(&mut self, key: ConnKey, id: u32, connected: bool, cmd: Command) -> Step {
        match cmd.request {
            Request::Connect(req) if !connected => self.connect(key, id, req),
            Request::Connect(_) => self.bad_request(key),
            _ if !connected => self.bad_request(key),
            Request::Pong => {
                let Some(conn) = self.conns.get(key) else { return Step::Stop };
                if !conn.awaiting_pong {
                    return self.bad_request(key);
                }
                self.ponged(key);
                Step::Next
            }
            Request::Ping => self.bad_request(key),
            Request::Send(_) => {
                self.disconnect(key, codes::DISCONNECT_NOT_AVAILABLE);
                Step::Stop
            }
            Request::Subscribe(req) => self.subscribe(key, id, req),
            Request::Unsubscribe(req) => {
                if req.channel.is_empty() {
                    return self.bad_request(key);
                }
                self.drop_sub(key, &req.channel);
                self.reply(key, id, &ReplyBody::Unsubscribe);
                Step::Next
            }
            Request::Publish(req) => self.client_publish(key, id, req),
            Request::Refresh(req) => self.refresh(key, id, &req.token),
            Request::Presence(r) => self.client_presence(key, id, &r.channel, false),
            Request::PresenceStats(r) => self.client_presence(key, id, &r.channel, true),
            Request::History(r) => self.client_history(key, id, r),
            Request::SubRefresh(r) => self.sub_refresh(key, id, r),
            Request::Rpc(r) => {
                match rules::rpc_route(&self.env.cfg.rpc, &self.env.proxies, &r.method) {
                    rules::RpcRoute::Reply(body) => {
                        self.reply(key, id, &body);
                        Step::Next
                    }
                    rules::RpcRoute::Proxy(proxy) => self.rpc_proxy(key, id, &r, proxy),
                }
            }
        }
    }

    /// A protocol violation: close with 3501.
    pub fn bad_request(&mut self, key: ConnKey) -> Step {
        self.disconnect(key, codes::DISCONNECT_BAD_REQUEST);
        Step::Stop
    }
}
