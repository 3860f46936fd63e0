//! `distill-edge check`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::cli::{CheckArgs, GlobalArgs};
use crate::data;
use crate::eval::latency::latency_table;
use crate::exit::CheckFailed;
use crate::hostcheck::{EngineReport, LatencyPlan, ModelInfo, check_engines, verdict};
use crate::infer::{Engine, EngineKind, load_engine, load_engines};
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
    reporter: &Reporter,
) -> Result<Vec<Box<dyn Engine>>> {
    if args.engines.is_empty() {
        let loaded = load_engines(path, &EngineKind::ALL, threads)?;
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
            Ok(load_engine(kind, path, threads)?)
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
    let engines = engines_for(args, &args.model, threads, &reporter)?;

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
    let dir = match (&ckpt, args.model.parent()) {
        (Some((p, _, _)), _) => p.parent().unwrap_or(Path::new(".")).to_path_buf(),
        (None, Some(d)) => d.to_path_buf(),
        (None, None) => ".".into(),
    };
    let source = super::data_for_model(&dir, args.config.as_deref(), &args.data)?;
    let splits = data::load(&source)?;
    let mut test = splits.test;
    if let Some(n) = args.limit {
        let keep: Vec<usize> = (0..n.min(test.len())).collect();
        test = test.subset(&keep);
    }
    let norm = info
        .normalization
        .clone()
        .or_else(|| {
            ckpt.as_ref()
                .map(|(_, c, _)| c.header.normalization.clone())
        })
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
    if args.max_accuracy_drop.is_some() && ckpt.is_none() {
        bail!("--max-accuracy-drop needs --checkpoint (the accuracy to compare with)");
    }
    let plan = LatencyPlan {
        batches: args.batches.clone(),
        warmup: args.warmup,
        runs: args.runs,
        min_seconds: 0.0,
    };
    let (burn_accuracy, reports) = check_engines(
        &info,
        &engines,
        ckpt.as_ref().map(|(_, _, n)| n),
        &test,
        &norm,
        &plan,
        &reporter,
    )?;

    let failures = verdict(burn_accuracy, &reports, args.max_accuracy_drop);
    let report = CheckReport {
        model: info,
        test_images: test.len(),
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
        t.row([e.engine.clone(), pct(e.accuracy), diff, vs, ok]);
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
    println!(
        "{}: {} bytes, {} parameters, {} MACs/image{}, {} threads",
        r.model.path.display(),
        r.model.bytes,
        r.model.parameters,
        r.model.macs.map_or("?".into(), |m| m.to_string()),
        if r.model.quantized { ", int8 QDQ" } else { "" },
        r.threads
    );
}
