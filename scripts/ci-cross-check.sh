#!/usr/bin/env bash
# Cross-check for CI (yours and ours): build the bundle for each target, run it under qemu
# (or natively for x86_64), and fail on any accuracy or output mismatch with the host.
#   scripts/ci-cross-check.sh [--model M.onnx [--int8 Q.onnx] --config C.toml]
#       [--build-arg ARG ...] [--baseline DIR | --save-baseline DIR] [--junit DIR]
#       [--max-runner-bytes N] [TARGET ...]
# --baseline DIR compares each target with DIR/baseline-<target>.json (docs/CI.md: latency is
# never gated under qemu), --save-baseline DIR writes them, --junit DIR writes
# DIR/bench-<target>.xml; --build-arg passes one more argument to `build` (e.g.
# --preprocess=pre.toml for a model distill-edge did not export); --max-runner-bytes N fails a
# target whose runner binary is larger than N bytes (a board's flash budget).
# Without --model, a tiny model is trained on generated data and exported (fp32 and int8).
# Without targets, every file in targets/ is checked. The runner is cross-compiled by
# `distill-edge build` from the sources embedded in the binary (runner/ is its own workspace,
# written out under ~/.cache/distill-edge/sources); builds are cached in $CARGO_TARGET_DIR
# (outside the clone).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
model=""; int8=""; config=""; targets=(); build_extra=(); baseline=""; save_baseline=""; junit=""
max_runner=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --int8) int8=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --build-arg) build_extra+=("$2"); shift 2 ;;
    --baseline) baseline=$2; shift 2 ;;
    --save-baseline) save_baseline=$2; shift 2 ;;
    --junit) junit=$2; shift 2 ;;
    --max-runner-bytes)
      case "${2:-}" in
        ''|*[!0-9]*) echo "ci-cross-check: --max-runner-bytes ${2:-}: expected a number of bytes" >&2; exit 1 ;;
      esac
      max_runner=$2; shift 2 ;;
    -*) echo "unknown option $1" >&2; exit 1 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  for f in targets/*.toml; do targets+=("$(basename "$f" .toml)"); done
fi
# With the `ort` feature, as scripts/test.sh's tests build it, so the suite compiles the binary
# once (ONNX Runtime is loaded at run time, only for a target with the `ort` engine).
cargo build --locked -q -p distill-edge --features ort
bin="$CARGO_TARGET_DIR/debug/distill-edge"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "$model" ]; then
  cat > "$work/tiny.toml" <<'TOML'
name = "cross-check"
seed = 1
model = "cnn32-small"
[data]
kind = "synthetic"
train = 600
test = 200
[train]
batch-size = 32
schedule = [{ epochs = 2, lr = 2e-3 }]
TOML
  "$bin" -q train --config "$work/tiny.toml" --out "$work/run"
  "$bin" -q export "$work/run" -o "$work/model.onnx"
  "$bin" -q export "$work/run" -o "$work/model.int8.onnx" --quantize int8 --calibration-images 128
  model="$work/model.onnx"; int8="$work/model.int8.onnx"; config="$work/run/config.toml"
fi
args=(--model "$model")
[ -n "$int8" ] && args+=(--int8 "$int8")
[ -n "$config" ] && args+=(--config "$config")
failed=0
for t in "${targets[@]}"; do
  echo "== $t" >&2
  start=$SECONDS
  if ! "$bin" -q build --target "$t" "${args[@]}" "${build_extra[@]}" --out "$work/dist/$t" --runs 10; then
    failed=1; continue
  fi
  built=$((SECONDS - start))
  bench_args=()
  [ -n "$baseline" ] && bench_args+=(--baseline "$baseline/baseline-$t.json")
  [ -n "$save_baseline" ] && mkdir -p "$save_baseline" && bench_args+=(--save-baseline "$save_baseline/baseline-$t.json")
  [ -n "$junit" ] && mkdir -p "$junit" && bench_args+=(--junit "$junit/bench-$t.xml")
  if ! "$bin" bench --target "$t" --bundle "$work/dist/$t" "${bench_args[@]}"; then
    failed=1
  fi
  size=$(stat -c %s "$work/dist/$t/distill-edge-runner")
  echo "ci-cross-check: $t: runner $size bytes, build ${built}s, run $((SECONDS - start - built))s" >&2
  if [ -n "$max_runner" ] && [ "$size" -gt "$max_runner" ]; then
    echo "ci-cross-check: $t: runner $work/dist/$t/distill-edge-runner is $size bytes, over --max-runner-bytes $max_runner" >&2
    failed=1
  fi
done
if [ "$failed" = 1 ]; then
  echo "ci-cross-check: FAILED" >&2
  exit 1
fi
echo "ci-cross-check: ${targets[*]} passed" >&2
