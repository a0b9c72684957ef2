#!/usr/bin/env bash
# Smoke test of the load-test harness: builds rotor and rotor-loadtest (debug), runs every
# scenario against rotor (and broadcast against the raw floor too) with at most 200
# connections for a few seconds each, plus a short broadcast against each peer target
# (nats-server over WebSocket, installed from Debian when missing and we are root; the
# socket.io 4 server in loadtest/peers, skipped with the reason printed if `npm ci` fails), and lets the harness assert sane numbers
# (--assert-sane: everybody connected, deliveries > 0, 0 < latency p50 < 1 s, RSS per
# connection > 0, connect rate > 0). Prints "N passed, M failed" (scenarios) last and exits
# non-zero when any failed. Only processes the harness starts are stopped (by their PIDs).
set -uo pipefail
cd "$(dirname "$0")/.."

cargo build -j 2 -p rotor -p rotor-loadtest || { echo "0 passed, 1 failed"; exit 1; }

T="${CARGO_TARGET_DIR:-target}"
LT="$T/debug/rotor-loadtest"
OUT="${LOADTEST_SMOKE_OUT:-target/loadtest-smoke}"
mkdir -p "$OUT"
COMMON=(--rotor-bin "$T/debug/rotor" --shards 2 --assert-sane --max-runtime 60)

passed=0
failed=0
run() {
  local name="$1"
  shift
  echo "--- $name"
  if timeout 90 "$LT" "${COMMON[@]}" --out "$OUT/$name.json" "$@"; then
    passed=$((passed + 1))
  else
    echo "FAILED: $name"
    failed=$((failed + 1))
  fi
}

run idle --scenario idle --connections 200 --duration 2
run broadcast --scenario broadcast --connections 200 --duration 3 --rate 50 --compare raw \
  --plots "$OUT/plots"
run broadcast-protobuf --scenario broadcast --protobuf --connections 200 --duration 3 --rate 50
run broadcast-uni-sse --scenario broadcast --uni-sse --connections 200 --duration 3 --rate 50
# Three nodes on one redis-server (Debian package redis-server, started by the harness).
run broadcast-3-nodes --scenario broadcast --nodes 3 --connections 300 --duration 3 --rate 50
# TLS client port and permessage-deflate, through the raw WebSocket client (needs openssl).
run broadcast-tls-deflate --scenario broadcast --tls --ws-compression --payload-kind app-json \
  --payload-bytes 2000 --connections 200 --duration 3 --rate 50
run fanout-many --scenario fanout-many --connections 200 --channels 10 --duration 3 --rate 50
run connect-storm --scenario connect-storm --connections 200
run connect-storm-proxy --scenario connect-storm --connect-proxy --connections 200
# Large payloads so the slow clients overflow the kernel buffers within the stall; one cycle.
run slow-consumer --scenario slow-consumer --connections 50 --slow-fraction 0.1 --duration 4 \
  --slow-stall 3 --slow-cycles 1 --rate 100 --payload-bytes 16000 --queue-max-size 65536
run soak --scenario soak --connections 200 --channels 20 --rate 20 --duration 6 --sample-every 2

# Peer targets: nats-server (Debian package) and the socket.io 4 server (npm ci in loadtest/peers).
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ] && [ "$(id -u)" -eq 0 ]; then
  echo "--- installing nats-server from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server >/dev/null 2>&1 ||
    { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server >/dev/null 2>&1; } ||
    echo "apt-get install nats-server failed"
fi
run broadcast-nats --target nats --scenario broadcast --connections 200 --duration 3 --rate 50

socketio_ok=1
if [ ! -d loadtest/peers/node_modules ]; then
  if ! npm_log=$(cd loadtest/peers && timeout 300 npm ci --no-audit --no-fund 2>&1); then
    socketio_ok=0
    echo "--- broadcast-socketio SKIPPED: npm ci in loadtest/peers failed:"
    printf '%s\n' "$npm_log" | tail -5
  fi
fi
if [ "$socketio_ok" -eq 1 ]; then
  run broadcast-socketio --target socketio --scenario broadcast --connections 200 --duration 3 \
    --rate 50
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
