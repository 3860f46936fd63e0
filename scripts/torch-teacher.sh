#!/usr/bin/env bash
# Bring your own teacher, end to end (a benchmark-style run, not CI):
#   1. a PyTorch CPU virtual environment under ~/.cache/distill-edge/torch-venv (torch, onnx
#      and numpy from PyPI, installed once);
#   2. a small ResNet with residual blocks (scripts/torch-teacher.py) trained in PyTorch on
#      Fashion-MNIST (the Debian dataset-fashion-mnist files) and exported with
#      torch.onnx.export (BN folded into the convs, outputs `logits` and `embedding`);
#   3. `distill-edge inspect` of the export for the student's taps;
#   4. `distill-edge build --target aarch64` of a pipeline whose teacher is that ONNX file:
#      the teacher stage measures its accuracy with tract, the student learns from it by
#      InDistill (taps by graph surgery), the student alone is the baseline; the report
#      (runs/torch-teacher/report.md) shows the three.
#
# Usage: scripts/torch-teacher.sh [--epochs N] [--train-images N] [--work DIR] [--skip-build]
#                                [--pipeline-subset TRAIN,TEST]
#   --train-images N        the teacher trains on the first N training images (default: all)
#   --pipeline-subset A,B   the pipeline runs on a folder of A training and B test images of
#                           Fashion-MNIST (`distill-edge data make`, 28x28 gray) instead of the
#                           whole set, for a machine where the full build takes too long
# Environment: DISTILL_EDGE (the binary; default: the clone's, built by `cargo build --release`
# after scripts/setup.sh, as scripts/run.sh does), FASHION_MNIST (default /usr/share/datasets/fashion-mnist),
# TORCH_THREADS (default 2).
set -euo pipefail

epochs=3
train_images=0
work=runs/torch-teacher-work
skip_build=0
subset=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --epochs) epochs="$2"; shift 2 ;;
        --train-images) train_images="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        --skip-build) skip_build=1; shift ;;
        --pipeline-subset) subset="$2"; shift 2 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "torch-teacher.sh: unknown argument $1 (see --help)" >&2; exit 1 ;;
    esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data="${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"
if [[ ! -d "$data" ]]; then
    echo "torch-teacher.sh: $data is missing: apt-get install dataset-fashion-mnist" >&2
    exit 1
fi
bin="${DISTILL_EDGE:-}"
if [[ -z "$bin" ]]; then
    # The clone's own tool, built like scripts/run.sh builds it (into $CARGO_TARGET_DIR).
    "$here/setup.sh"
    source "$here/env.sh"
    cargo build --release --locked -p distill-edge --manifest-path "$here/../Cargo.toml"
    bin="$CARGO_TARGET_DIR/release/distill-edge"
fi

venv="$HOME/.cache/distill-edge/torch-venv"
py="$venv/bin/python"
if ! "$py" -c 'import torch, onnx, numpy' 2>/dev/null; then
    echo "== installing torch, onnx, numpy into $venv (once; the Linux torch wheel pulls its CUDA libraries too, about 4 GB)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -U pip
    "$venv/bin/pip" install -q torch onnx numpy
fi
"$py" -c 'import torch; print("torch", torch.__version__, "(CPU threads:", torch.get_num_threads(), ")")'

mkdir -p "$work"
onnx="$work/resnet-teacher.onnx"
if [[ ! -f "$onnx" ]]; then
    echo "== training the PyTorch teacher ($epochs epochs) -> $onnx"
    "$py" "$here/torch-teacher.py" --data "$data" --out "$onnx" --epochs "$epochs" \
        --train-images "$train_images" --threads "${TORCH_THREADS:-2}"
else
    echo "== reusing $onnx (delete it to train again)"
fi
# The normalisation the teacher was trained with.
mean=$("$py" -c "import json; print(json.load(open('$onnx.json'))['mean'][0])")
std=$("$py" -c "import json; print(json.load(open('$onnx.json'))['std'][0])")

echo "== inspect: taps for the student cnn32-small"
"$bin" inspect "$onnx" --student cnn32-small

data_section="kind = \"fashion-mnist\"
path = \"$data\""
if [[ -n "$subset" ]]; then
    folder="$work/fashion-mnist-${subset/,/-}"
    if [[ ! -d "$folder" ]]; then
        echo "== data make: $folder (${subset%,*} training, ${subset#*,} test images)"
        "$bin" data make "$folder" --data fashion-mnist --data-path "$data" --size 28 \
            --channels 1 --train "${subset%,*}" --test "${subset#*,}"
    fi
    data_section="kind = \"folder\"
path = \"$(basename "$folder")\"
channels = 1
height = 28
width = 28"
fi

config="$work/pipeline.toml"
cat > "$config" <<TOML
# Written by scripts/torch-teacher.sh: the PyTorch ResNet as the teacher.
name = "torch-teacher"
seed = 1
teacher = { onnx = "$(basename "$onnx")", embedding = "embedding", logits-output = "logits", input-size = "1x28x28", mean = [$mean], std = [$std] }

[data]
$data_section

[student]
model = "cnn32-small"
train = { schedule = [{ epochs = 4, lr = 1e-3 }] }
distill = { method = "indistill", curriculum = [1, 1, 1] }
baselines = ["none"]

[export]
int8 = true

[check]
max-accuracy-drop = 1.0

[targets]
shard-size = 256
TOML
if [[ $skip_build == 1 ]]; then
    echo "== --skip-build: $config written"
    exit 0
fi
echo "== distill-edge build --target aarch64 --config $config"
"$bin" build --target aarch64 --config "$config"
echo "== report: runs/torch-teacher/report.md"
