//! What the training stages share: supervised training, distillation and the evaluation each
//! trained network gets (`eval.json`).

use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::config::{DistillConfig, TrainSettings};
use crate::data::Splits;
use crate::eval::retrieval::RetrievalMetrics;
use crate::fsutil::write_json_atomic;
use crate::model::ModelSpec;
use crate::model::evaluate::evaluate;
use crate::pipeline::stage::Context;
use crate::progress::Reporter;
use crate::runtime::Backend;
use crate::train::distill::distill;
use crate::train::supervised::{CHECKPOINT_FILE, JobIdentity, MODEL_FILE, TrainOptions, train};
use crate::train::{Checkpoint, TrainError};

/// Evaluation of a trained network.
pub const EVAL_FILE: &str = "eval.json";

/// What every training stage must produce: the final weights and their evaluation.
pub(super) fn required_artifacts() -> Vec<String> {
    vec![MODEL_FILE.into(), EVAL_FILE.into()]
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
    /// The same on the validation images, when the config holds some out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationEval>,
}

/// Top-1 and retrieval on the validation images (database: the training images without them).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidationEval {
    /// Top-1 (0..1).
    pub accuracy: f64,
    /// Cosine and L2 retrieval.
    pub retrieval: Option<[RetrievalMetrics; 2]>,
}

/// Evaluates a finished training stage's model in batches of `eval_batch_size` (the stage's
/// `eval-batch-size`) on the test split, and on the validation split when there is one, and
/// writes `eval.json`.
pub(super) fn write_eval(
    dir: &Path,
    ctx: &Context,
    classifies: bool,
    eval_batch_size: usize,
    reporter: &Reporter,
) -> Result<()> {
    let path = dir.join(MODEL_FILE);
    let ckpt = Checkpoint::read(&path)?;
    let net = ckpt.load_model(&ctx.compute().0.device()?, &path)?;
    let norm = &ckpt.header.normalization;
    reporter.line("evaluating: accuracy and retrieval (database = train, queries = test)");
    let m = evaluate(&net, &*ctx.splits()?, norm, eval_batch_size, Some(100))?;
    let validation = match ctx.validation_splits()? {
        None => None,
        Some(v) => {
            reporter.line("evaluating on the validation images (queries = validation)");
            let v = evaluate(&net, &v, norm, eval_batch_size, Some(100))?;
            Some(ValidationEval {
                accuracy: v.accuracy,
                retrieval: v.retrieval,
            })
        }
    };
    let arch = &ckpt.header.architecture;
    let eval = StageEval {
        architecture: arch.spec.name.clone(),
        params: arch.trainable_params(),
        macs: arch.macs(),
        accuracy: m.accuracy,
        classifies,
        retrieval: m.retrieval,
        train_seconds: ckpt.header.history.iter().map(|h| h.seconds).sum(),
        validation,
    };
    write_json_atomic(&dir.join(EVAL_FILE), &eval)?;
    Ok(())
}

/// A supervised training stage.
pub(super) struct TrainJob<'a> {
    /// Model preset or spec path.
    pub model: &'a str,
    /// Schedule.
    pub settings: &'a TrainSettings,
    /// Seed.
    pub seed: u64,
    /// Identifies the inputs in the checkpoint (a resume of other inputs is refused).
    pub fingerprint: &'a str,
    /// Dataset name, stored in the checkpoint.
    pub dataset: &'a str,
}

/// Trains (or resumes) a network with cross-entropy into `dir`.
pub(super) fn train_stage(
    dir: &Path,
    job: &TrainJob<'_>,
    splits: &Splits,
    (backend, devices): (Backend, usize),
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
    arch.check_memory(settings.batch_size)?;
    let resume = dir.join(CHECKPOINT_FILE).exists();
    /// The job as `config.toml` in the stage directory.
    #[derive(Serialize)]
    struct JobToml<'a> {
        model: &'a str,
        seed: u64,
        train: &'a TrainSettings,
    }
    let toml = toml::to_string_pretty(&JobToml {
        model,
        seed,
        train: settings,
    })
    .context("writing the stage's config as TOML")?;
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
            backend,
            devices,
        },
    )?;
    Ok(())
}

/// Distills (or resumes) into `dir`; a checkpoint of other inputs is started over.
pub(super) fn distill_stage(
    config: &DistillConfig,
    dir: &Path,
    splits: &Splits,
    (backend, devices): (Backend, usize),
    reporter: &mut Reporter,
) -> Result<()> {
    let config = &DistillConfig {
        backend: Some(backend),
        devices: Some(devices),
        ..config.clone()
    };
    let resume = dir.join(CHECKPOINT_FILE).exists();
    let origin = format!("pipeline stage {}", dir.display());
    // An ONNX teacher (the teacher stage's copy) runs with tract, pruned for InDistill.
    let onnx = crate::infer::teacher::OnnxTeacher::for_config(
        config,
        &splits.train,
        config.distill.method == crate::config::distill::Method::Indistill,
    )?;
    let foreign = onnx
        .as_ref()
        .map(|t| t as &dyn crate::train::teacher_cache::ForeignTeacher);
    match distill(
        config, &origin, splits, dir, resume, !resume, foreign, reporter,
    ) {
        Err(crate::train::distill::DistillError::Train(TrainError::Resume { .. })) if resume => {
            distill(config, &origin, splits, dir, false, true, foreign, reporter)?;
        }
        other => {
            other?;
        }
    }
    Ok(())
}
