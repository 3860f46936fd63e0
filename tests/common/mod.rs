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

/// A randomly initialised network (`preset` bound to `input`, 10 classes, seeded) with
/// non-trivial statistics in every batch norm, depthwise ones included, and its checkpoint.
pub fn random_model(
    preset: &str,
    input: distill_edge::data::ImageShape,
    seed: u64,
) -> (
    distill_edge::model::ConvNet,
    distill_edge::train::checkpoint::Checkpoint,
) {
    use burn::module::{Param, RunningState};
    use burn::tensor::{Distribution, Tensor};
    use distill_edge::train::checkpoint::{Checkpoint, CheckpointHeader, FORMAT};
    let device = distill_edge::runtime::cpu();
    device.seed(seed);
    let arch = distill_edge::model::ModelSpec::resolve(preset, Path::new("."))
        .unwrap()
        .bind(input, 10)
        .unwrap();
    let mut net = distill_edge::model::ConvNet::new(&arch, &device);
    for b in &mut net.blocks {
        for bn in [b.bn.as_mut(), b.depthwise_bn.as_mut()]
            .into_iter()
            .flatten()
        {
            let [n] = bn.gamma.val().dims();
            let r = |lo, hi| Tensor::<1>::random([n], Distribution::Uniform(lo, hi), &device);
            bn.gamma = Param::from_tensor(r(0.5, 1.5));
            bn.beta = Param::from_tensor(r(-0.2, 0.2));
            bn.running_mean = RunningState::new(r(-0.2, 0.2));
            bn.running_var = RunningState::new(r(0.5, 1.5));
        }
    }
    let header = CheckpointHeader {
        format: FORMAT,
        kind: "model".into(),
        epochs_done: 0,
        config_hash: "test".into(),
        architecture: arch,
        normalization: distill_edge::data::prep::Normalization::identity(input.channels),
        dataset: "synthetic".into(),
        classes: (0..10).map(|i| i.to_string()).collect(),
        history: vec![],
        extra: serde_json::Value::Null,
    };
    let ckpt = Checkpoint::from_model(header, net.clone(), vec![]).unwrap();
    (net, ckpt)
}

/// `n` deterministic pseudo-images of shape `s`, values in [-1, 1).
pub fn test_images(n: usize, s: distill_edge::data::ImageShape) -> Vec<f32> {
    (0..n * s.len())
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

/// The Python of the venv scripts/setup.sh makes (with the `onnx` package), or `None` after
/// [`distill_edge::testing::missing_tool`] (which fails under CI) when it is missing.
pub fn onnx_checker_python() -> Option<PathBuf> {
    let venv = std::env::var("DISTILL_EDGE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/distill-edge/ort-venv")
        });
    let python = venv.join("bin/python");
    if python.exists() {
        return Some(python);
    }
    distill_edge::testing::missing_tool(
        &python.display().to_string(),
        "run scripts/setup.sh: it makes the venv with onnx and onnxruntime",
    );
    None
}

/// The official checker (`onnx.checker.check_model`, full check) accepts the model at `path`.
pub fn assert_onnx_checker_accepts(python: &Path, path: &Path, what: &str) {
    let out = Command::new(python)
        .args([
            "-c",
            "import onnx, sys; onnx.checker.check_model(sys.argv[1], full_check=True)",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What is missing to cross-build and emulate aarch64 here, if anything: qemu-user, the
/// cross linker, rustup, or rustup's aarch64-unknown-linux-gnu target.
pub fn missing_cross_tool() -> Option<String> {
    for tool in ["qemu-aarch64-static", "aarch64-linux-gnu-gcc", "rustup"] {
        if distill_edge::fsutil::find_program(tool).is_none() {
            return Some(tool.into());
        }
    }
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .ok()?;
    let installed = String::from_utf8_lossy(&out.stdout);
    (!installed
        .lines()
        .any(|l| l.trim() == "aarch64-unknown-linux-gnu"))
    .then(|| "rust target aarch64-unknown-linux-gnu".into())
}
