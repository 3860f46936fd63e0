//! `distill-edge check`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::cli::{CheckArgs, GlobalArgs};
use crate::data;
use crate::eval::latency::latency_table;
use crate::exit::CheckFailed;
use crate::hostcheck::{
    EngineReport, LatencyPlan, ModelInfo, TestInputs, check_engines, check_engines_on, verdict,
};
use crate::infer::preprocess::Preprocess;
use crate::infer::{Engine, EngineKind, ModelIo, load_engine_with, load_engines_with};
use crate::progress::Reporter;
use crate::table::{Table, pct};
use crate::train::Checkpoint;

/// Everything `check` measured, and whether it passed.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// The model and its metadata.
    pub model: ModelInfo,
    /// Test images used.
    pub test_images: usize,
    /// What the inputs were: a labelled test split, or seeded random inputs (no accuracy).
    pub inputs: String,
    /// How the inputs were prepared.
    pub preprocess: Preprocess,
    /// burn's top-1 from the checkpoint, when given.
    pub burn_accuracy: Option<f64>,
    /// Per engine.
    pub engines: Vec<EngineReport>,
    /// Threads the engines used.
    pub threads: usize,
    /// Every check passed.
    pub passed: bool,
    /// Why not.
    pub failures: Vec<String>,
}

/// The engines `--engines` asks for (an engine named there must load), or by default tract
/// and, when available, ONNX Runtime.
fn engines_for(
    args: &CheckArgs,
    path: &Path,
    threads: usize,
    io: &ModelIo,
    reporter: &Reporter,
) -> Result<Vec<Box<dyn Engine>>> {
    if args.engines.is_empty() {
        let loaded = load_engines_with(path, &EngineKind::ALL, threads, io)?;
        // ONNX Runtime is optional by default: say why it is left out.
        for note in &loaded.skipped {
            reporter.line(note);
        }
        return Ok(loaded.engines);
    }
    args.engines
        .iter()
        .map(|name| -> Result<Box<dyn Engine>> {
            let kind: EngineKind = name
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--engines {name}: {e}"))?;
            Ok(load_engine_with(kind, path, threads, io)?)
        })
        .collect()
}

/// Validates an ONNX model on the host.
pub fn run(args: &CheckArgs, global: &GlobalArgs) -> Result<()> {
    let reporter = Reporter::new(global.quiet);
    let info = ModelInfo::read(&args.model)?;
    let threads = global.threads.unwrap_or(1);
    if threads > 1 {
        // tract is single-threaded unless given an executor for its matrix kernels.
        tract_linalg::multithread::set_default_executor(
            tract_linalg::multithread::Executor::multithread(threads),
        );
    }
    let ckpt = args
        .checkpoint
        .as_deref()
        .map(|p| -> Result<_> {
            let p = super::eval::model_file(p)?;
            let c = Checkpoint::read(&p)?;
            let net = c.load_model(&crate::runtime::cpu(), &p)?;
            Ok((p, c, net))
        })
        .transpose()?;
    let bytes =
        std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let metadata_norm = info.normalization.clone().or_else(|| {
        ckpt.as_ref()
            .map(|(_, c, _)| c.header.normalization.clone())
    });
    let pre = Preprocess::resolve(
        &args.model,
        &bytes,
        &args.preprocess.overrides(),
        metadata_norm.as_ref(),
    )?;
    // A model without distill-edge metadata is fed as the preprocessing says.
    let ours = info.architecture.is_some() || info.normalization.is_some();
    let io = if ours {
        ModelIo::default()
    } else {
        pre.model_io()
    };
    let engines = engines_for(args, &args.model, threads, &io, &reporter)?;

    let dir = match (&ckpt, args.model.parent()) {
        (Some((p, _, _)), _) => p.parent().unwrap_or(Path::new(".")).to_path_buf(),
        (None, Some(d)) => d.to_path_buf(),
        (None, None) => ".".into(),
    };
    let data_given = args.config.is_some()
        || args.data.data.is_some()
        || args.data.data_path.is_some()
        || dir.join(crate::train::supervised::CONFIG_FILE).is_file();
    if args.max_accuracy_drop.is_some() && ckpt.is_none() {
        bail!("--max-accuracy-drop needs --checkpoint (the accuracy to compare with)");
    }
    let plan = LatencyPlan {
        batches: args.batches.clone(),
        warmup: args.warmup,
        warmup_seconds: args.warmup_seconds,
        runs: args.runs,
        min_seconds: args.seconds,
    };
    let random = args
        .preprocess
        .random_inputs
        .or((!data_given && !ours && ckpt.is_none()).then(|| args.limit.unwrap_or(64)));
    let (burn_accuracy, reports, test_images, inputs) = if let Some(n) = random {
        let images = pre.random_inputs(n, args.preprocess.input_seed);
        let inputs = format!(
            "{n} seeded random inputs (seed {}): latency and output parity only, no accuracy",
            args.preprocess.input_seed
        );
        reporter.line(format!("inputs: {inputs}"));
        let (b, r) = check_engines_on(
            &info,
            &engines,
            ckpt.as_ref().map(|(_, _, n)| n),
            &TestInputs {
                images: &images,
                shape: pre.input,
                labels: None,
            },
            &plan,
            &reporter,
        )?;
        (b, r, n, inputs)
    } else {
        let source = super::data_for_model(&dir, args.config.as_deref(), &args.data)?;
        let splits = data::load(&source)?;
        let mut test = splits.test;
        if let Some(n) = args.limit {
            let keep: Vec<usize> = (0..n.min(test.len())).collect();
            test = test.subset(&keep);
        }
        let inputs = format!("{} labelled test images of {}", test.len(), source.name());
        let (b, r) = if ours {
            let norm = metadata_norm
                .clone()
                .context("the model has no normalisation metadata: pass --checkpoint")?;
            if let Some(arch) = &info.architecture
                && test.shape != arch.input
            {
                bail!(
                    "{}: test images are {}, the model expects {}",
                    source.name(),
                    test.shape,
                    arch.input
                );
            }
            check_engines(
                &info,
                &engines,
                ckpt.as_ref().map(|(_, _, n)| n),
                &test,
                &norm,
                &plan,
                &reporter,
            )?
        } else {
            let all: Vec<usize> = (0..test.len()).collect();
            let images = pre.images(&test, &all)?;
            check_engines_on(
                &info,
                &engines,
                ckpt.as_ref().map(|(_, _, n)| n),
                &TestInputs {
                    images: &images,
                    shape: pre.input,
                    labels: Some(&test.labels),
                },
                &plan,
                &reporter,
            )?
        };
        (b, r, test.len(), inputs)
    };

    let failures = verdict(burn_accuracy, &reports, args.max_accuracy_drop);
    let report = CheckReport {
        model: info,
        test_images,
        inputs,
        preprocess: pre,
        burn_accuracy,
        engines: reports,
        threads,
        passed: failures.is_empty(),
        failures,
    };
    if global.json {
        super::print_json(&report)?;
    } else if !global.quiet {
        print_human(&report);
    }
    if !report.passed {
        return Err(CheckFailed(format!("check failed: {}", report.failures.join("; "))).into());
    }
    Ok(())
}

fn print_human(r: &CheckReport) {
    let mut t = Table::new(["engine", "top-1", "max |diff|", "vs", "parity"]);
    if let Some(a) = r.burn_accuracy {
        t.row([
            "burn".to_string(),
            pct(a),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    for e in &r.engines {
        let (diff, vs, ok) = match &e.parity {
            Some(p) => (
                if p.has_non_finite() {
                    "NaN/Inf".to_string()
                } else {
                    format!("{:.2e}", p.max_abs)
                },
                e.parity_reference.clone().unwrap_or_default(),
                if p.ok { "ok" } else { "FAIL" }.to_string(),
            ),
            None => (String::new(), "(reference)".into(), String::new()),
        };
        t.row([
            e.engine.clone(),
            e.accuracy.map_or_else(|| "n/a".to_string(), pct),
            diff,
            vs,
            ok,
        ]);
    }
    println!("{}", t.render());
    let rows: Vec<_> = r
        .engines
        .iter()
        .flat_map(|e| {
            e.latency
                .iter()
                .map(|at| (e.engine.clone(), at.batch, at.stats.clone()))
        })
        .collect();
    println!("{}", latency_table("engine", &rows));
    let mut t = Table::new([
        "engine",
        "batch",
        "load ms",
        "plan ms",
        "first run ms",
        "warm-up",
    ]);
    for e in &r.engines {
        for p in &e.phases {
            t.row([
                e.engine.clone(),
                p.batch.to_string(),
                e.load_ms.map_or("-".into(), |v| format!("{v:.2}")),
                format!("{:.2}", p.plan_ms),
                format!("{:.3}", p.first_run_ms),
                format!("{} runs, {:.1} ms", p.warmup_runs, p.warmup_ms),
            ]);
        }
    }
    print!("{}", t.render());
    println!("inputs: {}", r.inputs);
    println!(
        "{}: {} bytes, {} parameters, {} MACs/image{}, {} threads",
        r.model.path.display(),
        r.model.bytes,
        r.model.parameters,
        r.model.macs.map_or("?".into(), |m| m.to_string()),
        if r.model.quantized { ", int8" } else { "" },
        r.threads
    );
}
