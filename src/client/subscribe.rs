//! Subscriptions of one connection: the `subscribe`, `unsubscribe` and `sub_refresh` commands,
//! the options a subscription gets (presence, join/leave, positioning, recovery), and recovery
//! itself (spec §5.4, §6.3–6.5, §7).
//!
//! Owns: a connection's [`Sub`] entries and the shard-local half of a subscription. What is
//! channel-global (presence, the stream, join/leave fan-out) is asked of the channel's home shard
//! with one `Call::Subscribe`; until it answers, the hub keeps the channel's events for this
//! subscriber, so the reply goes out first and nothing published meanwhile is lost or doubled.
//!
//! Must not: read another shard's state, or write a publication of a channel to a client before
//! that client's subscribe reply.

use std::sync::Arc;
use std::time::Duration;

use super::{channel_error, history_policy, unix_now, Resume, Step, Then, Timer, TimerKind};
use crate::auth::{self, Expiry, SubscribeOverrides, TokenError};
use crate::broker::stream::{HistoryPolicy, HistoryQuery, Position};
use crate::broker::Reply;
use crate::broker::{Event, SubscribeCall};
use crate::channel::{self, Resolved, Subject};
use crate::client::State;
use crate::hub::ConnKey;
use crate::protocol::{
    codes, ClientInfo, Publication, PushBody, RawJson, ReplyBody, SubRefreshRequest,
    SubRefreshResult, SubscribePush, SubscribeRequest, SubscribeResult,
};
use crate::shard::msg::{Answer, Call, Cast};
use crate::shard::{after, Continue, Shard};

/// `SubscribeRequest.flag` bit: answer 112 instead of `recovered: false`.
const FLAG_REJECT_UNRECOVERED: i64 = 2;

/// What a subscription does, decided once at subscribe time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubFlags(u16);

impl SubFlags {
    /// The subscriber tracks its stream position (offset and epoch).
    pub const POSITIONED: u16 = 1;
    /// The subscriber may recover missed publications on resubscribe.
    pub const RECOVERABLE: u16 = 1 << 1;
    /// Made by the server (token `channels`/`subs`, API `subscribe`): failures disconnect.
    pub const SERVER_SIDE: u16 = 1 << 2;
    /// The subscriber is in the channel's presence.
    pub const PRESENCE: u16 = 1 << 3;
    /// Joining and leaving emit join/leave events.
    pub const JOIN_LEAVE: u16 = 1 << 4;
    /// The subscriber receives join/leave pushes.
    pub const PUSH_JOIN_LEAVE: u16 = 1 << 5;
    /// Recovery in cache mode (latest publication only).
    pub const CACHE: u16 = 1 << 6;
    /// Cache mode recovers on every subscribe, asked or not (`auto_cache_recover`).
    pub const AUTO_CACHE: u16 = 1 << 7;
    /// The subscriber negotiated fossil deltas (spec §11.3).
    pub const DELTA: u16 = 1 << 8;
    /// A delta subscriber got a full publication from the live stream: the next ones may be
    /// patches against this shard's delta base.
    pub const DELTA_READY: u16 = 1 << 9;

    /// Whether `flag` is set.
    pub fn has(self, flag: u16) -> bool {
        self.0 & flag != 0
    }

    /// Clears `flag`.
    pub fn clear(&mut self, flag: u16) {
        self.0 &= !flag;
    }

    /// Sets `flag` when `on`.
    pub fn set(&mut self, flag: u16, on: bool) {
        if on {
            self.0 |= flag;
        }
    }

    /// Whether the home shard must take part (presence, join/leave or a stream position).
    fn needs_home(self) -> bool {
        self.has(Self::PRESENCE | Self::JOIN_LEAVE | Self::POSITIONED)
    }
}

/// One subscription of a connection.
#[derive(Debug)]
pub struct Sub {
    /// Channel name.
    pub channel: Arc<str>,
    /// Behaviour.
    pub flags: SubFlags,
    /// Rarely set fields, boxed so that a plain subscription stays small (idle memory).
    pub extra: Option<Box<SubExtra>>,
}

/// The less common parts of a subscription.
#[derive(Debug, Default)]
pub struct SubExtra {
    /// `chan_info` from the subscription token.
    pub chan_info: Option<RawJson>,
    /// Unix seconds when the subscription expires (token `exp`/`expire_at`).
    pub expire_at: Option<i64>,
}

impl Sub {
    /// A subscription with `flags` and nothing else.
    pub fn new(channel: Arc<str>, flags: SubFlags) -> Sub {
        Sub { channel, flags, extra: None }
    }

    /// `chan_info`, if any.
    pub fn chan_info(&self) -> Option<RawJson> {
        self.extra.as_ref().and_then(|e| e.chan_info.clone())
    }

    /// Expiry, if any.
    pub fn expire_at(&self) -> Option<i64> {
        self.extra.as_ref().and_then(|e| e.expire_at)
    }
}

/// How a finished subscription is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubReply {
    /// Reply to the client's `subscribe` command with this id.
    Command(u32),
    /// A `subscribe` push (server-side subscription made while connected); recovered
    /// publications follow as publication pushes.
    Push,
    /// An entry of the connect reply's `subs`.
    Connect,
}

/// A server-side subscription to make: the channel and what the token or API gave for it.
#[derive(Debug, Clone)]
pub struct ServerSub {
    /// Channel.
    pub channel: Arc<str>,
    /// `chan_info`.
    pub info: Option<RawJson>,
    /// `data` for the subscribe result or push.
    pub data: Option<RawJson>,
    /// Namespace option overrides.
    pub overrides: SubscribeOverrides,
}

impl ServerSub {
    /// A channel with namespace defaults.
    pub fn plain(channel: Arc<str>) -> ServerSub {
        ServerSub { channel, info: None, data: None, overrides: SubscribeOverrides::default() }
    }
}

/// A subscription whose home-shard answer is in and whose outcome is decided.
#[derive(Debug)]
pub struct DoneSub {
    /// Channel.
    pub channel: Arc<str>,
    flags: SubFlags,
    /// The subscribe result.
    pub result: SubscribeResult,
    events: Vec<Event>,
    /// Offset the client is at once it has the result (0 = no stream).
    base: u64,
}

/// What `Shard::settle` decided.
#[derive(Debug)]
pub enum Settled {
    /// The subscription went away meanwhile; nothing to announce.
    Gone,
    /// The home shard's answer was lost (shutdown); the subscription is undone.
    Failed,
    /// Recovery failed and the client asked for an error instead (flag 2); undone.
    Unrecovered(SubReply),
    /// Announce `result`, then `Shard::go_live`.
    Done(Box<DoneSub>),
}

/// A subscribe reply waiting for the home shard.
#[derive(Debug)]
pub struct PendingSub {
    reply: SubReply,
    channel: Arc<str>,
    flags: SubFlags,
    /// The client asked to recover from this position.
    recover: Option<Position>,
    reject_unrecovered: bool,
    /// Fields known before the home shard answers (token data, expiry).
    result: SubscribeResult,
}

/// Options of a subscription per spec §5.4: namespace defaults, token overrides, then what the
/// client asked for where it is allowed to.
pub fn sub_flags(
    r: &Resolved<'_>,
    overrides: &SubscribeOverrides,
    req: &SubscribeRequest,
    who: &Subject<'_>,
) -> SubFlags {
    let o = r.options;
    let history_on = o.history_size > 0 && !o.history_ttl.is_zero();
    let may_history = channel::check_history(r, who, true).is_ok();
    let may_presence = channel::check_presence(r, who, true).is_ok();
    let presence = overrides.presence.unwrap_or(o.presence);
    let join_leave = overrides.join_leave.unwrap_or(o.join_leave);
    let push_join_leave = overrides.force_push_join_leave.unwrap_or(o.force_push_join_leave)
        || (req.join_leave && join_leave && may_presence);
    let recoverable = history_on
        && (overrides.force_recovery.unwrap_or(o.force_recovery)
            || (req.recoverable && (o.allow_recovery || may_history)));
    let positioned = history_on
        && (recoverable
            || overrides.force_positioning.unwrap_or(o.force_positioning)
            || (req.positioned && (o.allow_positioning || may_history)));
    let mut f = SubFlags::default();
    f.set(SubFlags::PRESENCE, presence);
    f.set(SubFlags::JOIN_LEAVE, join_leave);
    f.set(SubFlags::PUSH_JOIN_LEAVE, push_join_leave);
    f.set(SubFlags::RECOVERABLE, recoverable);
    f.set(SubFlags::POSITIONED, positioned);
    let cache = o.force_recovery_mode == "cache";
    f.set(SubFlags::CACHE, cache);
    f.set(SubFlags::AUTO_CACHE, cache && recoverable && o.auto_cache_recover);
    f
}

/// Whether a subscription token was issued for this user, channel and (when it names one)
/// client; a mismatch closes the connection with 3500.
fn token_fits(
    claims: &crate::auth::SubscriptionClaims,
    user: &str,
    channel: &str,
    client: &str,
) -> bool {
    let client_ok = claims.client.as_deref().is_none_or(|c| c.is_empty() || c == client);
    claims.user == user && claims.channel == channel && client_ok
}

/// Where a subscription recovers from: the client's position when it asked (`recover`), the
/// start of the stream when cache mode recovers unasked (spec §6.5), else nowhere.
fn recover_from(flags: SubFlags, req: &SubscribeRequest) -> Option<Position> {
    if !flags.has(SubFlags::RECOVERABLE) {
        None
    } else if req.recover {
        Some(Position { offset: req.offset, epoch: req.epoch.clone() })
    } else if flags.has(SubFlags::AUTO_CACHE) {
        Some(Position::default())
    } else {
        None
    }
}

impl Shard {
    /// `subscribe` (spec §2.11, §5.4).
    pub(super) fn subscribe(&mut self, key: ConnKey, id: u32, req: SubscribeRequest) -> Step {
        if req.channel.is_empty() {
            return self.bad_request(key);
        }
        if !req.delta.is_empty() && req.delta != "fossil" {
            return self.bad_request(key);
        }
        let channel_limit = self.cfg.client.channel_limit;
        let insecure = self.cfg.client.insecure;
        let namespaces = Arc::clone(&self.namespaces);
        let Some(conn) = self.conn_mut(key) else { return Step::Stop };
        let Some(session) = conn.session() else { return Step::Stop };
        let channel: Arc<str> = Arc::from(req.channel.as_str());
        if session.has_sub(&channel) {
            self.reply_error(key, id, codes::ERROR_ALREADY_SUBSCRIBED);
            return Step::Next;
        }
        if channel_limit > 0 && session.subs.len() >= channel_limit {
            self.reply_error(key, id, codes::ERROR_LIMIT_EXCEEDED);
            return Step::Next;
        }
        let user = Arc::clone(&session.user);
        let client = session.client.to_string();
        let resolved = match namespaces.resolve(&channel) {
            Ok(r) => r,
            Err(e) => {
                self.reply_error(key, id, channel_error(e));
                return Step::Next;
            }
        };
        if req.type_ != 0 {
            let err = if req.type_ == 4 {
                codes::ERROR_NOT_AVAILABLE
            } else {
                codes::ERROR_PERMISSION_DENIED
            };
            self.reply_error(key, id, err);
            return Step::Next;
        }
        if req.has_tf {
            self.reply_error(key, id, codes::ERROR_BAD_REQUEST);
            return Step::Next;
        }
        let now = unix_now();
        let mut result = SubscribeResult::default();
        let mut extra = SubExtra::default();
        let mut overrides = SubscribeOverrides::default();
        let has_token = !req.token.is_empty();
        if has_token {
            match self.sub_verifier.verify_subscription(&req.token, now) {
                Ok(claims) => {
                    if !token_fits(&claims, &user, &channel, &client) {
                        self.disconnect(key, codes::DISCONNECT_INVALID_TOKEN);
                        return Step::Stop;
                    }
                    match auth::subscription_expiry(&claims, now) {
                        Expiry::Never => {}
                        Expiry::At(at) => {
                            result.expires = true;
                            result.ttl = u32::try_from(at - now).unwrap_or(u32::MAX);
                            extra.expire_at = Some(at);
                        }
                        Expiry::AlreadyExpired => {
                            self.reply_error(key, id, codes::ERROR_EXPIRED);
                            return Step::Next;
                        }
                    }
                    result.data = claims.data.map(RawJson);
                    extra.chan_info = claims.info.map(RawJson);
                    overrides = claims.overrides;
                }
                Err(TokenError::Expired) => {
                    self.reply_error(key, id, codes::ERROR_TOKEN_EXPIRED);
                    return Step::Next;
                }
                Err(TokenError::KeysPending) if !self.keys_retry => {
                    return Step::KeysPending { token: req.token, subscription: true };
                }
                Err(
                    TokenError::Invalid(_)
                    | TokenError::BadConnectionInfo
                    | TokenError::KeysPending,
                ) => {
                    self.reply_error(key, id, codes::ERROR_PERMISSION_DENIED);
                    return Step::Next;
                }
            }
        }
        let who = Subject { user: &user, insecure };
        if let Err(e) = channel::check_subscribe(&resolved, &who, has_token) {
            self.reply_error(key, id, channel_error(e));
            return Step::Next;
        }
        let mut flags = sub_flags(&resolved, &overrides, &req, &who);
        let history = history_policy(resolved.options, false);
        // A delta type the namespace does not allow is not an error: the subscription simply
        // gets full payloads (`delta` stays false in the result).
        let delta =
            !req.delta.is_empty() && resolved.options.allowed_delta_types.contains(&req.delta);
        flags.set(SubFlags::DELTA, delta);
        result.delta = delta;
        let Some(info) = self.add_sub(key, &channel, flags, extra, now) else { return Step::Stop };
        if delta {
            self.hub.mark_delta(&channel);
        }
        if !flags.needs_home() {
            return Step::AwaitInterest {
                channels: vec![channel],
                then: Then::Subscribe { id, result: Box::new(result) },
            };
        }
        let mut pending = PendingSub {
            reply: SubReply::Command(id),
            channel,
            flags,
            recover: None,
            reject_unrecovered: req.flag & FLAG_REJECT_UNRECOVERED != 0,
            result,
        };
        let call = self.subscribe_at_home(key, &mut pending, info, history, &req);
        let req_id = self.call_home(&pending.channel, call);
        Step::AwaitAnswer { req: req_id, then: Resume::Subscribe(Box::new(pending)) }
    }

    /// Adds a subscription to the connection's session (arming its expiry) and to the hub;
    /// returns the client as presence and join/leave show it. `None` when the connection is
    /// not connected.
    fn add_sub(
        &mut self,
        key: ConnKey,
        channel: &Arc<str>,
        flags: SubFlags,
        extra: SubExtra,
        now: i64,
    ) -> Option<Arc<ClientInfo>> {
        let expire_at = extra.expire_at;
        let has_extra = extra.chan_info.is_some() || expire_at.is_some();
        let sub =
            Sub { channel: Arc::clone(channel), flags, extra: has_extra.then(|| Box::new(extra)) };
        let chan_info = sub.chan_info();
        let Some(State::Connected(session)) = self.conn_mut(key).map(|c| &mut c.state) else {
            return None;
        };
        session.push_sub(sub);
        let info = Arc::new(session.info(chan_info));
        if let Some(at) = expire_at {
            self.arm_sub_expiry(key, at, now);
        }
        self.begin_subscription(channel);
        Some(info)
    }

    /// Puts a subscriber that needs the home shard into buffering and returns the call to
    /// send; fills `pending.recover` with where it recovers from (`req`: what the client asked).
    fn subscribe_at_home(
        &mut self,
        key: ConnKey,
        pending: &mut PendingSub,
        info: Arc<ClientInfo>,
        history: HistoryPolicy,
        req: &SubscribeRequest,
    ) -> Call {
        let (channel, flags) = (Arc::clone(&pending.channel), pending.flags);
        self.hub.start_buffering(&channel, key, flags.has(SubFlags::PUSH_JOIN_LEAVE));
        pending.recover = recover_from(flags, req);
        let query = pending.recover.as_ref().map(|from| self.recovery_query(flags, from));
        Call::Subscribe(SubscribeCall {
            channel,
            info,
            presence: flags.has(SubFlags::PRESENCE),
            join: flags.has(SubFlags::JOIN_LEAVE),
            position: flags.has(SubFlags::POSITIONED).then_some((history, query)),
        })
    }

    /// A server-side subscription made while connected (API `subscribe`): through the home
    /// shard, whose answer continues it inline; the client learns of it by a `subscribe` push.
    /// Does nothing when the connection is already subscribed.
    pub(crate) fn server_subscribe(
        &mut self,
        key: ConnKey,
        spec: &ServerSub,
        expire_at: i64,
        recover_since: Option<Position>,
    ) {
        let position = recover_since.map(|p| SubscribeRequest {
            recover: true,
            offset: p.offset,
            epoch: p.epoch,
            ..SubscribeRequest::default()
        });
        if let Some((call, pending)) =
            self.prepare_server_sub(key, spec, position.as_ref(), expire_at, SubReply::Push)
        {
            let then = Continue::Conn(key, Resume::Subscribe(Box::new(pending)));
            self.call_home_then(&spec.channel, call, then);
        }
    }

    /// Adds a server-side subscription to the session (in the hub, buffering) and returns the
    /// home-shard call to send with what continues after it. `position`: the client's
    /// `ConnectRequest.subs` entry (or the API's `recover_since`), for recovery. `None` when the
    /// connection is gone, already subscribed, or the channel does not resolve.
    pub(crate) fn prepare_server_sub(
        &mut self,
        key: ConnKey,
        spec: &ServerSub,
        position: Option<&SubscribeRequest>,
        expire_at: i64,
        reply: SubReply,
    ) -> Option<(Call, PendingSub)> {
        let namespaces = Arc::clone(&self.namespaces);
        let resolved = namespaces.resolve(&spec.channel).ok()?;
        let session = self.conn_mut(key).and_then(|c| c.session())?;
        if session.has_sub(&spec.channel) {
            return None;
        }
        let user = Arc::clone(&session.user);
        let who = Subject { user: &user, insecure: self.cfg.client.insecure };
        let default_req = SubscribeRequest::default();
        let req = position.unwrap_or(&default_req);
        let mut flags = sub_flags(&resolved, &spec.overrides, req, &who);
        flags.0 |= SubFlags::SERVER_SIDE;
        let history = history_policy(resolved.options, false);
        let extra = SubExtra {
            chan_info: spec.info.clone(),
            expire_at: (expire_at > 0).then_some(expire_at),
        };
        let info = self.add_sub(key, &spec.channel, flags, extra, unix_now())?;
        let mut pending = PendingSub {
            reply,
            channel: Arc::clone(&spec.channel),
            flags,
            recover: None,
            reject_unrecovered: false,
            result: SubscribeResult { data: spec.data.clone(), ..SubscribeResult::default() },
        };
        let call = self.subscribe_at_home(key, &mut pending, info, history, req);
        Some((call, pending))
    }

    /// The history read that recovery needs: everything after `from` (stream mode, up to
    /// `client.recovery_max_publication_limit`), or the newest publication (cache mode).
    fn recovery_query(&self, flags: SubFlags, from: &Position) -> HistoryQuery {
        if flags.has(SubFlags::CACHE) {
            return HistoryQuery { limit: Some(1), since: None, reverse: true };
        }
        let limit = self.cfg.client.recovery_max_publication_limit;
        HistoryQuery {
            limit: (limit > 0).then_some(limit),
            since: Some(from.clone()),
            reverse: false,
        }
    }

    /// Decides a subscription from the home shard's answer (spec §6.4, §6.5): its result and
    /// the events kept meanwhile. Nothing is written to the client here.
    pub(crate) fn settle(
        &mut self,
        key: ConnKey,
        pending: PendingSub,
        answer: Option<Answer>,
    ) -> Settled {
        let PendingSub { reply, channel, flags, recover, reject_unrecovered, mut result } = pending;
        // `None`: the subscription was removed meanwhile (unsubscribe, disconnect), which also
        // took it out of the hub and told the home shard.
        let Some(events) = self.hub.take_buffered(&channel, key) else { return Settled::Gone };
        if !self.holds_sub(key, &channel) {
            self.abandon(&channel);
            return Settled::Gone;
        }
        let Some(Answer::Channel(Reply::Subscribed { top, read })) = answer else {
            self.drop_sub(key, &channel);
            self.abandon(&channel);
            return Settled::Failed;
        };
        let mut base = 0;
        if let Some(top) = top.filter(|_| flags.has(SubFlags::POSITIONED)) {
            result.positioned = true;
            result.recoverable = flags.has(SubFlags::RECOVERABLE);
            result.offset = top.offset;
            result.epoch = top.epoch.clone();
            base = top.offset;
            if let Some(from) = recover {
                result.was_recovering = true;
                let same_epoch = from.epoch.is_empty() || from.epoch == top.epoch;
                let (recovered, publications) = match read {
                    Err(_) => (false, Vec::new()),
                    Ok(pubs) if flags.has(SubFlags::CACHE) => {
                        let at_top = from.offset == top.offset && same_epoch;
                        match pubs.first() {
                            Some(_) if at_top => (true, Vec::new()),
                            Some(_) => (true, pubs),
                            None => (at_top && from.offset > 0, Vec::new()),
                        }
                    }
                    Ok(pubs) => {
                        let complete = match (pubs.first(), pubs.last()) {
                            (Some(first), Some(last)) => {
                                first.offset == from.offset + 1 && last.offset == top.offset
                            }
                            _ => top.offset == from.offset,
                        };
                        (complete && same_epoch, pubs)
                    }
                };
                if recovered {
                    result.recovered = true;
                    result.offset = from.offset;
                    result.publications = owned(&publications);
                } else if reject_unrecovered {
                    self.drop_sub(key, &channel);
                    self.abandon(&channel);
                    return Settled::Unrecovered(reply);
                }
            }
        }
        Settled::Done(Box::new(DoneSub { channel, flags, result, events, base }))
    }

    /// Makes a settled subscriber live and hands over the events it kept, merged by offset:
    /// what the reply already covered is dropped, a gap means lost state (3010).
    pub(crate) fn go_live(&mut self, key: ConnKey, done: DoneSub) {
        let DoneSub { channel, flags, events, mut base, .. } = done;
        // The announcement may have closed the connection (queue overflow): then it gives its
        // place up instead of joining.
        if !self.holds_sub(key, &channel) {
            self.abandon(&channel);
            return;
        }
        let lost = flags.has(SubFlags::POSITIONED) && self.hub.sync_position(&channel, base);
        self.hub.go_live(&channel, key, flags.has(SubFlags::PUSH_JOIN_LEAVE));
        if lost {
            self.insufficient_state_except(&channel, key);
        }
        for event in events {
            if let Event::Pub(p) = &event {
                if p.offset > 0 && base > 0 {
                    if p.offset <= base {
                        continue;
                    }
                    if p.offset > base + 1 && flags.has(SubFlags::POSITIONED) {
                        self.disconnect(key, codes::DISCONNECT_INSUFFICIENT_STATE);
                        return;
                    }
                    base = p.offset;
                }
            }
            self.push_event(key, &channel, &event);
        }
    }

    /// Second half of a subscription that needed the home shard: settle it, announce it (the
    /// subscribe reply, or a `subscribe` push followed by recovered publications), then go live.
    pub(super) fn finish_subscribe(
        &mut self,
        key: ConnKey,
        pending: PendingSub,
        answer: Option<Answer>,
    ) -> Step {
        let reply = pending.reply;
        match self.settle(key, pending, answer) {
            Settled::Gone => {}
            Settled::Failed => match reply {
                SubReply::Command(id) => self.reply_error(key, id, codes::ERROR_INTERNAL),
                SubReply::Push | SubReply::Connect => {
                    self.disconnect(key, codes::DISCONNECT_SERVER_ERROR);
                }
            },
            Settled::Unrecovered(SubReply::Command(id)) => {
                self.reply_error(key, id, codes::ERROR_UNRECOVERABLE_POSITION);
            }
            Settled::Unrecovered(_) => self.disconnect(key, codes::DISCONNECT_INSUFFICIENT_STATE),
            Settled::Done(mut done) => {
                match reply {
                    SubReply::Command(id) => {
                        let mut result = std::mem::take(&mut done.result);
                        if done.flags.has(SubFlags::DELTA) {
                            let json = !self.is_protobuf(key);
                            let pubs = std::mem::take(&mut result.publications);
                            result.publications = super::delta::chain(pubs, json);
                        }
                        self.reply(key, id, &ReplyBody::Subscribe(result));
                    }
                    SubReply::Push | SubReply::Connect => {
                        let r = std::mem::take(&mut done.result);
                        let push = PushBody::Subscribe(SubscribePush {
                            recoverable: r.recoverable,
                            epoch: r.epoch,
                            offset: r.offset,
                            positioned: r.positioned,
                            data: r.data,
                        });
                        let channel = Arc::clone(&done.channel);
                        self.push(key, &channel, &push);
                        for p in r.publications {
                            self.push(key, &channel, &PushBody::Publication(p));
                        }
                    }
                }
                self.go_live(key, *done);
            }
        }
        Step::Next
    }

    /// A subscriber taken out of buffering will not go live: the shard gives up its interest
    /// when it was the last.
    pub(crate) fn abandon(&mut self, channel: &Arc<str>) {
        if self.hub.abandon(channel) {
            self.interest_off(channel);
        }
    }

    /// Takes a subscriber out of the hub, giving up the shard's interest when it was the last.
    fn release(&mut self, channel: &Arc<str>, key: ConnKey) {
        if self.hub.remove(channel, key) {
            self.interest_off(channel);
        }
    }

    /// Removes a subscription from the connection and undoes it everywhere.
    fn drop_sub(&mut self, key: ConnKey, channel: &str) {
        let removed = match self.conn_mut(key).map(|c| &mut c.state) {
            Some(State::Connected(s)) => s.remove_sub(channel),
            _ => None,
        };
        if let Some(sub) = removed {
            self.unsubscribed(key, sub);
        }
    }

    /// A subscription already removed from the session: leave the hub and tell the home shard
    /// about presence and leave.
    pub(crate) fn unsubscribed(&mut self, key: ConnKey, sub: Sub) {
        if sub.flags.has(SubFlags::PRESENCE) || sub.flags.has(SubFlags::JOIN_LEAVE) {
            let info = match self.conn_mut(key).and_then(|c| c.session()) {
                Some(s) => s.info(sub.chan_info()),
                None => return self.release(&sub.channel, key),
            };
            let client: Arc<str> = Arc::from(info.client.as_str());
            let leave = sub.flags.has(SubFlags::JOIN_LEAVE).then(|| Arc::new(info));
            let cast = Cast::Unsubscribed { channel: Arc::clone(&sub.channel), client, leave };
            let home = crate::shard::id::home_of(&sub.channel, self.count);
            self.send(
                crate::shard::id::Lane::Main,
                home,
                crate::shard::msg::ShardMsg::Cast(Box::new(cast)),
            );
        }
        self.release(&sub.channel, key);
    }

    /// Server-initiated unsubscribe of a client-side subscription with an `unsubscribe` push;
    /// a server-side subscription disconnects with `server_side` instead.
    pub(crate) fn unsubscribe_with(
        &mut self,
        key: ConnKey,
        channel: &str,
        code: crate::protocol::Unsubscribe,
        server_side: crate::protocol::Disconnect,
    ) {
        let Some(sub) = self.conn_mut(key).and_then(|c| c.session()).and_then(|s| s.sub(channel))
        else {
            return;
        };
        if sub.flags.has(SubFlags::SERVER_SIDE) {
            self.disconnect(key, server_side);
            return;
        }
        self.drop_sub(key, channel);
        self.push(key, channel, &PushBody::Unsubscribe(code));
    }

    /// A delivery to this shard was lost: every positioned subscriber of `channel` here must
    /// recover (spec §6.3: unsubscribe 2500, or disconnect 3010 for server-side ones).
    pub fn insufficient_state(&mut self, channel: &str) {
        self.insufficient_state_except(channel, ConnKey { slot: u32::MAX, generation: 0 });
    }

    /// [`Shard::insufficient_state`] for everyone but `spared` (a subscriber whose position
    /// was just read from the home shard).
    fn insufficient_state_except(&mut self, channel: &str, spared: ConnKey) {
        let keys: Vec<ConnKey> = self.hub.subscribers(channel).to_vec();
        for key in keys.into_iter().filter(|k| *k != spared) {
            let positioned = self
                .conn_mut(key)
                .and_then(|c| c.session())
                .and_then(|s| s.sub(channel))
                .is_some_and(|s| s.flags.has(SubFlags::POSITIONED));
            if positioned {
                self.unsubscribe_with(
                    key,
                    channel,
                    codes::UNSUBSCRIBE_INSUFFICIENT_STATE,
                    codes::DISCONNECT_INSUFFICIENT_STATE,
                );
            }
        }
    }

    fn arm_sub_expiry(&mut self, key: ConnKey, at: i64, now: i64) {
        let wait =
            Duration::from_secs((at - now).max(0) as u64) + self.cfg.client.expired_sub_close_delay;
        self.timers.push(Timer { at: after(wait), key, kind: TimerKind::SubExpire });
    }

    /// Expired token subscriptions of a connection: client-side ones are unsubscribed with
    /// 2501, a server-side one disconnects with 3006 (spec §4.5).
    pub(super) fn expire_subs(&mut self, key: ConnKey) {
        let delay = self.cfg.client.expired_sub_close_delay.as_secs() as i64;
        let now = unix_now();
        let expired: Vec<Arc<str>> = match self.conn_mut(key).and_then(|c| c.session()) {
            Some(s) => s
                .subs
                .iter()
                .filter(|sub| sub.expire_at().is_some_and(|at| at.saturating_add(delay) <= now))
                .map(|sub| Arc::clone(&sub.channel))
                .collect(),
            None => return,
        };
        for channel in expired {
            self.unsubscribe_with(
                key,
                &channel,
                codes::UNSUBSCRIBE_EXPIRED,
                codes::DISCONNECT_SUBSCRIPTION_EXPIRED,
            );
        }
    }

    /// `sub_refresh` (spec §2.11, §4.5).
    pub(super) fn sub_refresh(&mut self, key: ConnKey, id: u32, req: SubRefreshRequest) -> Step {
        if req.channel.is_empty() {
            return self.bad_request(key);
        }
        let Some(session) = self.conn_mut(key).and_then(|c| c.session()) else {
            return Step::Stop;
        };
        if !session.has_sub(&req.channel) {
            self.reply_error(key, id, codes::ERROR_PERMISSION_DENIED);
            return Step::Next;
        }
        if req.token.is_empty() {
            self.reply_error(key, id, codes::ERROR_BAD_REQUEST);
            return Step::Next;
        }
        let user = Arc::clone(&session.user);
        let client = session.client.to_string();
        let now = unix_now();
        let (expire_at, ttl) = match self.sub_verifier.verify_subscription(&req.token, now) {
            Ok(claims) => {
                if !token_fits(&claims, &user, &req.channel, &client) {
                    self.disconnect(key, codes::DISCONNECT_INVALID_TOKEN);
                    return Step::Stop;
                }
                match auth::subscription_expiry(&claims, now) {
                    Expiry::Never => (None, 0),
                    Expiry::At(at) => (Some(at), u32::try_from(at - now).unwrap_or(u32::MAX)),
                    Expiry::AlreadyExpired => {
                        self.reply_error(key, id, codes::ERROR_EXPIRED);
                        return Step::Next;
                    }
                }
            }
            // Upstream answers an expired token with an empty success and clears the
            // subscription's expiry (spec §2.11, Open questions).
            Err(TokenError::Expired) => (None, 0),
            Err(TokenError::KeysPending) if !self.keys_retry => {
                return Step::KeysPending { token: req.token, subscription: true };
            }
            Err(_) => {
                self.disconnect(key, codes::DISCONNECT_INVALID_TOKEN);
                return Step::Stop;
            }
        };
        if let Some(State::Connected(s)) = self.conn_mut(key).map(|c| &mut c.state) {
            if let Some(sub) = s.subs.iter_mut().find(|sub| *sub.channel == *req.channel) {
                sub.extra.get_or_insert_with(Box::default).expire_at = expire_at;
            }
        }
        if let Some(at) = expire_at {
            self.arm_sub_expiry(key, at, now);
        }
        let result = SubRefreshResult { expires: expire_at.is_some(), ttl };
        self.reply(key, id, &ReplyBody::SubRefresh(result));
        Step::Next
    }
}

/// Publications cloned out of shared history entries for a reply.
pub fn owned(pubs: &[Arc<Publication>]) -> Vec<Publication> {
    pubs.iter().map(|p| (**p).clone()).collect()
}
