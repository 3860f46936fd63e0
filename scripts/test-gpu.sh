#!/usr/bin/env bash
# The wgpu training backend against flex: tests/backends.rs built with `--features wgpu`, on
# this machine's Vulkan driver (Mesa's software driver lavapipe where there is no GPU; setup.sh
# installs it). Separate from scripts/test.sh because the wgpu build costs more than that
# script's time budget allows (docs/BENCHMARKS.md, "The wgpu backend").
# A missing Vulkan driver fails here, as any missing tool does under CI.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
export DISTILL_EDGE_REQUIRE_TOOLS=1
start=$SECONDS
echo "== cargo clippy --all-features -D warnings" >&2
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
echo "== cargo test --features wgpu --test backends" >&2
cargo test --features wgpu --locked --test backends -- --nocapture
echo "test-gpu.sh: the wgpu checks passed in $((SECONDS - start))s" >&2
