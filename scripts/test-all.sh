#!/usr/bin/env bash
# The project's whole test command: Rust formatting, lints, build and tests, then the
# Node compatibility suite (the official centrifuge JS SDK against the built binary) and
# the Python one (centrifuge-python and cent). Stops at the first failing step; the last
# line printed is pytest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# No import cycles between the library's source files (the layering lib.rs describes).
python3 scripts/module-cycles.py src
cargo build
cargo test
# Benchmarks must keep compiling (they run by hand: see README).
cargo bench --no-run
# The fuzz targets (fuzz/README.md): fmt for their crate, then every target for 10 s on
# top of its committed seeds, built unoptimised (a clean build is most of the time); a crash
# fails the run.
(cd fuzz && cargo fmt -- --check)
FUZZ_PROFILE=smoke bash fuzz/run.sh --all --seconds 10
# The load-test harness: fmt/clippy for its crate, then a short run of every scenario.
cargo clippy -p rotor-loadtest --all-targets -- -D warnings
cargo test -p rotor-loadtest
bash scripts/loadtest-smoke.sh

cd tests/compat
npm ci --no-audit --no-fund
export ROTOR_BIN="$PWD/../../target/debug/rotor"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -ge 20 ]; then
  npm test
else
  # Node < 20 has no --test-concurrency; this suite is a single file, so plain
  # `node --test` runs it the same way.
  node --test
fi

cd ../..
# The Python compatibility suite last (its own venv under tests/compat-py/.venv).
bash scripts/compat-py.sh
