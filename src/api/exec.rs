//! Server API execution over HTTP: authentication, routing by method, and the publish path.
//!
//! Owns: turning an authenticated API request into shard work and the answer into JSON. The
//! publish itself is ordered by the channel's home shard (`start_publish` sends it with `Shard::call_home`); this module
//! only validates, parks the request and encodes the result. It must not touch connections.

use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::api::query;
use crate::api::response::{Failure, Response};
use crate::api::types::{
    self, ApiError, ApiMethod, BroadcastRequest, PublishPayload, PublishRequest, PublishResult,
};
use crate::broker::PublishCall;
use crate::broker::Reply;
use crate::client::rules::{data_format_ok, history_policy};
use crate::http::Head;
use crate::protocol::{Publication, RawJson};
use crate::shard::id::RequestId;
use crate::shard::msg::{Answer, Call};
use crate::shard::{PendingAnswer, ShardRef};

/// Whether the request carries the configured API key (spec §3.1): `X-API-Key`, else
/// `Authorization: apikey <key>`, else `?api_key=`. An empty configured key refuses everything.
pub fn authorized(head: &Head, key: &str, insecure: bool) -> bool {
    if insecure {
        return true;
    }
    if key.is_empty() {
        return false;
    }
    let matches = |candidate: &[u8]| bool::from(candidate.ct_eq(key.as_bytes()));
    if let Some(v) = head.header("x-api-key") {
        if matches(v) {
            return true;
        }
    } else if let Some(v) = head.header_str("authorization") {
        let mut parts = v.split_whitespace();
        if let (Some(scheme), Some(value), None) = (parts.next(), parts.next(), parts.next()) {
            if scheme.eq_ignore_ascii_case("apikey") && matches(value.as_bytes()) {
                return true;
            }
        }
    }
    head.query_param("api_key").is_some_and(|q| matches(q.as_bytes()))
}

/// The answer to an API request decided by its head alone (wrong method, missing or wrong
/// key), before any of its body is read; `None` when the body is wanted.
pub fn handle_head(cfg: &crate::config::Config, head: &Head) -> Option<Response> {
    if head.method != "POST" {
        return Some(Response::MethodNotAllowed);
    }
    if !authorized(head, &cfg.http_api.key, cfg.http_api.insecure) {
        return Some(Response::Unauthorized);
    }
    None
}

/// Handles `POST {prefix}` (legacy) and `POST {prefix}/<method>`.
pub async fn handle_http(shard: &ShardRef, head: &Head, method: &str, body: Vec<u8>) -> Response {
    let cfg = Arc::clone(shard.borrow().cfg());
    if let Some(refused) = handle_head(&cfg, head) {
        return refused;
    }
    if method.is_empty() {
        if shard.borrow().shutting_down() {
            return Response::error(503, "shutting down");
        }
        return legacy(shard, &body).await;
    }
    let Some(api_method) = ApiMethod::from_path_segment(method) else {
        return Response::error(404, "unknown method");
    };
    let transport_errors = cfg.http_api.error_mode == "transport"
        || head.header("x-centrifugo-error-mode").is_some_and(|v| v == b"transport");
    let mut out = Vec::new();
    match run(shard, api_method, &body).await {
        // A batch answer is `{"replies":[..]}` itself, never wrapped in `result` (spec §3.3).
        Ok(result) if api_method == ApiMethod::Batch => return Response::Json(200, result),
        Ok(result) => types::encode_result_response(&result, &mut out),
        Err(Failure::Undecodable) => return Response::error(400, "bad request"),
        Err(Failure::Unsupported) => {
            return Response::error(404, "method not implemented by rotor yet")
        }
        Err(Failure::Api(e)) if transport_errors => {
            types::encode_error_object(&e, &mut out);
            return Response::Json(e.http_status(), out);
        }
        Err(Failure::Api(e)) => types::encode_error_response(&e, &mut out),
    }
    Response::Json(200, out)
}

/// Runs one method and counts it (`centrifugo_api_command_*`; a batch counts its commands).
async fn run(shard: &ShardRef, method: ApiMethod, body: &[u8]) -> Result<Vec<u8>, Failure> {
    let started = std::time::Instant::now();
    let result = Box::pin(execute(shard, method, body)).await;
    if method != ApiMethod::Batch {
        let error = match &result {
            Ok(_) => None,
            Err(Failure::Undecodable) => Some("unmarshal".to_owned()),
            Err(Failure::Unsupported) => Some(types::API_ERROR_NOT_AVAILABLE.code.to_string()),
            Err(Failure::Api(e)) => Some(e.code.to_string()),
        };
        shard.borrow_mut().metrics().api_done(method.name(), started.elapsed(), error);
    }
    result
}

/// Runs one method; `Ok` is the encoded result object (what goes under `"result"`).
async fn execute(shard: &ShardRef, method: ApiMethod, body: &[u8]) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    match method {
        ApiMethod::Publish => {
            let req = PublishRequest::decode(body).map_err(|_| Failure::Undecodable)?;
            publish(shard, req).await.map_err(Failure::Api)?.encode(&mut out);
        }
        ApiMethod::Broadcast => {
            let req = BroadcastRequest::decode(body).map_err(|_| Failure::Undecodable)?;
            let results = broadcast(shard, req).await.map_err(Failure::Api)?;
            types::encode_broadcast_result(&results, &mut out);
        }
        ApiMethod::Presence => return query::presence(shard, body, false).await,
        ApiMethod::PresenceStats => return query::presence(shard, body, true).await,
        ApiMethod::History => return query::history(shard, body).await,
        ApiMethod::HistoryRemove => return query::history_remove(shard, body).await,
        ApiMethod::Channels => return query::channels(shard, body).await,
        ApiMethod::Info => return query::info(shard, body).await,
        ApiMethod::Rpc => return query::rpc(body),
        ApiMethod::Subscribe
        | ApiMethod::Unsubscribe
        | ApiMethod::Disconnect
        | ApiMethod::Refresh => return query::conns(shard, method, body).await,
        ApiMethod::Batch => return Box::pin(batch(shard, body)).await,
        _ => return Err(Failure::Unsupported),
    }
    Ok(out)
}

/// `batch` (spec §3.3): `{"commands":[{"<method>":{..}}, ..],"parallel":bool}` answered with
/// `{"replies":[{"<method>":{..}} | {"error":{..}}, ..]}` in command order.
async fn batch(shard: &ShardRef, body: &[u8]) -> Result<Vec<u8>, Failure> {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct BatchBody<'a> {
        #[serde(borrow)]
        commands: Vec<Option<std::collections::BTreeMap<String, &'a serde_json::value::RawValue>>>,
        parallel: bool,
    }
    if !crate::protocol::json::starts_object(body) {
        return Err(Failure::Undecodable);
    }
    let req: BatchBody<'_> = serde_json::from_slice(body).map_err(|_| Failure::Undecodable)?;
    // Each command: its method (when known) and params.
    let commands: Vec<Result<(ApiMethod, &[u8]), ApiError>> = req
        .commands
        .iter()
        .map(|c| {
            let c = c.as_ref().ok_or(types::API_ERROR_BAD_REQUEST)?;
            c.iter()
                .find_map(|(name, params)| {
                    ApiMethod::from_path_segment(name)
                        .filter(|m| *m != ApiMethod::Batch)
                        .map(|m| (m, params.get().as_bytes()))
                })
                .ok_or(types::API_ERROR_NOT_FOUND)
        })
        .collect();
    let mut replies = Vec::with_capacity(commands.len());
    if req.parallel {
        let futures: Vec<_> = commands.into_iter().map(|c| Box::pin(batch_one(shard, c))).collect();
        replies = join_all(futures).await;
    } else {
        for c in commands {
            replies.push(batch_one(shard, c).await);
        }
    }
    let mut out = b"{\"replies\":[".to_vec();
    for (i, (method, r)) in replies.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        match (method, r) {
            (Some(m), Ok(result)) => {
                crate::protocol::json::write_json_string(&mut out, m.name());
                out.push(b':');
                out.extend_from_slice(result);
            }
            (_, Err(e)) => {
                out.extend_from_slice(b"\"error\":");
                types::encode_error_object(e, &mut out);
            }
            (None, Ok(_)) => {}
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// One batch command: its method (for the reply key) and outcome.
async fn batch_one(
    shard: &ShardRef,
    c: Result<(ApiMethod, &[u8]), ApiError>,
) -> (Option<ApiMethod>, Result<Vec<u8>, ApiError>) {
    match c {
        Err(e) => (None, Err(e)),
        Ok((m, params)) => (Some(m), run(shard, m, params).await.map_err(Failure::into_api_error)),
    }
}

/// Polls every future until all are done; results in input order.
async fn join_all<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (f, slot) in futures.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match std::pin::Pin::new(f).poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// The legacy multi-command route (spec §3.5): a JSON stream of `{"id","method","params"}`.
pub async fn legacy(shard: &ShardRef, body: &[u8]) -> Response {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Response::error(400, "empty body");
    }
    let Ok(commands) = types::decode_legacy(body) else {
        return Response::error(400, "bad request");
    };
    let mut replies = Vec::with_capacity(commands.len());
    for cmd in commands {
        let outcome = match cmd.method {
            None => Err(types::API_ERROR_NOT_FOUND),
            Some(method) => run(shard, method, cmd.params.get().as_bytes())
                .await
                .map_err(Failure::into_api_error),
        };
        replies.push(types::LegacyReply { id: cmd.id, outcome });
    }
    let mut out = Vec::new();
    types::encode_legacy_replies(&replies, &mut out);
    Response::Json(200, out)
}

/// Validates a publish and hands it to the channel's home shard; returns the parked request.
fn start_publish(
    shard: &ShardRef,
    channel: &str,
    req: &PublishRequest,
) -> Result<RequestId, ApiError> {
    let mut s = shard.borrow_mut();
    if channel.is_empty() {
        return Err(types::API_ERROR_BAD_REQUEST);
    }
    let namespaces = Arc::clone(&s.env().namespaces);
    let resolved = namespaces.resolve(channel).map_err(|e| match e {
        crate::channel::ChannelError::UnknownChannel => types::API_ERROR_UNKNOWN_CHANNEL,
        _ => types::API_ERROR_BAD_REQUEST,
    })?;
    // Non-JSON bytes (`b64data`) reach Protobuf connections; JSON ones get 3506.
    let (data, json) = match req.payload()? {
        Some(PublishPayload::Json(json)) => (json, true),
        None => (RawJson::default(), true),
        Some(PublishPayload::Binary(bytes)) => (RawJson(bytes), false),
    };
    let format = if resolved.options.publication_data_format.is_empty() {
        s.cfg().channel.publication_data_format.as_str()
    } else {
        resolved.options.publication_data_format.as_str()
    };
    if !data_format_ok(format, data.as_bytes(), json) {
        return Err(types::API_ERROR_BAD_REQUEST);
    }
    let history = history_policy(resolved.options, req.skip_history);
    let publication = Publication {
        data,
        tags: req.tags.clone(),
        binary: !json,
        delta_eligible: req.delta || resolved.options.delta_publish,
        ..Publication::default()
    };
    let channel: Arc<str> = Arc::from(channel);
    let call = Call::Publish(PublishCall {
        channel: Arc::clone(&channel),
        publication,
        history,
        idempotency_key: Some(req.idempotency_key.clone()).filter(|k| !k.is_empty()),
        // Versions are compared against the stream, so they need history (spec §3.3).
        version: (req.version > 0 && history.enabled())
            .then(|| (req.version, req.version_epoch.clone())),
    });
    Ok(s.call_home(&channel, call))
}

async fn finish(shard: &ShardRef, req: RequestId) -> Result<PublishResult, ApiError> {
    match PendingAnswer::new(shard.clone(), req).await {
        Some(Answer::Channel(Reply::Published(Some(p)))) => {
            Ok(PublishResult { offset: p.offset, epoch: p.epoch })
        }
        Some(Answer::Channel(Reply::Published(None))) => Ok(PublishResult::default()),
        _ => Err(types::API_ERROR_INTERNAL),
    }
}

/// `publish`: one channel.
pub async fn publish(shard: &ShardRef, req: PublishRequest) -> Result<PublishResult, ApiError> {
    let id = start_publish(shard, &req.channel, &req)?;
    finish(shard, id).await
}

/// `broadcast`: every channel is handed to its home shard first, then the answers are collected
/// in channel order, so the publishes proceed concurrently across shards.
pub async fn broadcast(
    shard: &ShardRef,
    req: BroadcastRequest,
) -> Result<Vec<Result<PublishResult, ApiError>>, ApiError> {
    if req.channels.is_empty() {
        return Err(types::API_ERROR_BAD_REQUEST);
    }
    let single = PublishRequest {
        channel: String::new(),
        data: req.data,
        b64data: req.b64data,
        skip_history: req.skip_history,
        tags: req.tags,
        idempotency_key: req.idempotency_key,
        delta: req.delta,
        version: req.version,
        version_epoch: req.version_epoch,
    };
    // A bad b64data is a request-level error, not a per-channel one.
    single.payload()?;
    let started: Vec<Result<RequestId, ApiError>> =
        req.channels.iter().map(|ch| start_publish(shard, ch, &single)).collect();
    let mut results = Vec::with_capacity(started.len());
    for s in started {
        results.push(match s {
            Ok(id) => finish(shard, id).await,
            Err(e) => Err(e),
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(extra: &str) -> Head {
        let text = format!("POST /api/publish{extra}");
        crate::http::parse_head(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn api_key_sources_in_spec_order() {
        let k = "secret";
        assert!(authorized(&head(" HTTP/1.1\r\nHost: x\r\nX-API-Key: secret\r\n\r\n"), k, false));
        assert!(!authorized(&head(" HTTP/1.1\r\nHost: x\r\nX-API-Key: nope\r\n\r\n"), k, false));
        assert!(authorized(
            &head(" HTTP/1.1\r\nHost: x\r\nAuthorization: ApiKey secret\r\n\r\n"),
            k,
            false
        ));
        assert!(!authorized(
            &head(" HTTP/1.1\r\nHost: x\r\nAuthorization: apikey secret extra\r\n\r\n"),
            k,
            false
        ));
        assert!(!authorized(
            &head(" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n\r\n"),
            k,
            false
        ));
        assert!(authorized(&head("?api_key=secret HTTP/1.1\r\nHost: x\r\n\r\n"), k, false));
        assert!(
            authorized(
                &head("?api_key=secret HTTP/1.1\r\nHost: x\r\nX-API-Key: wrong\r\n\r\n"),
                k,
                false
            ),
            "query key is the last resort"
        );
        assert!(!authorized(&head(" HTTP/1.1\r\nHost: x\r\n\r\n"), k, false));
        assert!(
            !authorized(&head(" HTTP/1.1\r\nHost: x\r\nX-API-Key: \r\n\r\n"), "", false),
            "empty key refuses"
        );
        assert!(authorized(&head(" HTTP/1.1\r\nHost: x\r\n\r\n"), "", true), "insecure");
    }
}
