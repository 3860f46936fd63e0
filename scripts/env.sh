# Sourced by the other scripts: shared build directory outside the clone, so CI and repeated
# runs on one machine reuse the previous build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/distill-edge/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
