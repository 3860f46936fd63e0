//! The short terminal summary printed at the end of `distill-edge build`.

use std::path::Path;

use super::ReportInput;
use super::doc::{UNTRAINED, host_model, method_vs_alone, parity_failures, stage_counts};
use super::fmt;
use crate::table::Table;

/// Models listed in the summary; the report has them all.
const MAX_MODELS: usize = 5;
/// Devices listed in the summary.
const MAX_DEVICES: usize = 3;

/// A 10-15 line terminal summary of the build: stages, the model comparison, the host check,
/// the devices, the host/device parity verdict and where the full report is.
pub fn summary(input: &ReportInput, report_path: &Path) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "build {} · profile {} · {}",
        input.name, input.profile, input.dataset
    ));
    if !input.stages.is_empty() {
        let total: f64 = input.stages.iter().map(|s| s.seconds).sum();
        line(format!("stages: {}", stage_counts(input, total)));
    }
    if !input.models.is_empty() {
        let teacher = input
            .models
            .iter()
            .find(|m| is_teacher(&m.role))
            .and_then(|m| m.accuracy);
        let mut t = Table::new(["model", "params", "MACs", "top-1", "vs teacher", "ONNX"]);
        for m in input.models.iter().take(MAX_MODELS) {
            let delta = match (m.accuracy, teacher) {
                (Some(a), Some(t)) if !is_teacher(&m.role) => {
                    format!("{:+.2} pp", 100.0 * (a - t))
                }
                _ => String::new(),
            };
            t.row([
                m.role.clone(),
                fmt::count(m.params as u64),
                fmt::count(m.macs),
                m.accuracy.map_or_else(|| UNTRAINED.to_string(), fmt::pct),
                delta,
                m.onnx_bytes.map_or_else(String::new, fmt::bytes),
            ]);
        }
        for l in t.render().lines() {
            line(format!("  {l}"));
        }
        if input.models.len() > MAX_MODELS {
            line(format!(
                "  ... and {} more in the report",
                input.models.len() - MAX_MODELS
            ));
        }
        if let Some(v) = method_vs_alone(&input.models) {
            line(v);
        }
    }
    if !input.host_checks.is_empty() {
        let parts: Vec<String> = input
            .host_checks
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let parity = match &e.parity {
                    Some(p) if p.ok => format!(
                        "parity ok vs {}",
                        e.parity_reference.as_deref().unwrap_or("reference")
                    ),
                    Some(p) => format!("parity FAIL (max |diff| {})", fmt::diff(p.max_abs)),
                    None => "no parity reference".into(),
                };
                format!(
                    "{} {} {} {parity}",
                    e.engine,
                    host_model(input, i),
                    e.accuracy.map_or_else(|| "n/a".to_string(), fmt::pct)
                )
            })
            .collect();
        line(format!("host check: {}", parts.join(" · ")));
    }
    for d in input.devices.iter().take(MAX_DEVICES) {
        let models: Vec<String> = d
            .models
            .iter()
            .map(|m| {
                let acc = match m.device_correct {
                    Some(c) if m.images > 0 => fmt::pct(c as f64 / m.images as f64),
                    _ => "-".into(),
                };
                let same = if m.bit_identical {
                    "bit-identical".to_string()
                } else {
                    format!("max |diff| {}", fmt::diff(m.parity.max_abs))
                };
                let p50 = m
                    .p50_ms
                    .map_or_else(String::new, |v| format!(", b1 p50 {} ms", fmt::ms(v)));
                format!("{} {acc} {same}{p50}", m.model)
            })
            .collect();
        let emulated = if d.emulated {
            " (emulated: latency is not a board figure)"
        } else {
            ""
        };
        line(format!(
            "device {}{emulated}: {} · {}",
            d.target,
            if d.passed { "PASS" } else { "FAIL" },
            models.join(" · ")
        ));
    }
    if input.devices.len() > MAX_DEVICES {
        line(format!(
            "  ... and {} more devices in the report",
            input.devices.len() - MAX_DEVICES
        ));
    }
    let (checked, failed) = parity_failures(input);
    line(if checked == 0 {
        "parity: not checked (no host check with a reference, no device run)".into()
    } else if failed.is_empty() {
        let bit = input
            .devices
            .iter()
            .flat_map(|d| &d.models)
            .filter(|m| m.bit_identical)
            .count();
        let devices: usize = input.devices.iter().map(|d| d.models.len()).sum();
        let mut s = format!("parity: OK, all {checked} comparisons within tolerance");
        if devices > 0 {
            s.push_str(&format!(" ({bit} of {devices} device runs bit-identical)"));
        }
        s
    } else {
        format!("parity: FAIL: {}", failed.join("; "))
    });
    match input.notes.as_slice() {
        [] => {}
        [one] => line(format!("note: {}", shorten(one, 110))),
        [first, rest @ ..] => line(format!(
            "notes: {} (+{} more in the report)",
            shorten(first, 90),
            rest.len()
        )),
    }
    line(format!("report: {}", report_path.display()));
    out
}

/// The teacher's row: `teacher`, or e.g. `teacher (ONNX, measured with tract)`.
fn is_teacher(role: &str) -> bool {
    role == "teacher" || role.starts_with("teacher (")
}

/// `s` cut to `max` characters with an ellipsis.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{}…", cut.trim_end())
    }
}
