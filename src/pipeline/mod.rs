//! `distill-edge build`: the pipeline as a build. Every stage's artifacts are fingerprinted by
//! its config section and its inputs' fingerprints; a stage runs only when its fingerprint
//! changed, an artifact is missing or corrupt, or `--from` forces it. Work happens in
//! `runs/<name>/<stage>.partial/` and is swapped in only when the stage succeeds, so a failed
//! stage keeps the previous good artifacts and a killed one resumes from its checkpoint.

pub mod config;
pub mod gather;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::board::TargetSpec;
use crate::config::distill::Method;
use crate::config::{DistillConfig, TrainSettings};
use crate::data::{self, Splits};
use crate::eval::retrieval::RetrievalMetrics;
use crate::fsutil::{sha256_file, sha256_hex, write_json_atomic};
use crate::hostcheck::{EngineReport, LatencyPlan, ModelInfo, check_engines};
use crate::infer::Engine;
use crate::infer::tract::TractEngine;
use crate::model::ModelSpec;
use crate::model::evaluate::evaluate;
use crate::progress::Reporter;
use crate::train::distill::distill;
use crate::train::supervised::{JobIdentity, MODEL_FILE, TrainOptions, train};
use crate::train::{Checkpoint, TrainError};
use config::{AuxInit, PipelineConfig};

/// File recording a finished stage.
pub const STAGE_FILE: &str = "stage.json";
/// Per-stage log.
pub const LOG_FILE: &str = "stage.log";
/// Evaluation of a trained network.
pub const EVAL_FILE: &str = "eval.json";

/// What `stage.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageRecord {
    /// Stage name.
    pub stage: String,
    /// Fingerprint of its inputs.
    pub fingerprint: String,
    /// Wall time of the run that produced it.
    pub seconds: f64,
    /// (path relative to the stage dir, sha256).
    pub artifacts: Vec<(String, String)>,
}

/// Evaluation of a trained network, written by training stages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageEval {
    /// Architecture name.
    pub architecture: String,
    /// Trainable parameters.
    pub params: usize,
    /// MACs per image.
    pub macs: u64,
    /// Top-1 (0..1).
    pub accuracy: f64,
    /// Whether the head was trained (top-1 meaningful).
    pub classifies: bool,
    /// Cosine and L2 retrieval.
    pub retrieval: Option<[RetrievalMetrics; 2]>,
    /// Training wall time, seconds (all invocations).
    pub train_seconds: f64,
}

/// How to run the build.
pub struct BuildOptions {
    /// Targets to bundle and validate.
    pub targets: Vec<TargetSpec>,
    /// `--device` (default: qemu for cross targets, local for the host).
    pub device: Option<String>,
    /// Rerun this stage and everything after it.
    pub from: Option<String>,
    /// Stage details on the terminal too.
    pub verbose: bool,
    /// Nothing but errors on the terminal.
    pub quiet: bool,
    /// Profile name, for the report.
    pub profile: String,
    /// ssh connect timeout.
    pub connect_timeout: Duration,
    /// Extra ssh options.
    pub ssh_options: Vec<String>,
}

/// One stage's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct StageOutcome {
    /// Stage name.
    pub stage: String,
    /// `built` or `up to date`.
    pub status: String,
    /// Seconds this invocation spent on it.
    pub seconds: f64,
    /// Its directory.
    pub dir: PathBuf,
    /// Fingerprint.
    pub fingerprint: String,
    /// Artifacts (relative paths).
    pub artifacts: Vec<String>,
}

/// What a build did.
#[derive(Clone, Debug, Serialize)]
pub struct BuildSummary {
    /// Run directory.
    pub run_dir: PathBuf,
    /// Stages in order.
    pub stages: Vec<StageOutcome>,
    /// Report files, when written.
    pub report: Option<PathBuf>,
    /// Nothing had to be rebuilt.
    pub up_to_date: bool,
}

fn fingerprint(value: &serde_json::Value) -> String {
    sha256_hex(serde_json::to_string(value).expect("json").as_bytes())[..16].to_string()
}

/// Hash of the runner's sources and the lock file: a new runner means new bundles.
fn runner_source_digest() -> String {
    let root = crate::board::source_root();
    let mut parts = String::new();
    for f in [
        "runner/src/main.rs",
        "runner/src/schema.rs",
        "runner/Cargo.toml",
        "Cargo.lock",
    ] {
        parts.push_str(&sha256_file(&root.join(f)).unwrap_or_default());
    }
    sha256_hex(parts.as_bytes())
}

struct Builder<'a> {
    config: &'a PipelineConfig,
    opts: &'a BuildOptions,
    root: PathBuf,
    order: Vec<String>,
    outcomes: Vec<StageOutcome>,
    splits: Option<std::rc::Rc<Splits>>,
    terminal: Reporter,
}

impl Builder<'_> {
    fn forced(&self, stage: &str) -> bool {
        let Some(from) = &self.opts.from else {
            return false;
        };
        let pos = |s: &str| self.order.iter().position(|o| o == s);
        matches!((pos(from), pos(stage)), (Some(f), Some(s)) if s >= f)
    }

    /// The dataset, loaded on first use (a build with nothing to do never loads it).
    fn splits(&mut self) -> Result<std::rc::Rc<Splits>> {
        if self.splits.is_none() {
            self.terminal
                .line(format!("loading {} data", self.config.data.name()));
            self.splits = Some(std::rc::Rc::new(data::load(&self.config.data)?));
        }
        Ok(self.splits.clone().expect("loaded"))
    }

    /// Whether `dir` holds a finished stage with this fingerprint and intact artifacts.
    fn up_to_date(&self, stage: &str, dir: &Path, fp: &str) -> Option<StageRecord> {
        let text = std::fs::read_to_string(dir.join(STAGE_FILE)).ok()?;
        let record: StageRecord = serde_json::from_str(&text).ok()?;
        if record.fingerprint != fp {
            return None;
        }
        for (path, sha) in &record.artifacts {
            if sha256_file(&dir.join(path)).ok().as_deref() != Some(sha.as_str()) {
                self.terminal.line(format!(
                    "{stage}: artifact {path} is missing or corrupt; rebuilding"
                ));
                return None;
            }
        }
        Some(record)
    }

    /// Runs `work` in the stage's partial directory unless the stage is up to date, then
    /// records and swaps it in. Returns the stage directory.
    fn stage(
        &mut self,
        name: &str,
        fp: String,
        work: impl FnOnce(&mut Self, &Path, &mut Reporter) -> Result<()>,
    ) -> Result<PathBuf> {
        let dir = self.root.join(name);
        if !self.forced(name)
            && let Some(record) = self.up_to_date(name, &dir, &fp)
        {
            self.terminal.line(format!("{name:>22}  up to date"));
            self.outcomes.push(StageOutcome {
                stage: name.into(),
                status: "up to date".into(),
                seconds: 0.0,
                dir: dir.clone(),
                fingerprint: fp,
                artifacts: record.artifacts.into_iter().map(|a| a.0).collect(),
            });
            return Ok(dir);
        }
        let partial = self.root.join(format!("{name}.partial"));
        let marker = partial.join(".fingerprint");
        // A partial run of other inputs cannot be resumed: start it over.
        if partial.exists() && std::fs::read_to_string(&marker).ok().as_deref() != Some(&fp) {
            std::fs::remove_dir_all(&partial)
                .with_context(|| format!("removing {}", partial.display()))?;
        }
        let resuming = partial.exists();
        std::fs::create_dir_all(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        std::fs::write(&marker, &fp).with_context(|| format!("writing {}", marker.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(partial.join(LOG_FILE))
            .with_context(|| format!("opening {}", partial.join(LOG_FILE).display()))?;
        let mut reporter = Reporter::with_log(self.opts.quiet, self.opts.verbose, log);
        self.terminal.line(format!(
            "{name:>22}  {}",
            if resuming { "resuming" } else { "running" }
        ));
        let started = Instant::now();
        let result = work(self, &partial, &mut reporter);
        reporter.finish_bar();
        if let Err(e) = result {
            reporter.line(format!("failed: {e:#}"));
            return Err(e.context(format!(
                "stage {name} failed (log: {}; earlier artifacts kept in {})",
                partial.join(LOG_FILE).display(),
                dir.display()
            )));
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut artifacts = Vec::new();
        collect_files(&partial, &partial, &mut artifacts)?;
        artifacts.retain(|(p, _)| p != ".fingerprint" && p != LOG_FILE && p != STAGE_FILE);
        let record = StageRecord {
            stage: name.into(),
            fingerprint: fp.clone(),
            seconds,
            artifacts: artifacts.clone(),
        };
        write_json_atomic(&partial.join(STAGE_FILE), &record)?;
        crate::fsutil::replace_dir(&partial, &dir, &self.root.join(format!("{name}.old")))
            .with_context(|| format!("moving {} into place", dir.display()))?;
        self.terminal
            .line(format!("{name:>22}  built in {}", human_secs(seconds)));
        self.outcomes.push(StageOutcome {
            stage: name.into(),
            status: "built".into(),
            seconds,
            dir: dir.clone(),
            fingerprint: fp,
            artifacts: artifacts.into_iter().map(|a| a.0).collect(),
        });
        Ok(dir)
    }
}

fn collect_files(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name != ".fingerprint" {
            continue; // temporary files of atomic writes
        }
        if p.is_dir() {
            collect_files(base, &p, out)?;
        } else {
            let rel = p
                .strip_prefix(base)
                .expect("under base")
                .to_string_lossy()
                .into_owned();
            out.push((rel, sha256_file(&p)?));
        }
    }
    Ok(())
}

/// `95` -> `1m35s`.
pub fn human_secs(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Evaluates a finished training stage's model and writes `eval.json`.
fn write_eval(dir: &Path, splits: &Splits, classifies: bool, reporter: &Reporter) -> Result<()> {
    let path = dir.join(MODEL_FILE);
    let ckpt = Checkpoint::read(&path)?;
    let net = ckpt.load_model(&crate::runtime::cpu(), &path)?;
    reporter.line("evaluating: accuracy and retrieval (database = train, queries = test)");
    let m = evaluate(&net, splits, &ckpt.header.normalization, 500, Some(100))?;
    let arch = &ckpt.header.architecture;
    let eval = StageEval {
        architecture: arch.spec.name.clone(),
        params: arch.trainable_params(),
        macs: arch.macs(),
        accuracy: m.accuracy,
        classifies,
        retrieval: m.retrieval,
        train_seconds: ckpt.header.history.iter().map(|h| h.seconds).sum(),
    };
    write_json_atomic(&dir.join(EVAL_FILE), &eval)?;
    Ok(())
}

/// A supervised training stage.
struct TrainJob<'a> {
    model: &'a str,
    settings: &'a TrainSettings,
    seed: u64,
    fingerprint: &'a str,
    dataset: &'a str,
}

/// Trains (or resumes) a network with cross-entropy into `dir`.
fn train_stage(
    dir: &Path,
    job: &TrainJob<'_>,
    splits: &Splits,
    reporter: &mut Reporter,
) -> Result<()> {
    let TrainJob {
        model,
        settings,
        seed,
        fingerprint: fp,
        dataset,
    } = *job;
    let spec = ModelSpec::resolve(model, Path::new("."))?;
    let arch = spec.bind(splits.train.shape, splits.train.classes.len())?;
    let resume = dir.join(crate::train::supervised::CHECKPOINT_FILE).exists();
    let toml = toml::to_string_pretty(
        &serde_json::json!({ "model": model, "seed": seed, "train": settings }),
    )
    .unwrap_or_default();
    train(
        &arch,
        settings,
        splits,
        &JobIdentity {
            config_hash: fp,
            dataset,
            seed,
            kind: "train",
            config_toml: &toml,
        },
        TrainOptions {
            out_dir: dir,
            resume,
            force: !resume,
            reporter,
        },
    )?;
    Ok(())
}

/// Distills (or resumes) into `dir`; a checkpoint of other inputs is started over.
fn distill_stage(
    config: &DistillConfig,
    dir: &Path,
    splits: &Splits,
    reporter: &mut Reporter,
) -> Result<()> {
    let resume = dir.join(crate::train::supervised::CHECKPOINT_FILE).exists();
    let origin = format!("pipeline stage {}", dir.display());
    match distill(config, &origin, splits, dir, resume, !resume, reporter) {
        Err(crate::train::distill::DistillError::Train(TrainError::Resume { .. })) if resume => {
            distill(config, &origin, splits, dir, false, true, reporter)?;
        }
        other => {
            other?;
        }
    }
    Ok(())
}

/// Host check results of one model file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostCheckRecord {
    /// `fp32` / `int8`.
    pub model: String,
    /// burn's accuracy (the reference).
    pub burn_accuracy: Option<f64>,
    /// Per engine.
    pub engines: Vec<EngineReport>,
}

/// Runs every stage that is not up to date.
pub fn build(config: &PipelineConfig, opts: &BuildOptions) -> Result<BuildSummary> {
    let root = config.run_dir();
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let aux = config.auxiliary.as_ref();
    let mut order: Vec<String> = vec!["teacher".into()];
    if let Some(a) = aux {
        if a.init == AuxInit::Baseline {
            order.push("auxiliary-baseline".into());
        }
        order.push("auxiliary".into());
    }
    order.push("student".into());
    for m in &config.student.baselines {
        order.push(format!("baseline-{}", m.name()));
    }
    order.push("export".into());
    order.push("check".into());
    for t in &opts.targets {
        order.push(format!("bundle-{}", t.name));
        order.push(format!("device-{}", t.name));
    }
    if let Some(from) = &opts.from
        && !order.contains(from)
    {
        bail!(
            "--from {from}: no such stage; the stages are: {}",
            order.join(", ")
        );
    }
    let mut b = Builder {
        config,
        opts,
        root: root.clone(),
        order,
        outcomes: Vec::new(),
        splits: None,
        terminal: Reporter::new(opts.quiet),
    };
    let data = serde_json::to_value(&config.data)?;
    let seed = config.seed;
    let dataset = config.data.name();

    // Teacher.
    let teacher_fp = fingerprint(
        &serde_json::json!({"stage": "teacher", "data": data, "seed": seed, "section": config.teacher}),
    );
    let teacher_dir = b.stage("teacher", teacher_fp.clone(), |b, dir, rep| {
        let splits = b.splits()?;
        let job = TrainJob {
            model: &config.teacher.model,
            settings: &config.teacher.train,
            seed,
            fingerprint: &teacher_fp,
            dataset,
        };
        train_stage(dir, &job, &splits, rep)?;
        write_eval(dir, &splits, true, rep)
    })?;

    // Auxiliary (optional), from its supervised baseline or from scratch.
    let mut source_dir = teacher_dir.clone();
    let mut source_fp = teacher_fp.clone();
    if let Some(a) = aux {
        let mut init = None;
        if a.init == AuxInit::Baseline {
            let schedule = a.baseline.clone().expect("validated");
            let fp = fingerprint(
                &serde_json::json!({"stage": "auxiliary-baseline", "data": data, "seed": seed, "model": a.model, "train": schedule}),
            );
            let fp2 = fp.clone();
            let dir = b.stage("auxiliary-baseline", fp.clone(), |b, dir, rep| {
                let splits = b.splits()?;
                let job = TrainJob {
                    model: &a.model,
                    settings: &schedule,
                    seed,
                    fingerprint: &fp2,
                    dataset,
                };
                train_stage(dir, &job, &splits, rep)?;
                write_eval(dir, &splits, true, rep)
            })?;
            init = Some((dir.join(MODEL_FILE), fp));
        }
        let fp = fingerprint(
            &serde_json::json!({"stage": "auxiliary", "seed": seed, "section": a, "teacher": teacher_fp, "init": init.as_ref().map(|i| &i.1)}),
        );
        let dir = b.stage("auxiliary", fp.clone(), |b, dir, rep| {
            let splits = b.splits()?;
            let dc = DistillConfig {
                name: format!("{}-auxiliary", config.name),
                seed,
                data: config.data.clone(),
                teacher: Some(teacher_dir.join(MODEL_FILE)),
                student: a.model.clone(),
                init: init.as_ref().map(|i| i.0.clone()),
                train: a.train.clone(),
                distill: a.distill.clone(),
            };
            distill_stage(&dc, dir, &splits, rep)?;
            write_eval(dir, &splits, a.distill.weights().trains_head(), rep)
        })?;
        source_dir = dir;
        source_fp = fp;
    }

    // Student and its baselines, all from the same source.
    let mut student_fp = String::new();
    let mut runs: Vec<(String, Method, DistillConfig)> = Vec::new();
    let base = DistillConfig {
        name: format!("{}-student", config.name),
        seed,
        data: config.data.clone(),
        teacher: Some(source_dir.join(MODEL_FILE)),
        student: config.student.model.clone(),
        init: None,
        train: config.student.train.clone(),
        distill: config.student.distill.clone(),
    };
    runs.push((
        "student".into(),
        config.student.distill.method,
        base.clone(),
    ));
    for m in &config.student.baselines {
        let mut c = base.clone();
        c.distill.method = *m;
        c.distill.weights = None;
        runs.push((format!("baseline-{}", m.name()), *m, c));
    }
    for (stage, _method, dc) in runs {
        let fp = fingerprint(
            &serde_json::json!({"stage": stage, "data": data, "seed": seed, "student": dc.student, "train": dc.train, "distill": dc.distill, "source": source_fp}),
        );
        if stage == "student" {
            student_fp = fp.clone();
        }
        b.stage(&stage, fp, |b, dir, rep| {
            let splits = b.splits()?;
            distill_stage(&dc, dir, &splits, rep)?;
            write_eval(dir, &splits, dc.distill.weights().trains_head(), rep)
        })?;
    }
    let student_dir = root.join("student");

    // Export.
    let export_fp = fingerprint(
        &serde_json::json!({"stage": "export", "section": config.export, "student": student_fp, "version": env!("CARGO_PKG_VERSION")}),
    );
    let export_dir = b.stage("export", export_fp.clone(), |b, dir, rep| {
        use crate::onnx::export::{ExportOptions, calibrate, export_model, quantize};
        let path = student_dir.join(MODEL_FILE);
        let ckpt = Checkpoint::read(&path)?;
        let net = ckpt.load_model(&crate::runtime::cpu(), &path)?;
        rep.line("exporting the student to ONNX");
        let model = export_model(
            &net,
            &ckpt,
            &ExportOptions {
                fold_batch_norm: config.export.fold,
                embedding_output: false,
            },
        )?;
        let bytes = crate::onnx::proto::encode(&model);
        TractEngine::from_bytes(&bytes, "student.onnx")?;
        crate::fsutil::write_atomic(&dir.join("student.onnx"), &bytes)?;
        if config.export.int8 {
            let splits = b.splits()?;
            rep.line(format!(
                "int8: calibrating on {} training images",
                config.export.calibration_images
            ));
            let ranges = calibrate(
                &model,
                &splits.train,
                &ckpt.header.normalization,
                config.export.calibration_images,
            )?;
            let mut q = model.clone();
            quantize(&mut q, &ranges, &Default::default())?;
            crate::fsutil::write_atomic(
                &dir.join("student.int8.onnx"),
                &crate::onnx::proto::encode(&q),
            )?;
        }
        Ok(())
    })?;

    // Host check.
    let check_fp = fingerprint(
        &serde_json::json!({"stage": "check", "section": config.check, "export": export_fp}),
    );
    b.stage("check", check_fp, |b, dir, rep| {
        let splits = b.splits()?;
        let path = student_dir.join(MODEL_FILE);
        let ckpt = Checkpoint::read(&path)?;
        let net = ckpt.load_model(&crate::runtime::cpu(), &path)?;
        let plan = LatencyPlan {
            batches: config.check.batches.clone(),
            warmup: 10,
            runs: config.check.runs,
            min_seconds: 0.0,
        };
        let mut records = Vec::new();
        let mut failures = Vec::new();
        for (name, file) in [("fp32", "student.onnx"), ("int8", "student.int8.onnx")] {
            let model_path = export_dir.join(file);
            if !model_path.exists() {
                continue;
            }
            let info = ModelInfo::read(&model_path)?;
            let mut engines: Vec<Box<dyn Engine>> = vec![Box::new(TractEngine::load(&model_path)?)];
            add_ort(&mut engines, &model_path, rep);
            let (burn_accuracy, reports) = check_engines(
                &info,
                &engines,
                Some(&net),
                &splits.test,
                &ckpt.header.normalization,
                &plan,
                rep,
            )?;
            for r in &reports {
                if let Some(p) = &r.parity
                    && !p.ok
                {
                    failures.push(format!(
                        "{name} {}: parity: {}",
                        r.engine,
                        p.problem.clone().unwrap_or_default()
                    ));
                }
                if let Some(a) = burn_accuracy {
                    let drop = 100.0 * (a - r.accuracy);
                    if drop > config.check.max_accuracy_drop {
                        failures.push(format!(
                            "{name} {}: top-1 {drop:.2} points below burn",
                            r.engine
                        ));
                    }
                }
            }
            records.push(HostCheckRecord {
                model: name.into(),
                burn_accuracy,
                engines: reports,
            });
        }
        write_json_atomic(&dir.join("check.json"), &records)?;
        if !failures.is_empty() {
            bail!("host check failed: {}", failures.join("; "));
        }
        Ok(())
    })?;

    // Bundles and devices.
    let runner_digest = runner_source_digest();
    for target in &opts.targets {
        let bundle_name = format!("bundle-{}", target.name);
        let bundle_fp = fingerprint(
            &serde_json::json!({"stage": bundle_name, "target": target, "section": config.targets, "export": export_fp, "runner": runner_digest}),
        );
        let bundle_dir = b.stage(&bundle_name, bundle_fp.clone(), |b, dir, rep| {
            rep.line(format!(
                "cross-compiling the runner for {} ({})",
                target.name, target.triple
            ));
            let runner = crate::board::cross::build_runner(target)?;
            let splits = b.splits()?;
            let info = ModelInfo::read(&export_dir.join("student.onnx"))?;
            let norm = info
                .normalization
                .context("student.onnx has no normalisation metadata")?;
            let shard =
                crate::board::bundle::make_shard(&splits.test, &norm, config.targets.shard_size);
            let mut models = vec![("fp32".to_string(), export_dir.join("student.onnx"))];
            if export_dir.join("student.int8.onnx").exists() {
                models.push(("int8".to_string(), export_dir.join("student.int8.onnx")));
            }
            rep.line("writing the bundle (host reference outputs with tract)");
            crate::board::bundle::write_bundle(
                &dir.join("bundle"),
                &crate::board::bundle::BundleInputs {
                    target,
                    runner: &runner,
                    models,
                    shard: &shard,
                    bench: crate::runner_schema::BenchSettings {
                        batches: config.targets.batches.clone(),
                        warmup: 5,
                        runs: config.targets.runs,
                        min_seconds: 0.0,
                        threads: 1,
                    },
                },
            )?;
            Ok(())
        })?;
        let device_name = format!("device-{}", target.name);
        let device_fp = fingerprint(
            &serde_json::json!({"stage": device_name, "bundle": bundle_fp, "device": opts.device}),
        );
        b.stage(&device_name, device_fp, |_, dir, rep| {
            let transport = crate::device::open(
                target,
                opts.device.as_deref(),
                &crate::device::SshSettings {
                    connect_timeout: opts.connect_timeout,
                    options: opts.ssh_options.clone(),
                },
            )?;
            rep.line(format!("running the bundle on {}", transport.describe()));
            let report = crate::device::bench::run_bundle(
                target,
                &bundle_dir.join("bundle"),
                transport.as_ref(),
                &Default::default(),
                Duration::from_secs(900),
            )?;
            write_json_atomic(&dir.join("device.json"), &report)?;
            if !report.passed {
                bail!("device check failed: {}", report.failures.join("; "));
            }
            for n in &report.notes {
                rep.line(format!("note: {n}"));
            }
            Ok(())
        })?;
    }

    let up_to_date = b.outcomes.iter().all(|o| o.status == "up to date");
    Ok(BuildSummary {
        run_dir: root,
        stages: b.outcomes,
        report: None,
        up_to_date,
    })
}

#[cfg(feature = "ort")]
fn add_ort(engines: &mut Vec<Box<dyn Engine>>, path: &Path, rep: &Reporter) {
    match crate::infer::ort::available().and_then(|()| crate::infer::ort::OrtEngine::load(path, 1))
    {
        Ok(e) => engines.push(Box::new(e)),
        Err(e) => rep.line(format!("ONNX Runtime skipped: {e}")),
    }
}

#[cfg(not(feature = "ort"))]
fn add_ort(_: &mut Vec<Box<dyn Engine>>, _: &Path, rep: &Reporter) {
    rep.line("ONNX Runtime skipped: built without the `ort` feature");
}
