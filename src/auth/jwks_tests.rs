//! Behaviour tests for JWKS mode: what a client presenting a token signed with a key
//! from a JWKS endpoint observes, against a local HTTP server on 127.0.0.1.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use super::jwks::Timings;
use super::jwks_fetch::Limits;
use super::test_keys::{
    EC_JWK_X, EC_JWK_Y, EC_PRIVATE_PEM, ED25519_JWK_X, ED25519_PRIVATE_PEM, RSA_JWK_E, RSA_JWK_N,
    RSA_PRIVATE_PEM,
};
use super::*;

const NOW: i64 = 1_700_000_000;

/// The spec's backoff, so that "right after a fetch" is safely inside it even on a
/// loaded machine; a shorter request timeout keeps the hanging-server test quick.
const TEST_TIMINGS: Timings =
    Timings { request_timeout: Duration::from_millis(500), ..Timings::SPEC };

/// What the test server answers for a path.
#[derive(Clone)]
enum Reply {
    Json(String),
    Status(u16),
    /// Accept the request and never answer.
    Hang,
}

/// A JWKS server on 127.0.0.1 that serves `routes` (404 elsewhere) and records the
/// requested paths. Stops when dropped.
struct JwksServer {
    addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl JwksServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (routes, requests, stop) = (routes.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                // Bounded even if a test forgets to drop the server.
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut hung = Vec::new();
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Some(held) = serve(stream, &routes, &requests) {
                                hung.push(held);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        JwksServer { addr, routes, requests, stop, thread: Some(thread) }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn route(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_owned(), reply);
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one request; returns the stream when told to hang, so it stays open.
fn serve(
    mut stream: TcpStream,
    routes: &Mutex<HashMap<String, Reply>>,
    requests: &Mutex<Vec<String>>,
) -> Option<TcpStream> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    requests.lock().unwrap().push(path.clone());
    let reply = routes.lock().unwrap().get(&path).cloned().unwrap_or(Reply::Status(404));
    let (status, body) = match reply {
        Reply::Json(body) => (200, body),
        Reply::Status(code) => (code, String::new()),
        Reply::Hang => return Some(stream),
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
    None
}

fn rsa_jwk(kid: &str) -> serde_json::Value {
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": RSA_JWK_N, "e": RSA_JWK_E})
}

fn ec_jwk(kid: &str) -> serde_json::Value {
    json!({"kty": "EC", "kid": kid, "crv": "P-256", "x": EC_JWK_X, "y": EC_JWK_Y})
}

fn ed_jwk(kid: &str) -> serde_json::Value {
    json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": ED25519_JWK_X})
}

fn key_set(keys: &[serde_json::Value]) -> Reply {
    Reply::Json(json!({ "keys": keys }).to_string())
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let key = match alg {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
            EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap()
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED25519_PRIVATE_PEM.as_bytes()).unwrap(),
        _ => EncodingKey::from_secret(b"secret"),
    };
    let header = match kid {
        Some(kid) => json!({"alg": format!("{alg:?}"), "kid": kid}),
        None => json!({"alg": format!("{alg:?}")}),
    };
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
    };
    let message = format!("{}.{}", b64(&header), b64(claims));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).unwrap();
    format!("{message}.{signature}")
}

#[allow(clippy::needless_pass_by_value, reason = "tests build a config and hand it over")]
fn jwks_verifier(cfg: config::Token) -> TokenVerifier {
    TokenVerifier::new(&cfg, false).unwrap().with_jwks_timings(TEST_TIMINGS)
}

fn endpoint_cfg(url: String) -> config::Token {
    config::Token { jwks_public_endpoint: url, ..Default::default() }
}

/// Waits for a fetch on a helper thread, so a fetch that never completes fails the
/// test instead of hanging it.
fn wait(fetch: KeysFetch) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        futures_lite::future::block_on(fetch);
        let _ = done.send(());
    });
    finished.recv_timeout(Duration::from_secs(10)).expect("key fetch did not finish");
}

/// The caller protocol: verify, on `KeysPending` wait for the fetch and verify once
/// more.
fn connect(v: &TokenVerifier, jwt: &str) -> Result<ConnectionClaims, TokenError> {
    match v.verify_connection(jwt, NOW) {
        Err(TokenError::KeysPending) => {
            if let Some(fetch) = v.fetch_keys(jwt) {
                wait(fetch);
            }
            v.verify_connection(jwt, NOW)
        }
        other => other,
    }
}

#[allow(clippy::needless_pass_by_value, reason = "asserts take what the call returned")]
fn assert_invalid<T: std::fmt::Debug>(r: Result<T, TokenError>) {
    assert!(matches!(r, Err(TokenError::Invalid(_))), "expected Invalid, got {r:?}");
}

#[test]
fn rs256_es256_and_eddsa_tokens_verify_with_keys_from_the_endpoint() {
    let server = JwksServer::start();
    server.route("/jwks", key_set(&[rsa_jwk("r1"), ec_jwk("e1"), ed_jwk("d1")]));
    let v = jwks_verifier(endpoint_cfg(server.url("/jwks")));

    let rs = sign(Algorithm::RS256, Some("r1"), &json!({"sub": "rsa-user"}));
    // Nothing cached yet: the verifier answers at once and asks for a fetch.
    assert_eq!(v.verify_connection(&rs, NOW), Err(TokenError::KeysPending));
    let first = v.fetch_keys(&rs).expect("a fetch starts");
    // A second connection with the same need joins the running fetch or finds it done.
    if let Some(second) = v.fetch_keys(&rs) {
        wait(second);
    }
    wait(first);
    assert_eq!(v.verify_connection(&rs, NOW).unwrap().user, "rsa-user");

    // The whole set was cached by that one fetch.
    let es = sign(Algorithm::ES256, Some("e1"), &json!({"sub": "ec-user"}));
    assert_eq!(v.verify_connection(&es, NOW).unwrap().user, "ec-user");
    let ed = sign(Algorithm::EdDSA, Some("d1"), &json!({"sub": "ed-user"}));
    assert_eq!(v.verify_connection(&ed, NOW).unwrap().user, "ed-user");
    assert_eq!(server.requests(), ["/jwks"]);

    // Clones share the cache (the server shares one verifier between shards).
    assert_eq!(v.clone().verify_connection(&rs, NOW).unwrap().user, "rsa-user");
}

#[test]
fn jwks_keys_only_verify_their_own_algorithms_and_signatures() {
    let server = JwksServer::start();
    server.route("/jwks", key_set(&[rsa_jwk("r1"), ec_jwk("e1")]));
    let v = jwks_verifier(endpoint_cfg(server.url("/jwks")));
    assert!(connect(&v, &sign(Algorithm::RS256, Some("r1"), &json!({"sub": "1"}))).is_ok());

    // The RSA JWK pins RS256.
    assert_invalid(v.verify_connection(&sign(Algorithm::RS384, Some("r1"), &json!({})), NOW));
    // Key from another family under a known kid.
    assert_invalid(v.verify_connection(&sign(Algorithm::ES256, Some("r1"), &json!({})), NOW));
    // HMAC is never enabled in JWKS mode, whatever the kid.
    assert_invalid(v.verify_connection(&sign(Algorithm::HS256, Some("e1"), &json!({})), NOW));
    // A kid is required.
    assert_invalid(v.verify_connection(&sign(Algorithm::ES256, None, &json!({})), NOW));
    // Tampered payload.
    let good = sign(Algorithm::ES256, Some("e1"), &json!({"sub": "1"}));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#);
    assert_invalid(v.verify_connection(&parts.join("."), NOW));
    // Claims are still checked after the signature.
    let expired = sign(Algorithm::ES256, Some("e1"), &json!({"exp": NOW - 1}));
    assert_eq!(v.verify_connection(&expired, NOW), Err(TokenError::Expired));
}

#[test]
fn static_keys_are_replaced_by_the_endpoint() {
    let server = JwksServer::start();
    server.route("/jwks", key_set(&[ec_jwk("e1")]));
    let cfg = config::Token {
        hmac_secret_key: "secret".into(),
        rsa_public_key: super::test_keys::RSA_PUBLIC_PEM.into(),
        ..endpoint_cfg(server.url("/jwks"))
    };
    let v = jwks_verifier(cfg);
    assert!(connect(&v, &sign(Algorithm::ES256, Some("e1"), &json!({}))).is_ok());
    assert_invalid(connect(&v, &sign(Algorithm::HS256, None, &json!({}))));
    assert_invalid(connect(&v, &sign(Algorithm::RS256, None, &json!({}))));
}

#[test]
fn a_new_kid_after_key_rotation_triggers_a_refetch() {
    let server = JwksServer::start();
    server.route("/jwks", key_set(&[rsa_jwk("2024")]));
    let v = jwks_verifier(endpoint_cfg(server.url("/jwks")));
    let old = sign(Algorithm::RS256, Some("2024"), &json!({"sub": "u"}));
    assert!(connect(&v, &old).is_ok());

    // The issuer rotates to a new key and retires the old one.
    server.route("/jwks", key_set(&[ec_jwk("2025")]));
    std::thread::sleep(TEST_TIMINGS.retry_backoff + Duration::from_millis(50));
    let new = sign(Algorithm::ES256, Some("2025"), &json!({"sub": "u"}));
    assert_eq!(v.verify_connection(&new, NOW), Err(TokenError::KeysPending));
    assert_eq!(connect(&v, &new).unwrap().user, "u");
    assert_eq!(server.requests().len(), 2);

    // The retired kid is unknown now; right after a fetch that is final, no refetch.
    assert_invalid(v.verify_connection(&old, NOW));
    assert!(v.fetch_keys(&old).is_none());
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn a_kid_the_endpoint_does_not_serve_is_invalid_after_one_fetch() {
    let server = JwksServer::start();
    server.route("/jwks", key_set(&[rsa_jwk("known")]));
    let v = jwks_verifier(endpoint_cfg(server.url("/jwks")));
    let jwt = sign(Algorithm::RS256, Some("forged"), &json!({}));
    assert_eq!(v.verify_connection(&jwt, NOW), Err(TokenError::KeysPending));
    assert_invalid(connect(&v, &jwt));
    // Repeating the token inside the backoff costs no request.
    for _ in 0..5 {
        assert_invalid(connect(&v, &jwt));
    }
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn endpoint_down_makes_tokens_invalid_once_the_fetch_completes() {
    // A port that was just free: connections are refused.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let v = jwks_verifier(endpoint_cfg(format!("http://{addr}/jwks")));
    let jwt = sign(Algorithm::RS256, Some("r1"), &json!({}));
    assert_eq!(v.verify_connection(&jwt, NOW), Err(TokenError::KeysPending));
    assert_invalid(connect(&v, &jwt));
}

#[test]
fn a_failed_fetch_is_retried_after_the_backoff() {
    let server = JwksServer::start();
    server.route("/jwks", Reply::Status(500));
    let v = jwks_verifier(endpoint_cfg(server.url("/jwks")));
    let jwt = sign(Algorithm::RS256, Some("r1"), &json!({"sub": "u"}));
    assert_invalid(connect(&v, &jwt));
    // One request and one retry.
    assert_eq!(server.requests(), ["/jwks", "/jwks"]);

    server.route("/jwks", key_set(&[rsa_jwk("r1")]));
    // Inside the backoff the failure stands...
    assert_invalid(v.verify_connection(&jwt, NOW));
    assert!(v.fetch_keys(&jwt).is_none());
    // ...after it the next token fetches again.
    std::thread::sleep(TEST_TIMINGS.retry_backoff + Duration::from_millis(50));
    assert_eq!(v.verify_connection(&jwt, NOW), Err(TokenError::KeysPending));
    assert_eq!(connect(&v, &jwt).unwrap().user, "u");

    // Garbage is a failed fetch too.
    let server = JwksServer::start();
    server.route("/jwks", Reply::Json("<html>".into()));
    let v = jwks_verifier(endpoint_cfg(server.url("/jwks")));
    assert_invalid(connect(&v, &jwt));
}

#[test]
fn a_hanging_endpoint_is_given_up_on_after_two_timeouts() {
    let server = JwksServer::start();
    server.route("/jwks", Reply::Hang);
    let v = jwks_verifier(endpoint_cfg(server.url("/jwks")));
    let jwt = sign(Algorithm::RS256, Some("r1"), &json!({}));
    let started = Instant::now();
    assert_invalid(connect(&v, &jwt));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn cached_keys_expire_after_the_ttl() {
    let server = JwksServer::start();
    server.route("/jwks", key_set(&[rsa_jwk("r1")]));
    let timings = Timings {
        ttl: Duration::from_millis(400),
        retry_backoff: Duration::from_millis(100),
        ..TEST_TIMINGS
    };
    let v = TokenVerifier::new(&endpoint_cfg(server.url("/jwks")), false)
        .unwrap()
        .with_jwks_timings(timings);
    let jwt = sign(Algorithm::RS256, Some("r1"), &json!({}));
    assert!(connect(&v, &jwt).is_ok());
    assert!(v.verify_connection(&jwt, NOW).is_ok());
    std::thread::sleep(timings.ttl + Duration::from_millis(50));
    assert_eq!(v.verify_connection(&jwt, NOW), Err(TokenError::KeysPending));
    assert!(connect(&v, &jwt).is_ok());
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn endpoint_placeholders_are_filled_from_issuer_regex_groups() {
    let server = JwksServer::start();
    server.route("/tenants/acme/jwks", key_set(&[rsa_jwk("k")]));
    let cfg = config::Token {
        issuer_regex: r"^https://idp\.example/(?P<tenant>[a-z ]+)$".into(),
        ..endpoint_cfg(server.url("/tenants/{{tenant}}/jwks"))
    };
    let v = jwks_verifier(cfg);
    let acme =
        sign(Algorithm::RS256, Some("k"), &json!({"sub": "a", "iss": "https://idp.example/acme"}));
    assert_eq!(connect(&v, &acme).unwrap().user, "a");

    // Another tenant is another key set (here: none).
    let other = sign(Algorithm::RS256, Some("k"), &json!({"iss": "https://idp.example/globex"}));
    assert_invalid(connect(&v, &other));
    // Values are encoded so that they cannot leave their path segment.
    let spaced = sign(Algorithm::RS256, Some("k"), &json!({"iss": "https://idp.example/a b"}));
    assert_invalid(connect(&v, &spaced));
    assert_eq!(
        server.requests(),
        ["/tenants/acme/jwks", "/tenants/globex/jwks", "/tenants/a%20b/jwks"]
    );

    // An issuer the regex rejects cannot name an endpoint: invalid without any request.
    for claims in [json!({"iss": "https://evil.example/acme"}), json!({})] {
        let jwt = sign(Algorithm::RS256, Some("k"), &claims);
        assert_invalid(v.verify_connection(&jwt, NOW));
        assert!(v.fetch_keys(&jwt).is_none());
    }
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn audience_regex_groups_fill_placeholders_too() {
    let server = JwksServer::start();
    server.route("/eu/jwks", key_set(&[ec_jwk("k")]));
    let cfg = config::Token {
        audience_regex: r"^rotor-(?P<region>[a-z]+)$".into(),
        ..endpoint_cfg(server.url("/{{ region }}/jwks"))
    };
    let v = jwks_verifier(cfg);
    let jwt = sign(Algorithm::ES256, Some("k"), &json!({"aud": ["web", "rotor-eu"]}));
    assert!(connect(&v, &jwt).is_ok());
}

#[test]
fn subscription_tokens_use_their_own_endpoint_when_enabled() {
    let server = JwksServer::start();
    server.route("/subs", key_set(&[ed_jwk("s")]));
    let client = config::Client {
        token: config::Token { hmac_secret_key: "secret".into(), ..Default::default() },
        subscription_token: config::SubscriptionToken {
            enabled: true,
            token: endpoint_cfg(server.url("/subs")),
        },
        ..Default::default()
    };
    let v = TokenVerifier::for_subscriptions(&client).unwrap().with_jwks_timings(TEST_TIMINGS);
    let jwt = sign(Algorithm::EdDSA, Some("s"), &json!({"sub": "u", "channel": "news"}));
    assert_eq!(v.verify_subscription(&jwt, NOW), Err(TokenError::KeysPending));
    wait(v.fetch_keys(&jwt).expect("a fetch starts"));
    assert_eq!(v.verify_subscription(&jwt, NOW).unwrap().channel, "news");
    // The connection verifier keeps its HMAC key and never fetches.
    let conn = TokenVerifier::for_connections(&client).unwrap();
    assert!(conn.fetch_keys(&jwt).is_none());
}

#[test]
fn bad_endpoints_are_config_errors_naming_the_key() {
    let key_of = |cfg: config::Token, section_sub: bool| {
        let result = if section_sub {
            let client = config::Client {
                subscription_token: config::SubscriptionToken { enabled: true, token: cfg },
                ..Default::default()
            };
            TokenVerifier::for_subscriptions(&client)
        } else {
            TokenVerifier::new(&cfg, false)
        };
        match result {
            Err(AuthConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        }
    };
    let ftp = endpoint_cfg("ftp://keys.example/jwks".into());
    assert_eq!(key_of(ftp, false), "client.token.jwks_public_endpoint");
    // A placeholder no regex group can fill.
    let cfg = config::Token {
        issuer_regex: "^(?P<tenant>.+)$".into(),
        ..endpoint_cfg("https://keys.example/{{region}}/jwks".into())
    };
    assert_eq!(key_of(cfg, true), "client.subscription_token.jwks_public_endpoint");
    let cfg = config::Token {
        issuer_regex: "^(?P<tenant>.+)$".into(),
        ..endpoint_cfg("https://keys.example/{{tenant}}/jwks".into())
    };
    assert!(TokenVerifier::new(&cfg, false).is_ok());
}

#[test]
fn skipping_signature_checks_needs_no_keys() {
    let cfg = endpoint_cfg("http://127.0.0.1:9/jwks".into());
    let lax = TokenVerifier::new(&cfg, true).unwrap();
    let jwt = sign(Algorithm::RS256, Some("whatever"), &json!({"sub": "9"}));
    assert_eq!(lax.verify_connection(&jwt, NOW).unwrap().user, "9");
    assert!(lax.fetch_keys(&jwt).is_none());
}

#[test]
fn the_fetch_future_can_be_awaited_on_any_executor_thread() {
    fn portable<T: std::future::Future<Output = ()> + Send + Unpin + 'static>() {}
    portable::<KeysFetch>();
}

#[test]
fn no_url_beyond_the_cap_is_fetched_while_every_remembered_one_is_in_flight() {
    // A key server that never answers keeps the first fetch busy; the rest wait queued.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hung.local_addr().unwrap().port();
    // A queue long and patient enough that every fetch stays in flight.
    let limits = Limits { queued: 2048, queue_deadline: Duration::from_secs(60), ..Limits::SPEC };
    let jwks = jwks::Jwks::new(jwks::Template::parse("http://x/{{t}}"), TEST_TIMINGS, limits);
    let url = |i: usize| format!("http://127.0.0.1:{port}/{i}");
    for i in 0..1024 {
        assert!(jwks.fetch(&url(i), "kid").is_some(), "url {i}");
    }
    // The 1025th distinct URL is not fetched (nothing to wait for: the token is invalid).
    assert!(jwks.fetch(&url(1024), "kid").is_none());
    assert!(matches!(jwks.lookup(&url(1024), "kid"), jwks::Lookup::Pending));
    drop(hung);
}

#[test]
fn a_key_server_that_never_answers_does_not_hold_up_other_hosts() {
    let hung = JwksServer::start();
    for path in ["/a", "/b", "/c", "/d"] {
        hung.route(path, Reply::Hang);
    }
    let good = JwksServer::start();
    good.route("/jwks", key_set(&[rsa_jwk("k")]));
    let cfg = config::Token {
        issuer_regex: r"^(?P<port>[0-9]+)/(?P<path>[a-z]+)$".into(),
        ..endpoint_cfg("http://127.0.0.1:{{port}}/{{path}}".into())
    };
    // Long request timeouts: the hung host's fetches stay in flight for the whole test.
    let timings = Timings { request_timeout: Duration::from_secs(5), ..TEST_TIMINGS };
    let v = TokenVerifier::new(&cfg, false).unwrap().with_jwks_timings(timings);
    let token = |port: u16, path: &str| {
        sign(Algorithm::RS256, Some("k"), &json!({"sub": "u", "iss": format!("{port}/{path}")}))
    };
    // Forged tokens naming four paths on the hung host: fetches start (two run, two queue).
    let forged: Vec<String> =
        ["a", "b", "c", "d"].iter().map(|p| token(hung.addr.port(), p)).collect();
    let pending: Vec<KeysFetch> = forged
        .iter()
        .map(|jwt| {
            assert_eq!(v.verify_connection(jwt, NOW), Err(TokenError::KeysPending));
            v.fetch_keys(jwt).expect("a fetch starts")
        })
        .collect();
    // A real tenant on another host is served meanwhile.
    assert_eq!(connect(&v, &token(good.addr.port(), "jwks")).unwrap().user, "u");
    for jwt in &forged {
        assert_eq!(v.verify_connection(jwt, NOW), Err(TokenError::KeysPending), "still in flight");
    }
    assert!(hung.requests().len() <= 2, "at most two fetches per host: {:?}", hung.requests());
    drop(pending);
}
