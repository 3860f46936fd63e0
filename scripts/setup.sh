#!/usr/bin/env bash
# Installs everything distill-edge needs on a Debian/Ubuntu machine. Idempotent: each step
# checks first and does nothing when its part is already there.
#   - apt: the Fashion-MNIST dataset, cross linkers, qemu-user, protobuf, ssh (for device tests),
#     Mesa's software Vulkan driver (for the wgpu backend's tests, scripts/test-gpu.sh)
#   - rustup targets for the boards in targets/
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    log "not root and no sudo: install the apt packages below by hand"; fi
fi

APT_PACKAGES=(
  dataset-fashion-mnist       # /usr/share/datasets/fashion-mnist (IDX files)
  protobuf-compiler           # protoc, to regenerate the ONNX prost types
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross      # aarch64 linker + sysroot
  libstdc++6-arm64-cross      # libstdc++ for ONNX Runtime on aarch64 under qemu
  gcc-arm-linux-gnueabihf libc6-dev-armhf-cross    # armv7 linker + sysroot
  qemu-user-static            # run ARM binaries here
  openssh-server openssh-client                    # ssh device transport and its tests
  python3-venv                # the onnxruntime / torch virtual environments
  mesa-vulkan-drivers libvulkan1                   # lavapipe (Vulkan on the CPU): the wgpu backend's tests
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "apt packages present"
fi

RUST_TARGETS=(aarch64-unknown-linux-gnu aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
if command -v rustup >/dev/null 2>&1; then
  installed=$(rustup target list --installed)
  for t in "${RUST_TARGETS[@]}"; do
    if ! grep -qx "$t" <<<"$installed"; then
      log "adding rust target $t"
      rustup target add "$t" >/dev/null
    fi
  done
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null
else
  log "rustup not found: install Rust (>= 1.95) with rustup first"
  exit 1
fi
# ONNX Runtime (for `check --engines ort`, built with `--features ort`) and the official onnx
# checker, from PyPI into a venv outside the clone. ort's own binary download cannot work
# offline, so the crate loads this library at run time through ORT_DYLIB_PATH.
VENV="${DISTILL_EDGE_VENV:-$HOME/.cache/distill-edge/ort-venv}"
if ! "$VENV/bin/python" -c 'import onnxruntime, onnx' >/dev/null 2>&1; then
  log "installing onnxruntime and onnx into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'onnxruntime>=1.31' 'onnx>=1.16'
fi
lib=$(ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* 2>/dev/null | head -n 1)
if [ -z "$lib" ]; then
  log "onnxruntime installed but libonnxruntime.so not found under $VENV"
  exit 1
fi
log "ONNX Runtime: ORT_DYLIB_PATH=$lib"
# The same ONNX Runtime version for 64-bit ARM boards (targets with `engines = ["tract", "ort"]`
# put it into the bundle): the aarch64 wheel, fetched with pip's platform download (nothing is
# installed for this machine), and its libonnxruntime.so unpacked into the cache, where
# `distill-edge build` looks for it (scripts/env.sh exports the path as ORT_DYLIB_PATH_AARCH64).
ORT_VERSION=$("$VENV/bin/python" -c 'import onnxruntime; print(onnxruntime.__version__)')
ORT_AARCH64="${DISTILL_EDGE_ORT_AARCH64:-$HOME/.cache/distill-edge/ort-aarch64}"
if ! [ -f "$ORT_AARCH64/$ORT_VERSION/libonnxruntime.so" ]; then
  log "fetching the aarch64 onnxruntime $ORT_VERSION wheel into $ORT_AARCH64/$ORT_VERSION"
  wheels=$(mktemp -d)
  trap 'rm -rf "$wheels"' EXIT
  py=$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_28_aarch64 --python-version "$py" -d "$wheels" "onnxruntime==$ORT_VERSION"
  wheel=$(ls "$wheels"/onnxruntime-*aarch64*.whl | head -n 1)
  "$VENV/bin/python" - "$wheel" "$ORT_AARCH64/$ORT_VERSION" <<'PY'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    libs = [n for n in z.namelist() if os.path.basename(n).startswith("libonnxruntime.so")]
    if not libs:
        sys.exit(f"{wheel}: no libonnxruntime.so inside")
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, f".libonnxruntime.so.tmp-{os.getpid()}")
    with z.open(libs[0]) as src, open(tmp, "wb") as dst:
        dst.write(src.read())
    os.replace(tmp, os.path.join(out, "libonnxruntime.so"))
PY
  rm -rf "$wheels"
  trap - EXIT
fi
log "ONNX Runtime for aarch64: ORT_DYLIB_PATH_AARCH64=$ORT_AARCH64/$ORT_VERSION/libonnxruntime.so"
log "ok"
