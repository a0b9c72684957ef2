//! JWKS key source for `jwks_public_endpoint` (spec §4.1).
//!
//! Owns: the endpoint URL template (`{{name}}` placeholders), the per-URL key cache
//! (keys live 1 h; a failed or useless fetch is retried only after a short backoff),
//! each fetch's completion signal, and decoding JWKs (RSA, EC P-256/P-384, OKP Ed25519)
//! into verification keys.
//! Must not: do network I/O or wait on anything on the caller's thread (callers are
//! glommio shard threads; every fetch runs on a `rotor-jwks` thread of `jwks_fetch`),
//! decide whether a token is valid beyond "this key verifies this signature", or read
//! claims (the verifier hands in the rendered URL).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::jwks_fetch::{Fetcher, Limits, Pool, Refused};

/// Upper bound on a JWKS document; real ones are a few kilobytes.
const MAX_DOCUMENT_BYTES: u64 = 1 << 20;

/// Distinct endpoint URLs remembered at once. Templated endpoints take part of their
/// URL from unverified claims, so without a bound a client could grow the cache
/// without limit by inventing issuers that still match `issuer_regex`.
const MAX_URLS: usize = 1024;

/// Cache and fetch timing; [`Timings::SPEC`] in production, shorter in tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timings {
    /// How long a fetched key set is trusted.
    pub ttl: Duration,
    /// Minimum time between the end of one fetch of a URL and the start of the next.
    pub retry_backoff: Duration,
    /// Per-request limit; a failed request is retried once.
    pub request_timeout: Duration,
}

impl Timings {
    pub(crate) const SPEC: Timings = Timings {
        ttl: Duration::from_secs(3600),
        retry_backoff: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
    };
}

/// Why a key set could not be obtained; logged, never shown to clients.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] ureq::Error),
    #[error("not a JWKS document: {0}")]
    Format(#[from] serde_json::Error),
    #[error("not fetched: {0}")]
    Refused(#[from] Refused),
}

impl FetchError {
    /// Worth the one retry: timeouts, connection failures and server errors. A 4xx
    /// answer (e.g. an unknown tenant) will not change a moment later.
    fn is_transient(&self) -> bool {
        !matches!(self, FetchError::Http(ureq::Error::StatusCode(400..=499)))
    }
}

// ---- URL template ----------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

/// `jwks_public_endpoint` split into literal text and `{{name}}` placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template(Vec<Part>);

impl Template {
    /// Every `{{name}}` (surrounding spaces ignored) is a placeholder; a `{{` without a
    /// closing `}}` is literal text.
    pub(crate) fn parse(url: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = url;
        while let Some(open) = rest.find("{{") {
            let Some(close) = rest[open + 2..].find("}}") else { break };
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            parts.push(Part::Var(rest[open + 2..open + 2 + close].trim().to_owned()));
            rest = &rest[open + 2 + close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Template(parts)
    }

    pub(crate) fn vars(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Part::Var(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    pub(crate) fn has_vars(&self) -> bool {
        self.vars().next().is_some()
    }

    /// `None` when a placeholder has no value. Values are percent-encoded: they come
    /// from unverified claims and must not be able to leave their place in the URL
    /// (add path segments, a query, or another host).
    pub(crate) fn render(&self, value_of: impl Fn(&str) -> Option<String>) -> Option<String> {
        let mut url = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => url.push_str(text),
                Part::Var(name) => percent_encode_into(&value_of(name)?, &mut url),
            }
        }
        Some(url)
    }
}

fn percent_encode_into(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

// ---- keys ------------------------------------------------------------------------

/// What a JWK can verify; the token's `alg` must fit it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn accepts(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Rsa => matches!(alg, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512),
            KeyKind::P256 => alg == Algorithm::ES256,
            KeyKind::P384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        }
    }
}

/// One usable key from a key set.
#[derive(Clone, Debug)]
pub(crate) struct JwkKey {
    kind: KeyKind,
    /// The JWK's own `alg`, when it pins one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl JwkKey {
    /// `message` is `header.payload` and `signature` the third token segment.
    pub(crate) fn verifies(&self, alg: Algorithm, message: &str, signature: &str) -> bool {
        self.kind.accepts(alg)
            && self.alg.is_none_or(|pinned| pinned == alg)
            // `Err` means an undecodable signature or unusable key material.
            && jsonwebtoken::crypto::verify(signature, message.as_bytes(), &self.key, alg)
                .unwrap_or(false)
    }
}

#[derive(Deserialize)]
struct KeySet<'a> {
    #[serde(borrow)]
    keys: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Keys by `kid`. Keys we cannot use (no `kid`, encryption keys, other key types or
/// curves, malformed members) are skipped so that one odd entry does not take the
/// whole set down.
fn parse_key_set(document: &[u8]) -> Result<HashMap<String, Arc<JwkKey>>, FetchError> {
    let set: KeySet<'_> = serde_json::from_slice(document)?;
    let mut keys = HashMap::new();
    for raw in set.keys {
        let Ok(jwk) = serde_json::from_str::<RawJwk>(raw.get()) else { continue };
        let Some(kid) = jwk.kid.clone() else { continue };
        if let Some(key) = decode_jwk(&jwk) {
            keys.insert(kid, Arc::new(key));
        }
    }
    Ok(keys)
}

fn decode_jwk(jwk: &RawJwk) -> Option<JwkKey> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let alg = match jwk.alg.as_deref() {
        None => None,
        Some(name) => Some(Algorithm::from_str(name).ok()?),
    };
    let (kind, key) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => {
            (KeyKind::Rsa, DecodingKey::from_rsa_components(jwk.n.as_ref()?, jwk.e.as_ref()?))
        }
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let kind = if crv == "P-256" { KeyKind::P256 } else { KeyKind::P384 };
            (kind, DecodingKey::from_ec_components(jwk.x.as_ref()?, jwk.y.as_ref()?))
        }
        ("OKP", Some("Ed25519")) => {
            (KeyKind::Ed25519, DecodingKey::from_ed_components(jwk.x.as_ref()?))
        }
        _ => return None,
    };
    let key = JwkKey { kind, alg, key: key.ok()? };
    alg.is_none_or(|a| kind.accepts(a)).then_some(key)
}

// ---- completion signal -----------------------------------------------------------

/// Set once when a fetch ends; wakes every task waiting on it, whatever executor or
/// thread it runs on.
#[derive(Debug, Default)]
struct Signal(Mutex<SignalState>);

#[derive(Debug, Default)]
struct SignalState {
    done: bool,
    /// One slot per waiting [`KeysFetch`], so re-polling replaces rather than grows.
    wakers: Vec<Option<Waker>>,
}

impl Signal {
    fn finish(&self) {
        let wakers = {
            let mut state = lock(&self.0);
            state.done = true;
            std::mem::take(&mut state.wakers)
        };
        wakers.into_iter().flatten().for_each(Waker::wake);
    }
}

/// Resolves when the key fetch it was created for has finished, successfully or not.
/// Then verify the token once more (see `TokenVerifier::fetch_keys`).
#[derive(Debug)]
#[must_use = "a fetch is only useful if the caller waits for it and verifies again"]
pub struct KeysFetch {
    signal: Arc<Signal>,
    slot: Option<usize>,
}

impl Future for KeysFetch {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut state = lock(&this.signal.0);
        if state.done {
            return Poll::Ready(());
        }
        let waker = Some(cx.waker().clone());
        match this.slot {
            Some(slot) => state.wakers[slot] = waker,
            None => {
                this.slot = Some(state.wakers.len());
                state.wakers.push(waker);
            }
        }
        Poll::Pending
    }
}

impl Drop for KeysFetch {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            if let Some(waker) = lock(&self.signal.0).wakers.get_mut(slot) {
                *waker = None;
            }
        }
    }
}

/// The protected data stays consistent across a panic elsewhere (every critical
/// section is a few assignments), so a poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---- cache -----------------------------------------------------------------------

#[derive(Default)]
struct Entry {
    keys: HashMap<String, Arc<JwkKey>>,
    /// Last successful fetch.
    fetched_at: Option<Instant>,
    /// End of the last fetch, successful or not.
    attempted_at: Option<Instant>,
    in_flight: Option<Arc<Signal>>,
}

/// What the cache can say about one key.
pub(crate) enum Lookup {
    Found(Arc<JwkKey>),
    /// Not known yet: a fetch is running or may be started.
    Pending,
    /// Not known, and the URL was fetched too recently to try again.
    Unavailable,
}

enum State {
    Fresh(Arc<JwkKey>),
    InFlight(Arc<Signal>),
    Backoff,
    NeedsFetch,
}

struct Cache {
    timings: Timings,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Cache {
    fn state(&self, entry: Option<&Entry>, kid: &str, now: Instant) -> State {
        let Some(entry) = entry else { return State::NeedsFetch };
        let age = |at: Option<Instant>| at.map(|at| now.saturating_duration_since(at));
        if age(entry.fetched_at).is_some_and(|age| age < self.timings.ttl) {
            if let Some(key) = entry.keys.get(kid) {
                return State::Fresh(Arc::clone(key));
            }
        }
        if let Some(signal) = &entry.in_flight {
            return State::InFlight(Arc::clone(signal));
        }
        // Also what keeps a kid that the endpoint does not serve from causing a fetch
        // per token: the answer stays "unknown" until the backoff has passed.
        if age(entry.attempted_at).is_some_and(|age| age < self.timings.retry_backoff) {
            return State::Backoff;
        }
        State::NeedsFetch
    }

    /// Records the end of a fetch and wakes its waiters.
    fn complete(&self, url: &str, result: Result<HashMap<String, Arc<JwkKey>>, FetchError>) {
        let now = Instant::now();
        let signal = {
            let mut entries = lock(&self.entries);
            let entry = entries.entry(url.to_owned()).or_default();
            match result {
                Ok(keys) => {
                    entry.keys = keys;
                    entry.fetched_at = Some(now);
                }
                Err(e) => tracing::warn!(url, error = %e, "JWKS fetch failed"),
            }
            entry.attempted_at = Some(now);
            entry.in_flight.take()
        };
        if let Some(signal) = signal {
            signal.finish();
        }
    }
}

/// Room for a new URL: forget the least recently fetched idle one.
fn make_room(entries: &mut HashMap<String, Entry>) {
    if entries.len() < MAX_URLS {
        return;
    }
    let oldest = entries
        .iter()
        .filter(|(_, e)| e.in_flight.is_none())
        .min_by_key(|(_, e)| e.attempted_at)
        .map(|(url, _)| url.clone());
    if let Some(url) = oldest {
        entries.remove(&url);
    }
}

/// Key source for one `jwks_public_endpoint`; shared by every shard.
pub(crate) struct Jwks {
    template: Template,
    cache: Arc<Cache>,
    /// Its threads stop when this value is dropped.
    pool: Pool<Downloader>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks").field("template", &self.template).finish_non_exhaustive()
    }
}

impl Jwks {
    pub(crate) fn new(template: Template, timings: Timings, limits: Limits) -> Self {
        let cache = Arc::new(Cache { timings, entries: Mutex::new(HashMap::new()) });
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timings.request_timeout))
            .user_agent("rotor")
            .build();
        let agent = ureq::Agent::new_with_config(config);
        let pool = Pool::new(Downloader { cache: Arc::clone(&cache), agent }, limits);
        Jwks { template, cache, pool }
    }

    pub(crate) fn template(&self) -> &Template {
        &self.template
    }

    /// Never blocks on I/O: answers from the cache only.
    pub(crate) fn lookup(&self, url: &str, kid: &str) -> Lookup {
        let entries = lock(&self.cache.entries);
        match self.cache.state(entries.get(url), kid, Instant::now()) {
            State::Fresh(key) => Lookup::Found(key),
            State::InFlight(_) | State::NeedsFetch => Lookup::Pending,
            State::Backoff => Lookup::Unavailable,
        }
    }

    /// Starts a fetch of `url` (or joins the running one) when `kid` is not usable
    /// from the cache. `None`: nothing to wait for, the cache already has the answer.
    pub(crate) fn fetch(&self, url: &str, kid: &str) -> Option<KeysFetch> {
        let signal = {
            let mut entries = lock(&self.cache.entries);
            match self.cache.state(entries.get(url), kid, Instant::now()) {
                State::Fresh(_) | State::Backoff => return None,
                State::InFlight(signal) => return Some(KeysFetch { signal, slot: None }),
                State::NeedsFetch => {}
            }
            if !entries.contains_key(url) {
                make_room(&mut entries);
                // Every remembered URL has a fetch in flight: no new one until one ends.
                if entries.len() >= MAX_URLS {
                    return None;
                }
            }
            let signal = Arc::new(Signal::default());
            entries.entry(url.to_owned()).or_default().in_flight = Some(Arc::clone(&signal));
            signal
        };
        self.pool.submit(url);
        Some(KeysFetch { signal, slot: None })
    }
}

/// What the fetch threads run: download a key set (one retry for a transient failure), parse
/// it, and record the outcome in the cache, which wakes the waiting clients.
struct Downloader {
    cache: Arc<Cache>,
    agent: ureq::Agent,
}

impl Fetcher for Downloader {
    fn fetch(&self, url: &str) {
        let result = download(&self.agent, url)
            .or_else(|e| if e.is_transient() { download(&self.agent, url) } else { Err(e) })
            .and_then(|body| parse_key_set(&body));
        self.cache.complete(url, result);
    }

    fn refuse(&self, url: &str, why: Refused) {
        self.cache.complete(url, Err(why.into()));
    }
}

fn download(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>, FetchError> {
    let mut response = agent.get(url).call()?;
    Ok(response.body_mut().with_config().limit(MAX_DOCUMENT_BYTES).read_to_vec()?)
}
