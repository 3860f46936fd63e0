//! `distill-edge bench --target T [--device D]`: run a bundle on a device and compare.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::board::TargetSpec;
use crate::cli::{BenchArgs, GlobalArgs};
use crate::device::baseline;
use crate::device::bench::{BenchReport, Outcome, RunnerOverrides, run_bundle};
use crate::eval::latency::{LatencyStats, latency_table};
use crate::progress::Reporter;
use crate::table::Table;

/// The runner options of `args`.
fn overrides(args: &BenchArgs) -> RunnerOverrides {
    RunnerOverrides {
        runs: args.runs,
        threads: args.device_threads,
        seconds: args.seconds,
        warmup: args.warmup,
        warmup_seconds: args.warmup_seconds,
        profile: args.profile,
    }
}

/// Runs the bundle and prints the comparison.
pub fn run(args: &BenchArgs, global: &GlobalArgs) -> Result<()> {
    if args.devices.is_some() || args.device.len() > 1 {
        return run_fleet(args, global);
    }
    let reporter = Reporter::new(global.quiet);
    let target_name = args.target.as_deref().context("--target is required")?;
    let target = TargetSpec::resolve(target_name)?;
    let bundle = args
        .bundle
        .clone()
        .unwrap_or_else(|| PathBuf::from("dist").join(&target.name));
    let mut transport = crate::device::open(
        &target,
        args.device.first().map(String::as_str),
        &crate::device::SshSettings {
            connect_timeout: Duration::from_secs(args.connect_timeout),
            options: args.ssh_options.clone(),
        },
    )?;
    if let Some(cpus) = &args.cpus {
        transport.pin(cpus)?;
    }
    reporter.line(format!(
        "running {} on {}{}",
        bundle.display(),
        transport.describe(),
        args.cpus
            .as_deref()
            .map_or(String::new(), |c| format!(", pinned to CPUs {c}"))
    ));
    if args.warn_regression > args.fail_regression {
        anyhow::bail!(
            "--warn-regression {} is above --fail-regression {}",
            args.warn_regression,
            args.fail_regression
        );
    }
    // A bad baseline is refused before the run.
    let baseline = args
        .baseline
        .as_deref()
        .map(|p| baseline::load(p, &target.name))
        .transpose()?;
    let mut report = run_bundle(
        &target,
        &bundle,
        transport.as_ref(),
        &overrides(args),
        Duration::from_secs(args.timeout),
    )?;
    if let Some(b) = &baseline {
        baseline::compare_with(
            &mut report,
            b,
            &target,
            baseline::Thresholds {
                warn_pct: args.warn_regression,
                fail_pct: args.fail_regression,
            },
        );
    }
    if let Some(path) = &args.save_baseline {
        baseline::save(path, &report)?;
        reporter.line(format!("baseline saved to {}", path.display()));
    }
    if let Some(path) = &args.junit {
        crate::fsutil::write_atomic(path, baseline::junit_xml(&[&report]).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if global.json {
        super::print_json(&report)?;
    } else if !global.quiet {
        print_human(&report);
    }
    for c in report
        .checks
        .iter()
        .filter(|c| c.outcome == Outcome::Warning)
    {
        reporter.line(format!("warning: {}: {}", c.name, c.message));
    }
    report.verdict()?;
    Ok(())
}

/// Several boards in parallel: one row each, one result file each, a failed board failing
/// only its row (the command then exits non-zero: 1 when a board could not run, else 3).
fn run_fleet(args: &BenchArgs, global: &GlobalArgs) -> Result<()> {
    use crate::device::fleet::{FleetSettings, boards_from_urls, read_inventory, run_boards};
    let reporter = Reporter::new(global.quiet);
    if args.baseline.is_some() || args.save_baseline.is_some() {
        anyhow::bail!(
            "--baseline and --save-baseline compare one board: run them with a single --device"
        );
    }
    let boards = match &args.devices {
        Some(path) => read_inventory(path, &args.tag)?,
        None => boards_from_urls(&args.device),
    };
    reporter.line(format!(
        "running on {} boards in parallel: {}",
        boards.len(),
        boards
            .iter()
            .map(|b| format!("{} ({})", b.name, b.url))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let settings = FleetSettings {
        default_target: args.target.as_deref(),
        bundle: args.bundle.as_deref(),
        cpus: args.cpus.as_deref(),
        overrides: overrides(args),
        timeout: Duration::from_secs(args.timeout),
        ssh: crate::device::SshSettings {
            connect_timeout: Duration::from_secs(args.connect_timeout),
            options: args.ssh_options.clone(),
        },
    };
    let rows = run_boards(&boards, &settings, &|_, _| {});
    std::fs::create_dir_all(&args.results)
        .with_context(|| format!("creating {}", args.results.display()))?;
    for row in &rows {
        let path = args.results.join(format!("{}.json", row.name));
        crate::fsutil::write_json_atomic(&path, row)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.junit {
        let mut reports: Vec<BenchReport> = Vec::new();
        for row in &rows {
            let mut r = row.result.clone().unwrap_or_else(|| BenchReport {
                target: row.target.clone(),
                device: row.url.clone(),
                ..BenchReport::default()
            });
            if let Some(e) = &row.error {
                r.check(format!("{} ran", row.name), Outcome::Failed, e.clone());
            }
            reports.push(r);
        }
        let refs: Vec<&BenchReport> = reports.iter().collect();
        crate::fsutil::write_atomic(path, baseline::junit_xml(&refs).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if global.json {
        super::print_json(&serde_json::json!({ "devices": rows }))?;
    } else if !global.quiet {
        let mut t = Table::new([
            "board",
            "target",
            "device",
            "result",
            "batch-1 p50 ms",
            "why",
        ]);
        for row in &rows {
            let p50: Vec<String> = row
                .result
                .iter()
                .flat_map(|r| &r.models)
                .map(|m| {
                    format!(
                        "{} {}",
                        m.label(),
                        m.p50_ms.map_or("-".into(), |p| format!("{p:.3}"))
                    )
                })
                .collect();
            let (result, why) = match (&row.result, &row.error) {
                (_, Some(e)) => ("ERROR".to_string(), e.clone()),
                (Some(r), None) if r.passed => (
                    "ok".to_string(),
                    if r.emulated {
                        crate::device::bench::EMULATED.to_string()
                    } else {
                        String::new()
                    },
                ),
                (Some(r), None) => ("FAIL".to_string(), r.failures.join("; ")),
                (None, None) => ("?".to_string(), String::new()),
            };
            t.row([
                row.name.clone(),
                row.target.clone(),
                row.result
                    .as_ref()
                    .map_or(row.url.clone(), |r| r.device.clone()),
                result,
                p50.join(", "),
                why,
            ]);
        }
        print!("{}", t.render());
        println!("results: {}/<board>.json", args.results.display());
    }
    let errors: Vec<String> = rows
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.name)))
        .collect();
    if !errors.is_empty() {
        anyhow::bail!(
            "{} of {} boards did not run: {}",
            errors.len(),
            rows.len(),
            errors.join("; ")
        );
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(crate::exit::CheckFailed(format!(
            "device check failed on {}",
            failed.join(", ")
        ))
        .into());
    }
    Ok(())
}

/// Ops shown per model in the terminal (all of them are in the JSON).
const TOP_OPS: usize = 8;

/// Load, plan, first run and warm-up per model and batch; memory peaks.
fn print_phases(r: &BenchReport) {
    let mut t = Table::new([
        "model",
        "batch",
        "load ms",
        "plan ms",
        "first run ms",
        "warm-up",
        "VmHWM load/plan/runs MiB",
    ]);
    for m in &r.models {
        let d = &m.device;
        let mib =
            |k: Option<u64>| k.map_or("?".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
        let memory = d.memory.as_ref().map_or("n/a".to_string(), |mem| {
            format!(
                "{} / {} / {}",
                mib(mem.after_load_kib),
                mib(mem.after_plan_kib),
                mib(mem.after_runs_kib)
            )
        });
        for p in &d.phases {
            t.row([
                m.label(),
                p.batch.to_string(),
                d.load_ms.map_or("?".into(), |v| format!("{v:.2}")),
                // ONNX Runtime optimises while it loads and plans a shape in its first run.
                if d.engine == distill_edge_schema::ORT {
                    "in load".to_string()
                } else {
                    format!("{:.2}", p.plan_ms)
                },
                format!("{:.3}", p.first_run_ms),
                format!("{} runs, {:.1} ms", p.warmup_runs, p.warmup_ms),
                memory.clone(),
            ]);
        }
    }
    print!("{}", t.render());
}

/// The slowest nodes of each profiled model, and the state-reuse comparison.
fn print_profiles(r: &BenchReport) {
    for m in &r.models {
        if let Some(s) = &m.device.state_reuse {
            println!(
                "{}: batch-1 p50 {:.3} ms with one reused tract state, {:.3} ms with a fresh state per run",
                m.label(),
                s.reused.p50_ms,
                s.fresh.p50_ms
            );
        }
        let Some(p) = &m.device.profile else {
            continue;
        };
        let mut t = Table::new(["node", "op", "ms/run", "share", "MACs"]);
        for o in p.ops.iter().take(TOP_OPS) {
            t.row([
                o.name.clone(),
                o.op.clone(),
                format!("{:.4}", o.ms),
                format!("{:.1}%", 100.0 * o.share),
                o.macs.map_or(String::new(), |m| m.to_string()),
            ]);
        }
        println!(
            "{}: per-node profile at batch {} ({} runs, {:.3} ms/run in nodes; top {} of {} nodes):",
            m.label(),
            p.batch,
            p.runs,
            p.total_ms,
            TOP_OPS.min(p.ops.len()),
            p.ops.len()
        );
        print!("{}", t.render());
    }
}

/// `correct/images`, or `n/a` on unlabelled inputs.
fn count(correct: Option<usize>, images: usize) -> String {
    correct.map_or_else(|| "n/a".to_string(), |c| format!("{c}/{images}"))
}

/// The human table of a device report.
pub fn print_human(r: &BenchReport) {
    let mut t = Table::new([
        "model",
        "engine",
        "host top-1",
        "device top-1",
        "bit-identical",
        "max |diff|",
        "parity",
    ]);
    for m in &r.models {
        t.row([
            m.model.clone(),
            m.device.engine.clone(),
            count(m.host_correct, m.images),
            count(m.device_correct, m.images),
            if m.bit_identical { "yes" } else { "no" }.to_string(),
            format!("{:.2e}", m.parity.max_abs),
            if m.parity.ok { "ok" } else { "FAIL" }.to_string(),
        ]);
    }
    println!("{}", t.render());
    let rows: Vec<_> = r
        .models
        .iter()
        .flat_map(|m| {
            m.device
                .latency
                .iter()
                .map(|s| (m.label(), s.batch, LatencyStats::from(s)))
        })
        .collect();
    println!("{}", latency_table("model", &rows));
    print_phases(r);
    print_profiles(r);
    if let Some(e) = &r.environment {
        println!(
            "environment: {} ({} cores; tract kind {}, kernels {}), kernel {}, governor {}, {} MHz, {}, {} thread(s), cpus {}, runner sha256 {}",
            e.cpu_model.as_deref().unwrap_or("unknown CPU"),
            e.cores.map_or("?".into(), |c| c.to_string()),
            e.tract_cpu_kind,
            e.kernel_family,
            e.kernel.as_deref().unwrap_or("?"),
            e.governor.as_deref().unwrap_or("n/a"),
            e.frequency_khz
                .map_or("n/a".into(), |f| (f / 1000).to_string()),
            e.temperature_c
                .map_or("temperature n/a".into(), |t| format!("{t:.1} °C")),
            e.threads,
            e.affinity.as_deref().unwrap_or("?"),
            e.runner_sha256
                .as_deref()
                .map_or("?", |d| &d[..d.len().min(16)]),
        );
    }
    if let Some(cpu) = &r.emulated_cpu {
        println!("emulated CPU: {cpu} ({})", crate::device::bench::EMULATED);
    }
    if let Some(d) = &r.cpu_description {
        println!("CPU description: {d}");
    }
    let models: Vec<String> = r
        .sizes
        .models
        .iter()
        .map(|m| {
            format!(
                "{} {} B (weights {} B)",
                m.model, m.file_bytes, m.weight_bytes
            )
        })
        .collect();
    println!(
        "sizes: bundle {} B, runner {} B, {}",
        r.sizes.bundle_bytes,
        r.sizes.runner_bytes,
        models.join(", ")
    );
    if !r.inputs.is_empty() {
        println!("inputs: {}", r.inputs);
    }
    println!(
        "{} on {} ({}), {:.1}s round trip; batch-1 p50 budget {} ms{}",
        r.target,
        r.device,
        r.arch,
        r.seconds,
        r.latency_budget_ms,
        if r.emulated {
            " (not checked: emulated)"
        } else {
            ""
        }
    );
    for n in &r.notes {
        println!("note: {n}");
    }
    let mut t = Table::new(["check", "outcome", ""]);
    for c in &r.checks {
        t.row([
            c.name.clone(),
            match c.outcome {
                Outcome::Passed => "ok",
                Outcome::Warning => "WARN",
                Outcome::Failed => "FAIL",
                Outcome::Skipped => "skipped",
            }
            .to_string(),
            c.message.clone(),
        ]);
    }
    print!("{}", t.render());
}
