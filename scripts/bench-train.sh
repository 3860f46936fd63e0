#!/usr/bin/env bash
# Training throughput, burn (flex CPU backend) vs PyTorch on this CPU, same networks, batch,
# optimizer and thread count. PyTorch comes from PyPI into a venv under ~/.cache (a large
# download on first use); pass --no-torch to measure burn alone. --models limits the presets
# (cnn32, cnn32-small, cnn32-large, mobilenet96); --profile dev measures the already built
# debug profile (dependencies at opt-level 3) instead of building the bench profile.
#   scripts/bench-train.sh [--threads N] [--steps N] [--models a,b] [--profile P] [--no-torch]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
threads=$(nproc); steps=40; torch=1; models=""; profile=()
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --no-torch) torch=0; shift ;;
    --models) models=$2; shift 2 ;;
    --profile) profile=(--profile "$2"); shift 2 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done
out=$(mktemp -d)
echo "bench-train: burn, $threads threads" >&2
model_args=(); [ -n "$models" ] && model_args=(--models "$models")
cargo bench --locked "${profile[@]}" --bench train_throughput -- --threads "$threads" --steps "$steps" \
  "${model_args[@]}" | tee "$out/burn.jsonl"
if [ "$torch" = 1 ]; then
  venv="$HOME/.cache/distill-edge/torch-venv"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    echo "bench-train: installing torch into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch numpy
  fi
  echo "bench-train: PyTorch, $threads threads" >&2
  "$venv/bin/python" scripts/bench_train_torch.py --threads "$threads" --steps "$steps" \
    "${model_args[@]}" | tee "$out/torch.jsonl"
  python3 - "$out/burn.jsonl" "$out/torch.jsonl" <<'PY'
import json, sys
burn = [json.loads(l) for l in open(sys.argv[1])]
torch = {(r["model"], r["input"]): r for r in map(json.loads, open(sys.argv[2]))}
print(f"\n{'model':<12} {'input':<8} {'burn img/s':>11} {'torch img/s':>12} {'burn/torch':>10}")
for r in burn:
    t = torch[(r["model"], r["input"])]
    print(f"{r['model']:<12} {r['input']:<8} {r['images_per_second']:>11.0f} {t['images_per_second']:>12.0f} {r['images_per_second']/t['images_per_second']:>9.2f}x")
print(f"({burn[0]['threads']} threads, batch {burn[0]['batch']}, {t['framework']})")
PY
fi
