//! `bench-<target>`: the target's bundle run on a device (qemu, local or ssh), compared with
//! the host (`bench.json`). A failed bench is a [`CheckFailed`](crate::exit::CheckFailed).

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::bundle::BUNDLE_DIR;
use crate::board::TargetSpec;
use crate::device::SshSettings;
use crate::device::bench::run_bundle;
use crate::fsutil::write_json_atomic;
use crate::pipeline::stage::{Context, Inputs, Stage};
use crate::progress::Reporter;

/// The bench results ([`crate::device::bench::BenchReport`]).
pub const BENCH_FILE: &str = "bench.json";

/// How long the bundle may run on the device.
const BENCH_TIMEOUT: Duration = Duration::from_secs(900);

/// Runs one target's bundle on its device.
pub struct Bench {
    /// The target.
    pub target: TargetSpec,
    /// `--device`.
    pub device: Option<String>,
    /// ssh connection settings.
    pub ssh: SshSettings,
}

impl Stage for Bench {
    fn name(&self) -> String {
        format!("bench-{}", self.target.name)
    }

    fn needs(&self) -> Vec<String> {
        vec![super::bundle::stage_name(&self.target)]
    }

    fn inputs(&self) -> Result<serde_json::Value> {
        Ok(Inputs::default().add("device", &self.device)?.done())
    }

    fn run(&self, ctx: &Context, dir: &Path, reporter: &mut Reporter) -> Result<()> {
        let transport = crate::device::open(&self.target, self.device.as_deref(), &self.ssh)?;
        reporter.line(format!("running the bundle on {}", transport.describe()));
        let bundle = ctx
            .dir(&super::bundle::stage_name(&self.target))
            .join(BUNDLE_DIR);
        let report = run_bundle(
            &self.target,
            &bundle,
            transport.as_ref(),
            &Default::default(),
            BENCH_TIMEOUT,
        )?;
        write_json_atomic(&dir.join(BENCH_FILE), &report)?;
        for n in &report.notes {
            reporter.line(format!("note: {n}"));
        }
        report.verdict()?;
        Ok(())
    }
}
