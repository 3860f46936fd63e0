//! `distill-edge build --target T --model M.onnx`: cross build and bundle.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::board::TargetSpec;
use crate::board::bundle::{
    BundleInputs, ModelFeed, make_shard, prepare_models, unlabelled_shard, write_bundle_with,
};
use crate::board::cross::build_runner;
use crate::cli::{BuildArgs, GlobalArgs};
use crate::data;
use crate::hostcheck::ModelInfo;
use crate::infer::preprocess::Preprocess;
use crate::progress::Reporter;
use crate::table::Table;
use distill_edge_schema::{BenchSettings, Manifest, Shard};

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

/// `build`: the whole pipeline, or with `--model` the bundle alone.
pub fn run(args: &BuildArgs, global: &GlobalArgs) -> Result<()> {
    match &args.model {
        Some(model) => bundle_only(args, model, global),
        None => pipeline(args, global),
    }
}

/// The default pipeline config: `configs/pipeline/fashion-mnist.toml` here, else the copy
/// shipped in this binary (written out to the cache).
fn default_pipeline() -> PathBuf {
    use crate::board::embedded::{DEFAULT_PIPELINE, materialise};
    let local = PathBuf::from(DEFAULT_PIPELINE);
    if local.is_file() {
        return local;
    }
    // Loading reports the missing file when the cache cannot be written either.
    materialise().map_or(local, |root| root.join(DEFAULT_PIPELINE))
}

fn pipeline(args: &BuildArgs, global: &GlobalArgs) -> Result<()> {
    use crate::pipeline::{BuildOptions, BuildResult, build, config::PipelineConfig, human_secs};
    let path = args.config.clone().unwrap_or_else(default_pipeline);
    let (mut config, _profiles) = PipelineConfig::load(&path, args.profile.as_deref())?;
    if let Some(b) = args.backend {
        config.backend = Some(b.into());
    }
    if let Some(n) = args.devices {
        config.devices = Some(n);
    }
    config
        .backend
        .unwrap_or_default()
        .autodiff_devices(config.devices.unwrap_or(1))?;
    let targets = args
        .target
        .iter()
        .map(|t| resolve_target(t, args))
        .collect::<Result<Vec<_>, _>>()?;
    let profile = args.profile.clone().unwrap_or_else(|| "base".into());
    let reporter = Reporter::new(global.quiet);
    reporter.line(format!(
        "building {} ({}, profile {profile}) for {}",
        config.name,
        path.display(),
        if targets.is_empty() {
            "the host only".to_string()
        } else {
            targets
                .iter()
                .map(|t| t.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    let started = Instant::now();
    // `_lock` keeps the run directory locked until the report is written.
    let BuildResult {
        mut summary,
        failure,
        lock: _lock,
    } = build(
        &config,
        &BuildOptions {
            targets,
            device: args.device.clone(),
            from: args.from.clone(),
            verbose: global.verbose,
            quiet: global.quiet,
            connect_timeout: std::time::Duration::from_secs(args.connect_timeout),
            ssh_options: args.ssh_options.clone(),
        },
    )?;
    let report_html = summary.run_dir.join("report.html");
    if failure.is_none() && summary.up_to_date && report_html.exists() {
        summary.report = Some(report_html.clone());
        if global.json {
            return super::print_json(&summary);
        }
        if !global.quiet {
            println!(
                "nothing to do: every stage of {} is up to date (report: {})",
                config.name,
                report_html.display()
            );
        }
        return Ok(());
    }
    // The dataset as the stages loaded it; loaded here only when no stage needed it.
    let dataset = summary.dataset.clone().unwrap_or_else(|| {
        crate::data::load(&config.data).map_or_else(
            |_| config.data.name().to_string(),
            |s| s.describe(config.data.name()),
        )
    });
    let input = crate::pipeline::gather::report_input(&config, &summary, &profile, &dataset);
    let files = match crate::report::write_report(&summary.run_dir, &input) {
        Ok(files) => files,
        // A failed stage's error matters more than the report's.
        Err(e) => {
            return Err(failure.unwrap_or_else(|| {
                anyhow::Error::new(e).context(format!(
                    "writing the report in {}",
                    summary.run_dir.display()
                ))
            }));
        }
    };
    summary.report = Some(files.html.clone());
    if global.json {
        super::print_json(&summary)?;
    } else if !global.quiet {
        print!("{}", crate::report::summary(&input, &files.html));
        if failure.is_none() {
            println!(
                "build finished in {}",
                human_secs(started.elapsed().as_secs_f64())
            );
        }
    }
    // The report shows the failed stage; its error still decides the exit code.
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A target by name or path, with `--optimize` applied.
fn resolve_target(name: &str, args: &BuildArgs) -> Result<TargetSpec> {
    let mut target = TargetSpec::resolve(name)?;
    if let Some(goal) = args.optimize {
        target.optimize = goal;
    }
    Ok(target)
}

/// Loads `model` in tract (fed as `io` says) and runs the first image of `shard` through it.
fn smoke_test(
    model: &Path,
    shard: &distill_edge_schema::Shard,
    io: &crate::infer::ModelIo,
) -> Result<()> {
    let engine = crate::infer::tract::TractEngine::load_with(model, io)?;
    let [c, h, w] = shard.shape;
    if let Some(first) = shard.images.get(..c * h * w)
        && engine.input_shape() == [c, h, w]
    {
        engine.run_raw(crate::infer::Batch {
            data: first,
            shape: [1, c, h, w],
        })?;
    }
    Ok(())
}

/// Every operator of the models that tract cannot run, all listed in one error.
pub fn refuse_unsupported_ops(models: &[&Path]) -> Result<()> {
    let mut found = Vec::new();
    for m in models {
        let bytes = std::fs::read(m).with_context(|| format!("reading {}", m.display()))?;
        let ops = crate::infer::tract::unsupported_ops(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", m.display()))?;
        found.extend(
            ops.into_iter()
                .map(|o| format!("{} ({}: {})", o.op_type, m.display(), o.node)),
        );
    }
    if !found.is_empty() {
        anyhow::bail!(
            "tract cannot run {} node(s): {}; no runner was built",
            found.len(),
            found.join(", ")
        );
    }
    Ok(())
}

/// Builds the runner for one target and writes the bundle of a given model.
fn bundle_only(args: &BuildArgs, model: &Path, global: &GlobalArgs) -> Result<()> {
    let reporter = Reporter::new(global.quiet);
    let [target] = &args.target[..] else {
        anyhow::bail!("--model builds one bundle: give exactly one --target");
    };
    let target = resolve_target(target, args)?;
    // A target asking for ONNX Runtime without its library fails here, in one line.
    crate::board::engines::ort_library(&target)?;
    let info = ModelInfo::read(model)?;
    // All unsupported operators at once, before the (slow) cross build.
    let all_models: Vec<&Path> = std::iter::once(model).chain(args.int8.as_deref()).collect();
    refuse_unsupported_ops(&all_models)?;
    let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
    let pre = Preprocess::resolve(
        model,
        &bytes,
        &args.preprocess.overrides(),
        info.normalization.as_ref(),
    )?;
    let ours = info.architecture.is_some() || info.normalization.is_some();
    let dir = model.parent().unwrap_or(Path::new("."));
    let data_given = args.config.is_some()
        || args.data.data.is_some()
        || args.data.data_path.is_some()
        || dir.join(crate::train::supervised::CONFIG_FILE).is_file();
    let random = args
        .preprocess
        .random_inputs
        .or((!data_given && !ours).then_some(args.shard_size));
    let (shard, inputs) = if let Some(n) = random {
        let images = pre.random_inputs(n, args.preprocess.input_seed);
        (
            unlabelled_shard(pre.input, images),
            format!(
                "{n} seeded random inputs (seed {}): latency, memory, profile and output parity only, no accuracy",
                args.preprocess.input_seed
            ),
        )
    } else {
        let source = super::data_for_model(dir, args.config.as_deref(), &args.data)?;
        let splits = data::load(&source)?;
        let shard = if ours {
            let norm = info.normalization.clone().context(
                "the model has no normalisation metadata (export it with distill-edge export, or give --mean/--std)",
            )?;
            make_shard(&splits.test, &norm, args.shard_size)
        } else {
            let picks: Vec<usize> = (0..args.shard_size.min(splits.test.len())).collect();
            Shard {
                shape: pre.input,
                classes: splits.test.classes.len(),
                labels: picks.iter().map(|&i| splits.test.labels[i]).collect(),
                images: pre.images(&splits.test, &picks)?,
            }
        };
        let inputs = format!("{} labelled test images of {}", shard.len(), source.name());
        (shard, inputs)
    };
    let io = if ours {
        crate::infer::ModelIo::default()
    } else {
        pre.model_io()
    };
    // Fail on a model the host engine cannot run before the (slow) cross build and before
    // the bundle's temporary directory, with the error naming the file given.
    for m in &all_models {
        smoke_test(m, &shard, &io)?;
    }

    let mut models = vec![("fp32".to_string(), model.to_path_buf())];
    if let Some(q) = &args.int8 {
        models.push(("int8".to_string(), q.clone()));
    }
    let feed = ModelFeed {
        io,
        logits_output: if ours { 0 } else { pre.logits_output },
        inputs,
    };
    reporter.line("host reference outputs with tract; converting the models to NNEF");
    let prepared = prepare_models(&models, &shard, &feed)?;
    let format = prepared.format();
    if let Some(why) = prepared.onnx_fallback() {
        reporter.line(format!("shipping ONNX and the tract-onnx runner: {why}"));
    }
    let t = Instant::now();
    let runner = match &args.runner {
        Some(r) if r.is_file() => r.clone(),
        Some(r) => anyhow::bail!("--runner {}: no such file", r.display()),
        None => {
            reporter.line(format!(
                "cross-compiling the runner ({} engine{}) for {} ({})",
                format.name(),
                if target.wants_ort() {
                    " + ONNX Runtime"
                } else {
                    ""
                },
                target.name,
                target.triple
            ));
            build_runner(&target, format)?
        }
    };
    let cross_build_seconds = t.elapsed().as_secs_f64();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("dist").join(&target.name));
    reporter.line(format!(
        "writing bundle {} ({}; host reference with tract)",
        out.display(),
        feed.inputs
    ));
    let manifest = write_bundle_with(
        &out,
        &BundleInputs {
            target: &target,
            runner: &runner,
            models: &prepared,
            shard: &shard,
            bench: BenchSettings {
                batches: args.batches.clone(),
                warmup: args.warmup,
                runs: args.runs,
                min_seconds: args.seconds,
                threads: args.device_threads.max(1),
                warmup_seconds: args.warmup_seconds,
                profile: false,
            },
        },
        &feed,
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
            match h.correct {
                Some(c) => println!(
                    "host tract {}: {c}/{} correct on the shard",
                    h.model, h.images
                ),
                None => println!(
                    "host tract {}: outputs of {} inputs recorded",
                    h.model, h.images
                ),
            }
        }
        for m in &report.manifest.models {
            match &m.nnef_check {
                Some(c) => println!(
                    "{}: tract NNEF, {} against the ONNX model on {} images (max |diff| {:e}, tolerance {})",
                    m.name,
                    if c.bit_identical {
                        "bit-identical"
                    } else {
                        "within tolerance"
                    },
                    c.images,
                    c.max_abs_diff,
                    c.tolerance
                ),
                None => println!("{}: ONNX", m.name),
            }
        }
        if let Some(why) = &report.manifest.onnx_fallback {
            println!("runner engine: onnx (tract-onnx), because {why}");
        } else {
            println!("runner engine: nnef (tract-core + tract-nnef)");
        }
        println!("inputs: {}", report.manifest.inputs);
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
