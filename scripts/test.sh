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
# The tests cross-compile the runner several times (one build per target and engine set). The
# shipped `runner` profile links it with fat LTO and one codegen unit, about 3 minutes more per
# cold build on two cores; the tests check what it computes, not how fast, so they build it
# without LTO (cargo's environment overrides reach the runner's workspace through
# `distill-edge build`). The size check below builds with the shipped settings.
export CARGO_PROFILE_RUNNER_LTO=off CARGO_PROFILE_RUNNER_CODEGEN_UNITS=16
echo "== cargo test (with the ONNX Runtime engine)" >&2
cargo test --workspace --all-targets --features ort --locked
echo "== cross-compiled runner under qemu (aarch64)" >&2
scripts/ci-cross-check.sh aarch64
unset CARGO_PROFILE_RUNNER_LTO CARGO_PROFILE_RUNNER_CODEGEN_UNITS
echo "== the runner optimised for size (shipped profile, fat LTO): at most 5 MB, same outputs under qemu (aarch64)" >&2
scripts/ci-cross-check.sh --build-arg --optimize=size --max-runner-bytes 5000000 aarch64
echo "test.sh: all checks passed in $((SECONDS - start))s" >&2
