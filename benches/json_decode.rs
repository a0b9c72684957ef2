//! Client command decoding: Rotor's codec (serde_json, typed, payloads kept as raw bytes) against
//! simd-json parsing the same frames into a generic borrowed value.
//!
//! simd-json is the design card's JSON decoder, but it cannot hand back the exact text of a
//! payload (`data` must be re-emitted byte for byte, and numbers like 1e400 or
//! 0.10000000000000000555 would be re-formatted), so it would need a second parse for every
//! command that carries data. This bench is the measurement behind that choice:
//! `cargo bench --bench json_decode`. Read the ratio between the two lines of each group; the
//! machine is shared and absolute numbers are noisy.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};

fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let payload = format!(r#"{{"text":"{}","n":12345,"tags":["a","b"]}}"#, "x".repeat(900));
    vec![
        ("pong", b"{}".to_vec()),
        ("subscribe", br#"{"id":2,"subscribe":{"channel":"chat:room-42","flag":1}}"#.to_vec()),
        (
            "connect",
            br#"{"id":1,"connect":{"token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiIsImV4cCI6MTc5NTMwOTc2NX0.mieG48c-UZhCKy05nE5_Df64ulvOs6KlKt3LUClqqLs","name":"js"}}"#
                .to_vec(),
        ),
        ("publish-1KiB", format!(r#"{{"id":3,"publish":{{"channel":"chat:1","data":{payload}}}}}"#).into_bytes()),
    ]
}

fn decode(c: &mut Criterion) {
    for (name, frame) in frames() {
        let mut group = c.benchmark_group(format!("decode/{name}"));
        group.bench_with_input(BenchmarkId::new("rotor-serde_json-typed", name), &frame, |b, f| {
            b.iter(|| rotor::protocol::json::decode_frame(black_box(f)).map(|v| v.len()));
        });
        group.bench_with_input(
            BenchmarkId::new("simd-json-borrowed-value", name),
            &frame,
            |b, f| {
                // simd-json parses in place, so each iteration needs its own mutable copy; the
                // copy is part of its real cost too (the read buffer must be kept intact).
                b.iter(|| {
                    let mut buf = f.clone();
                    simd_json::to_borrowed_value(black_box(&mut buf)).map(|_| ()).is_ok()
                });
            },
        );
        group.finish();
    }
}

criterion_group!(benches, decode);
criterion_main!(benches);
