//! `distill-edge export`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::{ExportArgs, GlobalArgs, QuantizeMode};
use crate::data;
use crate::fsutil::write_atomic;
use crate::onnx::export::{ExportOptions, calibrate, export_model, quantize, summarize};
use crate::onnx::proto;
use crate::onnx::qdq::QuantizeOptions;
use crate::progress::Reporter;
use crate::table::Table;
use crate::train::Checkpoint;

/// Exports a checkpoint to ONNX.
pub fn run(args: &ExportArgs, global: &GlobalArgs) -> Result<()> {
    let reporter = Reporter::new(global.quiet);
    let path = super::eval::model_file(&args.model)?;
    let ckpt = Checkpoint::read(&path)?;
    let net = ckpt.load_model(&crate::runtime::cpu(), &path)?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let name = &ckpt.header.architecture.spec.name;
    let out: PathBuf = args.output.clone().unwrap_or_else(|| {
        dir.join(match args.quantize {
            Some(QuantizeMode::Int8) => format!("{name}.int8.onnx"),
            None => format!("{name}.onnx"),
        })
    });
    let opts = ExportOptions {
        fold_batch_norm: !args.no_fold,
        embedding_output: args.embedding,
    };
    reporter.line(format!("tracing {name} from {}", path.display()));
    let mut model = export_model(&net, &ckpt, &opts)?;
    let quantization = match args.quantize {
        None => None,
        Some(QuantizeMode::Int8) => {
            let source = super::data_for_model(&dir, args.config.as_deref(), &args.data)
                .context("int8 calibration needs the training data")?;
            let splits = data::load(&source)?;
            reporter.line(format!(
                "calibrating activation ranges on {} {} training images",
                args.calibration_images.min(splits.train.len()),
                source.name()
            ));
            let ranges = calibrate(
                &model,
                &splits.train,
                &ckpt.header.normalization,
                args.calibration_images,
            )?;
            Some(quantize(
                &mut model,
                &ranges,
                &QuantizeOptions {
                    per_channel_weights: !args.per_tensor,
                    ..QuantizeOptions::default()
                },
            )?)
        }
    };
    let bytes = proto::encode(&model);
    // Refuse to write something our own engine cannot load.
    crate::infer::tract::TractEngine::from_bytes(&bytes, &out.display().to_string())
        .context("the exported model does not load in tract")?;
    write_atomic(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    let summary = summarize(
        &model,
        &out,
        bytes.len() as u64,
        opts.fold_batch_norm,
        quantization,
    );
    if global.json {
        return super::print_json(&summary);
    }
    if !global.quiet {
        let mut t = Table::new(["file", "bytes", "params", "opset", "ops"]);
        let mut ops = summary.ops.clone();
        ops.dedup();
        t.row([
            out.display().to_string(),
            summary.bytes.to_string(),
            summary.parameters.to_string(),
            summary.opset.to_string(),
            ops.join(","),
        ]);
        print!("{}", t.render());
    }
    Ok(())
}
