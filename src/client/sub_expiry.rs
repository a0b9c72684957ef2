//! A subscription's expiry and its renewal: the `sub_refresh` command (a new subscription
//! token), subscriptions whose expiry passed (unsubscribed with 2501, or the connection closed
//! with 3006 for a server-side one), and those the sub_refresh proxy renews instead.
//!
//! Owns: the expiry rules of spec §4.5. Must not: make or drop subscriptions otherwise (that
//! is `subscribe`), or call the backend itself (`proxied` does).

use std::sync::Arc;

use crate::auth::{self, Expiry, TokenError};
use crate::client::conn::ConnKey;
use crate::client::session::SubFlags;
use crate::client::subscribe::token_fits;
use crate::client::{Clients, Step};
use crate::protocol::{codes, RawJson, ReplyBody, SubRefreshRequest, SubRefreshResult};
use crate::proxy::ChannelEvent;

impl Clients<'_> {
    /// Expired token subscriptions of a connection: client-side ones are unsubscribed with
    /// 2501, a server-side one disconnects with 3006 (spec §4.5). Ones the sub_refresh proxy
    /// keeps ask it instead, once their expiry is reached.
    pub(super) fn expire_subs(&mut self, key: ConnKey) {
        let delay = i64::try_from(self.env.cfg.client.expired_sub_close_delay.as_secs())
            .unwrap_or(i64::MAX);
        let now = self.env.clock.unix_secs();
        let namespaces = Arc::clone(&self.env.namespaces);
        let proxies = Arc::clone(&self.env.proxies);
        let Some(session) = self.conns.get_mut(key).and_then(|c| c.session_mut()) else { return };
        let mut expired: Vec<Arc<str>> = Vec::new();
        let mut refresh = Vec::new();
        for sub in &mut session.subs {
            let Some(at) = sub.expire_at() else { continue };
            if !sub.flags.has(SubFlags::SERVER_REFRESH) {
                if at.saturating_add(delay) <= now {
                    expired.push(Arc::clone(&sub.channel));
                }
                continue;
            }
            if at > now || sub.flags.has(SubFlags::REFRESHING) {
                continue;
            }
            let proxy = namespaces
                .resolve(&sub.channel)
                .ok()
                .and_then(|r| proxies.channel(ChannelEvent::SubRefresh, r.options));
            match proxy {
                Some(proxy) => {
                    sub.flags.set(SubFlags::REFRESHING, true);
                    refresh.push((Arc::clone(&sub.channel), proxy));
                }
                None => expired.push(Arc::clone(&sub.channel)),
            }
        }
        for (channel, proxy) in refresh {
            self.sub_refresh_proxy(key, &channel, proxy);
        }
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
        let Some(session) = self.conns.get(key).and_then(|c| c.session()) else {
            return Step::Stop;
        };
        let Some(sub) = session.sub(&req.channel) else {
            self.reply_error(key, id, codes::ERROR_PERMISSION_DENIED);
            return Step::Next;
        };
        if sub.flags.has(SubFlags::SERVER_REFRESH) {
            // The sub_refresh proxy renews this one; the client was never told it expires.
            return self.bad_request(key);
        }
        if req.token.is_empty() {
            self.reply_error(key, id, codes::ERROR_BAD_REQUEST);
            return Step::Next;
        }
        let user = Arc::clone(&session.user);
        let client = session.client.to_string();
        let now = self.env.clock.unix_secs();
        let (expire_at, ttl) = match self.env.sub_verifier.verify_subscription(&req.token, now) {
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
        self.sub_refreshed(key, &req.channel, expire_at, None, now);
        let result = SubRefreshResult { expires: expire_at.is_some(), ttl };
        self.reply(key, id, &ReplyBody::SubRefresh(result));
        Step::Next
    }

    /// A subscription's expiry was renewed (a token or the sub_refresh proxy): the new expiry
    /// (`None`: never) and channel info, armed again.
    pub(super) fn sub_refreshed(
        &mut self,
        key: ConnKey,
        channel: &str,
        expire_at: Option<i64>,
        chan_info: Option<RawJson>,
        now: i64,
    ) {
        let Some(s) = self.conns.get_mut(key).and_then(|c| c.session_mut()) else { return };
        let Some(sub) = s.subs.iter_mut().find(|sub| *sub.channel == *channel) else { return };
        sub.flags.clear(SubFlags::REFRESHING);
        let server_refresh = sub.flags.has(SubFlags::SERVER_REFRESH);
        let extra = sub.extra.get_or_insert_with(Box::default);
        extra.expire_at = expire_at;
        if chan_info.is_some() {
            extra.chan_info = chan_info;
        }
        match expire_at {
            Some(at) if server_refresh => self.arm_sub_refresh(key, at, now),
            Some(at) => self.arm_sub_expiry(key, at, now),
            None => {}
        }
    }
}
