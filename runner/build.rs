//! Link-time trim of the runner optimised for size. `distill-edge build --optimize size` sets
//! `DISTILL_EDGE_RUNNER_NO_EH_FRAME`; the runner is then linked with a linker-script fragment
//! that drops `.eh_frame` (the unwind tables, about 1 MB of the aarch64 runner). With
//! `panic = "abort"` nothing unwinds, and the size build already links without
//! `.eh_frame_hdr`, the index through which the unwinder would find those tables
//! (docs/BENCHMARKS.md, "Trimming the NNEF runner further"). The fragment only adds a
//! `/DISCARD/` rule in front of the linker's default script (`INSERT AFTER`), so everything
//! else is laid out as before. glibc targets only: musl's static start files (`crtbegin.o`)
//! register `.eh_frame` at start-up, so the linker refuses to drop it there.

use std::path::PathBuf;

const SWITCH: &str = "DISTILL_EDGE_RUNNER_NO_EH_FRAME";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed={SWITCH}");
    let wanted = std::env::var_os(SWITCH).is_some_and(|v| v == "1");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let glibc = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    if !(wanted && linux && glibc) {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = out.join("no-eh-frame.ld");
    std::fs::write(
        &script,
        "SECTIONS { /DISCARD/ : { *(.eh_frame) } } INSERT AFTER .text;\n",
    )
    .expect("write the linker-script fragment into OUT_DIR");
    println!("cargo::rustc-link-arg-bins=-Wl,-T,{}", script.display());
}
