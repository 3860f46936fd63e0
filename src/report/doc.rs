//! The report as a list of blocks, built once and rendered as markdown and as HTML.

use super::fmt;
use super::{ModelRow, Plot, ReportInput};
use crate::device::bench::BenchReport;
use crate::hostcheck::EngineReport;

/// How a cell or callout should stand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tone {
    Plain,
    Good,
    Bad,
    Warn,
    Muted,
}

/// One table cell.
#[derive(Debug, Clone)]
pub(super) struct Cell {
    pub text: String,
    pub tone: Tone,
    /// Monospace (file names, fingerprints).
    pub code: bool,
}

impl Cell {
    fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            tone: Tone::Plain,
            code: false,
        }
    }

    fn tone(text: impl Into<String>, tone: Tone) -> Self {
        Self {
            text: text.into(),
            tone,
            code: false,
        }
    }

    fn code(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            tone: Tone::Plain,
            code: true,
        }
    }
}

/// A table; `numeric` columns are right-aligned.
#[derive(Debug, Clone)]
pub(super) struct Table {
    pub header: Vec<String>,
    pub numeric: Vec<bool>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// Columns given as `(title, numeric)`.
    fn new(columns: &[(&str, bool)]) -> Self {
        Self {
            header: columns.iter().map(|(t, _)| (*t).to_string()).collect(),
            numeric: columns.iter().map(|(_, n)| *n).collect(),
            rows: Vec::new(),
        }
    }
}

/// One block of the document.
#[derive(Debug, Clone)]
pub(super) enum Block {
    /// Level 2 or 3, with an optional badge after the text (e.g. PASS).
    Heading(u8, String, Option<(String, Tone)>),
    /// Key/value lines.
    Meta(Vec<(String, String)>),
    Para(String),
    /// A highlighted remark, optionally followed by a list.
    Callout(Tone, String, Vec<String>),
    List(Vec<String>),
    Table(Table),
    /// A plot: `file` is relative to the report (`plots/x.svg`).
    Figure {
        title: String,
        file: String,
        svg: String,
    },
}

/// The whole report.
#[derive(Debug, Clone)]
pub(super) struct Document {
    pub title: String,
    pub blocks: Vec<Block>,
}

/// What the model table prints for a missing top-1.
pub(super) const UNTRAINED: &str = "n/a (head untrained)";
/// What the device section says about emulated latency.
pub(super) const EMULATED_NOTE: &str = "emulated: latency is not a board figure";

/// Builds the document from the input and the rendered plots.
pub(super) fn build(input: &ReportInput, plots: &[Plot]) -> Document {
    let mut b = Vec::new();
    header(input, &mut b);
    stages(input, &mut b);
    models(&input.models, &mut b);
    host(input, &mut b);
    devices(&input.devices, &mut b);
    b.push(Block::Heading(2, "Notes".into(), None));
    if input.notes.is_empty() {
        b.push(Block::Para("None.".into()));
    } else {
        b.push(Block::List(input.notes.clone()));
    }
    b.push(Block::Heading(2, "Plots".into(), None));
    if plots.is_empty() {
        b.push(Block::Para(
            "No plots: no training curve and no latency was recorded.".into(),
        ));
    }
    for p in plots {
        b.push(Block::Figure {
            title: p.title.clone(),
            file: format!("plots/{}", p.file),
            svg: p.svg.clone(),
        });
    }
    Document {
        title: format!("distill-edge build report: {}", input.name),
        blocks: b,
    }
}

/// `(parity comparisons, failed ones as text)` over host checks and device runs.
pub(super) fn parity_failures(input: &ReportInput) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut failed = Vec::new();
    for (i, e) in input.host_checks.iter().enumerate() {
        if let Some(p) = &e.parity {
            checked += 1;
            if !p.ok {
                failed.push(format!(
                    "{} {} vs {}: max |diff| {}",
                    e.engine,
                    host_model(input, i),
                    e.parity_reference.as_deref().unwrap_or("reference"),
                    fmt::diff(p.max_abs)
                ));
            }
        }
    }
    for d in &input.devices {
        for m in &d.models {
            checked += 1;
            if !m.parity.ok {
                failed.push(format!(
                    "{} {}: max |diff| {}",
                    d.target,
                    m.model,
                    fmt::diff(m.parity.max_abs)
                ));
            }
        }
    }
    (checked, failed)
}

/// The model name of host check `i` (`?` when the caller gave fewer names than checks).
pub(super) fn host_model(input: &ReportInput, i: usize) -> &str {
    input.host_check_models.get(i).map_or("?", String::as_str)
}

fn header(input: &ReportInput, b: &mut Vec<Block>) {
    let mut meta = vec![
        ("run".to_string(), input.name.clone()),
        ("profile".to_string(), input.profile.clone()),
        ("dataset".to_string(), input.dataset.clone()),
        ("created".to_string(), input.created.clone()),
        ("distill-edge".to_string(), input.version.clone()),
    ];
    let total: f64 = input.stages.iter().map(|s| s.seconds).sum();
    if !input.stages.is_empty() {
        meta.push(("stages".into(), stage_counts(input, total)));
    }
    let (checked, failed) = parity_failures(input);
    if checked > 0 {
        let verdict = if failed.is_empty() {
            format!("OK ({checked} comparisons within tolerance)")
        } else {
            format!("FAIL ({} of {checked} comparisons)", failed.len())
        };
        meta.push(("parity".into(), verdict));
    }
    if !input.devices.is_empty() {
        let passed = input.devices.iter().filter(|d| d.passed).count();
        meta.push((
            "devices".into(),
            format!("{passed} of {} passed", input.devices.len()),
        ));
    }
    b.push(Block::Meta(meta));
}

/// `5 built, 2 up to date in 12 m 04 s`.
pub(super) fn stage_counts(input: &ReportInput, total: f64) -> String {
    let mut parts: Vec<String> = Vec::new();
    for status in ["built", "up to date", "failed", "skipped"] {
        let n = input.stages.iter().filter(|s| s.status == status).count();
        if n > 0 && status == "failed" {
            let names: Vec<&str> = input
                .stages
                .iter()
                .filter(|s| s.status == status)
                .map(|s| s.stage.as_str())
                .collect();
            parts.push(format!("{n} {status} ({})", names.join(", ")));
        } else if n > 0 {
            parts.push(format!("{n} {status}"));
        }
    }
    let other = input
        .stages
        .iter()
        .filter(|s| !["built", "up to date", "failed", "skipped"].contains(&s.status.as_str()))
        .count();
    if other > 0 {
        parts.push(format!("{other} other"));
    }
    format!("{} in {}", parts.join(", "), fmt::duration(total))
}

fn status_tone(status: &str) -> Tone {
    match status {
        "built" => Tone::Good,
        "failed" => Tone::Bad,
        "skipped" => Tone::Warn,
        _ => Tone::Muted,
    }
}

fn stages(input: &ReportInput, b: &mut Vec<Block>) {
    b.push(Block::Heading(2, "Stages".into(), None));
    if input.stages.is_empty() {
        b.push(Block::Para("No stage ran.".into()));
        return;
    }
    let mut t = Table::new(&[
        ("stage", false),
        ("status", false),
        ("time", true),
        ("artifacts", false),
        ("fingerprint", false),
    ]);
    for s in &input.stages {
        let time = if s.status == "skipped" {
            "-".into()
        } else {
            fmt::duration(s.seconds)
        };
        let artifacts = if s.artifacts.is_empty() {
            Cell::tone("-", Tone::Muted)
        } else {
            Cell::code(s.artifacts.join(", "))
        };
        let fp: String = s.fingerprint.chars().take(12).collect();
        t.rows.push(vec![
            Cell::plain(&s.stage),
            Cell::tone(&s.status, status_tone(&s.status)),
            Cell::plain(time),
            artifacts,
            if fp.is_empty() {
                Cell::tone("-", Tone::Muted)
            } else {
                Cell::code(fp)
            },
        ]);
    }
    b.push(Block::Table(t));
    for s in input.stages.iter().filter(|s| s.status == "failed") {
        b.push(Block::Callout(
            Tone::Bad,
            format!(
                "Stage {} failed; the stages after it were skipped.",
                s.stage
            ),
            s.error.iter().cloned().collect(),
        ));
    }
}

/// The P@k heading: `P@10` when every row shares k.
fn precision_heading(models: &[ModelRow]) -> (String, bool) {
    let mut ks = models
        .iter()
        .filter(|m| m.precision_at_k.is_some())
        .map(|m| m.k);
    match ks.next() {
        Some(k) if ks.all(|o| o == k) => (format!("P@{k}"), true),
        _ => ("P@k".into(), false),
    }
}

fn models(models: &[ModelRow], b: &mut Vec<Block>) {
    b.push(Block::Heading(2, "Models".into(), None));
    if models.is_empty() {
        b.push(Block::Para("No model was evaluated.".into()));
        return;
    }
    let (pk, shared_k) = precision_heading(models);
    let validated = models
        .iter()
        .any(|m| m.validation_accuracy.is_some() || m.validation_map_cosine.is_some());
    let mut columns = vec![
        ("role", false),
        ("architecture", false),
        ("params", true),
        ("MACs", true),
        ("top-1", true),
        ("mAP (cosine)", true),
        ("mAP (L2)", true),
        (pk.as_str(), true),
        ("ONNX size", true),
        ("train time", true),
    ];
    if validated {
        columns.extend([
            ("validation top-1", true),
            ("validation mAP (cosine)", true),
        ]);
    }
    let mut t = Table::new(&columns);
    for m in models {
        let top1 = match m.accuracy {
            Some(a) => Cell::plain(fmt::pct(a)),
            None => Cell::tone(UNTRAINED, Tone::Muted),
        };
        let p_at_k = match m.precision_at_k {
            Some(p) if shared_k => fmt::pct(p),
            Some(p) => format!("{} (k={})", fmt::pct(p), m.k),
            None => "-".into(),
        };
        t.rows.push(vec![
            Cell::plain(&m.role),
            Cell::code(&m.architecture),
            Cell::plain(fmt::count(m.params as u64)),
            Cell::plain(fmt::count(m.macs)),
            top1,
            Cell::plain(fmt::opt_pct(m.map_cosine)),
            Cell::plain(fmt::opt_pct(m.map_l2)),
            Cell::plain(p_at_k),
            Cell::plain(m.onnx_bytes.map_or_else(|| "-".into(), fmt::bytes)),
            // Zero means not trained by this build (e.g. a pruned auxiliary).
            if m.train_seconds > 0.0 {
                Cell::plain(fmt::duration(m.train_seconds))
            } else {
                Cell::tone("-", Tone::Muted)
            },
        ]);
        if validated {
            let row = t.rows.last_mut().expect("row just pushed");
            row.push(Cell::plain(fmt::opt_pct(m.validation_accuracy)));
            row.push(Cell::plain(fmt::opt_pct(m.validation_map_cosine)));
        }
    }
    b.push(Block::Table(t));
    if let Some(v) = method_vs_alone(models) {
        b.push(Block::Para(v));
    }
}

/// The distilled student against the student trained alone, on the validation images (when
/// held out) and the test split: top-1 and retrieval mAP (cosine) differences, one seed.
pub(super) fn method_vs_alone(models: &[ModelRow]) -> Option<String> {
    let student = models.iter().find(|m| m.role.starts_with("student ("))?;
    let alone = models.iter().find(|m| m.role == "student alone")?;
    let method = student
        .role
        .trim_start_matches("student (")
        .trim_end_matches(')');
    let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| 100.0 * (a - b));
    let both = |what: &str, val: Option<f64>, test: Option<f64>| -> Option<String> {
        let pp = |d: f64| format!("{d:+.2} pp");
        match (val, test) {
            (Some(v), Some(t)) => {
                Some(format!("{what} {} on validation, {} on test", pp(v), pp(t)))
            }
            (None, Some(t)) => Some(format!("{what} {} on test", pp(t))),
            (Some(v), None) => Some(format!("{what} {} on validation", pp(v))),
            (None, None) => None,
        }
    };
    let parts: Vec<String> = [
        both(
            "top-1",
            diff(student.validation_accuracy, alone.validation_accuracy),
            diff(student.accuracy, alone.accuracy),
        ),
        both(
            "mAP (cosine)",
            diff(student.validation_map_cosine, alone.validation_map_cosine),
            diff(student.map_cosine, alone.map_cosine),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "{method} vs student alone: {} (one seed; docs/RESULTS.md has the seed-to-seed spread)",
            parts.join(" · ")
        )
    })
}

fn latency_table(label: &str) -> Table {
    Table::new(&[
        (label, false),
        ("model", false),
        ("batch", true),
        ("runs", true),
        ("min", true),
        ("p50", true),
        ("p90", true),
        ("p99", true),
        ("max", true),
        ("p50 per image", true),
    ])
}

#[allow(clippy::too_many_arguments)]
fn latency_row(
    source: &str,
    model: &str,
    batch: usize,
    runs: usize,
    min: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
) -> Vec<Cell> {
    vec![
        Cell::plain(source),
        Cell::plain(model),
        Cell::plain(batch.to_string()),
        Cell::plain(runs.to_string()),
        Cell::plain(fmt::ms(min)),
        Cell::plain(fmt::ms(p50)),
        Cell::plain(fmt::ms(p90)),
        Cell::plain(fmt::ms(p99)),
        Cell::plain(fmt::ms(max)),
        Cell::plain(fmt::ms(p50 / batch.max(1) as f64)),
    ]
}

fn host(input: &ReportInput, b: &mut Vec<Block>) {
    b.push(Block::Heading(2, "Host check".into(), None));
    if input.host_checks.is_empty() {
        b.push(Block::Para("No host check was run.".into()));
        return;
    }
    let mut t = Table::new(&[
        ("engine", false),
        ("model", false),
        ("top-1", true),
        ("parity vs", false),
        ("max |diff|", true),
        ("max rel", true),
        ("parity", false),
    ]);
    for (i, e) in input.host_checks.iter().enumerate() {
        t.rows.push(host_row(e, host_model(input, i)));
    }
    b.push(Block::Table(t));
    let mut lt = latency_table("engine");
    for (i, e) in input.host_checks.iter().enumerate() {
        for l in &e.latency {
            let s = &l.stats;
            lt.rows.push(latency_row(
                &e.engine,
                host_model(input, i),
                l.batch,
                s.runs,
                s.min_ms,
                s.p50_ms,
                s.p90_ms,
                s.p99_ms,
                s.max_ms,
            ));
        }
    }
    if !lt.rows.is_empty() {
        b.push(Block::Heading(4, "Host latency (ms per run)".into(), None));
        b.push(Block::Table(lt));
    }
}

fn host_row(e: &EngineReport, model: &str) -> Vec<Cell> {
    let (reference, abs, rel, verdict) = match &e.parity {
        Some(p) => (
            e.parity_reference.clone().unwrap_or_else(|| "-".into()),
            fmt::diff(p.max_abs),
            fmt::diff(p.max_rel),
            if p.ok {
                Cell::tone("ok", Tone::Good)
            } else {
                let why = p
                    .problem
                    .as_deref()
                    .map_or(String::new(), |w| format!(": {w}"));
                Cell::tone(format!("FAIL{why}"), Tone::Bad)
            },
        ),
        None => (
            "-".into(),
            "-".into(),
            "-".into(),
            Cell::tone("not compared", Tone::Muted),
        ),
    };
    vec![
        Cell::plain(&e.engine),
        Cell::plain(model),
        Cell::plain(e.accuracy.map_or_else(|| "n/a".to_string(), fmt::pct)),
        Cell::plain(reference),
        Cell::plain(abs),
        Cell::plain(rel),
        verdict,
    ]
}

fn devices(devices: &[BenchReport], b: &mut Vec<Block>) {
    b.push(Block::Heading(2, "Devices".into(), None));
    if devices.is_empty() {
        b.push(Block::Para("No device validation was run.".into()));
        return;
    }
    for d in devices {
        let badge = if d.passed {
            ("PASS".to_string(), Tone::Good)
        } else {
            ("FAIL".to_string(), Tone::Bad)
        };
        b.push(Block::Heading(3, d.target.clone(), Some(badge)));
        b.push(Block::Meta(vec![
            ("device".into(), d.device.clone()),
            (
                "emulated".into(),
                if d.emulated {
                    format!("yes ({EMULATED_NOTE})")
                } else {
                    "no (real board)".into()
                },
            ),
            ("arch".into(), d.arch.clone()),
            (
                "latency budget".into(),
                format!("{} ms (batch-1 p50)", fmt::ms(d.latency_budget_ms)),
            ),
            ("round trip".into(), fmt::duration(d.seconds)),
        ]));
        if d.emulated {
            b.push(Block::Callout(
                Tone::Warn,
                format!(
                    "{EMULATED_NOTE}. The runner ran under qemu user-mode emulation: accuracy and \
                     parity are real, timings are only a relative indication."
                ),
                Vec::new(),
            ));
        }
        let mut t = Table::new(&[
            ("model", false),
            ("images", true),
            ("host top-1", true),
            ("device top-1", true),
            ("bit-identical", false),
            ("max |diff|", true),
            ("parity", false),
            ("batch-1 p50 (ms)", true),
        ]);
        for m in &d.models {
            let of = |c: Option<usize>| {
                let Some(c) = c else {
                    return "n/a".to_string();
                };
                if m.images == 0 {
                    "-".into()
                } else {
                    fmt::pct(c as f64 / m.images as f64)
                }
            };
            let p50 = match m.p50_ms {
                Some(v) if d.latency_budget_ms > 0.0 && v > d.latency_budget_ms && !d.emulated => {
                    Cell::tone(format!("{} (over budget)", fmt::ms(v)), Tone::Bad)
                }
                Some(v) => Cell::plain(fmt::ms(v)),
                None => Cell::plain("-"),
            };
            t.rows.push(vec![
                Cell::plain(&m.model),
                Cell::plain(m.images.to_string()),
                Cell::plain(of(m.host_correct)),
                Cell::plain(of(m.device_correct)),
                if m.bit_identical {
                    Cell::tone("yes", Tone::Good)
                } else {
                    Cell::plain("no")
                },
                Cell::plain(fmt::diff(m.parity.max_abs)),
                if m.parity.ok {
                    Cell::tone("ok", Tone::Good)
                } else {
                    Cell::tone("FAIL", Tone::Bad)
                },
                p50,
            ]);
        }
        b.push(Block::Table(t));
        let mut lt = latency_table("target");
        for m in &d.models {
            for l in &m.device.latency {
                lt.rows.push(latency_row(
                    &d.target, &m.model, l.batch, l.runs, l.min_ms, l.p50_ms, l.p90_ms, l.p99_ms,
                    l.max_ms,
                ));
            }
        }
        if !lt.rows.is_empty() {
            let what = if d.emulated {
                "Device latency (ms per run, emulated)"
            } else {
                "Device latency (ms per run)"
            };
            b.push(Block::Heading(4, what.into(), None));
            b.push(Block::Table(lt));
        }
        if !d.failures.is_empty() {
            b.push(Block::Callout(
                Tone::Bad,
                format!("{} failed:", d.target),
                d.failures.clone(),
            ));
        }
        if !d.notes.is_empty() {
            b.push(Block::List(d.notes.clone()));
        }
    }
}
