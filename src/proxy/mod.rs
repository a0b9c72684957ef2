//! Proxies to the application backend over HTTP (spec §9): which proxy serves which event,
//! what a request carries (body, headers), and what the backend's answer means.
//!
//! Owns: the resolved proxy table ([`Proxies`], built once from the config and shared by all
//! shards), the header rules of v6.9 (static, then allowed emulated, then allowed transport
//! headers) and the answer envelope ([`Verdict`]). The wire shapes live in [`wire`], the HTTP
//! client that runs on a shard's executor in [`http`].
//!
//! Must not: touch connections or shard state (the `client` commands do, through flights), or
//! block: every call is a future on the shard that owns the connection.

pub mod http;
pub mod wire;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::config::{ChannelOptions, Config, ConfigError, Proxy, StatusTransform};
use crate::protocol::{Disconnect, ProtocolError};

/// Why a proxy call brought no answer to decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The backend answered with another status than 200.
    #[error("unexpected HTTP status code: {0}")]
    Status(u16),
    /// No answer within the proxy's `timeout`.
    #[error("timed out")]
    Timeout,
    /// Connecting, TLS, or the exchange failed.
    #[error("{0}")]
    Transport(String),
}

/// What one call brought back: the body of a 200 answer, or why there is none.
pub type Outcome = Result<Bytes, CallError>;

/// An endpoint's address, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https://`.
    pub tls: bool,
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port (80/443 when the URL names none).
    pub port: u16,
    /// `Host` header value.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

/// One configured proxy, ready to call.
#[derive(Debug)]
pub struct Endpoint {
    /// Config path of the proxy, for logs and errors.
    pub key: String,
    /// Its `proxies[]` name, `default` for a section's own (the metrics' `name` label).
    pub name: Arc<str>,
    /// Where it goes.
    pub target: Target,
    /// Whole-call budget.
    pub timeout: Duration,
    /// Transport headers to forward, lower-cased.
    pub http_headers: Vec<String>,
    /// Emulated header keys to forward, lower-cased.
    pub emulated_headers: Vec<String>,
    /// Set on every request first.
    pub static_headers: Vec<(String, String)>,
    /// Status → error / disconnect.
    pub transforms: Vec<StatusTransform>,
    /// Payloads as `b64data`.
    pub binary: bool,
    /// Send the connection's meta.
    pub include_meta: bool,
    /// TLS settings for `https://` targets.
    pub tls: Option<Arc<futures_rustls::rustls::ClientConfig>>,
    /// Name the certificate must carry (`http.tls.server_name`, else the host).
    pub server_name: String,
}

/// Index of an [`Endpoint`] in [`Proxies`].
pub type ProxyId = usize;

/// The channel events a namespace may send to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelEvent {
    /// `subscribe_proxy_*`.
    Subscribe,
    /// `publish_proxy_*`.
    Publish,
    /// `sub_refresh_proxy_*`.
    SubRefresh,
}

/// Every proxy of the config, resolved and validated.
#[derive(Debug, Default)]
pub struct Proxies {
    endpoints: Vec<Endpoint>,
    /// `client.proxy.connect` when enabled.
    pub connect: Option<ProxyId>,
    /// `client.proxy.refresh` when enabled.
    pub refresh: Option<ProxyId>,
    channel_default: [Option<ProxyId>; 3],
    rpc_default: Option<ProxyId>,
    named: HashMap<String, ProxyId>,
    /// Transport header names any proxy forwards (lower-cased): what a connection keeps of its
    /// HTTP request.
    pub transport_headers: Vec<String>,
    /// Emulated header keys any proxy forwards (lower-cased).
    pub emulated_headers: Vec<String>,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

impl Proxies {
    /// Resolves every proxy the config uses; an error names the key at fault (an endpoint
    /// that is missing, not HTTP, or a name nothing defines).
    pub fn from_config(cfg: &Config) -> Result<Proxies, ConfigError> {
        let mut p = Proxies::default();
        for (index, named) in cfg.proxies.iter().enumerate() {
            let key = format!("proxies[{index}]");
            if named.name.is_empty() || named.name == "default" {
                return Err(invalid(
                    format!("{key}.name"),
                    "must be set and must not be \"default\" (that name means the section's own proxy)",
                ));
            }
            if p.named.contains_key(&named.name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("duplicate proxy name {:?}", named.name),
                ));
            }
            let id = p.add(&key, &named.name, &named.proxy)?;
            p.named.insert(named.name.clone(), id);
        }
        let client = &cfg.client.proxy;
        if client.connect.enabled {
            p.connect = Some(p.add("client.proxy.connect", "default", &client.connect.proxy)?);
        }
        if client.refresh.enabled {
            p.refresh = Some(p.add("client.proxy.refresh", "default", &client.refresh.proxy)?);
        }
        let channel = &cfg.channel.proxy;
        let defaults = [
            ("channel.proxy.subscribe", &channel.subscribe),
            ("channel.proxy.publish", &channel.publish),
            ("channel.proxy.sub_refresh", &channel.sub_refresh),
        ];
        for (slot, (key, proxy)) in defaults.into_iter().enumerate() {
            if !proxy.endpoint.is_empty() {
                p.channel_default[slot] = Some(p.add(key, "default", proxy)?);
            }
        }
        if !cfg.rpc.proxy.endpoint.is_empty() {
            p.rpc_default = Some(p.add("rpc.proxy", "default", &cfg.rpc.proxy)?);
        }
        p.check_channel_names("channel.without_namespace", &cfg.channel.without_namespace)?;
        for (i, ns) in cfg.channel.namespaces.iter().enumerate() {
            p.check_channel_names(&format!("channel.namespaces[{i}]"), &ns.options)?;
        }
        let rpc = &cfg.rpc;
        let rpc_options =
            std::iter::once((
                "rpc.without_namespace".to_owned(),
                rpc.without_namespace.proxy_enabled,
                rpc.without_namespace.proxy_name.as_str(),
            ))
            .chain(rpc.namespaces.iter().enumerate().map(|(i, n)| {
                (format!("rpc.namespaces[{i}]"), n.proxy_enabled, n.proxy_name.as_str())
            }));
        for (key, enabled, name) in rpc_options {
            if enabled && p.rpc(name).is_none() {
                return Err(p.missing(&format!("{key}.proxy_name"), name, "rpc.proxy"));
            }
        }
        Ok(p)
    }

    fn check_channel_names(&self, key: &str, o: &ChannelOptions) -> Result<(), ConfigError> {
        let events = [
            (ChannelEvent::Subscribe, "subscribe", "channel.proxy.subscribe"),
            (ChannelEvent::Publish, "publish", "channel.proxy.publish"),
            (ChannelEvent::SubRefresh, "sub_refresh", "channel.proxy.sub_refresh"),
        ];
        for (event, name, default_key) in events {
            let (enabled, proxy_name) = switch(o, event);
            if enabled && self.channel(event, o).is_none() {
                return Err(self.missing(
                    &format!("{key}.{name}_proxy_name"),
                    proxy_name,
                    default_key,
                ));
            }
        }
        Ok(())
    }

    fn missing(&self, key: &str, name: &str, default_key: &str) -> ConfigError {
        if name == "default" {
            invalid(key, format!("the proxy is enabled but {default_key}.endpoint is not set"))
        } else {
            invalid(key, format!("no proxy named {name:?} in proxies[]"))
        }
    }

    fn add(&mut self, key: &str, name: &str, proxy: &Proxy) -> Result<ProxyId, ConfigError> {
        let endpoint_key = format!("{key}.endpoint");
        if proxy.endpoint.is_empty() {
            return Err(invalid(endpoint_key, "must be set"));
        }
        if proxy.endpoint.starts_with("grpc://") {
            return Err(invalid(
                endpoint_key,
                "gRPC proxies are not supported by rotor yet (use an http:// or https:// endpoint)",
            ));
        }
        let target = parse_target(&proxy.endpoint).map_err(|m| invalid(&endpoint_key, m))?;
        if proxy.timeout.is_zero() {
            return Err(invalid(format!("{key}.timeout"), "must be greater than 0"));
        }
        for (i, t) in proxy.http.status_to_code_transforms.iter().enumerate() {
            let tkey = format!("{key}.http.status_to_code_transforms[{i}]");
            if t.status_code == 0 {
                return Err(invalid(format!("{tkey}.status_code"), "must be set"));
            }
            if (t.to_error.code > 0) == (t.to_disconnect.code > 0) {
                return Err(invalid(
                    tkey,
                    "needs exactly one of to_error.code and to_disconnect.code",
                ));
            }
            if t.to_disconnect.code > u32::from(u16::MAX) {
                return Err(invalid(format!("{tkey}.to_disconnect.code"), "must be below 65536"));
            }
        }
        let tls_cfg = &proxy.http.tls;
        let tls = if target.tls {
            let config = crate::tls::client_config(tls_cfg)
                .map_err(|e| invalid(format!("{key}.http.tls.{}", e.key), e.message))?;
            Some(Arc::new(config))
        } else {
            None
        };
        let lower = |v: &[String]| v.iter().map(|h| h.to_ascii_lowercase()).collect::<Vec<_>>();
        let endpoint = Endpoint {
            key: key.to_owned(),
            name: Arc::from(name),
            server_name: if tls_cfg.server_name.is_empty() {
                target.host.clone()
            } else {
                tls_cfg.server_name.clone()
            },
            target,
            timeout: proxy.timeout,
            http_headers: lower(&proxy.http_headers),
            emulated_headers: lower(&proxy.emulated_headers),
            static_headers: proxy
                .http
                .static_headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            transforms: proxy.http.status_to_code_transforms.clone(),
            binary: proxy.binary_encoding,
            include_meta: proxy.include_connection_meta,
            tls,
        };
        for h in &endpoint.http_headers {
            if !self.transport_headers.contains(h) {
                self.transport_headers.push(h.clone());
            }
        }
        for h in &endpoint.emulated_headers {
            if !self.emulated_headers.contains(h) {
                self.emulated_headers.push(h.clone());
            }
        }
        self.endpoints.push(endpoint);
        Ok(self.endpoints.len() - 1)
    }

    /// The endpoint `id` (ids come from this table).
    pub fn endpoint(&self, id: ProxyId) -> Option<&Endpoint> {
        self.endpoints.get(id)
    }

    /// The proxy a namespace sends `event` to, when it enables one.
    pub fn channel(&self, event: ChannelEvent, o: &ChannelOptions) -> Option<ProxyId> {
        let (enabled, name) = switch(o, event);
        if !enabled {
            return None;
        }
        if name == "default" {
            let slot = match event {
                ChannelEvent::Subscribe => 0,
                ChannelEvent::Publish => 1,
                ChannelEvent::SubRefresh => 2,
            };
            return self.channel_default[slot];
        }
        self.named.get(name).copied()
    }

    /// The RPC proxy called `name`.
    pub fn rpc(&self, name: &str) -> Option<ProxyId> {
        if name == "default" {
            return self.rpc_default;
        }
        self.named.get(name).copied()
    }

    /// Whether any proxy is configured (a shard then runs an HTTP client).
    pub fn any(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// What a connection keeps of its HTTP request headers: the ones some proxy forwards.
    pub fn keep_transport_headers(&self, headers: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
        if self.transport_headers.is_empty() {
            return Vec::new();
        }
        headers.iter().filter(|(k, _)| self.transport_headers.contains(k)).cloned().collect()
    }

    /// What a connection keeps of its emulated headers: the ones some proxy forwards.
    pub fn keep_emulated_headers(&self, headers: &[(String, String)]) -> Vec<(String, String)> {
        headers
            .iter()
            .filter(|(k, _)| self.emulated_headers.iter().any(|h| h.eq_ignore_ascii_case(k)))
            .cloned()
            .collect()
    }
}

fn switch(o: &ChannelOptions, event: ChannelEvent) -> (bool, &str) {
    match event {
        ChannelEvent::Subscribe => (o.subscribe_proxy_enabled, &o.subscribe_proxy_name),
        ChannelEvent::Publish => (o.publish_proxy_enabled, &o.publish_proxy_name),
        ChannelEvent::SubRefresh => (o.sub_refresh_proxy_enabled, &o.sub_refresh_proxy_name),
    }
}

/// Parses `http://host[:port][/path][?query]` (and `https://`); userinfo and fragments are
/// refused, IPv6 hosts need brackets.
pub fn parse_target(url: &str) -> Result<Target, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(format!("{url:?} must start with http:// or https://"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || path.contains('#') {
        return Err(format!("{url:?} is not a valid http(s) URL"));
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| format!("{url:?}: bad IPv6 host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| format!("{url:?}: bad port"))?,
            None if after.is_empty() => default_port,
            None => return Err(format!("{url:?}: bad host")),
        };
        (host.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => {
                (h.to_owned(), p.parse::<u16>().map_err(|_| format!("{url:?}: bad port"))?)
            }
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?}: empty host"));
    }
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
    Ok(Target { tls, host, port, authority: authority.to_owned(), path })
}

/// The headers of one request (spec §9.2, v6.9): static headers, then the connection's
/// emulated headers this proxy lists, then its transport headers this proxy lists — a later
/// one replaces an earlier one of the same name, so a real header wins over an emulated one.
/// `Content-Type` is added by the HTTP client and always wins.
pub fn request_headers(
    ep: &Endpoint,
    emulated: &[(String, String)],
    transport: &[(String, Vec<u8>)],
) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut put = |name: &str, value: &[u8]| {
        out.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        out.push((name.to_owned(), value.to_vec()));
    };
    for (k, v) in &ep.static_headers {
        put(k, v.as_bytes());
    }
    for (k, v) in emulated {
        if ep.emulated_headers.iter().any(|h| h.eq_ignore_ascii_case(k)) {
            put(k, v.as_bytes());
        }
    }
    for (k, v) in transport {
        if ep.http_headers.iter().any(|h| h.eq_ignore_ascii_case(k)) {
            put(k, v);
        }
    }
    out
}

/// What the backend decided.
#[derive(Debug)]
pub enum Verdict<R> {
    /// `{"result": …}` (`None`: no result at all, e.g. `{}`).
    Result(Option<R>),
    /// `{"error": …}`, or a status mapped by `status_to_code_transforms`.
    Error(ProtocolError),
    /// `{"disconnect": …}` (wins over `error`), or a mapped status.
    Disconnect(Disconnect),
    /// A non-200 status, timeout, transport error or undecodable body: the caller's fallback
    /// (error 100 for most events, a retry in 60 s for refreshes).
    Failed(String),
}

/// Reads the answer of `ep` to a call.
pub fn verdict<R: serde::de::DeserializeOwned>(ep: &Endpoint, outcome: Outcome) -> Verdict<R> {
    let body = match outcome {
        Ok(body) => body,
        Err(CallError::Status(status)) => {
            if let Some(t) = ep.transforms.iter().find(|t| t.status_code == status) {
                if t.to_error.code > 0 {
                    return Verdict::Error(ProtocolError {
                        code: t.to_error.code,
                        message: Cow::Owned(t.to_error.message.clone()),
                        temporary: t.to_error.temporary,
                    });
                }
                return Verdict::Disconnect(Disconnect {
                    code: u16::try_from(t.to_disconnect.code).unwrap_or(u16::MAX),
                    reason: Cow::Owned(t.to_disconnect.reason.clone()),
                });
            }
            return Verdict::Failed(CallError::Status(status).to_string());
        }
        Err(e) => return Verdict::Failed(e.to_string()),
    };
    let envelope: wire::Envelope<R> = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return Verdict::Failed(format!("bad response body: {e}")),
    };
    if let Some(d) = envelope.disconnect {
        return Verdict::Disconnect(Disconnect {
            code: u16::try_from(d.code).unwrap_or(u16::MAX),
            reason: Cow::Owned(d.reason),
        });
    }
    if let Some(e) = envelope.error {
        return Verdict::Error(ProtocolError {
            code: e.code,
            message: Cow::Owned(e.message),
            temporary: e.temporary,
        });
    }
    Verdict::Result(envelope.result)
}

#[cfg(test)]
mod tests;

/// Calls a shard's HTTP client may run at once; more wait in [`Calls`] (their `timeout`
/// counts from when they were asked).
pub const MAX_IN_FLIGHT: usize = 1024;

/// One call for the shard's HTTP client to make; its outcome answers flight `token`.
#[derive(Debug)]
pub struct Job {
    /// The flight waiting for it.
    pub token: u64,
    /// The event (`connect`, `subscribe`, `rpc`, …: the metrics' `type` label).
    pub kind: &'static str,
    /// Which proxy.
    pub proxy: ProxyId,
    /// Request headers (static and forwarded ones).
    pub headers: Vec<(String, Vec<u8>)>,
    /// JSON body.
    pub body: Bytes,
    /// When it times out.
    pub deadline: std::time::Instant,
}

/// The calls a shard's commands asked for, until its HTTP client task takes them.
///
/// Owns: the queue and the count of calls running. Must not: run anything itself.
#[derive(Debug, Default)]
pub struct Calls {
    jobs: std::collections::VecDeque<Job>,
    running: usize,
    waker: Option<std::task::Waker>,
}

impl Calls {
    /// Queues a call.
    pub fn push(&mut self, job: Job) {
        self.jobs.push_back(job);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// The next call to start, while fewer than [`MAX_IN_FLIGHT`] run.
    pub fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Job> {
        if self.running < MAX_IN_FLIGHT {
            if let Some(job) = self.jobs.pop_front() {
                self.running += 1;
                return std::task::Poll::Ready(job);
            }
        }
        self.waker = Some(cx.waker().clone());
        std::task::Poll::Pending
    }

    /// A call ended (a waiting one may start).
    pub fn done(&mut self) {
        self.running = self.running.saturating_sub(1);
        if !self.jobs.is_empty() {
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }
}
