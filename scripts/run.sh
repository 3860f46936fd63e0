#!/usr/bin/env bash
# The main job on the default preset: train the reference student (cnn32-small) on
# Fashion-MNIST with the reference schedule, then evaluate it (accuracy, confusion matrix,
# retrieval mAP). Pass extra `distill-edge train` options after the script name, e.g.
#   scripts/run.sh --schedule 5:1e-3
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
cargo build --release --locked -p distill-edge
bin="$CARGO_TARGET_DIR/release/distill-edge"
config=models/fashion-mnist-student.toml
out=runs/fashion-mnist-student/train
resume=()
[ -f "$out/checkpoint.ckpt" ] && [ ! -f "$out/model.ckpt" ] && resume=(--resume)
if [ -f "$out/model.ckpt" ]; then
  echo "run.sh: $out/model.ckpt exists; evaluating it (delete $out to train again)" >&2
else
  "$bin" train --config "$config" --out "$out" "${resume[@]}" "$@"
fi
"$bin" eval "$out" --output runs/fashion-mnist-student/eval.json
