//! Operator endpoints on the internal port (or the only one): `/metrics` (`prometheus.*`),
//! `/health` and its readiness sibling `/health/ready` (`health.*`).
//!
//! Owns: their paths and answers. A scrape asks every shard for its snapshot over the mesh and
//! renders the sum (`metrics::render`); the shards keep counting meanwhile. Must not: read
//! another shard's state directly, or answer anything on the main port beside an internal one.

use std::sync::Arc;

use super::conn::Reply;
use crate::config::Config;
use crate::http::Head;
use crate::metrics::info::{Aggregator, NodeInfo};
use crate::metrics::render::{families, render, Scrape, CONTENT_TYPE};
use crate::metrics::ShardSnapshot;
use crate::shard::id::ShardId;
use crate::shard::msg::{Answer, Call};
use crate::shard::{PendingAnswer, ShardRef};

/// The answer of an operator endpoint at `head.path`, if it is one.
/// Whether `path` is one of these endpoints (they take no body).
pub fn serves(cfg: &Config, path: &str) -> bool {
    let health = cfg.health.handler_prefix.trim_end_matches('/');
    (cfg.prometheus.enabled && path == cfg.prometheus.handler_prefix)
        || (cfg.health.enabled
            && (path == cfg.health.handler_prefix || path.strip_prefix(health) == Some("/ready")))
}

pub async fn route(shard: &ShardRef, cfg: &Arc<Config>, head: &Head) -> Option<Reply> {
    if cfg.prometheus.enabled && head.path == cfg.prometheus.handler_prefix {
        return Some(match scrape(shard).await {
            Some(scrape) => {
                let mut reply = Reply::json(200, render(&scrape));
                reply.content_type = CONTENT_TYPE;
                reply
            }
            None => Reply::json(500, crate::http::json_error_body("a shard did not answer")),
        });
    }
    if !cfg.health.enabled {
        return None;
    }
    let health = cfg.health.handler_prefix.trim_end_matches('/');
    if head.path == cfg.health.handler_prefix {
        // As upstream: any method, `{}`, never unhealthy while the process answers.
        return Some(Reply::json(200, b"{}".to_vec()));
    }
    if head.path.strip_prefix(health) == Some("/ready") {
        return Some(ready(shard));
    }
    None
}

/// Readiness: 503 while draining or while this shard's broker links are down, so a load
/// balancer stops sending new clients to a node that would refuse or lose them.
fn ready(shard: &ShardRef) -> Reply {
    let s = shard.borrow();
    let why = if s.shutting_down() {
        Some("draining")
    } else if !s.links_up() {
        Some("broker unavailable")
    } else {
        None
    };
    match why {
        None => Reply::json(200, b"{}".to_vec()),
        Some(why) => Reply::json(503, crate::http::json_error_body(why)),
    }
}

/// Shard 0's task: aggregates the node's `info` metrics and process use every
/// `node.info_metrics_aggregate_interval` (at once at start), until shutdown.
pub async fn aggregate_info(shard: ShardRef) {
    let interval = shard.borrow().cfg().node.info_metrics_aggregate_interval;
    let mut aggregator = Aggregator::default();
    loop {
        if let Some(scrape) = scrape(&shard).await {
            let metrics = aggregator.metrics(&families(&scrape), interval);
            let info = NodeInfo { metrics, process: aggregator.process() };
            shard.borrow_mut().set_info_metrics(info);
        }
        let stop = crate::shard::shutdown_signal(&shard);
        if futures_lite::future::or(
            async {
                glommio::timer::sleep(interval).await;
                false
            },
            async {
                stop.await;
                true
            },
        )
        .await
        {
            return;
        }
    }
}

/// Every shard's metrics snapshot, in shard order; `None` if a shard did not answer.
pub(super) async fn snapshots(shard: &ShardRef) -> Option<Vec<ShardSnapshot>> {
    let answers = crate::api::query::ask_all(shard, || Call::Metrics).await.ok()?;
    answers
        .into_iter()
        .map(|a| match a {
            Answer::Metrics(s) => Some(*s),
            _ => None,
        })
        .collect()
}

/// Every shard's snapshot and the cluster's node count; `None` if a shard did not answer.
async fn scrape(shard: &ShardRef) -> Option<Scrape> {
    let shards = snapshots(shard).await?;
    let req = shard.borrow_mut().call(ShardId(0), Call::ListNodes);
    let others = match PendingAnswer::new(shard.clone(), req).await {
        Some(Answer::Nodes(n)) => n.len() as u64,
        _ => 0,
    };
    let version = crate::client::SERVER_VERSION.to_owned();
    Some(Scrape { shards, nodes: 1 + others, version })
}
