//! `export`: the student to ONNX (`student.onnx`), and with `int8` a calibrated int8 model
//! (`student.int8.onnx`, operator form by default) with its report (`int8.json`).

use std::path::Path;

use anyhow::Result;

use crate::fsutil::write_json_atomic;
use crate::infer::tract::TractEngine;
use crate::onnx::export::{ExportOptions, export_model, quantization_label};
use crate::onnx::meta;
use crate::pipeline::config::ExportSection;
use crate::pipeline::stage::{Context, Inputs, Stage};
use crate::progress::Reporter;
use crate::quantize::{self as int8, Int8Request};
use crate::train::Checkpoint;
use crate::train::supervised::MODEL_FILE;

/// The fp32 model.
pub const FP32_FILE: &str = "student.onnx";
/// The int8 model (absent when no int8 model met `max-accuracy-drop`).
pub const INT8_FILE: &str = "student.int8.onnx";
/// The int8 report: form, calibration, images used, layers kept float, the search's steps.
pub const INT8_REPORT_FILE: &str = "int8.json";

/// Exports the student.
pub struct Export {
    /// `[export]`.
    pub section: ExportSection,
}

impl Stage for Export {
    fn name(&self) -> String {
        "export".into()
    }

    fn needs(&self) -> Vec<String> {
        vec!["student".into()]
    }

    fn inputs(&self) -> Result<serde_json::Value> {
        Ok(Inputs::default()
            .add("section", &self.section)?
            .add("version", &env!("CARGO_PKG_VERSION"))?
            .done())
    }

    fn run(&self, ctx: &Context, dir: &Path, reporter: &mut Reporter) -> Result<()> {
        let path = ctx.dir("student").join(MODEL_FILE);
        let ckpt = Checkpoint::read(&path)?;
        let net = ckpt.load_model(&crate::runtime::cpu(), &path)?;
        reporter.line("exporting the student to ONNX");
        let model = export_model(
            &net,
            &ckpt,
            &ExportOptions {
                fold_batch_norm: self.section.fold,
                embedding_output: false,
            },
        )?;
        let bytes = crate::onnx::proto::encode(&model);
        TractEngine::from_bytes(&bytes, FP32_FILE)?;
        crate::fsutil::write_atomic(&dir.join(FP32_FILE), &bytes)?;
        if self.section.int8 {
            let splits = ctx.splits()?;
            let request = Int8Request {
                form: self.section.int8_form,
                calibration: self.section.calibration_method(),
                per_channel_weights: true,
                calibration_images: self.section.calibration_images,
                validation_images: self.section.validation_images,
                max_accuracy_drop: self.section.max_accuracy_drop,
                float_layers: self.section.float_layers.clone(),
            };
            let (q, report) = int8::quantize(
                &model,
                &splits.train,
                &ckpt.header.normalization,
                &request,
                |m| reporter.line(format!("int8: {m}")),
            )?;
            write_json_atomic(&dir.join(INT8_REPORT_FILE), &report)?;
            match q {
                Some(mut q) => {
                    crate::onnx::proto::set_metadata(
                        &mut q,
                        &[(meta::QUANTIZATION, quantization_label(request.form))],
                    );
                    let bytes = crate::onnx::proto::encode(&q);
                    TractEngine::from_bytes(&bytes, INT8_FILE)?;
                    crate::fsutil::write_atomic(&dir.join(INT8_FILE), &bytes)?;
                }
                None => reporter.line(format!(
                    "int8: {}; only fp32 ships",
                    report.reason.as_deref().unwrap_or("no int8 model")
                )),
            }
        }
        Ok(())
    }
}
