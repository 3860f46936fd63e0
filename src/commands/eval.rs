//! `distill-edge eval`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use serde::Serialize;

use crate::cli::{EvalArgs, GlobalArgs};
use crate::data;
use crate::fsutil::write_json_atomic;
use crate::model::evaluate::{ModelMetrics, evaluate};
use crate::progress::Reporter;
use crate::table::{Table, pct};
use crate::train::Checkpoint;
use crate::train::supervised::{CHECKPOINT_FILE, MODEL_FILE, check_fit};

/// Everything `eval` measured.
#[derive(Debug, Serialize)]
pub struct EvalReport {
    /// Model file evaluated.
    pub model: PathBuf,
    /// Architecture name.
    pub architecture: String,
    /// Dataset kind.
    pub dataset: String,
    /// Trainable parameters.
    pub params: usize,
    /// MACs per image.
    pub macs: u64,
    /// Class names.
    pub classes: Vec<String>,
    /// Accuracy, confusion matrix and retrieval (absent with --no-retrieval).
    #[serde(flatten)]
    pub metrics: ModelMetrics,
}

/// Resolves a model argument: a file, or a directory holding `model.ckpt`.
pub fn model_file(path: &Path) -> Result<PathBuf> {
    if path.is_dir() {
        let candidate = path.join(MODEL_FILE);
        if candidate.is_file() {
            return Ok(candidate);
        }
        let train = path.join("train").join(MODEL_FILE);
        if train.is_file() {
            return Ok(train);
        }
        bail!(
            "{}: no {MODEL_FILE} in this directory (is the training finished?)",
            path.display()
        );
    }
    if !path.exists() {
        bail!("{}: no such model file", path.display());
    }
    Ok(path.to_path_buf())
}

/// The `config_hash` in a checkpoint file's header, read without the weights (the header is
/// JSON after the 8-byte magic and its u32 length); `None` when the file is not readable as
/// one.
fn stored_config_hash(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 12];
    f.read_exact(&mut head).ok()?;
    let len = u32::from_le_bytes(head[8..12].try_into().ok()?) as usize;
    if len > 1 << 26 {
        return None;
    }
    let mut header = vec![0u8; len];
    f.read_exact(&mut header).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    header["config_hash"].as_str().map(str::to_string)
}

/// Refuses a `model.ckpt` that another run made than the `checkpoint.ckpt` beside it (a
/// directory mixing two runs, e.g. after a killed `train --force` of an older version).
fn check_same_run(model: &Path, config_hash: &str) -> Result<()> {
    if model.file_name() != Some(std::ffi::OsStr::new(MODEL_FILE)) {
        return Ok(());
    }
    let checkpoint = model.with_file_name(CHECKPOINT_FILE);
    match stored_config_hash(&checkpoint) {
        Some(hash) if hash != config_hash => bail!(
            "{}: made by another run (config hash {config_hash}) than {} beside it ({hash}); \
             retrain into this directory with --resume or --force",
            model.display(),
            checkpoint.display()
        ),
        _ => Ok(()),
    }
}

/// Evaluates a trained model on its dataset. A `model.ckpt` whose run differs from the
/// `checkpoint.ckpt` beside it is refused.
pub fn run(args: &EvalArgs, global: &GlobalArgs) -> Result<()> {
    let reporter = Reporter::new(global.quiet);
    let path = model_file(&args.model)?;
    let ckpt = Checkpoint::read(&path)?;
    check_same_run(&path, &ckpt.header.config_hash)?;
    let device = crate::runtime::cpu();
    let model = ckpt.load_model(&device, &path)?.valid();
    let arch = &ckpt.header.architecture;

    let source = super::data_for_model(
        path.parent().unwrap_or(Path::new(".")),
        args.config.as_deref(),
        &args.data,
    )?;
    reporter.line(format!("loading {} data", source.name()));
    let splits = data::load(&source)?;
    check_fit(arch, &splits)?;
    let norm = &ckpt.header.normalization;

    reporter.line(format!(
        "evaluating {} on {} test images",
        arch.spec.name,
        splits.test.len()
    ));
    if !args.no_retrieval {
        reporter.line(format!(
            "retrieval: {} queries against {} database images ({}-d embedding)",
            splits.test.len(),
            splits.train.len(),
            arch.embedding_dim()
        ));
    }
    let metrics = evaluate(
        &model,
        &splits,
        norm,
        args.batch_size,
        (!args.no_retrieval).then_some(args.top_k),
    )
    .context("retrieval evaluation")?;
    let report = EvalReport {
        model: path.clone(),
        architecture: arch.spec.name.clone(),
        dataset: source.name().to_string(),
        params: arch.trainable_params(),
        macs: arch.macs(),
        classes: splits.test.classes.clone(),
        metrics,
    };
    if let Some(out) = &args.output {
        write_json_atomic(out, &report).with_context(|| format!("writing {}", out.display()))?;
    }
    if global.json {
        super::print_json(&report)?;
    } else if !global.quiet {
        println!("\n{}", report.metrics.confusion.render(&report.classes));
        let mut t = Table::new(["metric", "value"]);
        t.row(["top-1 accuracy".to_string(), pct(report.metrics.accuracy)]);
        t.row([
            "cross-entropy".to_string(),
            format!("{:.4}", report.metrics.loss),
        ]);
        if let Some(r) = &report.metrics.retrieval {
            for m in r {
                let d = format!("{:?}", m.distance).to_lowercase();
                t.row([format!("mAP ({d})"), pct(m.map)]);
                t.row([format!("precision@{} ({d})", m.k), pct(m.precision_at_k)]);
            }
        }
        t.row(["parameters".to_string(), report.params.to_string()]);
        t.row(["MACs / image".to_string(), report.macs.to_string()]);
        print!("{}", t.render());
    }
    Ok(())
}
