//! Permission checks for client-side channel commands (spec §5.4).
//!
//! Owns the decision "may this connection subscribe / publish / query presence or
//! history here", given a resolved channel and who asks. Must not verify tokens
//! (the caller does, with `crate::auth`, before saying `has_token`), call proxies
//! (it answers [`ChannelError::Proxied`] where the namespace's proxy decides), or mutate
//! anything.

use super::{check_name, ChannelError, Resolved};

/// Who asks: the connection's user id (empty = anonymous) and whether the server
/// runs with `client.insecure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subject<'a> {
    pub user: &'a str,
    pub insecure: bool,
}

impl Subject<'_> {
    fn anonymous(&self) -> bool {
        self.user.is_empty()
    }
}

/// Subscribe permission; first matching rule wins, after the namespace's
/// `channel_regex` (107).
///
/// `has_token` means the request carried a subscription token that the caller has
/// already verified and matched (user, channel, client); a verified token grants
/// access regardless of `allow_subscribe_*`.
pub fn check_subscribe(
    r: &Resolved<'_>,
    who: &Subject<'_>,
    has_token: bool,
) -> Result<(), ChannelError> {
    check_name(r)?;
    let o = r.options;
    // `$` channels are token-only, even in insecure mode (upstream order).
    if r.private && !has_token {
        return Err(ChannelError::PermissionDenied);
    }
    if has_token {
        return Ok(());
    }
    // Project decision Q13: every `#` channel is user-limited, so outside
    // `allow_user_limited_channels` it can only be reached with a token or in
    // insecure mode, never through `allow_subscribe_for_client`.
    let user_limited = r.user_limited.is_some();
    if user_limited && o.allow_user_limited_channels && r.user_listed(who.user) {
        return Ok(());
    }
    if o.subscribe_proxy_enabled && !user_limited {
        return Err(ChannelError::Proxied);
    }
    if o.allow_subscribe_for_client
        && (!who.anonymous() || o.allow_subscribe_for_anonymous)
        && !user_limited
    {
        return Ok(());
    }
    if who.insecure {
        return Ok(());
    }
    Err(ChannelError::PermissionDenied)
}

/// Publish permission for a client; the namespace's `channel_regex` applies first
/// (107). `is_subscribed`: the connection is subscribed to the channel.
pub fn check_publish(
    r: &Resolved<'_>,
    who: &Subject<'_>,
    is_subscribed: bool,
) -> Result<(), ChannelError> {
    check_name(r)?;
    let o = r.options;
    if o.publish_proxy_enabled {
        return Err(ChannelError::Proxied);
    }
    allowed(
        who,
        is_subscribed,
        o.allow_publish_for_client,
        o.allow_publish_for_subscriber,
        o.allow_publish_for_anonymous,
    )
}

/// Presence and presence_stats permission; 108 when the namespace keeps no presence.
pub fn check_presence(
    r: &Resolved<'_>,
    who: &Subject<'_>,
    is_subscribed: bool,
) -> Result<(), ChannelError> {
    let o = r.options;
    if !o.presence {
        return Err(ChannelError::NotAvailable);
    }
    allowed(
        who,
        is_subscribed,
        o.allow_presence_for_client,
        o.allow_presence_for_subscriber,
        o.allow_presence_for_anonymous,
    )
}

/// History permission; 108 unless both `history_size` and `history_ttl` are set.
pub fn check_history(
    r: &Resolved<'_>,
    who: &Subject<'_>,
    is_subscribed: bool,
) -> Result<(), ChannelError> {
    let o = r.options;
    if o.history_size == 0 || o.history_ttl.is_zero() {
        return Err(ChannelError::NotAvailable);
    }
    allowed(
        who,
        is_subscribed,
        o.allow_history_for_client,
        o.allow_history_for_subscriber,
        o.allow_history_for_anonymous,
    )
}

/// The shared `*_for_client` / `*_for_subscriber` / `*_for_anonymous` / insecure rule.
fn allowed(
    who: &Subject<'_>,
    is_subscribed: bool,
    for_client: bool,
    for_subscriber: bool,
    for_anonymous: bool,
) -> Result<(), ChannelError> {
    let user_ok = !who.anonymous() || for_anonymous;
    if (for_client && user_ok) || (for_subscriber && is_subscribed && user_ok) || who.insecure {
        Ok(())
    } else {
        Err(ChannelError::PermissionDenied)
    }
}
