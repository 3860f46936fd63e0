//! `bundle-<target>`: the runner cross-compiled for a target, the exported models, a test
//! shard and the host's reference outputs, in `bundle/`.

use std::path::Path;

use anyhow::{Context as _, Result};

use super::export::{FP32_FILE, INT8_FILE};
use crate::board::TargetSpec;
use crate::board::bundle::{BundleInputs, ModelFeed, make_shard, prepare_models, write_bundle};
use crate::hostcheck::ModelInfo;
use crate::pipeline::config::TargetsSection;
use crate::pipeline::stage::{Context, Inputs, Stage};
use crate::progress::Reporter;
use distill_edge_schema::BenchSettings;

/// The bundle directory inside the stage directory.
pub const BUNDLE_DIR: &str = "bundle";

/// Builds the bundle of one target.
pub struct Bundle {
    /// The target.
    pub target: TargetSpec,
    /// `[targets]`.
    pub section: TargetsSection,
}

/// The stage name of `target`'s bundle.
pub fn stage_name(target: &TargetSpec) -> String {
    format!("bundle-{}", target.name)
}

impl Stage for Bundle {
    fn name(&self) -> String {
        stage_name(&self.target)
    }

    fn needs(&self) -> Vec<String> {
        vec!["export".into()]
    }

    fn inputs(&self) -> Result<serde_json::Value> {
        Ok(Inputs::default()
            .add("target", &self.target)?
            .add("section", &self.section)?
            .add("runner", &crate::board::embedded::runner_source_digest())?
            .done())
    }

    fn run(&self, ctx: &Context, dir: &Path, reporter: &mut Reporter) -> Result<()> {
        let target = &self.target;
        let splits = ctx.splits()?;
        let export_dir = ctx.dir("export");
        let info = ModelInfo::read(&export_dir.join(FP32_FILE))?;
        let norm = info
            .normalization
            .with_context(|| format!("{FP32_FILE} has no normalisation metadata"))?;
        let shard = make_shard(&splits.test, &norm, self.section.shard_size);
        let mut models = vec![("fp32".to_string(), export_dir.join(FP32_FILE))];
        if export_dir.join(INT8_FILE).exists() {
            models.push(("int8".to_string(), export_dir.join(INT8_FILE)));
        }
        reporter.line("host reference outputs with tract; converting the models to NNEF");
        let models = prepare_models(&models, &shard, &ModelFeed::default())?;
        let format = models.format();
        if let Some(why) = models.onnx_fallback() {
            reporter.line(format!("shipping ONNX and the tract-onnx runner: {why}"));
        }
        reporter.line(format!(
            "cross-compiling the runner ({} engine) for {} ({})",
            format.name(),
            target.name,
            target.triple
        ));
        let runner = crate::board::cross::build_runner(target, format)?;
        reporter.line("writing the bundle");
        write_bundle(
            &dir.join(BUNDLE_DIR),
            &BundleInputs {
                target,
                runner: &runner,
                models: &models,
                shard: &shard,
                bench: BenchSettings {
                    batches: self.section.batches.clone(),
                    warmup: 5,
                    runs: self.section.runs,
                    min_seconds: 0.0,
                    threads: 1,
                    ..BenchSettings::default()
                },
            },
        )?;
        Ok(())
    }
}
