//! Running a bundle on a device and comparing the result with the host's reference.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::{DeviceError, Transport};
use crate::board::TargetSpec;
use crate::infer::parity::{Parity, Tolerance, compare};
use distill_edge_schema::{MANIFEST, Manifest, ModelResult, RunnerResult};

/// Errors running a bundle on a device.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The device failed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A local file could not be read.
    #[error("{path}: {message}")]
    File {
        /// Path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The runner failed on the device.
    #[error("the runner failed on {device}: {message}")]
    Runner {
        /// Device description.
        device: String,
        /// Its last error line.
        message: String,
    },
}

/// Device result of one model against the host.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ModelCheck {
    /// `fp32` / `int8`.
    pub model: String,
    /// Host tract correct count on the shard.
    pub host_correct: usize,
    /// Device correct count.
    pub device_correct: usize,
    /// Shard size.
    pub images: usize,
    /// Device logits bit-identical to the host's.
    pub bit_identical: bool,
    /// Device logits against the host's, within tolerance.
    pub parity: Parity,
    /// Device batch-1 p50 latency, ms.
    pub p50_ms: Option<f64>,
    /// The device's full result.
    pub device: ModelResult,
}

/// What `bench` found.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BenchReport {
    /// Target name.
    pub target: String,
    /// Device description.
    pub device: String,
    /// Latency measured under emulation (not a board figure).
    pub emulated: bool,
    /// Runner architecture as reported by itself.
    pub arch: String,
    /// Per model.
    pub models: Vec<ModelCheck>,
    /// Latency budget of the target, ms (batch-1 p50).
    pub latency_budget_ms: f64,
    /// Wall time of the whole device round trip, seconds.
    pub seconds: f64,
    /// Every check passed.
    pub passed: bool,
    /// Why not.
    pub failures: Vec<String>,
    /// Notes (e.g. emulated latency).
    pub notes: Vec<String>,
}

/// Runner options passed on the device.
#[derive(Debug, Clone, Default)]
pub struct RunnerOverrides {
    /// Timed runs.
    pub runs: Option<usize>,
    /// Threads.
    pub threads: Option<usize>,
    /// Minimum seconds of timing.
    pub seconds: Option<f64>,
}

fn read_manifest(bundle: &Path) -> Result<Manifest, BenchError> {
    let path = bundle.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| BenchError::File {
        path: path.display().to_string(),
        message: format!("{e} (build the bundle first: distill-edge build --target …)"),
    })?;
    serde_json::from_str(&text).map_err(|e| BenchError::File {
        path: path.display().to_string(),
        message: format!("not a bundle manifest: {e}"),
    })
}

fn read_f32(path: &Path) -> Result<Vec<f32>, BenchError> {
    let bytes = std::fs::read(path).map_err(|e| BenchError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Uploads `bundle`, runs the runner through `transport`, downloads and compares.
pub fn run_bundle(
    target: &TargetSpec,
    bundle: &Path,
    transport: &dyn Transport,
    overrides: &RunnerOverrides,
    timeout: Duration,
) -> Result<BenchReport, BenchError> {
    let started = std::time::Instant::now();
    let manifest = read_manifest(bundle)?;
    let work_dir =
        crate::fsutil::fresh_temp_dir("distill-edge-result").map_err(|e| BenchError::File {
            path: std::env::temp_dir().display().to_string(),
            message: e.to_string(),
        })?;
    let work = work_dir.path().to_path_buf();
    let remote = transport.upload(bundle)?;
    let mut args = vec!["--output".to_string(), "result.json".to_string()];
    if let Some(r) = overrides.runs {
        args.extend(["--runs".into(), r.to_string()]);
    }
    if let Some(t) = overrides.threads {
        args.extend(["--threads".into(), t.to_string()]);
    }
    if let Some(s) = overrides.seconds {
        args.extend(["--seconds".into(), s.to_string()]);
    }
    // CPU-feature overrides matter only under emulation, where /proc/cpuinfo is the host's.
    let env: Vec<(String, String)> = if transport.is_emulated() {
        target.env.clone().into_iter().collect()
    } else {
        Vec::new()
    };
    let outcome = (|| -> Result<RunnerResult, BenchError> {
        let out = transport.run(&remote, "distill-edge-runner", &args, &env, timeout)?;
        if !out.success() {
            let message = out
                .stderr
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("no error output")
                .to_string();
            return Err(BenchError::Runner {
                device: transport.describe(),
                message: format!("exit status {:?}: {message}", out.status),
            });
        }
        let local = work.join("result.json");
        transport.download(&remote, "result.json", &local)?;
        for m in &manifest.models {
            let f = format!("outputs-{}.bin", m.name);
            transport.download(&remote, &f, &work.join(&f))?;
        }
        let text = std::fs::read_to_string(&local).map_err(|e| BenchError::File {
            path: local.display().to_string(),
            message: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| BenchError::File {
            path: local.display().to_string(),
            message: format!("not a runner result: {e}"),
        })
    })();
    let cleanup = transport.cleanup(&remote);
    let result = outcome?;
    cleanup?;

    let emulated = transport.is_emulated();
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    if emulated {
        notes.push(format!(
            "latency measured under emulation ({}): not a board figure",
            transport.describe()
        ));
    }
    let mut models = Vec::new();
    for host in &manifest.host {
        let Some(dev) = result.models.iter().find(|m| m.model == host.model) else {
            failures.push(format!("{}: the runner reported no result", host.model));
            continue;
        };
        let reference = read_f32(&bundle.join(&host.outputs_file))?;
        let device_logits = read_f32(&work.join(format!("outputs-{}.bin", host.model)))?;
        let tolerance = if host.model == "fp32" {
            Tolerance::Approximate
        } else {
            Tolerance::Quantized
        };
        let parity = compare(&device_logits, &reference, tolerance);
        if dev.correct != host.correct {
            failures.push(format!(
                "{}: device top-1 {}/{} differs from the host's {}/{}",
                host.model, dev.correct, dev.images, host.correct, host.images
            ));
        }
        if !parity.ok {
            failures.push(format!(
                "{}: outputs differ from the host: {}",
                host.model,
                parity.problem.clone().unwrap_or_default()
            ));
        }
        let p50 = dev.latency.iter().find(|l| l.batch == 1).map(|l| l.p50_ms);
        if let Some(p) = p50
            && !emulated
            && p > target.budget.latency_p50_ms
        {
            failures.push(format!(
                "{}: batch-1 p50 latency {p:.3} ms exceeds the {} budget of {} ms",
                host.model, target.name, target.budget.latency_p50_ms
            ));
        }
        models.push(ModelCheck {
            model: host.model.clone(),
            host_correct: host.correct,
            device_correct: dev.correct,
            images: host.images,
            bit_identical: dev.outputs_sha256 == host.outputs_sha256,
            parity,
            p50_ms: p50,
            device: dev.clone(),
        });
    }
    if let (Some(f), Some(q)) = (
        models.iter().find(|m| m.model == "fp32"),
        models.iter().find(|m| m.model == "int8"),
    ) {
        let drop =
            100.0 * (f.device_correct as f64 - q.device_correct as f64) / f.images.max(1) as f64;
        if drop > target.budget.max_accuracy_drop {
            failures.push(format!(
                "int8: top-1 {drop:.2} points below fp32 on the shard (budget {})",
                target.budget.max_accuracy_drop
            ));
        }
    }
    Ok(BenchReport {
        target: target.name.clone(),
        device: transport.describe(),
        emulated,
        arch: result.arch,
        models,
        latency_budget_ms: target.budget.latency_p50_ms,
        seconds: started.elapsed().as_secs_f64(),
        passed: failures.is_empty(),
        failures,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::bundle::{BundleInputs, make_shard, write_bundle};
    use crate::data::prep::Normalization;
    use crate::model::{ConvNet, ModelSpec};
    use crate::onnx::export::{ExportOptions, export_model};
    use crate::train::checkpoint::{Checkpoint, CheckpointHeader, FORMAT};
    use distill_edge_schema::BenchSettings;

    /// Builds the runner for this host with cargo (dev profile: it shares the test build's
    /// dependencies) and returns its path.
    fn host_runner() -> std::path::PathBuf {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
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

    /// A host-arch bundle of a random cnn32-small and a synthetic shard.
    fn host_bundle(dir: &Path) -> (TargetSpec, std::path::PathBuf) {
        let splits = crate::data::load(&crate::data::DataSource::synthetic_default()).unwrap();
        let device = crate::runtime::cpu();
        device.seed(1);
        let arch = ModelSpec::resolve("cnn32-small", Path::new("."))
            .unwrap()
            .bind(splits.test.shape, 10)
            .unwrap();
        let net = ConvNet::new(&arch, &device);
        let norm = Normalization::from_dataset(&splits.train);
        let header = CheckpointHeader {
            format: FORMAT,
            kind: "model".into(),
            epochs_done: 0,
            config_hash: "t".into(),
            architecture: arch,
            normalization: norm.clone(),
            dataset: "synthetic".into(),
            classes: splits.test.classes.clone(),
            history: vec![],
            extra: serde_json::Value::Null,
        };
        let ckpt = Checkpoint::from_model(header, net.clone(), vec![]).unwrap();
        let model = export_model(
            &net,
            &ckpt,
            &ExportOptions {
                fold_batch_norm: true,
                embedding_output: false,
            },
        )
        .unwrap();
        let onnx = dir.join("m.onnx");
        std::fs::write(&onnx, crate::onnx::proto::encode(&model)).unwrap();
        let shard = make_shard(&splits.test, &norm, 40);
        let target = TargetSpec::resolve("x86_64").unwrap();
        let bundle = dir.join("bundle");
        let runner = host_runner();
        write_bundle(
            &bundle,
            &BundleInputs {
                target: &target,
                runner: &runner,
                models: vec![("fp32".into(), onnx)],
                shard: &shard,
                bench: BenchSettings {
                    batches: vec![1],
                    warmup: 1,
                    runs: 3,
                    min_seconds: 0.0,
                    threads: 1,
                },
            },
        )
        .unwrap();
        (target, bundle)
    }

    /// The host-arch bundle end to end over a real sshd on 127.0.0.1.
    #[test]
    fn a_bundle_runs_end_to_end_over_ssh() {
        let Some(sshd) = crate::device::testsshd::TestSshd::start() else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let (target, bundle) = host_bundle(tmp.path());
        let transport = sshd.transport();
        let report = run_bundle(
            &target,
            &bundle,
            &transport,
            &RunnerOverrides::default(),
            Duration::from_secs(120),
        )
        .unwrap();
        assert!(report.passed, "{:?}", report.failures);
        assert!(!report.emulated);
        assert_eq!(report.models.len(), 1);
        assert!(report.models[0].bit_identical);
        assert_eq!(report.models[0].device.latency[0].runs, 3);

        // A tampered model is refused by the runner's manifest check.
        let model = bundle.join("student-fp32.onnx");
        let mut bytes = std::fs::read(&model).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&model, bytes).unwrap();
        let err = run_bundle(
            &target,
            &bundle,
            &transport,
            &RunnerOverrides::default(),
            Duration::from_secs(120),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not match the manifest"), "{err}");
    }
}
