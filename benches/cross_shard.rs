//! Cross-shard hop latency over the glommio channel mesh that shards use for `ShardMsg`.
//!
//! Two executors, A and B. A sends a message stamped with its send time; B's pump answers on the
//! reply mesh; A records the round trip in an HDR histogram. Two modes, same run:
//! - unbatched: one message in flight (send, wait for its answer, repeat);
//! - batched: `BATCH` messages sent back to back, B drains everything queued before answering
//!   each, as the shard pump does.
//!
//! Run: `cargo bench --bench cross_shard` (add `-- --quick` for a short run). Report the batched
//! per-message cost relative to the unbatched round trip measured in the same run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

const BATCH: usize = 64;

#[derive(Debug)]
struct Msg {
    sent: Instant,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--spin-us N`: executors spin N µs before parking (glommio `spin_before_park`), trading
    // idle CPU for a faster wake-up on the next message.
    let spin_us: u64 = std::env::args()
        .skip_while(|a| a != "--spin-us")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let spin = Duration::from_micros(spin_us);
    let rounds: usize = if quick { 2_000 } else { 50_000 };
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let placement = |i: usize| if cpus >= 2 { Placement::Fixed(i) } else { Placement::Unbound };
    let main_mesh = MeshBuilder::<Msg, _>::full(2, 1024);
    let reply_mesh = MeshBuilder::<Msg, _>::full(2, 1024);
    let (m, r) = (main_mesh.clone(), reply_mesh.clone());
    // Mesh peer ids follow executor creation order: A (peer 0) must be created first.
    let requester = LocalExecutorBuilder::new(placement(0))
        .name("bench-a")
        .spin_before_park(spin)
        .spawn(move || async move {
            let (tx, _) = main_mesh.join().await.unwrap();
            let (_, mut rx) = reply_mesh.join().await.unwrap();
            let mut streams = rx.streams();
            let (_, mut replies) = streams.pop().unwrap();
            let mut unbatched = Histogram::<u64>::new(3).unwrap();
            let started = Instant::now();
            for _ in 0..rounds {
                tx.send_to(1, Msg { sent: Instant::now() }).await.unwrap();
                let m = replies.next().await.unwrap();
                unbatched.record(m.sent.elapsed().as_nanos() as u64).unwrap();
            }
            let unbatched_wall = started.elapsed();
            let mut batched = Histogram::<u64>::new(3).unwrap();
            let started = Instant::now();
            for _ in 0..rounds / BATCH {
                for _ in 0..BATCH {
                    tx.send_to(1, Msg { sent: Instant::now() }).await.unwrap();
                }
                for _ in 0..BATCH {
                    let m = replies.next().await.unwrap();
                    batched.record(m.sent.elapsed().as_nanos() as u64).unwrap();
                }
            }
            let batched_wall = started.elapsed();
            tx.close();
            (unbatched, unbatched_wall, batched, batched_wall)
        })
        .unwrap();
    let responder = LocalExecutorBuilder::new(placement(1))
        .name("bench-b")
        .spin_before_park(spin)
        .spawn(move || async move {
            let (_, mut rx) = m.join().await.unwrap();
            let (tx, _) = r.join().await.unwrap();
            let mut streams = rx.streams();
            let (_, mut from_a) = streams.pop().unwrap();
            while let Some(msg) = from_a.next().await {
                // Drain everything already queued before answering, as the shard pump does.
                let mut batch = vec![msg];
                while let Some(Some(more)) = futures_lite::future::poll_once(from_a.next()).await {
                    batch.push(more);
                }
                for m in batch {
                    if tx.send_to(0, m).await.is_err() {
                        return;
                    }
                }
            }
        })
        .unwrap();
    let (unbatched, uw, batched, bw) = requester.join().unwrap();
    let _ = responder.join();
    let per_msg = |wall: Duration, n: usize| wall.as_nanos() as f64 / n as f64;
    println!("cross-shard hop over the glommio mesh, {rounds} messages per mode, {cpus} CPUs, spin_before_park {spin_us} µs");
    println!("| mode | p50 RTT | p99 RTT | p99.9 RTT | wall per message |");
    println!("|---|---|---|---|---|");
    for (name, h, wall, n) in [
        ("unbatched", &unbatched, uw, rounds),
        ("batched x64", &batched, bw, rounds / BATCH * BATCH),
    ] {
        println!(
            "| {name} | {:.1} µs | {:.1} µs | {:.1} µs | {:.0} ns |",
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.value_at_quantile(0.999) as f64 / 1e3,
            per_msg(wall, n)
        );
    }
    println!(
        "batched costs {:.2}x less wall time per message than unbatched (same run)",
        per_msg(uw, rounds) / per_msg(bw, rounds / BATCH * BATCH)
    );
}
