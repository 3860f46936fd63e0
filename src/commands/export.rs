//! `distill-edge export`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::{ExportArgs, GlobalArgs, QuantizeMode};
use crate::config::quant::{Calibration, Int8Form, validate_drop, validate_percentile};
use crate::data;
use crate::fsutil::{write_atomic, write_json_atomic};
use crate::onnx::export::{ExportOptions, export_model, quantization_label, summarize};
use crate::onnx::{meta, proto};
use crate::progress::Reporter;
use crate::quantize::{self as int8, Int8Report, Int8Request};
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
            let origin = "command line";
            validate_percentile(origin, "--percentile", args.percentile)?;
            if let Some(d) = args.max_accuracy_drop {
                validate_drop(origin, "--max-accuracy-drop", d)?;
            }
            let form = Int8Form::from(args.int8_form);
            if form == Int8Form::Qdq && !args.float_layers.is_empty() {
                anyhow::bail!("--float-layer needs --int8-form qoperator");
            }
            if form == Int8Form::Qdq && args.max_accuracy_drop.is_some() {
                anyhow::bail!(
                    "--max-accuracy-drop needs --int8-form qoperator (the layer search keeps \
                     layers float in operator form only)"
                );
            }
            let source = super::data_for_model(&dir, args.config.as_deref(), &args.data)
                .context("int8 calibration needs the training data")?;
            let splits = data::load(&source)?;
            let request = Int8Request {
                form,
                calibration: Calibration::new(args.calibration.into(), args.percentile),
                per_channel_weights: !args.per_tensor,
                calibration_images: args.calibration_images,
                validation_images: args.validation_images,
                max_accuracy_drop: args.max_accuracy_drop,
                float_layers: args.float_layers.clone(),
            };
            let (q, report) = int8::quantize(
                &model,
                &splits.train,
                &ckpt.header.normalization,
                &request,
                |m| reporter.line(m),
            )?;
            let report_path = out.with_extension("json");
            write_json_atomic(&report_path, &report)
                .with_context(|| format!("writing {}", report_path.display()))?;
            match q {
                Some(q) => {
                    model = q;
                    proto::set_metadata(
                        &mut model,
                        &[(meta::QUANTIZATION, quantization_label(form))],
                    );
                }
                None => {
                    // Nothing int8 met the budget: say so, write no int8 model.
                    eprintln!(
                        "int8: {}; only fp32 ships (report: {})",
                        report.reason.as_deref().unwrap_or("no int8 model"),
                        report_path.display()
                    );
                    if global.json {
                        return super::print_json(&report);
                    }
                    return Ok(());
                }
            }
            Some(report)
        }
    };
    let bytes = proto::encode(&model);
    // Refuse to write something our own engine cannot load.
    crate::infer::tract::TractEngine::from_bytes(&bytes, &out.display().to_string())
        .context("the exported model does not load in tract")?;
    write_atomic(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    let summary = summarize(&model, &out, bytes.len() as u64, opts.fold_batch_norm);
    if global.json {
        /// The summary with the int8 report, as `export --json` prints it.
        #[derive(serde::Serialize)]
        struct Printed<'a> {
            #[serde(flatten)]
            summary: &'a crate::onnx::export::ExportSummary,
            quantization: &'a Option<Int8Report>,
        }
        return super::print_json(&Printed {
            summary: &summary,
            quantization: &quantization,
        });
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
        if let Some(q) = &quantization {
            println!(
                "int8 ({}, {} ranges): int8 layers [{}], float layers [{}]; top-1 on {} held-out \
                 training images: fp32 {:.2}%, int8 {:.2}% (drop {:.2} points)",
                q.form,
                serde_json::to_value(q.calibration)?["method"]
                    .as_str()
                    .unwrap_or("?"),
                q.int8_layers.join(", "),
                q.float_layers.join(", "),
                q.images.validation.len(),
                100.0 * q.fp32_accuracy,
                100.0 * q.int8_accuracy.unwrap_or(f64::NAN),
                q.drop_points.unwrap_or(f64::NAN),
            );
        }
    }
    Ok(())
}
