//! Running a bundle on a device and comparing the result with the host's reference.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::{DeviceError, Transport};
use crate::board::TargetSpec;
use crate::board::bundle::manifest_digest_path;
use crate::infer::parity::{Parity, Tolerance, compare};
use distill_edge_schema::{MANIFEST, Manifest, ModelFormat, ModelResult, RunnerResult, sha256_hex};

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
    /// The bundle is refused: built for another target, or its manifest is not the one built.
    #[error("bundle {bundle} {message}")]
    Bundle {
        /// The local bundle directory.
        bundle: String,
        /// What is wrong (a phrase following the bundle's name).
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
    /// Host tract correct count on the shard (`None`: unlabelled inputs).
    pub host_correct: Option<usize>,
    /// Device correct count.
    pub device_correct: Option<usize>,
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
    /// The device's logits on the shard (kept in memory for a baseline, not in bench.json).
    #[serde(skip)]
    pub device_logits: Vec<f32>,
}

/// The outcome of one check, for the table and JUnit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Passed.
    Passed,
    /// Passed with a warning (a latency regression above the warn threshold).
    Warning,
    /// Failed: the command exits with code 3.
    Failed,
    /// Not judged (e.g. latency under emulation), with the reason.
    Skipped,
}

/// One named check of a bench run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Check {
    /// What was checked, e.g. `fp32 top-1 vs host`.
    pub name: String,
    /// How it went.
    pub outcome: Outcome,
    /// The figures behind it.
    pub message: String,
}

/// What `bench` found.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
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
    /// What the shard holds (labelled test images or seeded random inputs).
    #[serde(default)]
    pub inputs: String,
    /// Where the runner ran, as it reported it.
    #[serde(default)]
    pub environment: Option<distill_edge_schema::Environment>,
    /// Under emulation: the CPU emulated (the target's `-cpu`), else `None`.
    #[serde(default)]
    pub emulated_cpu: Option<String>,
    /// Sizes on disk.
    #[serde(default)]
    pub sizes: Sizes,
    /// Every check made, passed or not (`failures` repeats the failed ones' messages).
    #[serde(default)]
    pub checks: Vec<Check>,
    /// SHA-256 of the shard the runner ran (what a baseline's outputs are comparable on).
    #[serde(default)]
    pub shard_sha256: String,
}

impl BenchReport {
    /// Records a check; a failed one also goes to `failures` and clears `passed`.
    pub fn check(&mut self, name: impl Into<String>, outcome: Outcome, message: impl Into<String>) {
        let (name, message) = (name.into(), message.into());
        if outcome == Outcome::Failed {
            self.failures.push(format!("{name}: {message}"));
            self.passed = false;
        }
        self.checks.push(Check {
            name,
            outcome,
            message,
        });
    }
}

/// Sizes on disk of a bundle and its models.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Sizes {
    /// Every file of the bundle, manifest included.
    pub bundle_bytes: u64,
    /// The runner binary.
    pub runner_bytes: u64,
    /// Per model.
    pub models: Vec<ModelSize>,
}

/// A model's size on disk and the bytes of its weights.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ModelSize {
    /// `fp32` / `int8`.
    pub model: String,
    /// The model file (ONNX or NNEF).
    pub file_bytes: u64,
    /// Its weights' data (ONNX initializers, NNEF tensor files).
    pub weight_bytes: u64,
}

/// Sizes of `bundle` (every file listed in `manifest`, plus the manifest).
fn sizes(bundle: &Path, manifest: &Manifest) -> Sizes {
    let manifest_bytes = std::fs::metadata(bundle.join(MANIFEST)).map_or(0, |m| m.len());
    Sizes {
        bundle_bytes: manifest_bytes + manifest.files.iter().map(|f| f.bytes).sum::<u64>(),
        runner_bytes: manifest
            .entry(distill_edge_schema::RUNNER)
            .map_or(0, |e| e.bytes),
        models: manifest
            .models
            .iter()
            .map(|m| ModelSize {
                model: m.name.clone(),
                file_bytes: manifest.entry(&m.file).map_or(0, |e| e.bytes),
                weight_bytes: std::fs::read(bundle.join(&m.file))
                    .ok()
                    .and_then(|b| match m.format {
                        ModelFormat::Onnx => crate::onnx::proto::decode(&b)
                            .ok()
                            .map(|m| crate::hostcheck::weight_bytes(&m)),
                        ModelFormat::Nnef => crate::infer::nnef::weight_bytes(&b),
                    })
                    .unwrap_or(0),
            })
            .collect(),
    }
}

/// The CPU a target's emulator emulates (its `-cpu` argument).
pub fn emulated_cpu(target: &TargetSpec) -> Option<String> {
    let e = &target.emulator;
    let i = e.iter().position(|a| a == "-cpu")?;
    e.get(i + 1).cloned()
}

/// The words every emulated result carries.
pub const EMULATED: &str = "emulated: latency is not a board figure";

impl BenchReport {
    /// `Ok` when the bundle passed on the device, else the failed check (exit code 3).
    pub fn verdict(&self) -> Result<(), crate::exit::CheckFailed> {
        if self.passed {
            return Ok(());
        }
        Err(crate::exit::CheckFailed(format!(
            "device check failed: {}",
            self.failures.join("; ")
        )))
    }
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
    /// Warm-up runs (at least).
    pub warmup: Option<usize>,
    /// Warm-up seconds (at least).
    pub warmup_seconds: Option<f64>,
    /// Per-node profile and the state-reuse comparison.
    pub profile: bool,
}

/// The local bundle's manifest and the SHA-256 of its bytes, which must equal the digest
/// recorded when the bundle was written ([`manifest_digest_path`]): an edited manifest is
/// refused before anything is uploaded.
fn read_manifest(bundle: &Path) -> Result<(Manifest, String), BenchError> {
    let path = bundle.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(|e| BenchError::File {
        path: path.display().to_string(),
        message: format!("{e} (build the bundle first: distill-edge build --target …)"),
    })?;
    let manifest = serde_json::from_slice(&bytes).map_err(|e| BenchError::File {
        path: path.display().to_string(),
        message: format!("not a bundle manifest: {e}"),
    })?;
    let digest = sha256_hex(&bytes);
    let record = manifest_digest_path(bundle);
    let refused = |message: String| BenchError::Bundle {
        bundle: bundle.display().to_string(),
        message,
    };
    let recorded = std::fs::read_to_string(&record).map_err(|e| {
        refused(format!(
            "has no record of its manifest's digest ({}: {e}): rebuild it",
            record.display()
        ))
    })?;
    let recorded = recorded.trim();
    if recorded != digest {
        return Err(refused(format!(
            "has a {MANIFEST} that is not the one built (sha256 {}…, recorded {}… in {}): it was edited; rebuild the bundle",
            &digest[..12],
            recorded.get(..12).unwrap_or(recorded),
            record.display()
        )));
    }
    Ok((manifest, digest))
}

/// Refuses a bundle built for another target than `target`, or whose manifest does not list
/// every file it needs.
fn check_bundle(target: &TargetSpec, bundle: &Path, manifest: &Manifest) -> Result<(), BenchError> {
    let refused = |message: String| BenchError::Bundle {
        bundle: bundle.display().to_string(),
        message,
    };
    if manifest.target != target.name || manifest.triple != target.triple {
        return Err(refused(format!(
            "was built for {} ({}), not {}",
            manifest.target, manifest.triple, target.name
        )));
    }
    manifest
        .check_listed()
        .map_err(|e| refused(format!("has an incomplete {MANIFEST}: {e}")))
}

/// Reads the host reference `file` of the bundle, checked against its manifest entry.
fn read_reference(bundle: &Path, manifest: &Manifest, file: &str) -> Result<Vec<f32>, BenchError> {
    let path = bundle.join(file);
    let bytes = std::fs::read(&path).map_err(|e| BenchError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let listed = manifest
        .entry(file)
        .is_some_and(|e| e.bytes == bytes.len() as u64 && e.sha256 == sha256_hex(&bytes));
    if !listed {
        return Err(BenchError::Bundle {
            bundle: bundle.display().to_string(),
            message: format!(
                "has a {file} that does not match its manifest: it was edited; rebuild the bundle"
            ),
        });
    }
    Ok(f32_from_le(&bytes))
}

fn f32_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn read_f32(path: &Path) -> Result<Vec<f32>, BenchError> {
    let bytes = std::fs::read(path).map_err(|e| BenchError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(f32_from_le(&bytes))
}

/// Uploads `bundle`, runs the runner through `transport`, downloads and compares. The bundle
/// is refused before upload when it was built for another target or its manifest is not the
/// one recorded at build time, and after the run when the runner read another manifest or did
/// not verify the files.
pub fn run_bundle(
    target: &TargetSpec,
    bundle: &Path,
    transport: &dyn Transport,
    overrides: &RunnerOverrides,
    timeout: Duration,
) -> Result<BenchReport, BenchError> {
    let started = std::time::Instant::now();
    let (manifest, manifest_sha256) = read_manifest(bundle)?;
    check_bundle(target, bundle, &manifest)?;
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
    if let Some(w) = overrides.warmup {
        args.extend(["--warmup".into(), w.to_string()]);
    }
    if let Some(s) = overrides.warmup_seconds {
        args.extend(["--warmup-seconds".into(), s.to_string()]);
    }
    if overrides.profile {
        args.push("--profile".into());
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
    let refused = |message: String| BenchError::Bundle {
        bundle: bundle.display().to_string(),
        message,
    };
    match &result.manifest_sha256 {
        Some(d) if *d == manifest_sha256 => {}
        Some(d) => {
            return Err(refused(format!(
                "ran on {} with a {MANIFEST} that is not the one built (sha256 {}…, built {}…): it was edited on the device",
                transport.describe(),
                d.get(..12).unwrap_or(d),
                &manifest_sha256[..12]
            )));
        }
        None => {
            return Err(refused(format!(
                "ran a runner on {} that does not report the digest of its {MANIFEST}: rebuild the bundle",
                transport.describe()
            )));
        }
    }
    if !result.verified {
        return Err(refused(format!(
            "was not verified by the runner on {}",
            transport.describe()
        )));
    }

    let emulated = transport.is_emulated();
    let mut notes = Vec::new();
    if emulated {
        notes.push(format!(
            "{EMULATED} (measured under {})",
            transport.describe()
        ));
    }
    if !manifest.inputs.is_empty() && manifest.host.iter().all(|h| h.correct.is_none()) {
        notes.push(format!(
            "inputs: {}: no accuracy on the device either",
            manifest.inputs
        ));
    }
    let mut report = BenchReport {
        target: target.name.clone(),
        device: transport.describe(),
        emulated,
        arch: result.arch.clone(),
        models: Vec::new(),
        latency_budget_ms: target.budget.latency_p50_ms,
        seconds: 0.0,
        passed: true,
        failures: Vec::new(),
        notes,
        inputs: manifest.inputs.clone(),
        environment: result.environment.clone(),
        emulated_cpu: if emulated { emulated_cpu(target) } else { None },
        sizes: sizes(bundle, &manifest),
        checks: Vec::new(),
        shard_sha256: manifest
            .entry(&manifest.shard)
            .map(|e| e.sha256.clone())
            .unwrap_or_default(),
    };
    let count = |c: Option<usize>| c.map_or_else(|| "n/a".to_string(), |c| c.to_string());
    for host in &manifest.host {
        let Some(dev) = result.models.iter().find(|m| m.model == host.model) else {
            report.check(
                format!("{} ran", host.model),
                Outcome::Failed,
                "the runner reported no result",
            );
            continue;
        };
        let reference = read_reference(bundle, &manifest, &host.outputs_file)?;
        let device_logits = read_f32(&work.join(format!("outputs-{}.bin", host.model)))?;
        let tolerance = if host.model == "fp32" {
            Tolerance::Approximate
        } else {
            Tolerance::Quantized
        };
        let parity = compare(&device_logits, &reference, tolerance);
        let message = format!(
            "device top-1 {}/{}, host {}/{}",
            count(dev.correct),
            dev.images,
            count(host.correct),
            host.images
        );
        if dev.correct != host.correct {
            report.check(
                format!("{} top-1 vs host", host.model),
                Outcome::Failed,
                format!("{message}: they differ"),
            );
        } else if host.correct.is_none() {
            report.check(
                format!("{} top-1 vs host", host.model),
                Outcome::Skipped,
                "unlabelled inputs: no accuracy",
            );
        } else {
            report.check(
                format!("{} top-1 vs host", host.model),
                Outcome::Passed,
                message,
            );
        }
        report.check(
            format!("{} outputs vs host", host.model),
            if parity.ok {
                Outcome::Passed
            } else {
                Outcome::Failed
            },
            if parity.ok {
                format!("max |diff| {:.2e}", parity.max_abs)
            } else {
                format!(
                    "outputs differ from the host: {}",
                    parity.problem.clone().unwrap_or_default()
                )
            },
        );
        let p50 = dev.latency.iter().find(|l| l.batch == 1).map(|l| l.p50_ms);
        if let Some(p) = p50 {
            let name = format!("{} batch-1 p50 budget", host.model);
            let figures = format!(
                "{p:.3} ms against the {} budget of {} ms",
                target.name, target.budget.latency_p50_ms
            );
            if emulated {
                report.check(
                    name,
                    Outcome::Skipped,
                    format!("{figures}: not gated, {EMULATED}"),
                );
            } else if p > target.budget.latency_p50_ms {
                report.check(name, Outcome::Failed, format!("{figures}: exceeded"));
            } else {
                report.check(name, Outcome::Passed, figures);
            }
        }
        report.models.push(ModelCheck {
            model: host.model.clone(),
            host_correct: host.correct,
            device_correct: dev.correct,
            images: host.images,
            bit_identical: dev.outputs_sha256 == host.outputs_sha256,
            parity,
            p50_ms: p50,
            device: dev.clone(),
            device_logits,
        });
    }
    let fp32_int8 = (
        report.models.iter().find(|m| m.model == "fp32"),
        report.models.iter().find(|m| m.model == "int8"),
    );
    if let (Some(f), Some(q)) = fp32_int8
        && let (Some(fc), Some(qc)) = (f.device_correct, q.device_correct)
    {
        let drop = 100.0 * (fc as f64 - qc as f64) / f.images.max(1) as f64;
        let budget = target.budget.max_accuracy_drop;
        report.check(
            "int8 top-1 vs fp32",
            if drop > budget {
                Outcome::Failed
            } else {
                Outcome::Passed
            },
            format!("{drop:.2} points below fp32 on the shard (budget {budget})"),
        );
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::board::bundle::{BundleInputs, ModelFeed, make_shard, prepare_models, write_bundle};
    use crate::data::prep::Normalization;
    use crate::model::{ConvNet, ModelSpec};
    use crate::onnx::export::{ExportOptions, export_model};
    use crate::train::checkpoint::{Checkpoint, CheckpointHeader, FORMAT};
    use distill_edge_schema::BenchSettings;

    /// The model file of [`bundle_for`]'s bundles: the cnn32-small converts to NNEF.
    const MODEL_FILE: &str = "student-fp32.nnef.tar";

    /// A host-arch bundle of a random cnn32-small and a synthetic shard.
    fn host_bundle(dir: &Path) -> (TargetSpec, std::path::PathBuf) {
        let target = TargetSpec::resolve("x86_64").unwrap();
        let bundle = bundle_for(dir, &target, &crate::testing::host_runner());
        (target, bundle)
    }

    /// A bundle for `target` with `runner`, of a random cnn32-small and a synthetic shard.
    pub(crate) fn bundle_for(dir: &Path, target: &TargetSpec, runner: &Path) -> std::path::PathBuf {
        std::fs::create_dir_all(dir).unwrap();
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
        let bundle = dir.join("bundle");
        let models =
            prepare_models(&[("fp32".into(), onnx)], &shard, &ModelFeed::default()).unwrap();
        assert_eq!(models.format(), distill_edge_schema::ModelFormat::Nnef);
        write_bundle(
            &bundle,
            &BundleInputs {
                target,
                runner,
                models: &models,
                shard: &shard,
                bench: BenchSettings {
                    batches: vec![1],
                    warmup: 1,
                    runs: 3,
                    min_seconds: 0.0,
                    threads: 1,
                    ..BenchSettings::default()
                },
            },
        )
        .unwrap();
        bundle
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
        let model = bundle.join(MODEL_FILE);
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

    /// A transport that must not be used: the bundle is refused before upload.
    struct NoUpload;

    impl Transport for NoUpload {
        fn describe(&self) -> String {
            "no-upload".into()
        }
        fn is_emulated(&self) -> bool {
            false
        }
        fn upload(&self, bundle: &Path) -> Result<crate::device::RemoteBundle, DeviceError> {
            panic!("{} was uploaded", bundle.display())
        }
        fn run(
            &self,
            _: &crate::device::RemoteBundle,
            _: &str,
            _: &[String],
            _: &[(String, String)],
            _: Duration,
        ) -> Result<crate::device::RunOutput, DeviceError> {
            unreachable!()
        }
        fn download(
            &self,
            _: &crate::device::RemoteBundle,
            _: &str,
            _: &Path,
        ) -> Result<(), DeviceError> {
            unreachable!()
        }
        fn cleanup(&self, _: &crate::device::RemoteBundle) -> Result<(), DeviceError> {
            unreachable!()
        }
    }

    /// This host as the device, with the uploaded copy of the bundle edited by `edit` (someone
    /// tampering with the bundle on the board).
    struct TamperOnUpload<F: Fn(&Path)> {
        inner: crate::device::local::LocalTransport,
        edit: F,
    }

    impl<F: Fn(&Path)> Transport for TamperOnUpload<F> {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn is_emulated(&self) -> bool {
            false
        }
        fn upload(&self, bundle: &Path) -> Result<crate::device::RemoteBundle, DeviceError> {
            let remote = self.inner.upload(bundle)?;
            assert!(remote.owned, "the local transport copies the bundle");
            (self.edit)(Path::new(&remote.dir));
            Ok(remote)
        }
        fn run(
            &self,
            bundle: &crate::device::RemoteBundle,
            program: &str,
            args: &[String],
            env: &[(String, String)],
            timeout: Duration,
        ) -> Result<crate::device::RunOutput, DeviceError> {
            self.inner.run(bundle, program, args, env, timeout)
        }
        fn download(
            &self,
            bundle: &crate::device::RemoteBundle,
            file: &str,
            local: &Path,
        ) -> Result<(), DeviceError> {
            self.inner.download(bundle, file, local)
        }
        fn cleanup(&self, bundle: &crate::device::RemoteBundle) -> Result<(), DeviceError> {
            self.inner.cleanup(bundle)
        }
    }

    /// Rewrites `dir`'s manifest through `f`.
    fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
        let path = dir.join(MANIFEST);
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }

    /// Drops the model's entry from `files` and flips a byte of the model.
    fn drop_model_entry_and_flip_a_byte(dir: &Path) {
        edit_manifest(dir, |v| {
            v["files"]
                .as_array_mut()
                .unwrap()
                .retain(|f| f["path"] != MODEL_FILE);
        });
        let model = dir.join(MODEL_FILE);
        let mut bytes = std::fs::read(&model).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&model, bytes).unwrap();
    }

    fn bench(
        target: &TargetSpec,
        bundle: &Path,
        t: &dyn Transport,
    ) -> Result<BenchReport, BenchError> {
        run_bundle(
            target,
            bundle,
            t,
            &RunnerOverrides::default(),
            Duration::from_secs(120),
        )
    }

    /// Runs the bundle's runner directly in `dir` with `args`: (exit code, stderr).
    fn run_runner(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
        let out = std::process::Command::new(dir.join("distill-edge-runner"))
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn an_edited_manifest_with_no_files_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let (target, bundle) = host_bundle(tmp.path());
        assert!(
            bench(
                &target,
                &bundle,
                &crate::device::local::LocalTransport::new()
            )
            .unwrap()
            .passed
        );

        // Edited on the board: the runner refuses the unlisted files, exit status 1.
        let on_board = TamperOnUpload {
            inner: crate::device::local::LocalTransport::new(),
            edit: |d: &Path| edit_manifest(d, |v| v["files"] = serde_json::json!([])),
        };
        let err = bench(&target, &bundle, &on_board).unwrap_err().to_string();
        assert!(err.contains("exit status Some(1)"), "{err}");
        assert!(
            err.contains("distill-edge-runner: not listed in the manifest"),
            "{err}"
        );

        // Edited here: refused before upload, naming the bundle.
        edit_manifest(&bundle, |v| v["files"] = serde_json::json!([]));
        let err = bench(&target, &bundle, &NoUpload).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "bundle {} has a manifest.json that is not the one built",
                bundle.display()
            )),
            "{err}"
        );
        // The runner itself refuses it too, on one line, with or without verification.
        for args in [&[][..], &["--no-verify"][..]] {
            let (code, stderr) = run_runner(&bundle, args);
            assert_eq!(code, Some(1), "{stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.contains("not listed in the manifest"), "{stderr}");
        }
    }

    #[test]
    fn a_dropped_model_entry_and_a_flipped_byte_fail() {
        let tmp = tempfile::tempdir().unwrap();
        let (target, bundle) = host_bundle(tmp.path());
        let on_board = TamperOnUpload {
            inner: crate::device::local::LocalTransport::new(),
            edit: drop_model_entry_and_flip_a_byte,
        };
        let err = bench(&target, &bundle, &on_board).unwrap_err().to_string();
        assert!(err.contains("exit status Some(1)"), "{err}");
        assert!(
            err.contains(&format!("{MODEL_FILE}: not listed in the manifest")),
            "{err}"
        );

        // The same edit here, with the recorded digest forged to match: refused before upload.
        drop_model_entry_and_flip_a_byte(&bundle);
        let record = crate::board::bundle::manifest_digest_path(&bundle);
        let forged = sha256_hex(&std::fs::read(bundle.join(MANIFEST)).unwrap());
        std::fs::write(&record, forged).unwrap();
        let err = bench(&target, &bundle, &NoUpload).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{MODEL_FILE}: not listed in the manifest")),
            "{err}"
        );
        let (code, stderr) = run_runner(&bundle, &["--no-verify"]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("{MODEL_FILE}: not listed")),
            "{stderr}"
        );
    }

    #[test]
    fn an_edited_manifest_on_the_device_fails_by_its_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let (target, bundle) = host_bundle(tmp.path());
        // An edit the runner's own checks accept: only the digest gives it away.
        let on_board = TamperOnUpload {
            inner: crate::device::local::LocalTransport::new(),
            edit: |d: &Path| edit_manifest(d, |v| v["bench"]["runs"] = 2.into()),
        };
        let err = bench(&target, &bundle, &on_board).unwrap_err().to_string();
        assert!(err.contains("that is not the one built"), "{err}");
        assert!(err.contains("edited on the device"), "{err}");

        // A local edit as small as a trailing newline is refused before upload.
        let path = bundle.join(MANIFEST);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.push(b'\n');
        std::fs::write(&path, bytes).unwrap();
        let err = bench(&target, &bundle, &NoUpload).unwrap_err().to_string();
        assert!(err.contains("is not the one built"), "{err}");

        // So is a bundle without the record.
        std::fs::remove_file(crate::board::bundle::manifest_digest_path(&bundle)).unwrap();
        let err = bench(&target, &bundle, &NoUpload).unwrap_err().to_string();
        assert!(
            err.contains("has no record of its manifest's digest"),
            "{err}"
        );
    }

    #[test]
    fn an_edited_host_reference_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let (target, bundle) = host_bundle(tmp.path());
        let reference = bundle.join("reference-fp32.bin");
        let original = std::fs::read(&reference).unwrap();
        let mut bytes = original.clone();
        bytes[0] ^= 1;
        std::fs::write(&reference, bytes).unwrap();
        // The runner verifies the uploaded copy of the reference too.
        let err = bench(
            &target,
            &bundle,
            &crate::device::local::LocalTransport::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("reference-fp32.bin: does not match the manifest"),
            "{err}"
        );
        // The host checks the local one it compares with, whatever the device holds.
        let intact_on_board = TamperOnUpload {
            inner: crate::device::local::LocalTransport::new(),
            edit: |d: &Path| std::fs::write(d.join("reference-fp32.bin"), &original).unwrap(),
        };
        let err = bench(&target, &bundle, &intact_on_board)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("reference-fp32.bin that does not match its manifest"),
            "{err}"
        );
    }

    #[test]
    fn a_bundle_for_another_target_is_refused_before_upload() {
        let tmp = tempfile::tempdir().unwrap();
        let (host, bundle) = host_bundle(tmp.path());
        let other = TargetSpec::resolve("aarch64").unwrap();
        let err = bench(&other, &bundle, &NoUpload).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "bundle {} was built for {} ({}), not aarch64",
                bundle.display(),
                host.name,
                host.triple
            )
        );
    }
}
