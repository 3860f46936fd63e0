//! Supervised training with cross-entropy, Adam and learning-rate stages; a checkpoint per
//! epoch (weights, optimizer state, history), exact resume, NaN/Inf stop.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Bytes, Int, Tensor};
use serde::Serialize;

use super::TrainError;
use super::checkpoint::{Checkpoint, CheckpointHeader, EpochRecord, FORMAT};
use super::epoch::{EpochPlan, StepOutcome, adam, run_epoch};
use super::losses::cross_entropy;
use super::parallel::with_replicas;
use crate::config::TrainSettings;
use crate::data::Splits;
use crate::data::prep::Normalization;
use crate::fsutil::write_json_atomic;
use crate::model::infer::{loss_and_accuracy, predict};
use crate::model::{Architecture, ConvNet};
use crate::progress::Reporter;
use crate::runtime;

/// File names inside a training output directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.ckpt";
/// Final weights (no optimizer state).
pub const MODEL_FILE: &str = "model.ckpt";
/// The resolved config of the run.
pub const CONFIG_FILE: &str = "config.toml";
/// Per-epoch metrics, rewritten after every epoch.
pub const METRICS_FILE: &str = "metrics.json";

/// How to run one training job.
pub struct TrainOptions<'a> {
    /// Output directory (created).
    pub out_dir: &'a Path,
    /// Continue from `out_dir/checkpoint.ckpt`.
    pub resume: bool,
    /// Start over even if `out_dir` holds an earlier run (whose files are removed first).
    pub force: bool,
    /// Progress output.
    pub reporter: &'a mut Reporter,
    /// Where the network trains and is evaluated after every epoch. Checkpoints do not
    /// depend on it: a resume may use another backend.
    pub backend: runtime::Backend,
    /// How many of the backend's devices train data-parallel ([`super::parallel`]); 1 is
    /// the plain single-device loop.
    pub devices: usize,
}

/// What a finished training run produced.
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    /// Output directory.
    pub out_dir: PathBuf,
    /// Final weights file.
    pub model: PathBuf,
    /// Epoch the run resumed after (0 = fresh start).
    pub resumed_after: usize,
    /// Every epoch's metrics.
    pub epochs: Vec<EpochRecord>,
    /// Final test accuracy (0..1).
    pub test_accuracy: f64,
    /// Final test cross-entropy.
    pub test_loss: f64,
    /// Trainable parameters.
    pub params: usize,
    /// MACs per image.
    pub macs: u64,
    /// Wall time of this invocation, seconds.
    pub seconds: f64,
}

/// Identity of a training job: what a checkpoint must match to be resumed.
pub struct JobIdentity<'a> {
    /// Hash of the resolved config.
    pub config_hash: &'a str,
    /// Dataset name, stored in the checkpoint.
    pub dataset: &'a str,
    /// Run seed.
    pub seed: u64,
    /// Stage name stored in the checkpoint (`train`, `distill`).
    pub kind: &'a str,
    /// The resolved config as TOML, saved as `config.toml` once the run is known to proceed.
    pub config_toml: &'a str,
}

/// What a training run minimises, epoch by epoch. `Sync`: with several devices, each
/// device's replica calls [`Objective::loss`] from its own thread.
pub trait Objective: Sync {
    /// Epochs of the whole run.
    fn total_epochs(&self) -> usize;
    /// Phase name and learning rate of 1-based `epoch`.
    fn phase(&self, epoch: usize) -> (String, f64);
    /// The loss of one batch for the network being trained, and its logits when the phase
    /// computes them (for the running accuracy). `x` and `y` live on the autodiff device;
    /// `indices` are the batch's positions in the training split.
    fn loss(
        &self,
        model: &ConvNet,
        x: Tensor<4>,
        y: Tensor<1, Int>,
        indices: &[usize],
        epoch: usize,
    ) -> (Tensor<1>, Option<Tensor<2>>);
    /// Re-create the optimizer at the start of every epoch (the InDistill reference does;
    /// off by default).
    fn reset_optimizer_each_epoch(&self) -> bool {
        false
    }
}

/// Cross-entropy on the labels with the configured learning-rate stages.
pub struct CrossEntropy<'a>(pub &'a TrainSettings);

impl Objective for CrossEntropy<'_> {
    fn total_epochs(&self) -> usize {
        self.0.total_epochs()
    }
    fn phase(&self, epoch: usize) -> (String, f64) {
        ("supervised".into(), self.0.lr_at(epoch))
    }
    fn loss(
        &self,
        model: &ConvNet,
        x: Tensor<4>,
        y: Tensor<1, Int>,
        _indices: &[usize],
        _epoch: usize,
    ) -> (Tensor<1>, Option<Tensor<2>>) {
        let logits = model.forward(x);
        (cross_entropy(logits.clone(), y), Some(logits))
    }
}

/// Trains `arch` with cross-entropy on `splits.train`, evaluating on `splits.test` after
/// every epoch.
pub fn train(
    arch: &Architecture,
    settings: &TrainSettings,
    splits: &Splits,
    job: &JobIdentity<'_>,
    opts: TrainOptions<'_>,
) -> Result<TrainReport, TrainError> {
    fit(
        arch,
        settings,
        &CrossEntropy(settings),
        None,
        splits,
        job,
        opts,
    )
}

/// Trains `arch` on `splits.train` minimising `objective`, evaluating on `splits.test` after
/// every epoch. `init` (weights to start from) is used on a fresh start, not on resume.
/// `settings` gives the batch size, augmentation and optimizer; the objective gives the
/// epochs, phases and learning rates.
pub fn fit(
    arch: &Architecture,
    settings: &TrainSettings,
    objective: &dyn Objective,
    init: Option<ConvNet>,
    splits: &Splits,
    job: &JobIdentity<'_>,
    opts: TrainOptions<'_>,
) -> Result<TrainReport, TrainError> {
    let started = Instant::now();
    check_fit(arch, splits)?;
    let out = opts.out_dir;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let ckpt_path = out.join(CHECKPOINT_FILE);
    let reporter = opts.reporter;

    let devices = opts.backend.autodiff_devices(opts.devices)?;
    let device = devices[0].clone();
    // The initial weights are drawn on the CPU (each when the run first uses it, as on the
    // CPU backend) and moved to the device, so a seed gives the same start on every backend.
    let init_device = runtime::cpu_autodiff();
    init_device.seed(job.seed);
    let mut model = match init {
        Some(net) => net.to_device(&device).train(),
        None if device == init_device => ConvNet::new(arch, &init_device).to_device(&device),
        None => ConvNet::new(arch, &init_device).to_device_drawn_here(&device),
    };
    let mut optim = adam(&settings.adam);
    let norm = Normalization::from_dataset(&splits.train);
    let mut header = CheckpointHeader {
        format: FORMAT,
        kind: job.kind.into(),
        epochs_done: 0,
        config_hash: job.config_hash.to_string(),
        architecture: arch.clone(),
        normalization: norm.clone(),
        dataset: job.dataset.to_string(),
        classes: splits.train.classes.clone(),
        history: Vec::new(),
        extra: serde_json::Value::Null,
    };

    if opts.resume {
        let ckpt = Checkpoint::read(&ckpt_path).map_err(|e| match e {
            super::CheckpointError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                TrainError::Resume {
                    path: ckpt_path.clone(),
                    message: "no checkpoint to resume from; run without --resume".into(),
                }
            }
            other => other.into(),
        })?;
        if ckpt.header.config_hash != job.config_hash {
            return Err(TrainError::Resume {
                path: ckpt_path,
                message: format!(
                    "checkpoint was made with a different config (hash {} vs {} now); \
                     resume with the same config, or use --force to start over",
                    ckpt.header.config_hash, job.config_hash
                ),
            });
        }
        model = ckpt.load_model(&device, &ckpt_path)?;
        optim = optim
            .from_bytes(Bytes::from_bytes_vec(ckpt.optimizer.clone()))
            .map_err(|e| TrainError::Resume {
                path: ckpt_path.clone(),
                message: format!("unreadable optimizer state: {e}"),
            })?;
        header.epochs_done = ckpt.header.epochs_done;
        header.history = ckpt.header.history;
        header.normalization = ckpt.header.normalization;
        reporter.line(format!(
            "resuming after epoch {}/{} from {}",
            header.epochs_done,
            objective.total_epochs(),
            ckpt_path.display()
        ));
    } else if !opts.force && (ckpt_path.exists() || out.join(MODEL_FILE).exists()) {
        return Err(TrainError::Resume {
            path: out.to_path_buf(),
            message: "already holds a training run; pass --resume to continue it or --force to start over".into(),
        });
    } else if opts.force {
        remove_previous_run(out)?;
    }
    let config_path = out.join(CONFIG_FILE);
    crate::fsutil::write_atomic(&config_path, job.config_toml.as_bytes())
        .map_err(io(&config_path))?;
    let resumed_after = header.epochs_done;
    let norm = header.normalization.clone();
    let eval_device = device.clone().without_autodiff();
    let total = objective.total_epochs();
    with_replicas(
        &devices,
        objective,
        &splits.train,
        |replicas| -> Result<(), TrainError> {
            for epoch in header.epochs_done + 1..=total {
                let (phase, lr) = objective.phase(epoch);
                if objective.reset_optimizer_each_epoch() {
                    optim = adam(&settings.adam);
                }
                let plan = EpochPlan {
                    data: &splits.train,
                    norm: &norm,
                    augment: Some(&settings.augment),
                    batch_size: settings.batch_size,
                    seed: job.seed,
                    epoch,
                    device: &device,
                };
                let label = format!("epoch {epoch}/{total}");
                let totals = run_epoch(&plan, &label, reporter, |x, y, indices| {
                    let step = replicas.step(&model, x, y, indices, epoch);
                    if let Some(grads) = step.grads {
                        model = optim.step(lr, model.clone(), grads);
                    }
                    StepOutcome {
                        loss: step.loss,
                        correct: step.correct,
                    }
                })
                .map_err(|e| {
                    if let TrainError::NonFinite { .. } = e
                        && header.epochs_done > 0
                    {
                        reporter.line(format!(
                            "the last good checkpoint (epoch {}) is kept at {}",
                            header.epochs_done,
                            ckpt_path.display()
                        ));
                    }
                    e
                })?;

                let valid = model.valid();
                let preds = predict(
                    &valid,
                    &splits.test,
                    &norm,
                    settings.eval_batch_size,
                    &eval_device,
                );
                let (test_loss, test_accuracy) =
                    loss_and_accuracy(&preds.logits, preds.classes, &splits.test.labels);
                let record = EpochRecord {
                    epoch,
                    phase: phase.clone(),
                    lr,
                    train_loss: totals.loss,
                    train_accuracy: totals.accuracy,
                    test_loss,
                    test_accuracy,
                    seconds: totals.seconds,
                    images_per_second: totals.images as f64 / totals.seconds.max(1e-9),
                };
                let eval = crate::data::split::split_label(&splits.test);
                let train_acc = totals
                    .accuracy
                    .map_or(String::new(), |a| format!("  train {:.2}%", 100.0 * a));
                reporter.line(format!(
            "epoch {epoch:>3}/{total}  {phase}  lr {lr:.0e}  loss {:.4}{train_acc}  {eval} loss {test_loss:.4}  {eval} {:.2}%  {:.1}s ({:.0} img/s)",
            totals.loss,
            100.0 * test_accuracy,
            totals.seconds,
            record.images_per_second,
        ));
                header.history.push(record);
                header.epochs_done = epoch;
                let optim_bytes = optim
                    .into_bytes()
                    .map_err(|e| TrainError::Record(e.to_string()))?;
                Checkpoint::from_model(header.clone(), model.clone(), optim_bytes.to_vec())
                    .map_err(|e| TrainError::Record(e.to_string()))?
                    .write(&ckpt_path)?;
                let metrics = out.join(METRICS_FILE);
                write_json_atomic(&metrics, &header.history).map_err(io(&metrics))?;
            }
            Ok(())
        },
    )?;

    // Final weights: the same container, without optimizer state.
    let model_path = out.join(MODEL_FILE);
    let mut final_header = header.clone();
    final_header.kind = "model".into();
    Checkpoint::from_model(final_header, model.valid(), Vec::new())
        .map_err(|e| TrainError::Record(e.to_string()))?
        .write(&model_path)?;
    let last = header.history.last().cloned();
    Ok(TrainReport {
        out_dir: out.to_path_buf(),
        model: model_path,
        resumed_after,
        test_accuracy: last.as_ref().map_or(0.0, |r| r.test_accuracy),
        test_loss: last.as_ref().map_or(0.0, |r| r.test_loss),
        epochs: header.history,
        params: arch.trainable_params(),
        macs: arch.macs(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Removes an earlier run's files from `out` before a forced fresh start writes anything: the
/// final weights first, so a run killed at any point never leaves one run's `model.ckpt`
/// beside another run's config and checkpoint.
fn remove_previous_run(out: &Path) -> Result<(), TrainError> {
    for file in [MODEL_FILE, CHECKPOINT_FILE, METRICS_FILE, CONFIG_FILE] {
        let path = out.join(file);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(TrainError::Io { path, source }),
        }
    }
    Ok(())
}

/// Refuses data that does not fit the network.
pub fn check_fit(arch: &Architecture, splits: &Splits) -> Result<(), TrainError> {
    for ds in [&splits.train, &splits.test] {
        if ds.shape != arch.input {
            return Err(TrainError::Mismatch(format!(
                "{}: images are {}, model '{}' was built for {}",
                ds.name, ds.shape, arch.spec.name, arch.input
            )));
        }
        if ds.classes.len() != arch.classes {
            return Err(TrainError::Mismatch(format!(
                "{}: {} classes, model '{}' has {} outputs",
                ds.name,
                ds.classes.len(),
                arch.spec.name,
                arch.classes
            )));
        }
        if ds.is_empty() {
            return Err(TrainError::Mismatch(format!("{}: no images", ds.name)));
        }
    }
    Ok(())
}
