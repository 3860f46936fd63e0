//! `distill-edge bench --target T [--device D]`: run a bundle on a device and compare.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::board::TargetSpec;
use crate::cli::{BenchArgs, GlobalArgs};
use crate::device::bench::{BenchReport, RunnerOverrides, run_bundle};
use crate::eval::latency::{LatencyStats, latency_table};
use crate::progress::Reporter;
use crate::table::Table;

/// Runs the bundle and prints the comparison.
pub fn run(args: &BenchArgs, global: &GlobalArgs) -> Result<()> {
    let reporter = Reporter::new(global.quiet);
    let target = TargetSpec::resolve(&args.target)?;
    let bundle = args
        .bundle
        .clone()
        .unwrap_or_else(|| PathBuf::from("dist").join(&target.name));
    let transport = crate::device::open(
        &target,
        args.device.as_deref(),
        &crate::device::SshSettings {
            connect_timeout: Duration::from_secs(args.connect_timeout),
            options: args.ssh_options.clone(),
        },
    )?;
    reporter.line(format!(
        "running {} on {}",
        bundle.display(),
        transport.describe()
    ));
    let report = run_bundle(
        &target,
        &bundle,
        transport.as_ref(),
        &RunnerOverrides {
            runs: args.runs,
            threads: args.device_threads,
            seconds: None,
        },
        Duration::from_secs(args.timeout),
    )?;
    if global.json {
        super::print_json(&report)?;
    } else if !global.quiet {
        print_human(&report);
    }
    report.verdict()?;
    Ok(())
}

/// The human table of a device report.
pub fn print_human(r: &BenchReport) {
    let mut t = Table::new([
        "model",
        "host top-1",
        "device top-1",
        "bit-identical",
        "max |diff|",
        "parity",
    ]);
    for m in &r.models {
        t.row([
            m.model.clone(),
            format!("{}/{}", m.host_correct, m.images),
            format!("{}/{}", m.device_correct, m.images),
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
                .map(|s| (m.model.clone(), s.batch, LatencyStats::from(s)))
        })
        .collect();
    println!("{}", latency_table("model", &rows));
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
}
