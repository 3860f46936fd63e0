#!/usr/bin/env bash
# A distillation epoch with the teacher-output cache vs without it vs a student-alone epoch,
# side by side: the three are interleaved for ROUNDS rounds (default 2) so machine noise hits
# them alike. Fashion-MNIST, student cnn32-small, batch 128, one main epoch of InDistill's
# losses (PKT + KD + CE; curriculum [0, 0, 0]) per run. The teacher is a checkpoint
# (TEACHER=..., default the pipeline's auxiliary from scripts/run.sh). Not part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked -p distill-edge
de="$CARGO_TARGET_DIR/release/distill-edge"
teacher=$(realpath "${TEACHER:-runs/fashion-mnist/auxiliary/model.ckpt}")
rounds=${ROUNDS:-2}
threads=${THREADS:-2}
work=runs/bench-cache
rm -rf "$work" && mkdir -p "$work"
config() { # config NAME METHOD EXTRA
  printf 'name = "bench-cache"\nstudent = "cnn32-small"\nteacher = "%s"\n[data]\nkind = "fashion-mnist"\n[train]\nbatch-size = 128\nschedule = [{ epochs = 1, lr = 1e-3 }]\n[distill]\nmethod = "%s"\ncurriculum = [0, 0, 0]\n%s' \
    "$teacher" "$2" "$3" > "$work/$1.toml"
}
config cached indistill ""
config direct indistill "teacher-cache = false"
config alone none ""
seconds() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[-1]['seconds'])" "$1/metrics.json"; }
start=$(date +%s.%N)
"$de" -q --threads "$threads" distill --config "$work/cached.toml" --out "$work/runs/build" >/dev/null
build=$(python3 -c "print($(date +%s.%N) - $start - $(seconds "$work/runs/build"))")
echo "cache build (teacher over the training split, 60,000 images): ${build%.*} s (process start and data loading included)"
declare -A total
for r in $(seq "$rounds"); do
  for v in alone cached direct; do
    "$de" -q --threads "$threads" distill --config "$work/$v.toml" --out "$work/runs/$v-$r" >/dev/null
    s=$(seconds "$work/runs/$v-$r")
    echo "round $r  $v  epoch ${s} s"
    total[$v]=$(python3 -c "print(${total[$v]:-0} + $s)")
  done
done
python3 - "${total[alone]}" "${total[cached]}" "${total[direct]}" "$rounds" <<'PY'
import sys
alone, cached, direct, n = (float(x) for x in sys.argv[1:])
print(f"\n| epoch | mean s over {int(n)} rounds | vs student alone |")
print("|---|---|---|")
for name, v in [("student alone (cross-entropy)", alone), ("distillation, teacher cache", cached), ("distillation, teacher run every batch", direct)]:
    print(f"| {name} | {v / n:.1f} | {v / alone:.2f}x |")
PY
