//! Baselines for CI: a saved bench result (`bench --save-baseline FILE`) and the comparison of
//! a new run with it (`bench --baseline FILE`): top-1 within the target's accuracy budget,
//! outputs within tolerance of the baseline's on the same shard, latency p50/p90 regressions
//! warned above one threshold and failed above another, never gated under emulation. Every
//! check also goes to a JUnit XML report (`--junit FILE`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::bench::{BenchReport, EMULATED, Outcome};
use crate::board::TargetSpec;
use crate::infer::parity::{Tolerance, compare};

/// Version of the baseline file.
pub const BASELINE_FORMAT: u32 = 1;

/// Errors reading or writing a baseline.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// File system failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a baseline, or one for another target.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The device logits of one model, as saved in a baseline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedOutputs {
    /// `fp32` / `int8`.
    pub model: String,
    /// Logits on the shard, row-major.
    pub logits: Vec<f32>,
}

/// A saved bench result.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// [`BASELINE_FORMAT`].
    pub format: u32,
    /// The result compared with.
    pub report: BenchReport,
    /// Its device outputs.
    pub outputs: Vec<SavedOutputs>,
}

/// Latency regression thresholds, percent above the baseline.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// Above: a warning.
    pub warn_pct: f64,
    /// Above: a failed check.
    pub fail_pct: f64,
}

/// Writes `report` (with its device outputs) to `path` as a baseline, atomically.
pub fn save(path: &Path, report: &BenchReport) -> Result<(), BaselineError> {
    let baseline = Baseline {
        format: BASELINE_FORMAT,
        report: report.clone(),
        outputs: report
            .models
            .iter()
            .map(|m| SavedOutputs {
                model: m.label(),
                logits: m.device_logits.clone(),
            })
            .collect(),
    };
    crate::fsutil::write_json_atomic(path, &baseline).map_err(|source| BaselineError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a baseline, refusing another format or another target than `target`.
pub fn load(path: &Path, target: &str) -> Result<Baseline, BaselineError> {
    let invalid = |message: String| BaselineError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| BaselineError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let baseline: Baseline = serde_json::from_str(&text)
        .map_err(|e| invalid(format!("not a distill-edge bench baseline: {e}")))?;
    if baseline.format != BASELINE_FORMAT {
        return Err(invalid(format!(
            "baseline format {} (expected {BASELINE_FORMAT})",
            baseline.format
        )));
    }
    if baseline.report.target != target {
        return Err(invalid(format!(
            "a baseline for target {}, not {target}",
            baseline.report.target
        )));
    }
    Ok(baseline)
}

/// Compares `report` with `baseline`, adding one check per figure to `report`.
pub fn compare_with(
    report: &mut BenchReport,
    baseline: &Baseline,
    target: &TargetSpec,
    thresholds: Thresholds,
) {
    let emulated = report.emulated || baseline.report.emulated;
    let same_inputs = report.shard_sha256 == baseline.report.shard_sha256;
    let budget = target.budget.max_accuracy_drop;
    for base in &baseline.report.models {
        let Some(new) = report
            .models
            .iter()
            .find(|m| m.label() == base.label())
            .cloned()
        else {
            report.check(
                format!("{} vs baseline", base.label()),
                Outcome::Failed,
                "in the baseline but not in this bundle",
            );
            continue;
        };
        let name = |what: &str| format!("{} {what} vs baseline", base.label());
        match (base.device_correct, new.device_correct) {
            (Some(b), Some(n)) => {
                let pct = |c: usize, images: usize| 100.0 * c as f64 / images.max(1) as f64;
                let drop = pct(b, base.images) - pct(n, new.images);
                report.check(
                    name("top-1"),
                    if drop > budget {
                        Outcome::Failed
                    } else {
                        Outcome::Passed
                    },
                    format!(
                        "{:.2}% against {:.2}% ({drop:+.2} points down; budget {budget})",
                        pct(n, new.images),
                        pct(b, base.images)
                    ),
                );
            }
            _ => report.check(
                name("top-1"),
                Outcome::Skipped,
                "unlabelled inputs: no accuracy",
            ),
        }
        let saved = baseline.outputs.iter().find(|o| o.model == base.label());
        match saved {
            Some(saved) if same_inputs && !new.device_logits.is_empty() => {
                let tolerance = if base.model == "fp32" {
                    Tolerance::Approximate
                } else {
                    Tolerance::Quantized
                };
                let p = compare(&new.device_logits, &saved.logits, tolerance);
                report.check(
                    name("outputs"),
                    if p.ok {
                        Outcome::Passed
                    } else {
                        Outcome::Failed
                    },
                    if p.ok {
                        format!("max |diff| {:.2e}", p.max_abs)
                    } else {
                        p.problem.unwrap_or_default()
                    },
                );
            }
            _ => report.check(
                name("outputs"),
                Outcome::Skipped,
                "the baseline ran other inputs (or saved no outputs)",
            ),
        }
        for b in &base.device.latency {
            let Some(n) = new.device.latency.iter().find(|l| l.batch == b.batch) else {
                continue;
            };
            for (what, old, now) in [("p50", b.p50_ms, n.p50_ms), ("p90", b.p90_ms, n.p90_ms)] {
                let check = name(&format!("batch-{} {what}", b.batch));
                let change = if old > 0.0 {
                    100.0 * (now - old) / old
                } else {
                    f64::INFINITY
                };
                let figures = format!("{now:.3} ms against {old:.3} ms ({change:+.1}%)");
                let (outcome, message) = if emulated {
                    (
                        Outcome::Skipped,
                        format!("{figures}: not gated, {EMULATED}"),
                    )
                } else if change > thresholds.fail_pct {
                    (
                        Outcome::Failed,
                        format!(
                            "{figures}: above the fail threshold of {}%",
                            thresholds.fail_pct
                        ),
                    )
                } else if change > thresholds.warn_pct {
                    (
                        Outcome::Warning,
                        format!(
                            "{figures}: above the warn threshold of {}%",
                            thresholds.warn_pct
                        ),
                    )
                } else {
                    (Outcome::Passed, figures)
                };
                report.check(check, outcome, message);
            }
        }
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A JUnit XML report of `reports` (one test suite per device, one test case per check).
pub fn junit_xml(reports: &[&BenchReport]) -> String {
    let count = |r: &BenchReport, o: Outcome| r.checks.iter().filter(|c| c.outcome == o).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total: usize = reports.iter().map(|r| r.checks.len()).sum();
    let failed: usize = reports.iter().map(|r| count(r, Outcome::Failed)).sum();
    out.push_str(&format!(
        "<testsuites name=\"distill-edge bench\" tests=\"{total}\" failures=\"{failed}\">\n"
    ));
    for r in reports {
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
            escape(&format!("bench {} on {}", r.target, r.device)),
            r.checks.len(),
            count(r, Outcome::Failed),
            count(r, Outcome::Skipped),
            r.seconds
        ));
        let class = escape(&format!("distill-edge.bench.{}", r.target));
        for c in &r.checks {
            let name = escape(&c.name);
            let message = escape(&c.message);
            match c.outcome {
                Outcome::Passed => out.push_str(&format!(
                    "    <testcase classname=\"{class}\" name=\"{name}\"><system-out>{message}</system-out></testcase>\n"
                )),
                Outcome::Warning => out.push_str(&format!(
                    "    <testcase classname=\"{class}\" name=\"{name}\"><system-out>warning: {message}</system-out></testcase>\n"
                )),
                Outcome::Skipped => out.push_str(&format!(
                    "    <testcase classname=\"{class}\" name=\"{name}\"><skipped message=\"{message}\"/></testcase>\n"
                )),
                Outcome::Failed => out.push_str(&format!(
                    "    <testcase classname=\"{class}\" name=\"{name}\"><failure message=\"{message}\">{message}</failure></testcase>\n"
                )),
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::bench::{Check, ModelCheck};
    use crate::infer::parity::Parity;
    use distill_edge_schema::{Latency, ModelResult};

    fn report(emulated: bool, p50: f64, correct: usize) -> BenchReport {
        let stats = |p: f64| Latency {
            batch: 1,
            stats: distill_edge_schema::LatencyStats {
                runs: 10,
                p50_ms: p,
                p90_ms: p * 1.1,
                ..Default::default()
            },
        };
        BenchReport {
            target: "aarch64".into(),
            emulated,
            passed: true,
            shard_sha256: "s".into(),
            models: vec![ModelCheck {
                model: "fp32".into(),
                host_correct: Some(correct),
                device_correct: Some(correct),
                images: 100,
                bit_identical: true,
                parity: Parity {
                    max_abs: 0.0,
                    max_rel: 0.0,
                    tolerance: Tolerance::Approximate,
                    ok: true,
                    problem: None,
                },
                p50_ms: Some(p50),
                device: ModelResult {
                    model: "fp32".into(),
                    correct: Some(correct),
                    images: 100,
                    latency: vec![stats(p50)],
                    ..Default::default()
                },
                device_logits: vec![0.5, 1.5],
            }],
            ..Default::default()
        }
    }

    fn baseline(r: &BenchReport) -> Baseline {
        Baseline {
            format: BASELINE_FORMAT,
            report: r.clone(),
            outputs: vec![SavedOutputs {
                model: "fp32".into(),
                logits: vec![0.5, 1.5],
            }],
        }
    }

    const TH: Thresholds = Thresholds {
        warn_pct: 10.0,
        fail_pct: 25.0,
    };

    fn outcome(r: &BenchReport, name: &str) -> Outcome {
        r.checks.iter().find(|c| c.name == name).unwrap().outcome
    }

    #[test]
    fn a_run_passes_against_itself_and_fails_against_a_better_baseline() {
        let target = TargetSpec::resolve("aarch64").unwrap();
        let mut same = report(false, 2.0, 90);
        compare_with(&mut same, &baseline(&report(false, 2.0, 90)), &target, TH);
        assert!(same.passed, "{:?}", same.failures);
        assert_eq!(outcome(&same, "fp32 outputs vs baseline"), Outcome::Passed);

        // 15% slower: a warning; 30%: a failure; 2 points of top-1 over a 1-point budget too.
        let mut slower = report(false, 2.3, 90);
        compare_with(&mut slower, &baseline(&report(false, 2.0, 90)), &target, TH);
        assert!(slower.passed);
        assert_eq!(
            outcome(&slower, "fp32 batch-1 p50 vs baseline"),
            Outcome::Warning
        );
        let mut slow = report(false, 2.6, 88);
        compare_with(&mut slow, &baseline(&report(false, 2.0, 90)), &target, TH);
        assert!(!slow.passed);
        assert_eq!(
            outcome(&slow, "fp32 batch-1 p50 vs baseline"),
            Outcome::Failed
        );
        assert_eq!(outcome(&slow, "fp32 top-1 vs baseline"), Outcome::Failed);

        // Under emulation latency is never gated; accuracy still is.
        let mut emulated = report(true, 9.0, 90);
        compare_with(
            &mut emulated,
            &baseline(&report(true, 2.0, 90)),
            &target,
            TH,
        );
        assert!(emulated.passed, "{:?}", emulated.failures);
        assert_eq!(
            outcome(&emulated, "fp32 batch-1 p50 vs baseline"),
            Outcome::Skipped
        );

        // Other outputs on the same inputs fail.
        let mut drifted = report(false, 2.0, 90);
        drifted.models[0].device_logits = vec![0.5, 2.5];
        compare_with(
            &mut drifted,
            &baseline(&report(false, 2.0, 90)),
            &target,
            TH,
        );
        assert_eq!(
            outcome(&drifted, "fp32 outputs vs baseline"),
            Outcome::Failed
        );
    }

    #[test]
    fn junit_escapes_and_counts() {
        let mut r = report(false, 1.0, 1);
        r.checks = vec![
            Check {
                name: "a <b> & \"c\"".into(),
                outcome: Outcome::Failed,
                message: "x < y".into(),
            },
            Check {
                name: "skip".into(),
                outcome: Outcome::Skipped,
                message: "emulated".into(),
            },
        ];
        let xml = junit_xml(&[&r]);
        assert!(
            xml.contains("name=\"a &lt;b&gt; &amp; &quot;c&quot;\""),
            "{xml}"
        );
        assert!(
            xml.contains("tests=\"2\" failures=\"1\" skipped=\"1\""),
            "{xml}"
        );
        let events: Vec<_> = xml::reader::EventReader::from_str(&xml)
            .into_iter()
            .collect::<Result<_, _>>()
            .expect("well-formed XML");
        assert!(events.len() > 5);
    }
}
