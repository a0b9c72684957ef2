#!/usr/bin/env bash
# Regenerates src/protocol/pb.rs from proto/client.proto. Only needed after editing the proto:
# the generated file is committed, so builds need neither this tool nor protoc.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --manifest-path tools/protogen/Cargo.toml -- "$PWD"
rustfmt --edition 2021 src/protocol/pb.rs
