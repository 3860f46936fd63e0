//! Supervised training with cross-entropy, Adam and learning-rate stages; a checkpoint per
//! epoch (weights, optimizer state, history), exact resume, NaN/Inf stop.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::GradientsParams;
use burn::tensor::Bytes;
use serde::Serialize;

use super::TrainError;
use super::batches::{loss_and_accuracy, predict};
use super::checkpoint::{Checkpoint, CheckpointHeader, EpochRecord, FORMAT};
use super::epoch::{EpochPlan, StepOutcome, adam, count_correct, run_epoch};
use crate::config::TrainSettings;
use crate::data::Splits;
use crate::data::batch::Normalization;
use crate::fsutil::write_json_atomic;
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
    /// Start over even if `out_dir` holds an earlier run.
    pub force: bool,
    /// Progress output.
    pub reporter: &'a mut Reporter,
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
    /// The resolved config as TOML, saved as `config.toml` once the run is known to proceed.
    pub config_toml: &'a str,
}

/// Trains `arch` on `splits.train`, evaluating on `splits.test` after every epoch.
pub fn train(
    arch: &Architecture,
    settings: &TrainSettings,
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

    let device = runtime::cpu_autodiff();
    device.seed(job.seed);
    let mut model = ConvNet::new(arch, &device);
    let mut optim = adam(&settings.adam);
    let norm = Normalization::from_dataset(&splits.train);
    let mut header = CheckpointHeader {
        format: FORMAT,
        kind: "train".into(),
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
            settings.total_epochs(),
            ckpt_path.display()
        ));
    } else if !opts.force && (ckpt_path.exists() || out.join(MODEL_FILE).exists()) {
        return Err(TrainError::Resume {
            path: out.to_path_buf(),
            message: "already holds a training run; pass --resume to continue it or --force to start over".into(),
        });
    }
    let config_path = out.join(CONFIG_FILE);
    crate::fsutil::write_atomic(&config_path, job.config_toml.as_bytes())
        .map_err(io(&config_path))?;
    let resumed_after = header.epochs_done;
    let norm = header.normalization.clone();
    let eval_device = runtime::cpu();
    let ce = CrossEntropyLoss::new(None, &device);

    for epoch in header.epochs_done + 1..=settings.total_epochs() {
        let lr = settings.lr_at(epoch);
        let plan = EpochPlan {
            data: &splits.train,
            norm: &norm,
            augment: Some(&settings.augment),
            batch_size: settings.batch_size,
            seed: job.seed,
            epoch,
            device: &device,
        };
        let label = format!("epoch {epoch}/{}", settings.total_epochs());
        let totals = run_epoch(&plan, &label, reporter, |x, y, indices| {
            let logits = model.forward(x);
            let loss = ce.forward(logits.clone(), y);
            let value: f32 = loss.clone().into_scalar();
            if !value.is_finite() {
                return StepOutcome {
                    loss: value,
                    correct: None,
                };
            }
            let correct = count_correct(logits.detach(), indices, &splits.train);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model.clone(), grads);
            StepOutcome {
                loss: value,
                correct: Some(correct),
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
            phase: "supervised".into(),
            lr,
            train_loss: totals.loss,
            train_accuracy: totals.accuracy,
            test_loss,
            test_accuracy,
            seconds: totals.seconds,
            images_per_second: totals.images as f64 / totals.seconds.max(1e-9),
        };
        reporter.line(format!(
            "epoch {epoch:>3}/{}  lr {lr:.0e}  loss {:.4}  train {:.2}%  test loss {test_loss:.4}  test {:.2}%  {:.1}s ({:.0} img/s)",
            settings.total_epochs(),
            totals.loss,
            100.0 * totals.accuracy.unwrap_or(0.0),
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
