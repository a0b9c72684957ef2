//! The shard's backend proxy task: takes the calls commands queued (`Shard::poll_proxy_call`),
//! runs each on this executor with the shard's HTTP client, and hands the outcome back to the
//! command's flight (`Shard::proxy_answered`).
//!
//! Owns: the shard's `proxy::http::Client` (its keep-alive pools). Must not: hold a shard
//! borrow across an `.await`.

use std::future::poll_fn;
use std::sync::Arc;

use crate::metrics::DEFAULT_BUCKETS;
use crate::proxy::http::Client;
use crate::proxy::CallError;
use crate::shard::ShardRef;

/// Starts the task when the config has proxies.
pub fn spawn(shard: &ShardRef) {
    let proxies = Arc::clone(shard.borrow().proxies());
    if !proxies.any() {
        return;
    }
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let client = Client::new();
        loop {
            let job = poll_fn(|cx| shard.borrow_mut().poll_proxy_call(cx)).await;
            let (shard, client, proxies) = (shard.clone(), client.clone(), Arc::clone(&proxies));
            glommio::spawn_local(async move {
                let Some(ep) = proxies.endpoint(job.proxy) else {
                    let outcome = Err(CallError::Transport("unknown proxy".into()));
                    return shard.borrow_mut().proxy_answered(job.token, outcome);
                };
                let started = std::time::Instant::now();
                let outcome = client.call(job.proxy, ep, job.headers, job.body, job.deadline).await;
                let mut s = shard.borrow_mut();
                let calls = s.metrics().proxy(job.kind, &ep.name);
                calls.inflight -= 1;
                calls.duration.observe_duration(started.elapsed(), &DEFAULT_BUCKETS);
                calls.errors += u64::from(outcome.is_err());
                s.proxy_answered(job.token, outcome);
            })
            .detach();
        }
    })
    .detach();
}
