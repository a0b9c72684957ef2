//! Commands the backend decides through a proxy (spec §9): connect without a token, the
//! server-side refresh of such a connection, subscribe and publish in namespaces that enable a
//! proxy, server-side subscription refresh, and RPC.
//!
//! Owns: building each proxy request from the connection (common fields, payload, meta,
//! headers), queueing it for the shard's HTTP client as a flight, and turning the backend's
//! answer into the command's outcome. What a granted command then does is the plain command's
//! code (`connect_as`, `grant_subscribe`, `publish_at_home`).
//!
//! Must not: wait on anything but the flight (the call runs as a task on this shard's
//! executor), or send a connection's `meta` to its client.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::auth::SubscribeOverrides;
use crate::client::conn::{ConnKey, ProxyContext};
use crate::client::connect::Credentials;
use crate::client::subscribe::{Grant, ServerSub};
use crate::client::{Clients, Resume, Step};
use crate::protocol::{
    codes, PublishRequest, RawJson, ReplyBody, RpcRequest, RpcResult, SubscribeRequest,
};
use crate::proxy::{self, wire, Job, Outcome, ProxyId, Verdict};
use crate::shard::msg::Answer;
use crate::transport::Transport;

/// What a command does with its proxy's answer.
type Then = Box<dyn for<'c> FnOnce(&mut Clients<'c>, Outcome) -> Step>;

/// The fields of a request that depend on the event.
#[derive(Default)]
struct Fields<'a> {
    /// The event (the metrics' `type` label).
    kind: &'static str,
    /// The client id (connect: the one the connection will get).
    client: Option<uuid::Uuid>,
    /// The command's payload.
    data: &'a [u8],
    name: &'a str,
    version: &'a str,
    channels: &'a [&'a str],
    channel: &'a str,
    method: &'a str,
}

/// What a refresh or sub_refresh renews.
struct Renewal {
    /// New expiry (`None`: never).
    expire_at: Option<i64>,
    /// New info, when the answer gives one.
    info: Option<RawJson>,
    /// New connection meta (refresh only).
    meta: Option<Box<RawValue>>,
}

/// The fields every request carries.
struct Common {
    client: String,
    transport: &'static str,
    protocol: &'static str,
    user: Arc<str>,
}

/// Upstream's transport names.
fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::WebSocket { .. } => "websocket",
        Transport::HttpStream => "http_stream",
        Transport::Sse => "sse",
        Transport::UniWebSocket { .. } => "uni_websocket",
        Transport::UniSse => "uni_sse",
        Transport::UniHttpStream => "uni_http_stream",
    }
}

/// A payload as the proxy wants it: raw JSON (`data`) or base64 (`b64data`). `Err` when a
/// Protobuf client's bytes are not JSON and the proxy expects JSON.
fn payload(binary: bool, data: &[u8]) -> Result<(Option<Box<RawValue>>, String), String> {
    if data.is_empty() {
        return Ok((None, String::new()));
    }
    if binary {
        return Ok((None, wire::b64(data)));
    }
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    RawValue::from_string(text.to_owned())
        .map(|raw| (Some(raw), String::new()))
        .map_err(|e| format!("payload is not JSON (set binary_encoding on the proxy): {e}"))
}

/// The outcome a flight's answer carries.
fn outcome_of(answers: Vec<Option<Answer>>) -> Outcome {
    match answers.into_iter().next().flatten() {
        Some(Answer::Proxy(outcome)) => outcome,
        _ => Err(proxy::CallError::Transport("no answer".into())),
    }
}

impl Clients<'_> {
    fn common(&self, key: ConnKey, client: Option<uuid::Uuid>) -> Option<Common> {
        let conn = self.conns.get(key)?;
        let session = conn.session();
        let client = client.or_else(|| session.map(|s| s.client)).unwrap_or_default();
        Some(Common {
            client: client.to_string(),
            transport: transport_name(conn.transport),
            protocol: if conn.protobuf { "protobuf" } else { "json" },
            user: session.map_or_else(|| Arc::from(""), |s| Arc::clone(&s.user)),
        })
    }

    /// The connection's proxy context, made on first use.
    fn proxy_context(&mut self, key: ConnKey) -> Option<&mut ProxyContext> {
        let conn = self.conns.get_mut(key)?;
        Some(conn.proxy.get_or_insert_with(Box::default))
    }

    /// Keeps a connection's new `meta` (from its token or a proxy) for later proxy calls;
    /// nothing is kept when no proxy could send it.
    pub(super) fn keep_meta(&mut self, key: ConnKey, meta: Option<Box<RawValue>>) {
        if meta.is_none() || !self.env.proxies.any() {
            return;
        }
        if let Some(ctx) = self.proxy_context(key) {
            ctx.meta = meta;
        }
    }

    /// Queues a call to proxy `id` for `key`'s command: the common fields, the event's
    /// `fields`, the payload and the meta. `blocks`: the connection takes no next command until
    /// `then` has run (a client command); else the call runs beside it (a refresh).
    fn call_proxy(
        &mut self,
        key: ConnKey,
        id: ProxyId,
        blocks: bool,
        fields: &Fields<'_>,
        then: Then,
    ) -> Step {
        let proxies = Arc::clone(&self.env.proxies);
        let (Some(ep), Some(common)) = (proxies.endpoint(id), self.common(key, fields.client))
        else {
            return Step::Stop;
        };
        let (data, b64data) = match payload(ep.binary, fields.data) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(proxy = %ep.key, "{e}");
                return then(self, Err(proxy::CallError::Transport(e)));
            }
        };
        let ctx = self.conns.get(key).and_then(|c| c.proxy.as_deref());
        let meta = ctx.and_then(|c| c.meta.as_deref()).filter(|_| ep.include_meta);
        let request = wire::Request {
            client: &common.client,
            transport: common.transport,
            protocol: common.protocol,
            encoding: if ep.binary { "binary" } else { "json" },
            name: fields.name,
            version: fields.version,
            channels: fields.channels,
            user: &common.user,
            channel: fields.channel,
            method: fields.method,
            data: data.as_deref(),
            b64data,
            meta,
        };
        // Serializing borrowed strings and already-valid JSON cannot fail.
        let body = Bytes::from(serde_json::to_vec(&request).unwrap_or_default());
        let headers = match ctx {
            Some(c) => proxy::request_headers(ep, &c.emulated, &c.transport),
            None => proxy::request_headers(ep, &[], &[]),
        };
        let deadline = self.env.clock.now() + ep.timeout;
        let resume: Resume =
            Box::new(move |c: &mut Clients<'_>, answers| then(c, outcome_of(answers)));
        let token = if blocks {
            self.park(key, 1, resume)
        } else {
            self.flights.open(Some(key), false, 1, resume)
        };
        self.metrics.proxy(fields.kind, &ep.name).inflight += 1;
        self.calls.push(Job { token, kind: fields.kind, proxy: id, headers, body, deadline });
        Step::Wait
    }

    /// The backend's answer to a call, for a connection that still waits for it (`None`: it
    /// closed meanwhile).
    fn verdict_for<R: serde::de::DeserializeOwned>(
        &self,
        key: ConnKey,
        proxy: ProxyId,
        outcome: Outcome,
    ) -> Option<Verdict<R>> {
        if !self.open(key) {
            return None;
        }
        Some(proxy::verdict(self.env.proxies.endpoint(proxy)?, outcome))
    }

    /// Whether the connection still waits for what its proxy call decides.
    fn open(&self, key: ConnKey) -> bool {
        self.conns.get(key).is_some_and(|c| c.closing.is_none())
    }

    /// Bytes from the backend as a payload for this connection: JSON clients need JSON.
    fn raw_for(&self, key: ConnKey, bytes: Option<Bytes>) -> Result<Option<RawJson>, ()> {
        match bytes {
            None => Ok(None),
            Some(b) if self.is_protobuf(key) => Ok(Some(RawJson(b))),
            Some(b) => RawJson::parse(&b).map(Some).map_err(drop),
        }
    }

    /// The backend's `b64…`/JSON pair as a payload for this connection (`Err`: undecodable).
    fn pick(&self, key: ConnKey, json: &wire::Raw, b64: &str) -> Result<Option<RawJson>, ()> {
        let bytes = wire::pick(json, b64).map_err(drop)?;
        self.raw_for(key, bytes)
    }

    /// An error or disconnect from the backend (or a failed call: 100) ends the command.
    fn denied<R>(&mut self, key: ConnKey, id: u32, verdict: Verdict<R>) -> Step {
        match verdict {
            Verdict::Disconnect(d) => {
                self.disconnect(key, d);
                Step::Stop
            }
            Verdict::Error(e) => {
                self.reply_error(key, id, e);
                Step::Next
            }
            Verdict::Failed(why) => {
                tracing::warn!(%why, "proxy call failed");
                self.reply_error(key, id, codes::ERROR_INTERNAL);
                Step::Next
            }
            Verdict::Result(_) => {
                self.reply_error(key, id, codes::ERROR_INTERNAL);
                Step::Next
            }
        }
    }

    /// `connect` without a token: the connect proxy decides who the client is.
    pub(super) fn connect_proxy(
        &mut self,
        key: ConnKey,
        id: u32,
        req: &crate::protocol::ConnectRequest,
        proxy: ProxyId,
    ) -> Step {
        let client = uuid::Uuid::new_v4();
        let kept = self.env.proxies.keep_emulated_headers(&req.headers);
        if !kept.is_empty() {
            if let Some(ctx) = self.proxy_context(key) {
                ctx.emulated = kept;
            }
        }
        let channels: Vec<&str> = req.subs.iter().map(|(c, _)| c.as_str()).collect();
        let data = req.data.as_ref().map_or(&[][..], |d| &d.0[..]);
        let positions = req.subs.clone();
        let then: Then = Box::new(move |c: &mut Clients<'_>, outcome| {
            c.connect_answered(key, id, client, proxy, positions, outcome)
        });
        let (name, version) = (req.name.as_str(), req.version.as_str());
        let fields = Fields {
            kind: "connect",
            client: Some(client),
            data,
            name,
            version,
            channels: &channels,
            ..Fields::default()
        };
        self.call_proxy(key, proxy, true, &fields, then)
    }

    fn connect_answered(
        &mut self,
        key: ConnKey,
        id: u32,
        client: uuid::Uuid,
        proxy: ProxyId,
        positions: Vec<(String, SubscribeRequest)>,
        outcome: Outcome,
    ) -> Step {
        let Some(verdict) = self.verdict_for::<wire::ConnectResult>(key, proxy, outcome) else {
            return Step::Stop;
        };
        let result = match verdict {
            Verdict::Result(Some(r)) => r,
            Verdict::Result(None) => {
                // No credentials: the anonymous rules decide (spec §4.6).
                let cfg = &self.env.cfg.client;
                if !(cfg.insecure || cfg.allow_anonymous_connect_without_token) {
                    return self.bad_request(key);
                }
                return self.connect_as(key, id, client, Credentials::anonymous(), positions);
            }
            refused => return self.denied(key, id, refused),
        };
        let (Ok(conn_info), Ok(data)) = (
            self.pick(key, &result.info, &result.b64info),
            self.pick(key, &result.data, &result.b64data),
        ) else {
            return self.denied::<()>(key, id, Verdict::Failed("undecodable info or data".into()));
        };
        let mut subs: Vec<ServerSub> =
            result.channels.iter().map(|c| ServerSub::plain(Arc::from(c.as_str()))).collect();
        for (channel, o) in &result.subs {
            let (Ok(info), Ok(data)) =
                (self.pick(key, &o.info, &o.b64info), self.pick(key, &o.data, &o.b64data))
            else {
                return self.denied::<()>(key, id, Verdict::Failed("undecodable sub".into()));
            };
            subs.push(ServerSub {
                channel: Arc::from(channel.as_str()),
                info,
                data,
                overrides: o.override_.as_ref().map(wire::Override::overrides).unwrap_or_default(),
            });
        }
        let creds = Credentials {
            user: result.user,
            conn_info,
            expire_at: (result.expire_at > 0).then_some(result.expire_at),
            subs,
            token_channels: 0,
            client_channels: false,
            data,
            server_refresh: self.env.proxies.refresh.is_some(),
            meta: result.meta,
        };
        self.connect_as(key, id, client, creds, positions)
    }

    /// What a refresh or sub_refresh answer renews (`None`: expired, or no result). A call
    /// that failed retries in a minute, as upstream; the `error`/`disconnect` of an answer are
    /// not for the client here (spec §9.2) and mean no result.
    fn renewal(
        &self,
        key: ConnKey,
        verdict: Verdict<wire::RefreshResult>,
        now: i64,
    ) -> Option<Renewal> {
        match verdict {
            Verdict::Failed(why) => {
                tracing::warn!(%why, "refresh proxy call failed");
                Some(Renewal { expire_at: Some(now + 60), info: None, meta: None })
            }
            Verdict::Result(Some(r)) if !r.expired && (r.expire_at == 0 || r.expire_at > now) => {
                Some(Renewal {
                    expire_at: (r.expire_at > 0).then_some(r.expire_at),
                    info: self.pick(key, &r.info, &r.b64info).ok().flatten(),
                    meta: r.meta,
                })
            }
            _ => None,
        }
    }

    /// A connection the refresh proxy renews reached its `expire_at`: ask the backend, beside
    /// the connection's commands.
    pub(super) fn refresh_proxy(&mut self, key: ConnKey) {
        let Some(proxy) = self.env.proxies.refresh else { return };
        let Some(session) = self.conns.get_mut(key).and_then(|c| c.session_mut()) else { return };
        if session.refreshing {
            return;
        }
        session.refreshing = true;
        let then: Then =
            Box::new(move |c: &mut Clients<'_>, outcome| c.refresh_answered(key, proxy, outcome));
        self.call_proxy(key, proxy, false, &Fields { kind: "refresh", ..Fields::default() }, then);
    }

    fn refresh_answered(&mut self, key: ConnKey, proxy: ProxyId, outcome: Outcome) -> Step {
        let Some(verdict) = self.verdict_for::<wire::RefreshResult>(key, proxy, outcome) else {
            return Step::Stop;
        };
        let now = self.env.clock.unix_secs();
        let Some(Renewal { expire_at, info: conn_info, meta }) = self.renewal(key, verdict, now)
        else {
            self.disconnect(key, codes::DISCONNECT_EXPIRED);
            return Step::Stop;
        };
        self.keep_meta(key, meta);
        let Some(session) = self.conns.get_mut(key).and_then(|c| c.session_mut()) else {
            return Step::Stop;
        };
        session.refreshing = false;
        session.expire_at = expire_at;
        if conn_info.is_some() {
            session.conn_info = conn_info;
        }
        if let Some(at) = expire_at {
            self.arm_refresh(key, at, now);
        }
        Step::Next
    }

    /// `subscribe` in a namespace whose subscribe proxy decides.
    pub(super) fn subscribe_proxy(
        &mut self,
        key: ConnKey,
        id: u32,
        req: SubscribeRequest,
        proxy: ProxyId,
        server_refresh: bool,
    ) -> Step {
        let data = req.data.as_ref().map_or(Bytes::new(), |d| d.0.clone());
        let channel = req.channel.clone();
        let then: Then = Box::new(move |c: &mut Clients<'_>, outcome| {
            c.subscribe_answered(key, id, &req, proxy, server_refresh, outcome)
        });
        self.call_proxy(
            key,
            proxy,
            true,
            &Fields { kind: "subscribe", data: &data, channel: &channel, ..Fields::default() },
            then,
        )
    }

    fn subscribe_answered(
        &mut self,
        key: ConnKey,
        id: u32,
        req: &SubscribeRequest,
        proxy: ProxyId,
        server_refresh: bool,
        outcome: Outcome,
    ) -> Step {
        let Some(verdict) = self.verdict_for::<wire::SubscribeResult>(key, proxy, outcome) else {
            return Step::Stop;
        };
        let mut grant = Grant { server_refresh, ..Grant::default() };
        match verdict {
            // Anything but an error or a disconnect allows, with namespace defaults.
            Verdict::Result(None) => {}
            Verdict::Result(Some(r)) => {
                let (Ok(info), Ok(data)) =
                    (self.pick(key, &r.info, &r.b64info), self.pick(key, &r.data, &r.b64data))
                else {
                    return self.denied::<()>(key, id, Verdict::Failed("undecodable".into()));
                };
                grant.chan_info = info;
                grant.data = data;
                grant.expire_at = (r.expire_at > 0).then_some(r.expire_at);
                grant.overrides = r
                    .override_
                    .as_ref()
                    .map_or_else(SubscribeOverrides::default, wire::Override::overrides);
            }
            refused => return self.denied(key, id, refused),
        }
        self.grant_subscribe(key, id, req, grant)
    }

    /// A subscription the sub_refresh proxy keeps reached its `expire_at`: ask the backend.
    pub(super) fn sub_refresh_proxy(&mut self, key: ConnKey, channel: &Arc<str>, proxy: ProxyId) {
        let name = Arc::clone(channel);
        let then: Then = Box::new(move |c: &mut Clients<'_>, outcome| {
            c.sub_refresh_answered(key, &name, proxy, outcome)
        });
        self.call_proxy(
            key,
            proxy,
            false,
            &Fields { kind: "sub_refresh", channel, ..Fields::default() },
            then,
        );
    }

    fn sub_refresh_answered(
        &mut self,
        key: ConnKey,
        channel: &Arc<str>,
        proxy: ProxyId,
        outcome: Outcome,
    ) -> Step {
        let Some(verdict) = self.verdict_for::<wire::RefreshResult>(key, proxy, outcome) else {
            return Step::Stop;
        };
        let now = self.env.clock.unix_secs();
        match self.renewal(key, verdict, now) {
            Some(r) => self.sub_refreshed(key, channel, r.expire_at, r.info, now),
            None => self.unsubscribe_with(
                key,
                channel,
                codes::UNSUBSCRIBE_EXPIRED,
                codes::DISCONNECT_SUBSCRIPTION_EXPIRED,
            ),
        }
        Step::Next
    }

    /// `publish` in a namespace whose publish proxy decides (and may rewrite it).
    pub(super) fn publish_proxy(
        &mut self,
        key: ConnKey,
        id: u32,
        req: PublishRequest,
        proxy: ProxyId,
    ) -> Step {
        let data = req.data.0.clone();
        let channel = req.channel.clone();
        let then: Then = Box::new(move |c: &mut Clients<'_>, outcome| {
            c.publish_answered(key, id, req, proxy, outcome)
        });
        self.call_proxy(
            key,
            proxy,
            true,
            &Fields { kind: "publish", data: &data, channel: &channel, ..Fields::default() },
            then,
        )
    }

    fn publish_answered(
        &mut self,
        key: ConnKey,
        id: u32,
        req: PublishRequest,
        proxy: ProxyId,
        outcome: Outcome,
    ) -> Step {
        let Some(verdict) = self.verdict_for::<wire::PublishResult>(key, proxy, outcome) else {
            return Step::Stop;
        };
        let result = match verdict {
            Verdict::Result(r) => r.unwrap_or_default(),
            refused => return self.denied(key, id, refused),
        };
        let data = match self.pick(key, &result.data, &result.b64data) {
            Ok(Some(d)) => d,
            Ok(None) => req.data,
            Err(()) => {
                return self.denied::<()>(key, id, Verdict::Failed("undecodable data".into()))
            }
        };
        let mut tags: Vec<(String, String)> = result.tags.into_iter().collect();
        tags.sort_unstable();
        let publish = crate::client::command::Publish {
            channel: Arc::from(req.channel.as_str()),
            data,
            tags,
            skip_history: result.skip_history,
            delta: result.delta,
            idempotency_key: Some(result.idempotency_key).filter(|k| !k.is_empty()),
            version: (result.version > 0).then_some((result.version, result.version_epoch)),
        };
        self.publish_at_home(key, id, publish)
    }

    /// `rpc` with a proxy: method and data to the backend, its data back.
    pub(super) fn rpc_proxy(
        &mut self,
        key: ConnKey,
        id: u32,
        req: &RpcRequest,
        proxy: ProxyId,
    ) -> Step {
        let data = req.data.as_ref().map_or(Bytes::new(), |d| d.0.clone());
        let then: Then = Box::new(move |c: &mut Clients<'_>, outcome| {
            let Some(verdict) = c.verdict_for::<wire::RpcResult>(key, proxy, outcome) else {
                return Step::Stop;
            };
            let result = match verdict {
                Verdict::Result(r) => r.unwrap_or_default(),
                refused => return c.denied(key, id, refused),
            };
            match c.pick(key, &result.data, &result.b64data) {
                Ok(data) => {
                    c.reply(key, id, &ReplyBody::Rpc(RpcResult { data }));
                    Step::Next
                }
                Err(()) => c.denied::<()>(key, id, Verdict::Failed("undecodable data".into())),
            }
        });
        let fields = Fields { kind: "rpc", data: &data, method: &req.method, ..Fields::default() };
        self.call_proxy(key, proxy, true, &fields, then)
    }
}
