#!/usr/bin/env bash
# burn 0.22.1 (the project's) vs burn 0.23.0-pre.1 on the same training step
# (scripts/burn-versions/main.rs, burn's own modules), alternating the two binaries case by
# case for --rounds rounds (order swapped every round), then the median images/s of each and
# their ratio. Each version is its own workspace with its own lock file and build directory.
#   scripts/bench-burn-versions.sh [--threads N] [--steps N] [--rounds N] [--models a,b] [--inputs a,b]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
threads=2; steps=20; rounds=3; models="cnn32,cnn32-small,cnn32-large"; inputs="1x28x28,3x32x32"
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --inputs) inputs=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done
versions=(0.22 0.23)
for v in "${versions[@]}"; do
  echo "bench-burn-versions: building burn $v" >&2
  CARGO_TARGET_DIR="$CARGO_TARGET_DIR/burn-v$v" cargo build --release --locked -q \
    --manifest-path "scripts/burn-versions/v$v/Cargo.toml"
done
bin() { echo "$CARGO_TARGET_DIR/burn-v$1/release/burn-version-bench"; }
label() { grep -o 'version = "=[^"]*"' "scripts/burn-versions/v$1/Cargo.toml" | head -1 | sed 's/version = "=\(.*\)"/burn-\1/'; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "bench-burn-versions: $rounds rounds, $threads threads, $steps steps, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq 1 "$rounds"); do
  order=("${versions[@]}"); [ $((r % 2)) = 0 ] && order=("${versions[1]}" "${versions[0]}")
  for m in ${models//,/ }; do
    for i in ${inputs//,/ }; do
      for v in "${order[@]}"; do
        "$(bin "$v")" --label "$(label "$v")" --threads "$threads" --steps "$steps" \
          --models "$m" --inputs "$i" | tee -a "$out"
      done
    done
  done
done
echo "bench-burn-versions: load after $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
labels = list(dict.fromkeys(r["framework"] for r in rows))
cases = list(dict.fromkeys((r["model"], r["input"]) for r in rows))
med = lambda m, i, l: statistics.median(r["images_per_second"] for r in rows
                                        if (r["model"], r["input"], r["framework"]) == (m, i, l))
print(f"\n| model | input | {labels[0]} img/s | {labels[1]} img/s | {labels[1]} / {labels[0]} |")
print("|---|---|---|---|---|")
for m, i in cases:
    a, b = med(m, i, labels[0]), med(m, i, labels[1])
    print(f"| {m} | {i} | {a:,.0f} | {b:,.0f} | {b / a:.2f}x |")
n = len(rows) // (2 * len(cases))
print(f"(median of {n} runs each, {rows[0]['threads']} threads, batch {rows[0]['batch']}, {rows[0]['steps']} steps)")
PY
