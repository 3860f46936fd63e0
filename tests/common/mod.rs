//! Helpers shared by the CLI tests: run the real binary in a temporary directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the built `distill-edge` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_distill-edge"))
}

/// Runs `distill-edge args…` in `dir` with one thread per test process.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .current_dir(dir)
        .args(args)
        .output()
        .expect("spawn distill-edge")
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Stdout parsed as JSON; panics with stderr when it is not.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}); status {:?}\nstdout: {}\nstderr: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            stderr(o)
        )
    })
}

/// Runs `distill-edge args…` in `dir`, asserts that it succeeded (showing stderr if not) and
/// returns its stdout parsed as JSON.
pub fn run_ok_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = run(dir, args);
    assert!(out.status.success(), "{}", stderr(&out));
    json(&out)
}

/// The last non-empty stderr line, with the temporary directory replaced by `[TMP]`.
pub fn error_line(o: &Output, tmp: &Path) -> String {
    let text = stderr(o).replace(&tmp.display().to_string(), "[TMP]");
    text.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_string()
}

/// Writes a small training config on generated data.
pub fn synthetic_config(dir: &Path, name: &str, schedule: &str, train_images: usize) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\nseed = 7\nmodel = \"cnn32-small\"\n\n[data]\nkind = \"synthetic\"\ntrain = {train_images}\ntest = 200\n\n[train]\nbatch-size = 32\nschedule = {schedule}\n"
        ),
    )
    .unwrap();
    path
}

/// Every parameter and running statistic of a model file, in module order.
pub fn model_weights(path: &Path) -> Vec<f32> {
    let c = distill_edge::train::Checkpoint::read(path).unwrap();
    distill_edge::model::flatten_params(&c.load_model(&distill_edge::runtime::cpu(), path).unwrap())
}
