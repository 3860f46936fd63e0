//! `distill-edge bench --target T [--device D]`: run a bundle on a device and compare.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::cli::{BenchArgs, GlobalArgs};
use crate::device::{DeviceSpec, Transport};
use crate::eval::latency::{LatencyStats, latency_table};
use crate::progress::Reporter;
use crate::table::Table;
use crate::target::TargetSpec;
use crate::target::validate::{DeviceReport, RunnerOverrides, run_on_device};

/// Builds the transport a `--device` value names for `target`.
pub fn transport_for(
    target: &TargetSpec,
    device: Option<&str>,
    connect_timeout: Duration,
    ssh_options: &[String],
) -> Result<Box<dyn Transport>> {
    let spec: DeviceSpec = match device {
        Some(d) => d.parse()?,
        None if target.is_host() => DeviceSpec::Local,
        None => DeviceSpec::Qemu,
    };
    if matches!(spec, DeviceSpec::Local) && !target.is_host() {
        bail!(
            "--device local: {} binaries do not run on this {} host; use --device qemu or ssh://…",
            target.triple,
            crate::target::host_triple()
        );
    }
    Ok(match spec {
        DeviceSpec::Ssh(t) => {
            let mut s = crate::device::ssh::SshTransport::new(t);
            s.connect_timeout = connect_timeout;
            s.options = ssh_options.to_vec();
            Box::new(s)
        }
        other => other.transport(Some(&target.emulator))?,
    })
}

/// Runs the bundle and prints the comparison.
pub fn run(args: &BenchArgs, global: &GlobalArgs) -> Result<()> {
    let reporter = Reporter::new(global.quiet);
    let target = TargetSpec::resolve(&args.target)?;
    let bundle = args
        .bundle
        .clone()
        .unwrap_or_else(|| PathBuf::from("dist").join(&target.name));
    let transport = transport_for(
        &target,
        args.device.as_deref(),
        Duration::from_secs(args.connect_timeout),
        &args.ssh_options,
    )?;
    reporter.line(format!(
        "running {} on {}",
        bundle.display(),
        transport.describe()
    ));
    let report = run_on_device(
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
    if !report.passed {
        bail!("device check failed: {}", report.failures.join("; "));
    }
    Ok(())
}

/// The human table of a device report.
pub fn print_human(r: &DeviceReport) {
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
