//! The `connect` command: credentials, connection limits, and the server-side subscriptions a
//! connection starts with (token `channels`/`subs`, the user's personal channel, and channels
//! the client lists in `ConnectRequest.subs` to recover them), spec §2.10, §4.2, §4.6, §5.5.
//!
//! Owns: turning a connect request into a session. A per-user connection limit asks the user's
//! home shard (users are spread over shards like channels), server-side subscriptions ask each
//! channel's home shard; the connect reply waits for all of them, so it carries every
//! subscription's position and recovered publications.
//!
//! Must not: write anything but the reply before the reply, or count a connection twice.

use std::sync::Arc;

use crate::auth::{self, Expiry, SubscribeOverrides, TokenError};
use crate::broker::control::{ConnFilter, ConnsOp};
use crate::channel::{self, Subject};
use crate::client::conn::ConnKey;
use crate::client::emulation::session_id;
use crate::client::recovery::Settled;
use crate::client::recovery::{PendingSub, SubReply};
use crate::client::session::Session;
use crate::client::subscribe::ServerSub;
use crate::client::{rules, Clients, Resume, Step, SERVER_VERSION};
use crate::metrics::{ClientLabel, TransportLabel};
use crate::protocol::{codes, ConnectRequest, ConnectResult, RawJson, ReplyBody, SubscribeRequest};
use crate::shard::id::ShardId;
use crate::shard::msg::{Answer, Call};
use crate::transport::Transport;

/// Who a connect says the client is: from its token, the connect proxy, or nobody (anonymous).
#[derive(Debug, Default)]
pub struct Credentials {
    /// User id (empty: anonymous).
    pub user: String,
    /// Connection info.
    pub conn_info: Option<RawJson>,
    /// Unix seconds when the connection expires.
    pub expire_at: Option<i64>,
    /// Server-side subscriptions it starts with.
    pub subs: Vec<ServerSub>,
    /// See `Session::token_channels`.
    pub token_channels: u64,
    /// Channels the client lists in `ConnectRequest.subs` are subscribed where it could
    /// subscribe itself (token and anonymous connects; not proxy ones, as upstream).
    pub client_channels: bool,
    /// `ConnectResult.data` (connect proxy).
    pub data: Option<RawJson>,
    /// The refresh proxy renews the expiry (else the client refreshes with a token).
    pub server_refresh: bool,
    /// `meta` (token claim or connect proxy): server-side only, sent to proxies that ask.
    pub meta: Option<Box<serde_json::value::RawValue>>,
}

/// A token's raw JSON claim as the text proxies forward.
pub fn raw_value(bytes: &[u8]) -> Option<Box<serde_json::value::RawValue>> {
    let text = std::str::from_utf8(bytes).ok()?;
    serde_json::value::RawValue::from_string(text.to_owned()).ok()
}

impl Credentials {
    /// An anonymous connection.
    pub fn anonymous() -> Credentials {
        Credentials { client_channels: true, ..Credentials::default() }
    }
}

/// A connect that passed authentication, waiting for admission.
#[derive(Debug)]
struct PendingConnect {
    id: u32,
    client: uuid::Uuid,
    data: Option<RawJson>,
    server_refresh: bool,
    user: Arc<str>,
    conn_info: Option<RawJson>,
    expire_at: Option<i64>,
    subs: Vec<ServerSub>,
    /// `ConnectRequest.subs`: recovery positions by channel.
    positions: Vec<(String, SubscribeRequest)>,
    /// The user's home shard counted this connection.
    counted: bool,
    /// See `Session::token_channels`.
    token_channels: u64,
}

/// A connect reply waiting for the home shards of its server-side subscriptions.
#[derive(Debug)]
struct ConnectWait {
    id: u32,
    result: ConnectResult,
    subs: Vec<PendingSub>,
}

impl Clients<'_> {
    /// `connect`: verify credentials, collect server-side subscriptions, then admit.
    pub(super) fn connect(&mut self, key: ConnKey, id: u32, req: ConnectRequest) -> Step {
        if let Some(c) = self.conns.get_mut(key) {
            c.label = ClientLabel::new(&req.name, &req.version);
        }
        let client_cfg = &self.env.cfg.client;
        let insecure = client_cfg.insecure;
        let now = self.env.clock.unix_secs();
        let mut subs: Vec<ServerSub> = Vec::new();
        if req.token.is_empty() {
            if let Some(proxy) = self.env.proxies.connect {
                return self.connect_proxy(key, id, &req, proxy);
            }
            if !(insecure || client_cfg.allow_anonymous_connect_without_token) {
                return self.bad_request(key);
            }
            return self.connect_as(
                key,
                id,
                uuid::Uuid::new_v4(),
                Credentials::anonymous(),
                req.subs,
            );
        }
        let (user, conn_info, expire_at, fingerprint, meta) = {
            match self.env.verifier.verify_connection(&req.token, now) {
                Ok(claims) => {
                    let expiry = match auth::connection_expiry(&claims, now) {
                        _ if insecure => None,
                        Expiry::Never => None,
                        Expiry::At(at) => Some(at),
                        Expiry::AlreadyExpired => {
                            self.reply_error(key, id, codes::ERROR_EXPIRED);
                            return Step::Next;
                        }
                    };
                    if claims.user.is_empty() && client_cfg.disallow_anonymous_connection_tokens {
                        self.disconnect(key, codes::DISCONNECT_PERMISSION_DENIED);
                        return Step::Stop;
                    }
                    let fingerprint = rules::token_channels(&claims);
                    // `subs` replaces `channels` when present (spec §4.2).
                    match claims.subs {
                        Some(list) => subs.extend(list.into_iter().map(|s| ServerSub {
                            channel: Arc::from(s.channel.as_str()),
                            info: s.info.map(RawJson),
                            data: s.data.map(RawJson),
                            overrides: s.overrides,
                        })),
                        None => subs.extend(claims.channels.iter().map(|c| ServerSub {
                            channel: Arc::from(c.as_str()),
                            info: None,
                            data: None,
                            overrides: SubscribeOverrides::default(),
                        })),
                    }
                    let meta = claims.meta.as_deref().and_then(raw_value);
                    (claims.user, claims.info.map(RawJson), expiry, fingerprint, meta)
                }
                Err(TokenError::Expired) => {
                    self.reply_error(key, id, codes::ERROR_TOKEN_EXPIRED);
                    return Step::Next;
                }
                Err(TokenError::BadConnectionInfo) => {
                    self.reply_error(key, id, codes::ERROR_INTERNAL);
                    return Step::Next;
                }
                Err(TokenError::KeysPending) if !self.keys_retry => {
                    return Step::KeysPending { token: req.token, subscription: false };
                }
                Err(TokenError::Invalid(_) | TokenError::KeysPending) => {
                    self.disconnect(key, codes::DISCONNECT_INVALID_TOKEN);
                    return Step::Stop;
                }
            }
        };
        let creds = Credentials {
            user,
            conn_info,
            expire_at,
            subs,
            token_channels: fingerprint,
            client_channels: true,
            data: None,
            // As upstream: with a refresh proxy every connection is refreshed by the server.
            server_refresh: self.env.proxies.refresh.is_some(),
            meta,
        };
        self.connect_as(key, id, uuid::Uuid::new_v4(), creds, req.subs)
    }

    /// Continues a connect whose credentials are known: server-side subscriptions (they must
    /// all resolve, else 102), the personal channel, client-listed channels, limits, admission.
    pub(super) fn connect_as(
        &mut self,
        key: ConnKey,
        id: u32,
        client: uuid::Uuid,
        creds: Credentials,
        positions: Vec<(String, SubscribeRequest)>,
    ) -> Step {
        let Credentials {
            user,
            conn_info,
            expire_at,
            mut subs,
            token_channels,
            client_channels,
            data,
            server_refresh,
            meta,
        } = creds;
        self.keep_meta(key, meta);
        let insecure = self.env.cfg.client.insecure;
        if let Some(at) = expire_at {
            if at <= self.env.clock.unix_secs() {
                self.reply_error(key, id, codes::ERROR_EXPIRED);
                return Step::Next;
            }
        }
        for s in &subs {
            if let Err(e) = self.env.namespaces.resolve(&s.channel) {
                self.reply_error(key, id, rules::channel_error(e));
                return Step::Next;
            }
        }
        let cfg = &self.env.cfg;
        let personal = &cfg.client.subscribe_to_user_personal_channel;
        if personal.enabled && !user.is_empty() {
            let name = if personal.personal_channel_namespace.is_empty() {
                format!("{}{user}", cfg.channel.user_boundary)
            } else {
                format!(
                    "{}{}{}{user}",
                    personal.personal_channel_namespace,
                    cfg.channel.namespace_boundary,
                    cfg.channel.user_boundary
                )
            };
            subs.push(ServerSub::plain(Arc::from(name.as_str())));
        }
        // Channels the client lists to get them back (with positions) are accepted only where
        // it could subscribe itself (spec §5.5).
        let who = Subject { user: &user, insecure };
        for (ch, _) in positions.iter().filter(|_| client_channels) {
            if subs.iter().any(|s| *s.channel == **ch) {
                continue;
            }
            let allowed = self
                .env
                .namespaces
                .resolve(ch)
                .is_ok_and(|r| !r.private && channel::check_subscribe(&r, &who, false).is_ok());
            if allowed {
                subs.push(ServerSub::plain(Arc::from(ch.as_str())));
            }
        }
        let mut seen = std::collections::HashSet::new();
        subs.retain(|s| seen.insert(Arc::clone(&s.channel)));
        let limit = self.env.cfg.client.channel_limit;
        if limit > 0 && subs.len() > limit {
            self.disconnect(key, codes::DISCONNECT_CHANNEL_LIMIT);
            return Step::Stop;
        }
        let pending = PendingConnect {
            id,
            client,
            data,
            server_refresh,
            user: Arc::from(user.as_str()),
            conn_info,
            expire_at,
            subs,
            positions,
            counted: false,
            token_channels,
        };
        let user_limit = self.env.cfg.client.user_connection_limit;
        if user_limit > 0 && !pending.user.is_empty() {
            let call = Call::AdmitUser { user: Arc::clone(&pending.user), limit: user_limit };
            let home = self.mesh.home_of(&pending.user);
            let resume: Resume =
                Box::new(move |c: &mut Clients<'_>, answers| c.admit(key, pending, answers));
            return self.wait_for(key, vec![(home, call)], resume);
        }
        self.establish(key, pending)
    }

    /// The user's home shard answered the per-user limit check.
    fn admit(
        &mut self,
        key: ConnKey,
        mut pending: PendingConnect,
        answers: Vec<Option<Answer>>,
    ) -> Step {
        match answers.into_iter().next().flatten() {
            Some(Answer::Admitted(true)) => {
                pending.counted = true;
                if self.conns.get(key).is_some_and(|c| c.closing.is_none()) {
                    self.establish(key, pending)
                } else {
                    // Closed while waiting: give the slot back.
                    self.user_gone(&pending.user);
                    Step::Stop
                }
            }
            Some(Answer::Admitted(false)) => {
                self.disconnect(key, codes::DISCONNECT_CONNECTION_LIMIT);
                Step::Stop
            }
            _ => {
                self.reply_error(key, pending.id, codes::ERROR_INTERNAL);
                Step::Next
            }
        }
    }

    /// An admin UI tail (`/admin/tail`, authorised by the admin session): an anonymous
    /// connection subscribed server-side to `channel` with its namespace's options; the
    /// publications reach the UI as bare pushes.
    pub fn admin_tail(&mut self, key: ConnKey, channel: Arc<str>) -> Step {
        let creds =
            Credentials { subs: vec![ServerSub::plain(channel)], ..Credentials::anonymous() };
        self.connect_as(key, 1, uuid::Uuid::new_v4(), creds, Vec::new())
    }

    /// Makes the session, starts timers and server-side subscriptions; the reply waits for the
    /// subscriptions' home shards (`ConnectWait`).
    fn establish(&mut self, key: ConnKey, pending: PendingConnect) -> Step {
        let PendingConnect {
            id,
            client,
            data,
            server_refresh,
            user,
            conn_info,
            expire_at,
            subs,
            positions,
            counted,
            token_channels,
        } = pending;
        if !self.conns.count_connected(self.env.cfg.client.connection_limit) {
            self.metrics.connection_limit += 1;
            if counted {
                self.user_gone(&user);
            }
            self.disconnect(key, codes::DISCONNECT_CONNECTION_LIMIT);
            return Step::Stop;
        }
        let now = self.env.clock.unix_secs();
        let ping = self.env.cfg.client.ping_interval;
        let pong = self.env.cfg.client.pong_timeout;
        let Some(transport) = self.conns.get(key).map(|c| c.transport) else { return Step::Stop };
        // With native WebSocket pings the protocol advertises no app-level ping at all;
        // unidirectional clients get pings but cannot answer them.
        let app_ping = !matches!(transport, Transport::WebSocket { native_ping: true });
        let mut result = ConnectResult {
            client: client.to_string(),
            version: SERVER_VERSION.to_string(),
            ping: if app_ping { u32::try_from(ping.as_secs()).unwrap_or(u32::MAX) } else { 0 },
            pong: app_ping && !transport.unidirectional() && !ping.is_zero() && !pong.is_zero(),
            data,
            // `client.connect_include_server_time`: SDKs estimate their clock offset from it.
            time: if self.env.cfg.client.connect_include_server_time {
                i64::try_from(self.env.clock.unix_ms()).unwrap_or(i64::MAX)
            } else {
                0
            },
            ..ConnectResult::default()
        };
        if transport.emulation() {
            result.session = session_id(self.mesh.id(), self.conns.open_session(key));
            result.node.clone_from(&crate::node::get().uid);
        } else if transport.unidirectional() {
            result.session = uuid::Uuid::new_v4().to_string();
        }
        // With the refresh proxy the server renews the expiry itself; the client is not told.
        if let Some(at) = expire_at.filter(|_| !server_refresh) {
            result.expires = true;
            result.ttl = u32::try_from(at - now).unwrap_or(u32::MAX);
        }
        let session = Session {
            client,
            user: Arc::clone(&user),
            conn_info,
            subs: Vec::with_capacity(subs.len()),
            expire_at,
            counted,
            token_channels,
            server_refresh,
            refreshing: false,
        };
        if !self.conns.set_connected(key, session) {
            return Step::Stop;
        }
        let Some(conn) = self.conns.get(key) else { return Step::Stop };
        let (t, label) = (TransportLabel::from(transport) as usize, conn.label.0 as usize);
        self.metrics.connections_accepted[t][label] += 1;
        self.metrics.action("add_client");
        self.start_pings(key, self.env.clock.now());
        match expire_at {
            Some(at) if server_refresh => self.arm_refresh(key, at, now),
            Some(at) => self.arm_expiry(key, at, now),
            None => {}
        }
        let personal = &self.env.cfg.client.subscribe_to_user_personal_channel;
        if personal.enabled && personal.single_connection && !user.is_empty() {
            // Older connections of this user, on every shard, make way for this one.
            let op = ConnsOp::Disconnect {
                filter: ConnFilter { user: user.to_string(), ..ConnFilter::default() },
                whitelist: vec![client.to_string()],
                disconnect: codes::DISCONNECT_CONNECTION_LIMIT,
            };
            self.apply_everywhere(&op);
        }
        let mut calls: Vec<(ShardId, Call)> = Vec::with_capacity(subs.len());
        let mut waiting = Vec::with_capacity(subs.len());
        for spec in subs {
            let position = positions.iter().find(|(c, _)| **c == *spec.channel).map(|(_, r)| r);
            let Some((call, sub)) =
                self.prepare_server_sub(key, &spec, position, 0, SubReply::Connect)
            else {
                continue;
            };
            calls.push((self.mesh.home_of(&spec.channel), call));
            waiting.push(sub);
        }
        if waiting.is_empty() {
            self.reply(key, id, &ReplyBody::Connect(result));
            return Step::Next;
        }
        let wait = ConnectWait { id, result, subs: waiting };
        let resume: Resume =
            Box::new(move |c: &mut Clients<'_>, answers| c.finish_connect(key, wait, answers));
        self.wait_for(key, calls, resume)
    }

    /// Every server-side subscription's home shard answered: reply to `connect` with their
    /// results, then hand over what each kept meanwhile.
    fn finish_connect(
        &mut self,
        key: ConnKey,
        wait: ConnectWait,
        answers: Vec<Option<Answer>>,
    ) -> Step {
        let ConnectWait { id, mut result, subs } = wait;
        let mut live = Vec::with_capacity(subs.len());
        for (pending, answer) in subs.into_iter().zip(answers) {
            match self.settle(key, pending, answer) {
                Settled::Gone => {}
                Settled::Failed | Settled::Unrecovered(_) => {
                    self.disconnect(key, codes::DISCONNECT_SERVER_ERROR);
                    return Step::Stop;
                }
                Settled::Done(done) => {
                    let mut done = *done;
                    let r = std::mem::take(&mut done.result);
                    result.subs.push((done.channel.to_string(), r));
                    live.push(done);
                }
            }
        }
        // `go_live` gives the place up for a connection that closed meanwhile (or whose reply
        // overflowed its queue).
        if self.conns.get(key).is_some_and(|c| c.closing.is_none()) {
            self.reply(key, id, &ReplyBody::Connect(result));
        }
        for done in live {
            self.go_live(key, done);
        }
        Step::Next
    }
}
