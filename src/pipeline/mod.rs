//! `distill-edge build`: the pipeline as a build. The stages ([`stages::all`], one file each
//! under `stages/`) run through one machinery ([`stage::run_stages`]): every stage's artifacts
//! are fingerprinted by its inputs and its upstream stages' fingerprints; a stage runs only
//! when its fingerprint changed, an artifact is missing or corrupt, or `--from` forces it.
//! Work happens in `runs/<name>/<stage>.partial/` and is swapped in only when the stage
//! succeeds, so a failed stage keeps the previous good artifacts and a killed one resumes from
//! its checkpoint. One build at a time per run directory: a second one is refused at once
//! (see [`crate::fsutil::DirLock`]), and temporary files of killed builds are removed.

pub mod config;
pub mod gather;
pub mod stage;
pub mod stages;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::board::TargetSpec;
use config::PipelineConfig;

pub use stage::{LOG_FILE, STAGE_FILE, StageOutcome, StageRecord};
pub use stages::bench::BENCH_FILE;
pub use stages::check::HostCheckRecord;
pub use stages::training::{EVAL_FILE, StageEval};

/// How to run the build.
pub struct BuildOptions {
    /// Targets to bundle and validate.
    pub targets: Vec<TargetSpec>,
    /// `--device` (default: qemu for cross targets, local for the host).
    pub device: Option<String>,
    /// Rerun this stage and everything after it.
    pub from: Option<String>,
    /// Stage details on the terminal too.
    pub verbose: bool,
    /// Nothing but errors on the terminal.
    pub quiet: bool,
    /// ssh connect timeout.
    pub connect_timeout: Duration,
    /// Extra ssh options.
    pub ssh_options: Vec<String>,
}

/// What a build did.
#[derive(Clone, Debug, Serialize)]
pub struct BuildSummary {
    /// Run directory.
    pub run_dir: PathBuf,
    /// Stages in order.
    pub stages: Vec<StageOutcome>,
    /// Report files, when written.
    pub report: Option<PathBuf>,
    /// Nothing had to be rebuilt.
    pub up_to_date: bool,
    /// The dataset as a stage loaded it, e.g. `synthetic (400 train / 200 test, 1x28x28)`;
    /// `None` when no stage needed it.
    pub dataset: Option<String>,
}

/// A build's summary, and the error of the stage that failed, if one did (the summary then
/// shows it as failed and the stages after it as skipped).
#[derive(Debug)]
pub struct BuildResult {
    /// What ran.
    pub summary: BuildSummary,
    /// The failed stage's error.
    pub failure: Option<anyhow::Error>,
    /// The run directory's lock, held until the caller has written the report.
    pub lock: crate::fsutil::DirLock,
}

/// Runs every stage that is not up to date. An error is returned only when no stage could
/// run (an unknown `--from`, an unreadable runner source); a failed stage is in
/// [`BuildResult::failure`].
pub fn build(config: &PipelineConfig, opts: &BuildOptions) -> Result<BuildResult> {
    let root = config.run_dir();
    let ctx = stage::Context::new(root.clone(), config.data.clone(), opts.quiet, opts.verbose)
        .with_compute(
            config.backend.unwrap_or_default(),
            config.devices.unwrap_or(1),
        )
        .with_validation(config.validation.clone());
    let list = stages::all(config, opts);
    let run = stage::run_stages(&list, &ctx, opts.from.as_deref())?;
    let up_to_date = run
        .outcomes
        .iter()
        .all(|o| o.status == stage::status::UP_TO_DATE);
    let dataset = ctx.describe_loaded();
    Ok(BuildResult {
        summary: BuildSummary {
            run_dir: root,
            stages: run.outcomes,
            report: None,
            up_to_date,
            dataset,
        },
        failure: run.failure,
        lock: run.lock,
    })
}

/// `95` -> `1m35s`.
pub fn human_secs(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
