//! `check`: the exported models on the host, with every available engine against burn:
//! parity, top-1 drop, latency (`check.json`). A failed check is a
//! [`CheckFailed`](crate::exit::CheckFailed).

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::export::{FP32_FILE, INT8_FILE, INT8_REPORT_FILE};
use crate::exit::CheckFailed;
use crate::fsutil::write_json_atomic;
use crate::hostcheck::{EngineReport, LatencyPlan, ModelInfo, check_engines, verdict};
use crate::infer::{EngineKind, load_engines};
use crate::pipeline::config::CheckSection;
use crate::pipeline::stage::{Context, Inputs, Stage};
use crate::progress::Reporter;
use crate::train::Checkpoint;
use crate::train::supervised::MODEL_FILE;

/// The check results.
pub const CHECK_FILE: &str = "check.json";

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

/// Checks the exported models on the host.
pub struct Check {
    /// `[check]`.
    pub section: CheckSection,
}

impl Stage for Check {
    fn name(&self) -> String {
        "check".into()
    }

    fn needs(&self) -> Vec<String> {
        vec!["student".into(), "export".into()]
    }

    fn inputs(&self) -> Result<serde_json::Value> {
        Ok(Inputs::default().add("section", &self.section)?.done())
    }

    fn run(&self, ctx: &Context, dir: &Path, reporter: &mut Reporter) -> Result<()> {
        let splits = ctx.splits()?;
        let path = ctx.dir("student").join(MODEL_FILE);
        let ckpt = Checkpoint::read(&path)?;
        let net = ckpt.load_model(&crate::runtime::cpu(), &path)?;
        let plan = LatencyPlan {
            batches: self.section.batches.clone(),
            warmup: 10,
            runs: self.section.runs,
            min_seconds: 0.0,
            ..LatencyPlan::default()
        };
        let export_dir = ctx.dir("export");
        let int8_report = export_dir.join(INT8_REPORT_FILE);
        if int8_report.is_file() {
            let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&int8_report)?)?;
            if report["shipped"] == "fp32 only" {
                reporter.line(format!(
                    "int8: none shipped ({})",
                    report["reason"].as_str().unwrap_or("see int8.json")
                ));
            }
        }
        let mut records = Vec::new();
        let mut failures = Vec::new();
        for (name, file) in [("fp32", FP32_FILE), ("int8", INT8_FILE)] {
            let model_path = export_dir.join(file);
            if !model_path.exists() {
                continue;
            }
            let info = ModelInfo::read(&model_path)?;
            let loaded = load_engines(&model_path, &EngineKind::ALL, 1)?;
            for note in &loaded.skipped {
                reporter.line(note);
            }
            let (burn_accuracy, reports) = check_engines(
                &info,
                &loaded.engines,
                Some(&net),
                &splits.test,
                &ckpt.header.normalization,
                &plan,
                reporter,
            )?;
            failures.extend(
                verdict(
                    burn_accuracy,
                    &reports,
                    Some(self.section.max_accuracy_drop),
                )
                .into_iter()
                .map(|f| format!("{name} {f}")),
            );
            records.push(HostCheckRecord {
                model: name.into(),
                burn_accuracy,
                engines: reports,
            });
        }
        write_json_atomic(&dir.join(CHECK_FILE), &records)?;
        if !failures.is_empty() {
            return Err(CheckFailed(format!("host check failed: {}", failures.join("; "))).into());
        }
        Ok(())
    }
}
