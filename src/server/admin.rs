//! The admin web interface (`admin.*`): upstream's three routes under `admin.handler_prefix`
//! (`/admin/init`, `/admin/auth`, `/admin/api`), Rotor's `/admin/stats` for the live charts,
//! and the web UI embedded in the binary (`admin_ui/`), served for every other path under the
//! prefix.
//!
//! Owns: the admin session tokens — opaque, stateless, HMAC-SHA256 over their issue time keyed
//! by `admin.secret`, valid 30 days on every node sharing the secret, as upstream's — and the
//! password check (constant time). Must not: run API methods itself (`/admin/api` is the
//! legacy API route of `api::exec`, authorised by the token instead of the API key).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::conn::{Port, Reply};
use crate::api::exec::legacy;
use crate::api::response::Response;
use crate::config::Config;
use crate::http::Head;
use crate::shard::ShardRef;

/// How long a session token is accepted (upstream's 30 days).
const TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// What a token's MAC covers besides its time, so no other HMAC of the secret passes for one.
const TOKEN_CONTEXT: &[u8] = b"rotor admin session";

/// The embedded UI: path under the prefix, content type, body.
const ASSETS: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", include_str!("admin_ui/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_str!("admin_ui/app.js")),
    ("/app.css", "text/css; charset=utf-8", include_str!("admin_ui/app.css")),
];

/// The answer at `head.path` when it is under `admin.handler_prefix`.
pub async fn route(shard: &ShardRef, cfg: &Arc<Config>, head: &Head, body: &[u8]) -> Option<Reply> {
    let prefix = cfg.admin.handler_prefix.trim_end_matches('/');
    let rest = head.path.strip_prefix(prefix)?;
    let rest = if rest.is_empty() { "/" } else { rest };
    if !rest.starts_with('/') {
        return None;
    }
    let admin = &cfg.admin;
    Some(match rest {
        "/admin/init" => {
            let authenticated = admin.insecure || authenticated(head, &admin.secret);
            let body = serde_json::json!({
                "authenticated": authenticated,
                "edition": "oss",
                "insecure": admin.insecure,
            });
            Reply::json(200, body.to_string().into_bytes())
        }
        "/admin/auth" | "/admin/api" | "/admin/stats" if head.method != "POST" => {
            method_not_allowed()
        }
        "/admin/auth" => login(head, body, &admin.password, &admin.secret),
        "/admin/api" | "/admin/stats" if !admin.insecure && !authenticated(head, &admin.secret) => {
            Reply::json(401, Vec::new())
        }
        "/admin/api" => match legacy(shard, body).await {
            Response::Json(status, body) => Reply::json(status, body),
            _ => Reply::json(400, crate::http::json_error_body("bad request")),
        },
        "/admin/stats" => stats(shard).await,
        path => match ASSETS.iter().find(|(p, _, _)| *p == path) {
            Some((_, content_type, body)) => {
                let mut reply = Reply::json(200, body.as_bytes().to_vec());
                reply.content_type = content_type;
                reply.headers.push(("cache-control", "no-cache".to_owned()));
                reply
            }
            None => Reply::json(404, crate::http::json_error_body("not found")),
        },
    })
}

/// `GET {prefix}/admin/tail?channel=…&token=…` on the admin's port: the channel to follow over
/// a WebSocket, or why not (a browser cannot set headers on a WebSocket, so the session token
/// comes in the query). `None` for any other request.
pub fn tail_request(
    cfg: &Config,
    port: Port,
    head: &Head,
) -> Option<Result<Arc<str>, (u16, &'static str)>> {
    let admin = &cfg.admin;
    if !admin.enabled || !port.internal(admin.external) {
        return None;
    }
    let prefix = admin.handler_prefix.trim_end_matches('/');
    if head.path.strip_prefix(prefix) != Some("/admin/tail") {
        return None;
    }
    let token = head.query_param("token").unwrap_or_default();
    if !admin.insecure && !verify(&admin.secret, &token, now_secs()) {
        return Some(Err((401, "admin session required")));
    }
    match head.query_param("channel") {
        Some(c) if !c.is_empty() => Some(Ok(Arc::from(c))),
        _ => Some(Err((400, "channel required"))),
    }
}

fn method_not_allowed() -> Reply {
    let mut reply = Reply::json(405, Vec::new());
    reply.headers.push(("allow", "POST".to_owned()));
    reply
}

/// `POST /admin/auth`: the password as a form field (urlencoded or multipart, as upstream's
/// UI sends it) or in the query; a session token, or 400.
fn login(head: &Head, body: &[u8], password: &str, secret: &str) -> Reply {
    let given = form_password(head, body).or_else(|| head.query_param("password"));
    let ok = !password.is_empty()
        && !secret.is_empty()
        && given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(password.as_bytes())));
    if !ok {
        tracing::info!("admin login refused");
        return Reply::json(400, crate::http::json_error_body("bad request"));
    }
    let token = issue(secret, now_secs());
    Reply::json(200, serde_json::json!({ "token": token }).to_string().into_bytes())
}

fn form_password(head: &Head, body: &[u8]) -> Option<String> {
    let content_type = head.header_str("content-type").unwrap_or_default();
    let body = std::str::from_utf8(body).ok()?;
    if let Some(boundary) = content_type.split(';').find_map(|p| p.trim().strip_prefix("boundary="))
    {
        return multipart_field(body, boundary.trim_matches('"'), "password");
    }
    crate::http::form_value(body, "password")
}

/// The value of field `name` in a `multipart/form-data` body.
fn multipart_field(body: &str, boundary: &str, name: &str) -> Option<String> {
    let delimiter = format!("--{boundary}");
    body.split(delimiter.as_str()).find_map(|part| {
        let (headers, value) = part.split_once("\r\n\r\n")?;
        let wanted = format!("name=\"{name}\"");
        headers
            .lines()
            .any(|l| {
                l.to_ascii_lowercase().starts_with("content-disposition:") && l.contains(&wanted)
            })
            .then(|| value.strip_suffix("\r\n").unwrap_or(value).to_owned())
    })
}

/// `Authorization: token <t>` carries a valid session token.
fn authenticated(head: &Head, secret: &str) -> bool {
    let Some(value) = head.header_str("authorization") else { return false };
    let mut parts = value.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(scheme), Some(token), None) if scheme.eq_ignore_ascii_case("token") => {
            verify(secret, token, now_secs())
        }
        _ => false,
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn mac(secret: &str, issued: u64) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(TOKEN_CONTEXT);
    mac.update(&issued.to_be_bytes());
    Some(mac)
}

/// A token issued at `issued` (Unix seconds): the time and its MAC, base64url.
fn issue(secret: &str, issued: u64) -> String {
    let mut raw = issued.to_be_bytes().to_vec();
    if let Some(mac) = mac(secret, issued) {
        raw.extend_from_slice(&mac.finalize().into_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// Whether `token` was issued with `secret` within the lifetime before `now`.
fn verify(secret: &str, token: &str, now: u64) -> bool {
    if secret.is_empty() || token.len() > 128 {
        return false;
    }
    let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token) else {
        return false;
    };
    let Some((time, tag)) = raw.split_first_chunk::<8>() else { return false };
    let issued = u64::from_be_bytes(*time);
    let fresh = issued <= now + 60 && now.saturating_sub(issued) <= TOKEN_LIFETIME.as_secs();
    fresh && mac(secret, issued).is_some_and(|m| m.verify_slice(tag).is_ok())
}

/// `POST /admin/stats`: this node's live totals for the UI's charts (summed over shards).
async fn stats(shard: &ShardRef) -> Reply {
    let Some(shards) = super::ops::snapshots(shard).await else {
        return Reply::json(500, crate::http::json_error_body("a shard did not answer"));
    };
    let (mut clients, mut subscriptions, mut sent, mut received) = (0u64, 0u64, 0u64, 0u64);
    for s in shards {
        clients += s.clients();
        subscriptions += s.subscriptions.iter().sum::<u64>();
        sent += s.metrics.sent.iter().flatten().map(|t| t.count).sum::<u64>();
        received += s.metrics.received.iter().flatten().map(|t| t.count).sum::<u64>();
    }
    let body = serde_json::json!({
        "clients": clients,
        "subscriptions": subscriptions,
        "messages_sent": sent,
        "messages_received": received,
        "uptime": crate::node::get().started.elapsed().as_secs(),
    });
    Reply::json(200, body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holds_for_thirty_days_with_its_own_secret_only() {
        let t = issue("s3cret", 1_700_000_000);
        assert!(verify("s3cret", &t, 1_700_000_000));
        assert!(verify("s3cret", &t, 1_700_000_000 + 29 * 24 * 3600));
        assert!(!verify("s3cret", &t, 1_700_000_000 + 31 * 24 * 3600), "expired");
        assert!(!verify("other", &t, 1_700_000_000), "another secret");
        assert!(!verify("", &t, 1_700_000_000), "no secret, no session");
        let mut forged = t.into_bytes();
        forged[3] ^= 1;
        assert!(!verify("s3cret", &String::from_utf8(forged).unwrap(), 1_700_000_000));
        assert!(!verify("s3cret", "not base64 !", 1_700_000_000));
    }

    #[test]
    fn the_password_field_is_read_from_multipart_forms() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\np a=ss\r\n--XyZ--\r\n";
        assert_eq!(multipart_field(body, "XyZ", "password").as_deref(), Some("p a=ss"));
        assert_eq!(multipart_field(body, "XyZ", "missing"), None);
    }
}
