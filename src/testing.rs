//! Helpers for the test suites (unit and integration tests alike).
//!
//! Some tests need tools outside Rust (sshd, qemu, a cross compiler, the ONNX venv, the
//! Fashion-MNIST files). Where they are missing a test may skip itself, but never silently in
//! CI: with `CI` or `DISTILL_EDGE_REQUIRE_TOOLS` set to `1` or `true`, a missing tool fails the
//! test with the hint that installs it.

#![doc(hidden)]

/// The environment variables that turn a skip into a failure.
pub const REQUIRE_VARS: [&str; 2] = ["CI", "DISTILL_EDGE_REQUIRE_TOOLS"];

/// Whether missing tools must fail tests: `CI` or `DISTILL_EDGE_REQUIRE_TOOLS` is `1` or
/// `true` (any case).
pub fn tools_required() -> bool {
    REQUIRE_VARS
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|value| is_true(&value)))
}

fn is_true(value: &str) -> bool {
    let value = value.trim();
    value == "1" || value.eq_ignore_ascii_case("true")
}

/// Reports that `what` is missing, so the calling test skips itself (and must then return
/// without asserting): prints `skipped: WHAT (HINT)` on stderr, or panics with the same text
/// when [`tools_required`].
pub fn missing_tool(what: &str, hint: &str) {
    let message = format!("{what} ({hint})");
    if tools_required() {
        panic!(
            "required tool missing: {message}; unset CI and DISTILL_EDGE_REQUIRE_TOOLS to skip instead"
        );
    }
    eprintln!("skipped: {message}");
}

/// The root of the clone whose tests are running: `CARGO_MANIFEST_DIR` as cargo sets it when it
/// runs the test, else the path the test binary was built in. The build directory is shared
/// between clones (`scripts/env.sh`) and cargo reuses a test binary built in another clone, so
/// the build-time path (`env!`) can name a clone that has moved, gone, or holds other files.
pub fn source_root() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// Builds the on-device runner for this host with cargo (dev profile: it shares the test
/// build's dependencies) and returns its path; panics with cargo's output when it fails.
pub fn host_runner() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(source_root())
        .args([
            "build",
            "--manifest-path",
            "runner/Cargo.toml",
            "--locked",
            "--message-format=json",
        ])
        .output()
        .expect("cargo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "distill-edge-runner")
        .find_map(|v| v["executable"].as_str().map(std::path::PathBuf::from))
        .expect("runner executable in cargo's output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthy_values() {
        for v in ["1", "true", "TRUE", "True", " 1 "] {
            assert!(is_true(v), "{v:?}");
        }
        for v in ["", "0", "false", "yes", "2"] {
            assert!(!is_true(v), "{v:?}");
        }
    }

    #[test]
    fn missing_tool_skips_or_panics_as_the_environment_says() {
        let result = std::panic::catch_unwind(|| missing_tool("frobnicator", "apt-get install it"));
        assert_eq!(result.is_err(), tools_required());
    }
}
