//! The end-of-build report of `distill-edge build`.
//!
//! [`write_report`] turns a [`ReportInput`] (everything the build learned: stages, models,
//! training curves, host checks, device runs, notes) into `report.md`, a self-contained
//! `report.html` and `plots/*.svg`; [`summary`] condenses the same input into a few terminal
//! lines. Both views are rendered from one intermediate document ([`doc`]), so the markdown and
//! the HTML never disagree.
//!
//! Plots are drawn with `plotters`' SVG backend without a font backend: SVG text is laid out by
//! whatever displays it, so plotters only needs its built-in width estimate, and no system font
//! is read at build or run time.

mod doc;
mod fmt;
mod html;
mod markdown;
mod plots;
mod terminal;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

pub use terminal::summary;

/// Everything the report shows about one `distill-edge build` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportInput {
    /// Run name.
    pub name: String,
    /// Profile: `quick`, `reference` or a custom one.
    pub profile: String,
    /// When the run finished, formatted by the caller (e.g. `2026-11-28 13:10 UTC`).
    pub created: String,
    /// distill-edge version.
    pub version: String,
    /// Dataset description, e.g. `fashion-mnist (60000 train / 10000 test, 1x28x28)`.
    pub dataset: String,
    /// The build stages, in order.
    pub stages: Vec<StageRow>,
    /// The models to compare (teacher, auxiliary, students).
    pub models: Vec<ModelRow>,
    /// Per-epoch metrics of the training stages.
    pub curves: Vec<Curve>,
    /// Host engine checks (may be empty).
    pub host_checks: Vec<crate::hostcheck::EngineReport>,
    /// Parallel to `host_checks`: which model each entry checked (`fp32` / `int8`).
    pub host_check_models: Vec<String>,
    /// Device validations (may be empty).
    pub devices: Vec<crate::device::bench::BenchReport>,
    /// Honest remarks to print (e.g. `short schedule: ...`).
    pub notes: Vec<String>,
}

/// One build stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRow {
    /// Stage name.
    pub stage: String,
    /// `built`, `up to date`, `failed` or `skipped`.
    pub status: String,
    /// Wall time spent in the stage, seconds.
    pub seconds: f64,
    /// Files the stage produced.
    pub artifacts: Vec<String>,
    /// Fingerprint of the stage's inputs.
    pub fingerprint: String,
    /// Why it failed (status `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One model of the comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelRow {
    /// `teacher`, `auxiliary`, `student alone`, `student InDistill`, ...
    pub role: String,
    /// Architecture name.
    pub architecture: String,
    /// Parameter count.
    pub params: usize,
    /// Multiply-accumulates per image.
    pub macs: u64,
    /// Top-1 on the test split (0..1); `None` when the classification head is untrained.
    pub accuracy: Option<f64>,
    /// Retrieval mAP with cosine similarity (0..1).
    pub map_cosine: Option<f64>,
    /// Retrieval mAP with L2 distance (0..1).
    pub map_l2: Option<f64>,
    /// Retrieval precision at `k` (0..1).
    pub precision_at_k: Option<f64>,
    /// The `k` of `precision_at_k`.
    pub k: usize,
    /// Size of the exported ONNX file, when exported.
    pub onnx_bytes: Option<u64>,
    /// Training wall time, seconds.
    pub train_seconds: f64,
    /// Top-1 on the validation images held out of training (`None`: no validation split, or
    /// the head is untrained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_accuracy: Option<f64>,
    /// Retrieval mAP (cosine) on the validation images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_map_cosine: Option<f64>,
}

/// The per-epoch history of one training stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Curve {
    /// Stage name (e.g. `teacher`, `student-indistill`).
    pub stage: String,
    /// Epochs in training order.
    pub epochs: Vec<crate::train::EpochRecord>,
    /// The split the per-epoch figures were measured on: `test`, or `validation` when the
    /// build holds validation images out.
    #[serde(default = "test_split")]
    pub evaluated_on: String,
}

fn test_split() -> String {
    "test".into()
}

/// The files [`write_report`] wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportFiles {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
    /// `plots/*.svg`, training curves first, then the latency plot.
    pub plots: Vec<PathBuf>,
}

/// A rendered plot: its file name under `plots/`, its title and its SVG text.
#[derive(Debug, Clone)]
pub(crate) struct Plot {
    file: String,
    title: String,
    svg: String,
}

/// Writes `report.md`, `report.html` and `plots/*.svg` into `dir` (each file atomically) and
/// returns their paths.
pub fn write_report(dir: &Path, input: &ReportInput) -> io::Result<ReportFiles> {
    let plots = plots::render_all(input).map_err(|e| io::Error::other(format!("plot: {e}")))?;
    let mut plot_paths = Vec::with_capacity(plots.len());
    for p in &plots {
        let path = dir.join("plots").join(&p.file);
        write_atomic(&path, p.svg.as_bytes())?;
        plot_paths.push(path);
    }
    let document = doc::build(input, &plots);
    let markdown = dir.join("report.md");
    write_atomic(&markdown, markdown::render(&document).as_bytes())?;
    let html = dir.join("report.html");
    write_atomic(&html, html::render(&document).as_bytes())?;
    Ok(ReportFiles {
        markdown,
        html,
        plots: plot_paths,
    })
}
