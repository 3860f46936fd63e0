//! The process exit codes of the real binary: 0 success, 1 bad input or usage, 3 a check
//! that ran and failed (2, a caught panic, is tested on `exit::run_command` itself).

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

#[test]
fn help_and_version_succeed_and_help_lists_the_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["--help"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("EXIT CODES:"), "{help}");
    for line in [
        "0  success",
        "1  bad input",
        "2  internal failure",
        "3  a check ran and failed",
    ] {
        assert!(help.contains(line), "--help lacks {line:?}:\n{help}");
    }
    let out = run(tmp.path(), &["--version"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
}

#[test]
fn usage_errors_are_1() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["frobnicate"][..],
        &["train", "--batch-size", "many"],
        &["distill", "--config", "x.toml", "--method", "bogus"],
        &[],
    ] {
        let out = run(tmp.path(), args);
        assert_eq!(code(&out), Some(1), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_missing_config_file_is_1_with_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["train", "--config", "missing.toml"]);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    let line = error_line(&out, tmp.path());
    assert!(
        line.starts_with("error: ") && line.contains("missing.toml"),
        "{line}"
    );
}

/// Trains a tiny model on generated data and exports it; returns (run dir, model file).
fn exported(tmp: &Path) -> (String, String) {
    let cfg = synthetic_config(tmp, "codes", "[{ epochs = 1, lr = 2e-3 }]", 200);
    let out = run(tmp, &["-q", "train", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = tmp.join("runs/codes/train");
    let out = run(tmp, &["-q", "export", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let model = dir.join("cnn32-small.onnx");
    assert!(model.is_file());
    (dir.display().to_string(), model.display().to_string())
}

#[test]
fn a_check_that_passes_is_0_and_one_that_fails_is_3() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let (dir, model) = exported(p);
    let check = |max_drop: &str| {
        let drop = format!("--max-accuracy-drop={max_drop}");
        run(
            p,
            &[
                "-q",
                "check",
                &model,
                "--checkpoint",
                &dir,
                "--engines",
                "tract",
                "--batches",
                "1",
                "--warmup",
                "0",
                "--runs",
                "1",
                "--limit",
                "50",
                &drop,
            ],
        )
    };
    let out = check("100");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    // A negative budget asks tract to beat burn by a point: at parity it cannot, so it fails.
    let out = check("-1");
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    let line = error_line(&out, p);
    assert!(
        line.starts_with("error: check failed: ") && line.contains("below burn's"),
        "{line}"
    );
}
