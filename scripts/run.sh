#!/usr/bin/env bash
# The main job: the whole pipeline on Fashion-MNIST with the quick profile, ending with the
# aarch64 bundle validated under qemu and the report in runs/fashion-mnist/report.html.
# Extra arguments go to `distill-edge build`, e.g. `scripts/run.sh --profile reference` or
# `scripts/run.sh --device ssh://pi@raspberrypi.local`. A second run rebuilds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
cargo build --release --locked -p distill-edge --features ort
"$CARGO_TARGET_DIR/release/distill-edge" build --target aarch64 \
  --config configs/pipeline/fashion-mnist.toml --profile quick "$@"
