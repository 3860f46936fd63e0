#!/usr/bin/env bash
# tract vs ONNX Runtime latency, same process, several tract configurations, for the
# Fashion-MNIST student and teacher (fp32 and int8). Needs the runs of scripts/indistill-fm.sh
# (or pass model files: scripts/bench-infer.sh a.onnx b.onnx ...).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked -p distill-edge
de="$CARGO_TARGET_DIR/release/distill-edge"
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  out=runs/bench-infer; mkdir -p "$out"
  for pair in student:runs/fashion-mnist-distill/compare/indistill-warmup-seed1 teacher:runs/fashion-mnist-teacher/train; do
    name=${pair%%:*}; run=${pair#*:}
    "$de" -q export "$run" -o "$out/$name.onnx"
    "$de" -q export "$run" -o "$out/$name.int8.onnx" --quantize int8
    models+=("$out/$name.onnx" "$out/$name.int8.onnx")
  done
fi
for m in "${models[@]}"; do
  cargo bench --locked --features ort --bench infer_latency -- "$m" --runs 300
done
