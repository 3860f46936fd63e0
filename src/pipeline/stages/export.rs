//! `export`: the student to ONNX (`student.onnx`), and with `int8` a calibrated QDQ model
//! (`student.int8.onnx`).

use std::path::Path;

use anyhow::Result;

use crate::infer::tract::TractEngine;
use crate::onnx::export::{ExportOptions, calibrate, export_model, quantize};
use crate::pipeline::config::ExportSection;
use crate::pipeline::stage::{Context, Inputs, Stage};
use crate::progress::Reporter;
use crate::train::Checkpoint;
use crate::train::supervised::MODEL_FILE;

/// The fp32 model.
pub const FP32_FILE: &str = "student.onnx";
/// The int8 model.
pub const INT8_FILE: &str = "student.int8.onnx";

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
            reporter.line(format!(
                "int8: calibrating on {} training images",
                self.section.calibration_images
            ));
            let ranges = calibrate(
                &model,
                &splits.train,
                &ckpt.header.normalization,
                self.section.calibration_images,
            )?;
            let mut q = model.clone();
            quantize(&mut q, &ranges, &Default::default())?;
            crate::fsutil::write_atomic(&dir.join(INT8_FILE), &crate::onnx::proto::encode(&q))?;
        }
        Ok(())
    }
}
