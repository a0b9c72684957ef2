//! The connection-level commands that are neither connect nor subscriptions: `refresh` and a
//! client's `publish` (spec §2.10, §5.3).
//!
//! Owns: their checks and replies. A publish is ordered by the channel's home shard; this
//! module must not touch channel state.

use std::sync::Arc;

use crate::auth::{self, Expiry, TokenError};
use crate::broker::{PublishCall, Reply};
use crate::channel::{self, ChannelError, Subject};
use crate::client::conn::ConnKey;
use crate::client::{rules, Clients, Resume, Step};
use crate::protocol::{codes, Publication, PublishRequest, RawJson, RefreshResult, ReplyBody};
use crate::proxy::ChannelEvent;
use crate::shard::msg::{Answer, Call};

/// A client publication that may go to its channel's home shard.
#[derive(Debug)]
pub struct Publish {
    /// Channel.
    pub channel: Arc<str>,
    /// Payload.
    pub data: RawJson,
    /// Tags (publish proxy).
    pub tags: Vec<(String, String)>,
    /// Keep it out of history (publish proxy).
    pub skip_history: bool,
    /// Send as a delta where subscribers negotiated it.
    pub delta: bool,
    /// Idempotency key (publish proxy).
    pub idempotency_key: Option<String>,
    /// Version and epoch (publish proxy).
    pub version: Option<(u64, String)>,
}

impl Clients<'_> {
    /// `refresh` (spec §2.10): a new connection token extends (or ends) the expiry.
    pub(super) fn refresh(&mut self, key: ConnKey, id: u32, token: &str) -> Step {
        // With the refresh proxy the server renews the connection: it was never told it
        // expires, and a client refresh is a protocol violation, as upstream.
        let server_refresh =
            self.conns.get(key).and_then(|c| c.session()).is_some_and(|s| s.server_refresh);
        if token.is_empty() || server_refresh {
            return self.bad_request(key);
        }
        let now = self.env.clock.unix_secs();
        let claims = match self.env.verifier.verify_connection(token, now) {
            Ok(c) => c,
            Err(TokenError::Expired) => {
                self.disconnect(key, codes::DISCONNECT_EXPIRED);
                return Step::Stop;
            }
            Err(TokenError::BadConnectionInfo) => {
                self.reply_error(key, id, codes::ERROR_INTERNAL);
                return Step::Next;
            }
            Err(TokenError::KeysPending) if !self.keys_retry => {
                return Step::KeysPending { token: token.to_owned(), subscription: false };
            }
            Err(TokenError::Invalid(_) | TokenError::KeysPending) => {
                self.disconnect(key, codes::DISCONNECT_INVALID_TOKEN);
                return Step::Stop;
            }
        };
        let Some(session) = self.conns.get_mut(key).and_then(|c| c.session_mut()) else {
            return Step::Stop;
        };
        if *session.user != *claims.user {
            self.disconnect(key, codes::DISCONNECT_INVALID_TOKEN);
            return Step::Stop;
        }
        if session.token_channels != rules::token_channels(&claims) {
            self.disconnect(key, codes::DISCONNECT_INSUFFICIENT_STATE);
            return Step::Stop;
        }
        let expiry = match auth::connection_expiry(&claims, now) {
            Expiry::Never => None,
            Expiry::At(at) => Some(at),
            Expiry::AlreadyExpired => {
                self.reply_error(key, id, codes::ERROR_EXPIRED);
                return Step::Next;
            }
        };
        session.expire_at = expiry;
        if let Some(info) = claims.info {
            session.conn_info = Some(crate::protocol::RawJson(info));
        }
        let meta = claims.meta.as_deref().and_then(crate::client::connect::raw_value);
        self.keep_meta(key, meta);
        if let Some(at) = expiry {
            self.arm_expiry(key, at, now);
        }
        let body = match expiry {
            Some(at) => ReplyBody::Refresh(RefreshResult {
                expires: true,
                ttl: u32::try_from(at - now).unwrap_or(u32::MAX),
                ..RefreshResult::default()
            }),
            None => ReplyBody::Refresh(RefreshResult::default()),
        };
        self.reply(key, id, &body);
        Step::Next
    }

    /// `publish` from a client (spec §5.3): permission, data format, then the home shard.
    pub(super) fn client_publish(&mut self, key: ConnKey, id: u32, req: PublishRequest) -> Step {
        if req.channel.is_empty() {
            return self.bad_request(key);
        }
        let insecure = self.env.cfg.client.insecure;
        let namespaces = Arc::clone(&self.env.namespaces);
        let global_format = self.env.cfg.channel.publication_data_format.clone();
        let Some(session) = self.conns.get(key).and_then(|c| c.session()) else {
            return Step::Stop;
        };
        let channel: Arc<str> = Arc::from(req.channel.as_str());
        let subscribed = session.has_sub(&channel);
        let user = Arc::clone(&session.user);
        let resolved = match namespaces.resolve(&channel) {
            Ok(r) => r,
            Err(e) => {
                self.reply_error(key, id, rules::channel_error(e));
                return Step::Next;
            }
        };
        let who = Subject { user: &user, insecure };
        let proxy = match channel::check_publish(&resolved, &who, subscribed) {
            Ok(()) => None,
            Err(ChannelError::Proxied) => {
                match self.env.proxies.channel(ChannelEvent::Publish, resolved.options) {
                    Some(proxy) => Some(proxy),
                    None => {
                        self.reply_error(key, id, codes::ERROR_NOT_AVAILABLE);
                        return Step::Next;
                    }
                }
            }
            Err(e) => {
                self.reply_error(key, id, rules::channel_error(e));
                return Step::Next;
            }
        };
        let format = if resolved.options.publication_data_format.is_empty() {
            global_format.as_str()
        } else {
            resolved.options.publication_data_format.as_str()
        };
        // A JSON client's payload was parsed as JSON already; a Protobuf client's is any bytes.
        let json = !self.is_protobuf(key) || rules::is_json(req.data.as_bytes());
        if !rules::data_format_ok(format, req.data.as_bytes(), json) {
            self.reply_error(key, id, codes::ERROR_BAD_REQUEST);
            return Step::Next;
        }
        if let Some(proxy) = proxy {
            return self.publish_proxy(key, id, req, proxy);
        }
        let delta = resolved.options.delta_publish;
        let publish = Publish {
            channel: Arc::clone(&channel),
            data: req.data,
            tags: Vec::new(),
            skip_history: false,
            delta,
            idempotency_key: None,
            version: None,
        };
        self.publish_at_home(key, id, publish)
    }

    /// Sends an allowed client publication to its channel's home shard, with the publisher's
    /// client info; replies once it is ordered.
    pub(super) fn publish_at_home(&mut self, key: ConnKey, id: u32, p: Publish) -> Step {
        let namespaces = Arc::clone(&self.env.namespaces);
        let Ok(resolved) = namespaces.resolve(&p.channel) else { return Step::Stop };
        let Some(info) = self.conns.get(key).and_then(|c| c.session()).map(|s| s.info(None)) else {
            return Step::Stop;
        };
        let json = !self.is_protobuf(key) || rules::is_json(p.data.as_bytes());
        let history = rules::history_policy(resolved.options, p.skip_history);
        let publication = Publication {
            data: p.data,
            info: Some(info),
            tags: p.tags,
            binary: !json,
            delta_eligible: p.delta,
            ..Publication::default()
        };
        let channel = p.channel;
        let call = Call::Publish(PublishCall {
            channel: Arc::clone(&channel),
            publication,
            history,
            idempotency_key: p.idempotency_key,
            version: p.version,
        });
        let resume: Resume = Box::new(move |c: &mut Clients<'_>, answers| {
            match answers.into_iter().next().flatten() {
                Some(Answer::Channel(Reply::Published(_))) => {
                    c.reply(key, id, &ReplyBody::Publish);
                }
                _ => c.reply_error(key, id, codes::ERROR_INTERNAL),
            }
            Step::Next
        });
        self.ask_home(key, &channel, call, resume)
    }
}
