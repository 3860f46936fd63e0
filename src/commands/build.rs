//! `distill-edge build --target T --model M.onnx`: cross build and bundle.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::{BuildArgs, GlobalArgs};
use crate::data;
use crate::hostcheck::ModelInfo;
use crate::progress::Reporter;
use crate::runner_schema::{BenchSettings, Manifest};
use crate::table::Table;
use crate::target::TargetSpec;
use crate::target::bundle::{BundleInputs, make_shard, write_bundle};
use crate::target::cross::build_runner;

/// What `build` produced.
#[derive(Debug, Serialize)]
pub struct BuildReport {
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Runner binary inside it.
    pub runner_bytes: u64,
    /// Seconds spent in the cross build.
    pub cross_build_seconds: f64,
    /// The manifest written.
    pub manifest: Manifest,
}

/// Builds the runner for the target and writes the bundle.
pub fn run(args: &BuildArgs, global: &GlobalArgs) -> Result<()> {
    let reporter = Reporter::new(global.quiet);
    let target = TargetSpec::resolve(&args.target)?;
    let info = ModelInfo::read(&args.model)?;
    let norm = info
        .normalization
        .clone()
        .context("the model has no normalisation metadata (export it with distill-edge export)")?;
    let dir = args.model.parent().unwrap_or(Path::new("."));
    let source = super::data_for_model(dir, args.config.as_deref(), &args.data)?;
    let splits = data::load(&source)?;
    let shard = make_shard(&splits.test, &norm, args.shard_size);

    reporter.line(format!(
        "cross-compiling the runner for {} ({})",
        target.name, target.triple
    ));
    let t = Instant::now();
    let runner = build_runner(&target)?;
    let cross_build_seconds = t.elapsed().as_secs_f64();
    let mut models = vec![("fp32".to_string(), args.model.clone())];
    if let Some(q) = &args.int8 {
        models.push(("int8".to_string(), q.clone()));
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("dist").join(&target.name));
    reporter.line(format!(
        "writing bundle {} ({} test images, host reference with tract)",
        out.display(),
        shard.labels.len()
    ));
    let manifest = write_bundle(
        &out,
        &BundleInputs {
            target: &target,
            runner: &runner,
            models,
            shard: &shard,
            bench: BenchSettings {
                batches: args.batches.clone(),
                warmup: args.warmup,
                runs: args.runs,
                min_seconds: 0.0,
                threads: args.device_threads.max(1),
            },
        },
    )?;
    let runner_bytes = std::fs::metadata(out.join("distill-edge-runner"))
        .map(|m| m.len())
        .unwrap_or(0);
    let report = BuildReport {
        bundle: out.clone(),
        runner_bytes,
        cross_build_seconds,
        manifest,
    };
    if global.json {
        return super::print_json(&report);
    }
    if !global.quiet {
        let mut t = Table::new(["file", "bytes", "sha256"]);
        for f in &report.manifest.files {
            t.row([
                f.path.clone(),
                f.bytes.to_string(),
                f.sha256[..16].to_string(),
            ]);
        }
        print!("{}", t.render());
        for h in &report.manifest.host {
            println!(
                "host tract {}: {}/{} correct on the shard",
                h.model, h.correct, h.images
            );
        }
        println!(
            "bundle {} for {} ({}); run it with: distill-edge bench --target {}",
            out.display(),
            target.name,
            target.triple,
            target.name
        );
    }
    Ok(())
}
