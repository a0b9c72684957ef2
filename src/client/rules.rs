//! The pure rules of the client protocol that several commands (and the HTTP API) share:
//! channel errors as protocol errors, a namespace's history policy, publication data formats,
//! the `rpc` answer, and the fingerprint of a token's server-side channels.
//!
//! Must not: touch connections or shard state.

use crate::broker::stream::HistoryPolicy;
use crate::channel::ChannelError;
use crate::protocol::{codes, ProtocolError, ReplyBody};

/// Where a client `rpc` goes (spec §5.4, §9.4).
#[derive(Debug, PartialEq)]
pub enum RpcRoute {
    /// Answered at once.
    Reply(ReplyBody),
    /// To this proxy.
    Proxy(crate::proxy::ProxyId),
}

/// Routes a client `rpc`. Like upstream, a connection has an RPC handler only when the `ping`
/// extension or an RPC proxy is configured; without one every call is 108. With one: the
/// extension answers its method, a method whose namespace is unknown is 104, a namespace
/// without a proxy is 108 (as upstream's handler answers it), and one with a proxy goes there.
pub fn rpc_route(
    rpc: &crate::config::Rpc,
    proxies: &crate::proxy::Proxies,
    method: &str,
) -> RpcRoute {
    let any_proxy =
        rpc.without_namespace.proxy_enabled || rpc.namespaces.iter().any(|n| n.proxy_enabled);
    if !rpc.ping.enabled && !any_proxy {
        return RpcRoute::Reply(ReplyBody::Error(codes::ERROR_NOT_AVAILABLE));
    }
    if rpc.ping.enabled && method == rpc.ping.method {
        return RpcRoute::Reply(ReplyBody::Rpc(crate::protocol::RpcResult::default()));
    }
    if !any_proxy {
        return RpcRoute::Reply(ReplyBody::Error(codes::ERROR_METHOD_NOT_FOUND));
    }
    let (enabled, name) = match method.split_once(rpc.namespace_boundary.as_str()) {
        Some((ns, _)) if !rpc.namespace_boundary.is_empty() => {
            match rpc.namespaces.iter().find(|n| n.name == ns) {
                Some(n) => (n.proxy_enabled, n.proxy_name.as_str()),
                None => return RpcRoute::Reply(ReplyBody::Error(codes::ERROR_METHOD_NOT_FOUND)),
            }
        }
        _ => (rpc.without_namespace.proxy_enabled, rpc.without_namespace.proxy_name.as_str()),
    };
    match proxies.rpc(name).filter(|_| enabled) {
        Some(id) => RpcRoute::Proxy(id),
        None => RpcRoute::Reply(ReplyBody::Error(codes::ERROR_NOT_AVAILABLE)),
    }
}

/// Order-independent fingerprint of a connection token's server-side channels.
pub fn token_channels(claims: &crate::auth::ConnectionClaims) -> u64 {
    let mut names: Vec<&str> = match &claims.subs {
        Some(subs) => subs.iter().map(|s| s.channel.as_str()).collect(),
        None => claims.channels.iter().map(String::as_str).collect(),
    };
    if names.is_empty() {
        return 0;
    }
    names.sort_unstable();
    names.dedup();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&names, &mut h);
    std::hash::Hasher::finish(&h)
}

/// Maps a channel-check failure to the client protocol error.
pub fn channel_error(e: ChannelError) -> ProtocolError {
    match e {
        ChannelError::UnknownChannel => codes::ERROR_UNKNOWN_CHANNEL,
        ChannelError::BadRequest => codes::ERROR_BAD_REQUEST,
        ChannelError::PermissionDenied => codes::ERROR_PERMISSION_DENIED,
        ChannelError::NotAvailable | ChannelError::Proxied => codes::ERROR_NOT_AVAILABLE,
    }
}

/// History settings of a namespace; `skip` for API publishes with `skip_history`.
pub fn history_policy(options: &crate::config::ChannelOptions, skip: bool) -> HistoryPolicy {
    if skip {
        return HistoryPolicy::default();
    }
    HistoryPolicy {
        size: options.history_size,
        ttl: options.history_ttl,
        meta_ttl: options.history_meta_ttl,
    }
}

/// `publication_data_format` check (spec §5.3): `""` rejects empty data, `json` needs valid JSON
/// (always true for JSON-decoded payloads), `json_object` an object, `binary` anything.
pub fn data_format_ok(format: &str, data: &[u8], json: bool) -> bool {
    match format {
        "binary" => true,
        "json_object" => json && data.trim_ascii_start().first() == Some(&b'{'),
        "json" => json && !data.is_empty(),
        _ => !data.is_empty(),
    }
}

/// Whether bytes are one valid JSON value.
pub fn is_json(data: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_formats() {
        assert!(!data_format_ok("", b"", true));
        assert!(data_format_ok("", b"1", true));
        assert!(data_format_ok("", b"\xff", false), "any bytes from a Protobuf client");
        assert!(!data_format_ok("json", b"\xff", false));
        assert!(data_format_ok("json_object", b" {}", true));
        assert!(!data_format_ok("json_object", b"[1]", true));
        assert!(data_format_ok("binary", b"", true));
        assert!(is_json(b" {\"a\":[1]} ") && !is_json(b"\xff\x00") && !is_json(b""));
    }
}
