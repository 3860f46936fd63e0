#!/usr/bin/env bash
# The experiment of docs/RESULTS.md on real Fashion-MNIST: teacher (cnn32-large) ->
# auxiliary (cnn32, PKT + KD) -> student (cnn32-small) with InDistill and its baselines,
# 3 seeds. Every step resumes or is skipped when its output exists. About 2.5 hours here.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
cargo build --release --locked -p distill-edge
de="$CARGO_TARGET_DIR/release/distill-edge"
[ -f runs/fashion-mnist-teacher/train/model.ckpt ] ||
  "$de" train --config configs/train/fashion-mnist-teacher.toml \
    $( [ -f runs/fashion-mnist-teacher/train/checkpoint.ckpt ] && echo --resume )
[ -f runs/fashion-mnist-aux/aux/model.ckpt ] ||
  "$de" distill --config configs/distill/fashion-mnist-aux.toml --out runs/fashion-mnist-aux/aux \
    $( [ -f runs/fashion-mnist-aux/aux/checkpoint.ckpt ] && echo --resume )
"$de" eval runs/fashion-mnist-teacher/train --output runs/fashion-mnist-teacher/eval.json
"$de" eval runs/fashion-mnist-aux/aux --output runs/fashion-mnist-aux/eval.json
"$de" compare --config configs/distill/fashion-mnist-distill.toml --seeds 1,2,3 \
  --variants none,pkt,kd,indistill,no-curriculum --budgets equal,warmup "$@"
