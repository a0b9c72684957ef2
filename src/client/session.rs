//! An authenticated session and its subscriptions, as a connection holds them.
//!
//! Owns: [`Session`] (client id, user, info, expiry, subscriptions) and [`Sub`] with its
//! [`SubFlags`], decided once at subscribe time. Kept small on purpose: idle memory per
//! connection is a target, so rarely used fields are boxed. Must not: know about shards, the hub
//! or I/O.

use std::sync::Arc;

use crate::protocol::{ClientInfo, RawJson};

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
    /// The sub_refresh proxy renews the expiry (server-side refresh).
    pub const SERVER_REFRESH: u16 = 1 << 10;
    /// A sub_refresh proxy call is in flight.
    pub const REFRESHING: u16 = 1 << 11;

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
    pub fn needs_home(self) -> bool {
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
    /// Its tags filter (`SubscribeRequest.tf`): publications it rejects are not sent.
    pub filter: Option<Arc<crate::hub::filter::TagsFilter>>,
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

/// An authenticated session.
#[derive(Debug)]
pub struct Session {
    /// Client id sent in `ConnectResult.client` (a UUID kept in binary: 16 bytes inline
    /// instead of a 36-character string on the heap for every connection).
    pub client: uuid::Uuid,
    /// User id (empty = anonymous).
    pub user: Arc<str>,
    /// `info` claim, attached to the client's publications.
    pub conn_info: Option<RawJson>,
    /// Channels this connection is subscribed to.
    /// A list, not a set: most connections hold one or a few channels, a set allocates buckets
    /// even for one, and `client.channel_limit` (128) bounds the linear search.
    pub subs: Vec<Sub>,
    /// Unix seconds when the connection expires, if it does.
    pub expire_at: Option<i64>,
    /// The user's home shard counts this connection (`client.user_connection_limit`).
    pub counted: bool,
    /// Fingerprint of the token's server-side channel set (`channels`/`subs`); a refresh token
    /// with another set closes the connection with 3010 so it reconnects with the new set.
    pub token_channels: u64,
    /// The refresh proxy renews `expire_at` (configured: every connection with an expiry).
    pub server_refresh: bool,
    /// A refresh proxy call is in flight.
    pub refreshing: bool,
}

impl Session {
    /// The subscription to `channel`, if any.
    pub fn sub(&self, channel: &str) -> Option<&Sub> {
        self.subs.iter().find(|s| *s.channel == *channel)
    }

    /// Whether the connection is subscribed to `channel`.
    pub fn has_sub(&self, channel: &str) -> bool {
        self.sub(channel).is_some()
    }

    /// Adds a subscription. Capacity grows 1, 2, 4, … instead of `Vec`'s first jump to 4:
    /// most connections hold one channel, and idle memory per connection is a target.
    pub fn push_sub(&mut self, sub: Sub) {
        if self.subs.len() == self.subs.capacity() {
            self.subs.reserve_exact(self.subs.len().max(1));
        }
        self.subs.push(sub);
    }

    /// Removes and returns the subscription to `channel`.
    pub fn remove_sub(&mut self, channel: &str) -> Option<Sub> {
        let i = self.subs.iter().position(|s| *s.channel == *channel)?;
        Some(self.subs.swap_remove(i))
    }

    /// This client as presence and join/leave show it, with a subscription's channel info.
    pub fn info(&self, chan_info: Option<RawJson>) -> ClientInfo {
        ClientInfo {
            user: self.user.to_string(),
            client: self.client.to_string(),
            conn_info: self.conn_info.clone(),
            chan_info,
        }
    }

    /// For the subscription to `channel`: `None` when it did not negotiate deltas, else whether
    /// it was ready for patches. `ready`: it is being sent a publication from the live stream
    /// (patch base from now on); otherwise one from elsewhere, after which it needs a full
    /// payload again.
    pub fn delta_state(&mut self, channel: &str, ready: bool) -> Option<bool> {
        let sub = self.subs.iter_mut().find(|s| *s.channel == *channel)?;
        if !sub.flags.has(SubFlags::DELTA) {
            return None;
        }
        let was = sub.flags.has(SubFlags::DELTA_READY);
        if ready {
            sub.flags.set(SubFlags::DELTA_READY, true);
        } else {
            sub.flags.clear(SubFlags::DELTA_READY);
        }
        Some(was)
    }
}
