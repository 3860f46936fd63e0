#!/usr/bin/env bash
# The whole suite: set-up, formatting, lints, every test. What CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
# Tests that need a tool (qemu, a cross linker, a rustup target) fail instead of skipping.
export DISTILL_EDGE_REQUIRE_TOOLS=1
start=$SECONDS
echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
# The runner is its own workspace (built from the sources embedded in distill-edge).
cargo fmt --manifest-path runner/Cargo.toml --all -- --check
echo "== cargo clippy -D warnings" >&2
# Every feature but `wgpu`: its build is the separate scripts/test-gpu.sh (docs/BENCHMARKS.md).
cargo clippy --workspace --all-targets --features ort --locked -- -D warnings
cargo clippy --manifest-path runner/Cargo.toml --all-targets --all-features --locked -- -D warnings
echo "== cargo check (default features)" >&2
cargo check --workspace --locked
echo "== cargo test (with the ONNX Runtime engine)" >&2
cargo test --workspace --all-targets --features ort --locked
echo "== cross-compiled runner under qemu (aarch64)" >&2
scripts/ci-cross-check.sh aarch64
echo "== the runner optimised for size: at most 5 MB, same outputs under qemu (aarch64)" >&2
scripts/ci-cross-check.sh --build-arg --optimize=size --max-runner-bytes 5000000 aarch64
echo "test.sh: all checks passed in $((SECONDS - start))s" >&2
