#!/usr/bin/env bash
# The InDistill reference protocol on Fashion-MNIST (docs/RESULTS.md): teacher (cnn32-large) and
# the auxiliary's baseline (cnn32) by cross-entropy, the auxiliary by PKT from the teacher, then
# every student variant over 5 seeds, chosen on the validation split. Every step resumes or is
# skipped when its output exists, so the run can be split across sessions: run it again.
# A new machine has no runs/: the run's checkpoints are committed with `git add -f` (model.ckpt
# of a finished step, checkpoint.ckpt of a partial one) so that it resumes anywhere.
# `scripts/indistill-reference.sh 32` runs the same protocol at 32x32 (Fashion-MNIST padded by 2).
# Extra arguments go to `compare` (e.g. --test once every choice is made).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
cargo build --release --locked -p distill-edge
de="$CARGO_TARGET_DIR/release/distill-edge"
fm=fashion-mnist run=fm
if [ "${1:-}" = 32 ]; then fm=fashion-mnist32 run=fm32; shift; fi
step() { # step DIR COMMAND...: run COMMAND unless DIR/model.ckpt exists, resuming a partial run
  local dir=$1; shift
  [ -f "$dir/model.ckpt" ] && return 0
  "$@" $( [ -f "$dir/checkpoint.ckpt" ] && echo --resume )
}
step runs/$run-reference-teacher/train "$de" train --config configs/train/$fm-teacher-reference.toml
step runs/$run-reference-aux-baseline/train "$de" train --config configs/train/$fm-aux-baseline-reference.toml
step runs/$run-reference-aux/aux "$de" distill --config configs/distill/$fm-aux-reference.toml --out runs/$run-reference-aux/aux
"$de" compare --config configs/distill/$fm-reference.toml --seeds 1,2,3,4,5 "$@"
