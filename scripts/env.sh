# Sourced by the other scripts: shared build directory outside the clone, so CI and repeated
# runs on one machine reuse the previous build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/distill-edge/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# ONNX Runtime from the venv scripts/setup.sh made (the `ort` feature loads it at run time).
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  ORT_DYLIB_PATH=$(ls "${DISTILL_EDGE_VENV:-$HOME/.cache/distill-edge/ort-venv}"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* 2>/dev/null | head -n 1)
  [ -n "$ORT_DYLIB_PATH" ] && export ORT_DYLIB_PATH
fi
# ONNX Runtime for 64-bit ARM bundles (`engines = ["tract", "ort"]`), unpacked by scripts/setup.sh.
if [ -z "${ORT_DYLIB_PATH_AARCH64:-}" ]; then
  ORT_DYLIB_PATH_AARCH64=$(ls "${DISTILL_EDGE_ORT_AARCH64:-$HOME/.cache/distill-edge/ort-aarch64}"/*/libonnxruntime.so 2>/dev/null | sort -V | tail -n 1)
  [ -n "$ORT_DYLIB_PATH_AARCH64" ] && export ORT_DYLIB_PATH_AARCH64
fi
