#!/usr/bin/env bash
# tract vs ONNX Runtime latency, same process, several tract configurations.
#   scripts/bench-infer.sh                 the student and teacher of scripts/indistill-fm.sh, fp32 and int8
#   scripts/bench-infer.sh --int8 RUN_DIR  fp32 vs int8 QDQ vs int8 operator form of the model in RUN_DIR
#                                          (e.g. runs/fashion-mnist/student): latency with tract's
#                                          per-node profile, top-1 on the full test set, then
#                                          fp32 + each int8 model on aarch64 under qemu (emulated)
#   scripts/bench-infer.sh a.onnx b.onnx   given model files
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked -p distill-edge --features ort
de="$CARGO_TARGET_DIR/release/distill-edge"
bench() { cargo bench --locked --features ort --bench infer_latency -- "$@"; }
if [ "${1:-}" = "--int8" ]; then
  run=${2:?usage: scripts/bench-infer.sh --int8 RUN_DIR}
  out=runs/bench-int8; mkdir -p "$out"
  "$de" -q export "$run" -o "$out/fp32.onnx"
  "$de" -q export "$run" -o "$out/int8-qdq.onnx" --quantize int8 --int8-form qdq --calibration min-max
  q=("$de" -q export "$run" --quantize int8 --calibration mse)
  "${q[@]}" -o "$out/int8-qop-mse.onnx"
  "${q[@]}" -o "$out/int8-qop-mse-pt.onnx" --per-tensor
  "${q[@]}" -o "$out/int8-qop-mse-f0.onnx" --float-layer blocks.0.conv
  "${q[@]}" -o "$out/int8-qop-mse-f0-pt.onnx" --float-layer blocks.0.conv --per-tensor
  models="fp32 int8-qdq int8-qop-mse int8-qop-mse-pt int8-qop-mse-f0 int8-qop-mse-f0-pt"
  for m in $models; do
    bench "$out/$m.onnx" --runs 300 --profile
  done
  for m in $models; do
    echo "== $m: top-1 on the full test set"
    "$de" check "$out/$m.onnx" --checkpoint "$run" --runs 5 --batches 1
  done
  # Emulated aarch64: one bundle per int8 model, the fp32 model beside it.
  for m in int8-qdq int8-qop-mse int8-qop-mse-f0-pt; do
    echo "== aarch64 (emulated): fp32 + $m"
    "$de" build --target aarch64 --model "$out/fp32.onnx" --int8 "$out/$m.onnx" --runs 20 \
      --batches 1,32 --shard-size 256 --data fashion-mnist --data-path /usr/share/datasets/fashion-mnist
    "$de" bench --target aarch64
  done
  exit 0
fi
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
  bench "$m" --runs 300
done
