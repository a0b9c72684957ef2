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

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::subscribe::{PendingSub, ServerSub, SubReply};
use super::{
    channel_error, unix_now, Resume, Session, State, Step, Timer, TimerKind, SERVER_VERSION,
};
use crate::auth::{self, Expiry, SubscribeOverrides, TokenError};
use crate::broker::control::{ConnFilter, ConnsOp};
use crate::channel::{self, Subject};
use crate::hub::ConnKey;
use crate::protocol::{codes, ConnectRequest, ConnectResult, RawJson, ReplyBody, SubscribeRequest};
use crate::shard::id::home_of;
use crate::shard::id::{Lane, RequestId};
use crate::shard::msg::{Answer, Call, Cast, ShardMsg};
use crate::shard::{after, Shard};
use crate::transport::Transport;

/// A connect that passed authentication, waiting for admission.
#[derive(Debug)]
pub struct PendingConnect {
    id: u32,
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
pub struct ConnectWait {
    id: u32,
    result: ConnectResult,
    subs: Vec<PendingSub>,
}

impl Shard {
    /// `connect`: verify credentials, collect server-side subscriptions, then admit.
    pub(super) fn connect(&mut self, key: ConnKey, id: u32, req: ConnectRequest) -> Step {
        let client_cfg = &self.cfg.client;
        let insecure = client_cfg.insecure;
        let now = unix_now();
        let mut subs: Vec<ServerSub> = Vec::new();
        let (user, conn_info, expire_at, fingerprint) = if req.token.is_empty() {
            if !(insecure || client_cfg.allow_anonymous_connect_without_token) {
                return self.bad_request(key);
            }
            (String::new(), None, None, 0)
        } else {
            match self.verifier.verify_connection(&req.token, now) {
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
                    let fingerprint = super::token_channels(&claims);
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
                    (claims.user, claims.info.map(RawJson), expiry, fingerprint)
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
        // Token channels must all resolve (else 102).
        for s in &subs {
            if let Err(e) = self.namespaces.resolve(&s.channel) {
                self.reply_error(key, id, channel_error(e));
                return Step::Next;
            }
        }
        let personal = &self.cfg.client.subscribe_to_user_personal_channel;
        if personal.enabled && !user.is_empty() {
            let name = if personal.personal_channel_namespace.is_empty() {
                format!("{}{user}", self.cfg.channel.user_boundary)
            } else {
                format!(
                    "{}{}{}{user}",
                    personal.personal_channel_namespace,
                    self.cfg.channel.namespace_boundary,
                    self.cfg.channel.user_boundary
                )
            };
            subs.push(ServerSub::plain(Arc::from(name.as_str())));
        }
        // Channels the client lists to get them back (with positions) are accepted only where
        // it could subscribe itself (spec §5.5).
        let who = Subject { user: &user, insecure };
        for (ch, _) in &req.subs {
            if subs.iter().any(|s| *s.channel == **ch) {
                continue;
            }
            let allowed = self
                .namespaces
                .resolve(ch)
                .is_ok_and(|r| !r.private && channel::check_subscribe(&r, &who, false).is_ok());
            if allowed {
                subs.push(ServerSub::plain(Arc::from(ch.as_str())));
            }
        }
        let mut seen = std::collections::HashSet::new();
        subs.retain(|s| seen.insert(Arc::clone(&s.channel)));
        let limit = self.cfg.client.channel_limit;
        if limit > 0 && subs.len() > limit {
            self.disconnect(key, codes::DISCONNECT_CHANNEL_LIMIT);
            return Step::Stop;
        }
        let pending = PendingConnect {
            id,
            user: Arc::from(user.as_str()),
            conn_info,
            expire_at,
            subs,
            positions: req.subs,
            counted: false,
            token_channels: fingerprint,
        };
        let user_limit = self.cfg.client.user_connection_limit;
        if user_limit > 0 && !pending.user.is_empty() {
            let call = Call::UserConnect { user: Arc::clone(&pending.user), limit: user_limit };
            let req = self.call(home_of(&pending.user, self.count), call);
            return Step::AwaitAnswer { req, then: Resume::Admit(Box::new(pending)) };
        }
        self.establish(key, pending)
    }

    /// The user's home shard answered the per-user limit check.
    pub(super) fn admit(
        &mut self,
        key: ConnKey,
        mut pending: PendingConnect,
        answer: Option<Answer>,
    ) -> Step {
        match answer {
            Some(Answer::Admitted(true)) => {
                pending.counted = true;
                if self.conn_mut(key).is_some_and(|c| c.closing.is_none()) {
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

    /// Tells a user's home shard that one of its counted connections is gone.
    pub(crate) fn user_gone(&mut self, user: &Arc<str>) {
        let cast = Cast::UserGone { user: Arc::clone(user) };
        self.send(Lane::Main, home_of(user, self.count), ShardMsg::Cast(Box::new(cast)));
    }

    /// Makes the session, starts timers and server-side subscriptions; the reply waits for the
    /// subscriptions' home shards (`ConnectWait`).
    fn establish(&mut self, key: ConnKey, pending: PendingConnect) -> Step {
        let PendingConnect {
            id,
            user,
            conn_info,
            expire_at,
            subs,
            positions,
            counted,
            token_channels,
        } = pending;
        let limit = self.cfg.client.connection_limit;
        let before = self.connections.fetch_add(1, Ordering::Relaxed);
        if limit > 0 && before >= limit {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            if counted {
                self.user_gone(&user);
            }
            self.disconnect(key, codes::DISCONNECT_CONNECTION_LIMIT);
            return Step::Stop;
        }
        let now = unix_now();
        let client = uuid::Uuid::new_v4();
        let ping = self.cfg.client.ping_interval;
        let pong = self.cfg.client.pong_timeout;
        let Some(transport) = self.conn_mut(key).map(|c| c.transport) else { return Step::Stop };
        // With native WebSocket pings the protocol advertises no app-level ping at all;
        // unidirectional clients get pings but cannot answer them.
        let app_ping = !matches!(transport, Transport::WebSocket { native_ping: true });
        let mut result = ConnectResult {
            client: client.to_string(),
            version: SERVER_VERSION.to_string(),
            ping: if app_ping { u32::try_from(ping.as_secs()).unwrap_or(u32::MAX) } else { 0 },
            pong: app_ping && !transport.unidirectional() && !ping.is_zero() && !pong.is_zero(),
            ..ConnectResult::default()
        };
        if transport.emulation() {
            result.session = self.open_session(key);
            result.node = crate::node::get().uid.clone();
        } else if transport.unidirectional() {
            result.session = uuid::Uuid::new_v4().to_string();
        }
        if let Some(at) = expire_at {
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
        };
        let Some(conn) = self.conn_mut(key) else { return Step::Stop };
        conn.state = State::Connected(session);
        if !ping.is_zero() {
            // First ping at a random moment in [interval/2, interval] so pings of connections
            // accepted together do not all fire in the same tick.
            let half = ping / 2;
            let jitter =
                Duration::from_millis(rand::rng().random_range(0..=half.as_millis() as u64));
            self.timers.push(Timer { at: after(half + jitter), key, kind: TimerKind::Ping });
        }
        if let Some(at) = expire_at {
            self.arm_expiry(key, at, now);
        }
        let personal = &self.cfg.client.subscribe_to_user_personal_channel;
        if personal.enabled && personal.single_connection && !user.is_empty() {
            // Older connections of this user, on every shard, make way for this one.
            let op = ConnsOp::Disconnect {
                filter: ConnFilter { user: user.to_string(), ..ConnFilter::default() },
                whitelist: vec![client.to_string()],
                disconnect: codes::DISCONNECT_CONNECTION_LIMIT,
            };
            self.conns_everywhere(&op);
        }
        let mut reqs: Vec<RequestId> = Vec::with_capacity(subs.len());
        let mut waiting = Vec::with_capacity(subs.len());
        for spec in subs {
            let position = positions.iter().find(|(c, _)| **c == *spec.channel).map(|(_, r)| r);
            let Some((call, sub)) =
                self.prepare_server_sub(key, &spec, position, 0, SubReply::Connect)
            else {
                continue;
            };
            reqs.push(self.call_home(&spec.channel, call));
            waiting.push(sub);
        }
        if waiting.is_empty() {
            self.reply(key, id, &ReplyBody::Connect(result));
            return Step::Next;
        }
        Step::AwaitConnect { reqs, wait: Box::new(ConnectWait { id, result, subs: waiting }) }
    }

    /// Every server-side subscription's home shard answered: reply to `connect` with their
    /// results, then hand over what each kept meanwhile.
    pub fn finish_connect(
        &mut self,
        key: ConnKey,
        wait: ConnectWait,
        answers: Vec<Option<Answer>>,
    ) -> Step {
        let ConnectWait { id, mut result, subs } = wait;
        let mut live = Vec::with_capacity(subs.len());
        for (pending, answer) in subs.into_iter().zip(answers) {
            match self.settle(key, pending, answer) {
                super::subscribe::Settled::Gone => {}
                super::subscribe::Settled::Failed | super::subscribe::Settled::Unrecovered(_) => {
                    self.disconnect(key, codes::DISCONNECT_SERVER_ERROR);
                    return Step::Stop;
                }
                super::subscribe::Settled::Done(done) => {
                    let mut done = *done;
                    let r = std::mem::take(&mut done.result);
                    result.subs.push((done.channel.to_string(), r));
                    live.push(done);
                }
            }
        }
        // `go_live` gives the place up for a connection that closed meanwhile (or whose reply
        // overflowed its queue).
        if self.conn_mut(key).is_some_and(|c| c.closing.is_none()) {
            self.reply(key, id, &ReplyBody::Connect(result));
        }
        for done in live {
            self.go_live(key, done);
        }
        Step::Next
    }
}
