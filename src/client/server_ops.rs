//! Server API operations on this shard's live connections: `subscribe`, `unsubscribe`,
//! `disconnect` and `refresh` (spec §3.3). The API request is sent to every shard; each one
//! applies it to its own matching connections.
//!
//! Owns: matching connections against a [`ConnFilter`] and applying the operation. Must not
//! touch another shard's connections.

use std::sync::Arc;

use crate::broker::control::{ConnFilter, ConnsOp};
use crate::client::conn::ConnKey;
use crate::client::subscribe::ServerSub;
use crate::client::Clients;
use crate::protocol::{codes, PushBody};
use crate::shard::id::Lane;
use crate::shard::msg::{Cast, ShardMsg};

impl Clients<'_> {
    /// Has every shard (this one included) apply `op` to its matching connections, with no
    /// answer.
    pub fn apply_everywhere(&mut self, op: &ConnsOp) {
        for shard in self.mesh.all().collect::<Vec<_>>() {
            let cast = Cast::ApplyToConns(Box::new(op.clone()));
            self.mesh.send(Lane::Main, shard, ShardMsg::Cast(Box::new(cast)));
        }
    }

    /// Live local connections matching `filter`: the user's connections only are looked at.
    fn matching(&self, filter: &ConnFilter) -> Vec<ConnKey> {
        // WebSocket connections have no session id, so a session filter matches none of them.
        if !filter.session.is_empty() {
            return Vec::new();
        }
        self.conns
            .of_user(&filter.user)
            .iter()
            .copied()
            .filter(|key| {
                self.conns.get(*key).is_some_and(|c| {
                    c.closing.is_none()
                        && c.session().is_some_and(|s| {
                            filter.client.is_empty() || s.client.to_string() == filter.client
                        })
                })
            })
            .collect()
    }

    /// Applies an API operation to the matching local connections.
    pub fn conns_op(&mut self, op: ConnsOp) {
        match op {
            ConnsOp::Subscribe {
                filter,
                channel,
                info,
                data,
                expire_at,
                recover_since,
                overrides,
            } => {
                let spec = ServerSub { channel, info, data, overrides };
                for key in self.matching(&filter) {
                    self.server_subscribe(key, &spec, expire_at, recover_since.clone());
                }
            }
            ConnsOp::Unsubscribe { filter, channel } => {
                for key in self.matching(&filter) {
                    let channels: Vec<Arc<str>> =
                        match self.conns.get(key).and_then(|c| c.session()) {
                            Some(s) if channel.is_empty() => {
                                s.subs.iter().map(|sub| Arc::clone(&sub.channel)).collect()
                            }
                            Some(s) => s
                                .sub(&channel)
                                .map(|sub| Arc::clone(&sub.channel))
                                .into_iter()
                                .collect(),
                            None => Vec::new(),
                        };
                    for ch in channels {
                        self.server_unsubscribe(key, &ch);
                    }
                }
            }
            ConnsOp::Disconnect { filter, whitelist, disconnect } => {
                for key in self.matching(&filter) {
                    let spared = self.conns.get(key).and_then(|c| c.session()).is_some_and(|s| {
                        let id = s.client.to_string();
                        whitelist.contains(&id)
                    });
                    if !spared {
                        self.disconnect(key, disconnect.clone());
                    }
                }
            }
            ConnsOp::Refresh { filter, expired, expire_at, info } => {
                for key in self.matching(&filter) {
                    if expired {
                        self.disconnect(key, codes::DISCONNECT_EXPIRED);
                        continue;
                    }
                    self.refresh_conn(key, expire_at, info.clone());
                }
            }
        }
    }

    /// Removes a subscription at the server's request and tells the client with an
    /// `unsubscribe` push (2000).
    fn server_unsubscribe(&mut self, key: ConnKey, channel: &str) {
        let removed = self
            .conns
            .get_mut(key)
            .and_then(|c| c.session_mut())
            .and_then(|s| s.remove_sub(channel));
        let Some(sub) = removed else { return };
        self.unsubscribed(key, &sub);
        self.metrics.server_unsubscribe(codes::UNSUBSCRIBE_SERVER.code);
        self.push(key, channel, &PushBody::Unsubscribe(codes::UNSUBSCRIBE_SERVER));
    }

    /// API `refresh` of one connection: new expiry (0 = never) and info, announced with a
    /// `refresh` push.
    fn refresh_conn(
        &mut self,
        key: ConnKey,
        expire_at: i64,
        info: Option<crate::protocol::RawJson>,
    ) {
        let now = self.env.clock.unix_secs();
        let Some(s) = self.conns.get_mut(key).and_then(|c| c.session_mut()) else { return };
        if let Some(info) = info {
            s.conn_info = Some(info);
        }
        s.expire_at = (expire_at > 0).then_some(expire_at);
        let ttl = u32::try_from((expire_at - now).max(0)).unwrap_or(u32::MAX);
        if expire_at > 0 {
            self.arm_expiry(key, expire_at, now);
        }
        let push =
            PushBody::Refresh { expires: expire_at > 0, ttl: if expire_at > 0 { ttl } else { 0 } };
        self.push(key, "", &push);
    }
}
