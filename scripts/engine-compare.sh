#!/usr/bin/env bash
# Memory engine vs Redis engine on one node: the same broadcast run against each, interleaved
# (memory, redis, memory, redis), with a redis-server started here on a free loopback port and
# stopped by PID. Reports the load test's table lines and redis-server's CPU per run.
#   bash scripts/engine-compare.sh [connections] [rate]
# Needs release builds: cargo build --release -p rotor -p rotor-loadtest
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS="${1:-4000}"
RATE="${2:-50}"
BIN="$PWD/target/release"
OUT="$(mktemp -d /tmp/rotor-engines.XXXXXX)"
RPORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --bind 127.0.0.1 --port "$RPORT" --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
RPID=$!
trap 'kill "$RPID" 2>/dev/null || true' EXIT
sleep 0.5
for engine in memory redis; do
  cat >"$OUT/$engine.json" <<JSON
{"http_server": {"address": "127.0.0.1", "port": 0}, "log": {"level": "warn"},
 "client": {"token": {"hmac_secret_key": "engine-compare"}, "queue_max_size": 10485760},
 "http_api": {"key": "engine-compare"},
 "channel": {"without_namespace": {"allow_subscribe_for_client": true}},
 "runtime": {"shards": 2, "pin_cpus": false},
 "engine": {"type": "$engine", "redis": {"address": "redis://127.0.0.1:$RPORT"}}}
JSON
done
ticks() { awk '{print $14 + $15}' "/proc/$RPID/stat"; }
for round in 1 2; do
  for engine in memory redis; do
    "$BIN/rotor" -c "$OUT/$engine.json" >"$OUT/rotor-$engine-$round.out" 2>&1 &
    PID=$!
    for _ in $(seq 100); do grep -q "listening on" "$OUT/rotor-$engine-$round.out" && break; sleep 0.1; done
    ADDR="$(grep -o 'listening on .*' "$OUT/rotor-$engine-$round.out" | awk '{print $3}')"
    before="$(ticks)"
    timeout 300 "$BIN/rotor-loadtest" --scenario broadcast --connections "$CONNS" --rate "$RATE" \
      --duration 10 --addr "$ADDR" --server-pid "$PID" --hmac-secret engine-compare \
      --api-key engine-compare --label "$engine-$round" >"$OUT/$engine-$round.txt" 2>&1
    after="$(ticks)"
    kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
    echo "== $engine, round $round (redis-server CPU during the run: $(( (after - before) * 10 )) ms)"
    grep -E "deliveries/s|delivered / expected|publish API p50|latency p50|latency p99 |CPU per delivery" \
      "$OUT/$engine-$round.txt"
  done
done
