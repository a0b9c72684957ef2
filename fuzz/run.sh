#!/usr/bin/env bash
# Builds and runs Rotor's fuzz targets: libFuzzer (from the libfuzzer-sys crate) driven by
# coverage that stable rustc's SanitizerCoverage pass inserts. No cargo-fuzz, no nightly.
# See fuzz/README.md.
#
#   fuzz/run.sh build                        build every target (release, instrumented)
#   fuzz/run.sh TARGET [SECONDS] [FLAGS…]    fuzz one target, for SECONDS (default: until
#                                            stopped); FLAGS go to libFuzzer, e.g. -runs=N
#   fuzz/run.sh TARGET FILE…                 run these inputs once (reproduce a crash)
#   fuzz/run.sh --all --seconds N            every target for N seconds each (CI smoke run)
#   fuzz/run.sh --list                       the targets
#
# Environment: FUZZ_TARGET_DIR (build directory, default fuzz/target), FUZZ_PROFILE (cargo
# profile, default release; CI uses smoke, see Cargo.toml), FUZZ_WORK (the grown corpus and
# crash files, default fuzz/work; neither is committed), CARGO_NET_OFFLINE=true
# (build from what `cargo fetch` brought, without the network). The exit code is not zero
# when a target crashed (panic, abort, timeout, out of memory) or did not build.
set -euo pipefail
fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
cd "$fuzz_dir"

targets=(json_command protobuf_command http_head websocket_frames config_load resp_reply
  nats_protocol)

# Largest input libFuzzer makes for a target (its default is 4096 bytes).
max_len() {
  case "$1" in
    http_head) echo 20480 ;; # past HEAD_MAX_BYTES (16 KiB)
    websocket_frames) echo 16384 ;;
    config_load) echo 8192 ;;
    # Their checks read the stream again in reads as small as one byte, which costs the
    # square of the length: longer inputs add little but time.
    nats_protocol | resp_reply) echo 1024 ;;
    *) echo 4096 ;;
  esac
}

export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$fuzz_dir/target}"
work="${FUZZ_WORK:-$fuzz_dir/work}"
profile="${FUZZ_PROFILE:-release}"
host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$CARGO_TARGET_DIR/$host/$profile"

build() {
  # What cargo-fuzz passes, minus its nightly-only -Zsanitizer=address: coverage counters,
  # the PC table and comparison tracing for libFuzzer, `cfg(fuzzing)`, and every debug
  # assertion and overflow check (the profile in Cargo.toml turns those on as well). With an
  # explicit --target these flags reach the fuzzed code only, not build scripts.
  local flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing
    -Cdebug-assertions
    -Coverflow-checks
  )
  RUSTFLAGS="${flags[*]}" cargo build --locked --profile "$profile" --target "$host" --bins
}

is_target() {
  local t
  for t in "${targets[@]}"; do [ "$t" = "$1" ] && return 0; done
  return 1
}

# fuzz TARGET LOG [libFuzzer args…]: new inputs go to the scratch corpus; the committed seeds
# are only read.
fuzz() {
  local target="$1" log="$2"
  shift 2
  local status
  mkdir -p "$work/corpus/$target" "$work/artifacts/$target"
  set +e
  "$bin_dir/$target" \
    -max_len="$(max_len "$target")" \
    -timeout=30 \
    -rss_limit_mb=2048 \
    -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/$target/" \
    "$@" \
    "$work/corpus/$target" "$fuzz_dir/corpus/$target" 2>&1 | tee "$log" | grep -E \
    '^(#[0-9]+[[:space:]]+(INITED|DONE|pulse)|Done|==[0-9]+==|SUMMARY|panicked|thread |artifact_prefix|Test unit written|stat::)'
  status="${PIPESTATUS[0]}"
  set -e
  return "$status"
}

# The last `cov:`/`ft:` and the execution count of a libFuzzer log, on one line.
summary() {
  local log="$1" cov execs secs
  cov="$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1 || true)"
  execs="$(sed -n 's/^stat::number_of_executed_units: //p' "$log" | tail -n 1)"
  secs="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)"
  echo "${execs:-?} executions in ${secs:-?} s, ${cov:-no coverage line}"
}

case "${1:-}" in
  "" | -h | --help)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  --list)
    printf '%s\n' "${targets[@]}"
    exit 0
    ;;
  build)
    build
    exit 0
    ;;
  --all)
    [ "${2:-}" = "--seconds" ] && [ -n "${3:-}" ] || {
      echo "usage: $0 --all --seconds N" >&2
      exit 2
    }
    seconds="$3"
    start=$SECONDS
    build
    echo "fuzz: built in $((SECONDS - start)) s"
    failed=()
    mkdir -p "$work/logs"
    for target in "${targets[@]}"; do
      log="$work/logs/$target.log"
      if fuzz "$target" "$log" -max_total_time="$seconds" >/dev/null; then
        echo "fuzz: $target: $(summary "$log"), no crash"
      else
        echo "fuzz: $target CRASHED (log: $log); the last lines:"
        tail -n 40 "$log"
        failed+=("$target")
      fi
    done
    echo "fuzz: ${#targets[@]} targets in $((SECONDS - start)) s including the build"
    if [ "${#failed[@]}" -gt 0 ]; then
      echo "fuzz: crashed: ${failed[*]}; reproduce with fuzz/run.sh TARGET CRASH-FILE" >&2
      exit 1
    fi
    exit 0
    ;;
esac

target="$1"
shift
if ! is_target "$target"; then
  echo "unknown target '$target'; the targets: ${targets[*]}" >&2
  exit 2
fi
build
if [ "$#" -gt 0 ] && [ -f "$1" ]; then
  # Reproduce: run the given inputs once each, with a backtrace on panic.
  RUST_BACKTRACE=1 exec "$bin_dir/$target" "$@"
fi
args=()
if [ "$#" -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then
  args+=(-max_total_time="$1")
  shift
fi
mkdir -p "$work/logs"
log="$work/logs/$target.log"
status=0
fuzz "$target" "$log" "${args[@]}" "$@" || status=$?
echo "fuzz: $target: $(summary "$log"), exit status $status (log: $log)"
exit "$status"
