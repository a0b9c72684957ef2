//! Subscriptions of one connection: the `subscribe` and `unsubscribe` commands (expiry and
//! `sub_refresh` are `sub_expiry`'s), server-side subscriptions (token `channels`/`subs`, API `subscribe`), the options a
//! subscription gets (presence, join/leave, positioning, recovery), and this shard's interest in
//! a channel (spec §5.4, §6, §7).
//!
//! Owns: a connection's [`Sub`] entries and the shard-local half of a subscription. What is
//! channel-global (presence, the stream, join/leave fan-out) is asked of the channel's home
//! shard with one `Call::Subscribe`; until it answers, the hub keeps the channel's events for
//! this subscriber, so the reply goes out first (`recovery`) and nothing published meanwhile is
//! lost or doubled. A plain subscription waits only until the home shard has registered this
//! shard's interest.
//!
//! Must not: read another shard's state, or write a publication of a channel to a client before
//! that client's subscribe reply.

use std::sync::Arc;

use crate::auth::{self, Expiry, SubscribeOverrides, TokenError};
use crate::broker::stream::{HistoryPolicy, Position};
use crate::broker::SubscribeCall;
use crate::channel::{self, ChannelError, Resolved, Subject};
use crate::client::conn::ConnKey;
use crate::client::recovery::{recover_from, PendingSub, SubReply};
use crate::client::session::{Sub, SubExtra, SubFlags};
use crate::client::{rules, Clients, Resume, Step};
use crate::hub::filter::TagsFilter;
use crate::hub::Begin;
use crate::protocol::{
    codes, ClientInfo, PushBody, RawJson, ReplyBody, SubscribeRequest, SubscribeResult,
};
use crate::proxy::ChannelEvent;
use crate::shard::id::Lane;
use crate::shard::msg::{Call, Cast, ShardMsg};

/// `SubscribeRequest.flag` bit: answer 112 instead of `recovered: false`.
const FLAG_REJECT_UNRECOVERED: i64 = 2;

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

/// What allowed a subscription, besides namespace defaults: a subscription token or the
/// subscribe proxy.
#[derive(Debug, Default)]
pub struct Grant {
    /// `chan_info`.
    pub chan_info: Option<RawJson>,
    /// `SubscribeResult.data`.
    pub data: Option<RawJson>,
    /// Unix seconds when it expires.
    pub expire_at: Option<i64>,
    /// Namespace option overrides.
    pub overrides: SubscribeOverrides,
    /// The sub_refresh proxy renews the expiry (the client is not told about it).
    pub server_refresh: bool,
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
pub(super) fn token_fits(
    claims: &crate::auth::SubscriptionClaims,
    user: &str,
    channel: &str,
    client: &str,
) -> bool {
    let client_ok = claims.client.as_deref().is_none_or(|c| c.is_empty() || c == client);
    claims.user == user && claims.channel == channel && client_ok
}

impl Clients<'_> {
    /// `subscribe` (spec §2.11, §5.4).
    pub(super) fn subscribe(&mut self, key: ConnKey, id: u32, req: SubscribeRequest) -> Step {
        if req.channel.is_empty() {
            return self.bad_request(key);
        }
        if !req.delta.is_empty() && req.delta != "fossil" {
            return self.bad_request(key);
        }
        let channel_limit = self.env.cfg.client.channel_limit;
        let insecure = self.env.cfg.client.insecure;
        let namespaces = Arc::clone(&self.env.namespaces);
        let Some(session) = self.conns.get(key).and_then(|c| c.session()) else {
            return Step::Stop;
        };
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
                self.reply_error(key, id, rules::channel_error(e));
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
        if let Some(tf) = &req.tf {
            // As upstream: a filter where the namespace allows none, or a malformed one, is
            // 107 (the subscription does not happen).
            if !resolved.options.allow_tags_filter || TagsFilter::new(tf.clone()).is_err() {
                self.reply_error(key, id, codes::ERROR_BAD_REQUEST);
                return Step::Next;
            }
        }
        let now = self.env.clock.unix_secs();
        let mut grant = Grant::default();
        let has_token = !req.token.is_empty();
        if has_token {
            match self.env.sub_verifier.verify_subscription(&req.token, now) {
                Ok(claims) => {
                    if !token_fits(&claims, &user, &channel, &client) {
                        self.disconnect(key, codes::DISCONNECT_INVALID_TOKEN);
                        return Step::Stop;
                    }
                    match auth::subscription_expiry(&claims, now) {
                        Expiry::Never => {}
                        Expiry::At(at) => grant.expire_at = Some(at),
                        Expiry::AlreadyExpired => {
                            self.reply_error(key, id, codes::ERROR_EXPIRED);
                            return Step::Next;
                        }
                    }
                    grant.data = claims.data.map(RawJson);
                    grant.chan_info = claims.info.map(RawJson);
                    grant.overrides = claims.overrides;
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
        match channel::check_subscribe(&resolved, &who, has_token) {
            Ok(()) => {}
            Err(ChannelError::Proxied) => {
                let proxies = &self.env.proxies;
                let refresh = proxies.channel(ChannelEvent::SubRefresh, resolved.options);
                if let Some(proxy) = proxies.channel(ChannelEvent::Subscribe, resolved.options) {
                    return self.subscribe_proxy(key, id, req, proxy, refresh.is_some());
                }
                self.reply_error(key, id, codes::ERROR_NOT_AVAILABLE);
                return Step::Next;
            }
            Err(e) => {
                self.reply_error(key, id, rules::channel_error(e));
                return Step::Next;
            }
        }
        self.grant_subscribe(key, id, &req, grant)
    }

    /// A subscribe that is allowed: options, the session entry, then the home shard. Checks
    /// again what may have changed while a proxy decided (closed, subscribed meanwhile).
    pub(super) fn grant_subscribe(
        &mut self,
        key: ConnKey,
        id: u32,
        req: &SubscribeRequest,
        grant: Grant,
    ) -> Step {
        let namespaces = Arc::clone(&self.env.namespaces);
        let insecure = self.env.cfg.client.insecure;
        let Some(session) = self.conns.get(key).and_then(|c| c.session()) else {
            return Step::Stop;
        };
        let channel: Arc<str> = Arc::from(req.channel.as_str());
        if session.has_sub(&channel) {
            self.reply_error(key, id, codes::ERROR_ALREADY_SUBSCRIBED);
            return Step::Next;
        }
        let user = Arc::clone(&session.user);
        let Ok(resolved) = namespaces.resolve(&channel) else { return Step::Stop };
        let who = Subject { user: &user, insecure };
        let now = self.env.clock.unix_secs();
        let mut result = SubscribeResult { data: grant.data, ..SubscribeResult::default() };
        if let Some(at) = grant.expire_at {
            if at <= now {
                self.reply_error(key, id, codes::ERROR_EXPIRED);
                return Step::Next;
            }
            if !grant.server_refresh {
                result.expires = true;
                result.ttl = u32::try_from(at - now).unwrap_or(u32::MAX);
            }
        }
        // Checked in `subscribe`; a filtered subscription gets full payloads (a delta against a
        // publication its filter dropped could not be applied).
        let filter = req.tf.clone().and_then(|tf| TagsFilter::new(tf).ok()).map(Arc::new);
        let extra = SubExtra {
            chan_info: grant.chan_info,
            expire_at: grant.expire_at,
            filter: filter.clone(),
        };
        let mut flags = sub_flags(&resolved, &grant.overrides, req, &who);
        flags.set(SubFlags::SERVER_REFRESH, grant.server_refresh && grant.expire_at.is_some());
        let history = rules::history_policy(resolved.options, false);
        // A delta type the namespace does not allow is not an error: the subscription simply
        // gets full payloads (`delta` stays false in the result).
        let delta = filter.is_none()
            && !req.delta.is_empty()
            && resolved.options.allowed_delta_types.contains(&req.delta);
        flags.set(SubFlags::DELTA, delta);
        result.delta = delta;
        let Some(info) = self.add_sub(key, &channel, flags, extra, now) else { return Step::Stop };
        if delta {
            self.hub.mark_delta(&channel);
        }
        if !flags.needs_home() {
            return self.await_registration(key, &channel, id, result);
        }
        let mut pending = PendingSub {
            reply: SubReply::Command(id),
            channel,
            flags,
            recover: None,
            reject_unrecovered: req.flag & FLAG_REJECT_UNRECOVERED != 0,
            result,
        };
        let call = self.subscribe_at_home(key, &mut pending, info, history, req);
        let channel = Arc::clone(&pending.channel);
        let resume: Resume = Box::new(move |c: &mut Clients<'_>, answers| {
            c.finish_subscribe(key, pending, answers.into_iter().next().flatten())
        });
        self.ask_home(key, &channel, call, resume)
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
        let has_extra = extra.chan_info.is_some() || expire_at.is_some() || extra.filter.is_some();
        let sub =
            Sub { channel: Arc::clone(channel), flags, extra: has_extra.then(|| Box::new(extra)) };
        let chan_info = sub.chan_info();
        let session = self.conns.get_mut(key).and_then(|c| c.session_mut())?;
        session.push_sub(sub);
        self.metrics.action("add_subscription");
        let info = Arc::new(session.info(chan_info));
        match expire_at {
            Some(at) if flags.has(SubFlags::SERVER_REFRESH) => self.arm_sub_refresh(key, at, now),
            Some(at) => self.arm_sub_expiry(key, at, now),
            None => {}
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
            let resume: Resume = Box::new(move |c: &mut Clients<'_>, answers| {
                c.finish_subscribe(key, pending, answers.into_iter().next().flatten())
            });
            self.ask_home_detached(Some(key), &spec.channel, call, resume);
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
        let namespaces = Arc::clone(&self.env.namespaces);
        let resolved = namespaces.resolve(&spec.channel).ok()?;
        let session = self.conns.get(key).and_then(|c| c.session())?;
        if session.has_sub(&spec.channel) {
            return None;
        }
        let user = Arc::clone(&session.user);
        let who = Subject { user: &user, insecure: self.env.cfg.client.insecure };
        let default_req = SubscribeRequest::default();
        let req = position.unwrap_or(&default_req);
        let mut flags = sub_flags(&resolved, &spec.overrides, req, &who);
        flags.set(SubFlags::SERVER_SIDE, true);
        let history = rules::history_policy(resolved.options, false);
        let extra = SubExtra {
            chan_info: spec.info.clone(),
            expire_at: (expire_at > 0).then_some(expire_at),
            filter: None,
        };
        let info = self.add_sub(key, &spec.channel, flags, extra, self.env.clock.unix_secs())?;
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
    pub(crate) fn drop_sub(&mut self, key: ConnKey, channel: &str) {
        let removed = self
            .conns
            .get_mut(key)
            .and_then(|c| c.session_mut())
            .and_then(|s| s.remove_sub(channel));
        if let Some(sub) = removed {
            self.unsubscribed(key, &sub);
        }
    }

    /// A subscription already removed from the session: leave the hub and tell the home shard
    /// about presence and leave.
    pub(crate) fn unsubscribed(&mut self, key: ConnKey, sub: &Sub) {
        self.metrics.action("remove_subscription");
        if sub.flags.has(SubFlags::PRESENCE) || sub.flags.has(SubFlags::JOIN_LEAVE) {
            let info = match self.conns.get(key).and_then(|c| c.session()) {
                Some(s) => s.info(sub.chan_info()),
                None => return self.release(&sub.channel, key),
            };
            let client: Arc<str> = Arc::from(info.client.as_str());
            let leave = sub.flags.has(SubFlags::JOIN_LEAVE).then(|| Arc::new(info));
            let cast = Cast::Unsubscribed { channel: Arc::clone(&sub.channel), client, leave };
            let home = self.mesh.home_of(&sub.channel);
            self.mesh.send(Lane::Main, home, ShardMsg::Cast(Box::new(cast)));
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
        let Some(sub) = self.conns.get(key).and_then(|c| c.session()).and_then(|s| s.sub(channel))
        else {
            return;
        };
        if sub.flags.has(SubFlags::SERVER_SIDE) {
            self.disconnect(key, server_side);
            return;
        }
        self.drop_sub(key, channel);
        self.metrics.server_unsubscribe(code.code);
        self.push(key, channel, &PushBody::Unsubscribe(code));
    }

    /// The tags filter of a connection's subscription to `channel`, if it has one.
    pub(crate) fn sub_filter(&self, key: ConnKey, channel: &str) -> Option<Arc<TagsFilter>> {
        let sub = self.conns.get(key)?.session()?.sub(channel)?;
        sub.extra.as_ref()?.filter.clone()
    }

    /// Whether a connection is open and still subscribed to `channel` (it may have closed or
    /// unsubscribed while its subscription was being completed).
    pub(crate) fn holds_sub(&self, key: ConnKey, channel: &str) -> bool {
        self.conns
            .get(key)
            .is_some_and(|c| c.closing.is_none() && c.session().is_some_and(|s| s.has_sub(channel)))
    }

    /// Removes a connection's subscriptions from the hub (telling home shards when this shard's
    /// last subscriber of a channel leaves, and about presence and leave).
    pub fn drop_subscriptions(&mut self, key: ConnKey) {
        let Some(session) = self.conns.get_mut(key).and_then(|c| c.session_mut()) else {
            return;
        };
        let subs = std::mem::take(&mut session.subs);
        for sub in subs {
            self.unsubscribed(key, &sub);
        }
    }

    /// Starts subscribing a connection to a channel on this shard: the first local subscriber
    /// asks the home shard to record this shard (see `hub`).
    pub(crate) fn begin_subscription(&mut self, channel: &Arc<str>) {
        if let Begin::Request(generation) = self.hub.begin(channel) {
            let home = self.mesh.home_of(channel);
            let msg = ShardMsg::Interest {
                channel: Arc::clone(channel),
                shard: self.mesh.id(),
                subscribed: true,
                ack: Some(generation),
            };
            self.mesh.send(Lane::Main, home, msg);
        }
    }

    /// Finishes a subscription whose registration was awaited, then sends the held reply. A
    /// connection that closed (or dropped the channel) meanwhile gives its place up instead.
    pub fn complete_subscription(
        &mut self,
        key: ConnKey,
        channel: &Arc<str>,
        id: u32,
        result: SubscribeResult,
    ) {
        if self.conns.get(key).is_some_and(|c| c.closing.is_none()) {
            self.reply(key, id, &ReplyBody::Subscribe(result));
        }
        // Liveness is decided after queuing the reply: the reply itself can overflow the queue
        // and disconnect the client (3008), and a closed connection must not join the hub.
        // The reply is queued before the connection joins the hub, so no publication of these
        // channels can reach the client ahead of it.
        if self.holds_sub(key, channel) {
            let filter = self.sub_filter(key, channel);
            self.hub.finish(channel, key, filter.as_ref());
        } else if self.hub.abandon(channel) {
            self.interest_off(channel);
        }
    }

    /// This shard's last subscriber of `channel` left: the home shard stops delivering here.
    pub(crate) fn interest_off(&mut self, channel: &Arc<str>) {
        let home = self.mesh.home_of(channel);
        let msg = ShardMsg::Interest {
            channel: Arc::clone(channel),
            shard: self.mesh.id(),
            subscribed: false,
            ack: None,
        };
        self.mesh.send(Lane::Main, home, msg);
    }

    /// A subscription that needs nothing of the home shard waits only until the home shard has
    /// registered this shard's interest: then the reply goes out and the subscriber goes live.
    fn await_registration(
        &mut self,
        key: ConnKey,
        channel: &Arc<str>,
        id: u32,
        result: SubscribeResult,
    ) -> Step {
        let ch = Arc::clone(channel);
        let resume: Resume = Box::new(move |c: &mut Clients<'_>, _| {
            c.complete_subscription(key, &ch, id, result);
            Step::Next
        });
        let token = self.park(key, 0, resume);
        if self.hub.registered_or_wait(channel, token) {
            self.land(token);
        }
        Step::Wait
    }
}
