use std::path::Path;

use super::plots::{BAND_FILLS, phase_runs};
use super::*;
use crate::device::bench::{BenchReport, ModelCheck};
use crate::eval::latency::LatencyStats;
use crate::hostcheck::{EngineReport, LatencyAt};
use crate::infer::parity::{Parity, Tolerance};
use crate::train::EpochRecord;
use distill_edge_schema::{Latency, ModelResult};

fn epoch(n: usize, phase: &str, acc: f64, loss: f64, train_acc: Option<f64>) -> EpochRecord {
    EpochRecord {
        epoch: n,
        phase: phase.into(),
        lr: 0.01,
        train_loss: loss,
        train_accuracy: train_acc,
        test_loss: loss * 1.1 + 0.05,
        test_accuracy: acc,
        seconds: 11.5,
        images_per_second: 5200.0,
    }
}

fn stats(p50: f64) -> LatencyStats {
    LatencyStats {
        runs: 200,
        min_ms: p50 * 0.9,
        p50_ms: p50,
        p90_ms: p50 * 1.12,
        p99_ms: p50 * 1.4,
        max_ms: p50 * 1.9,
        mean_ms: p50 * 1.05,
        ..LatencyStats::default()
    }
}

fn device_latency(batch: usize, p50: f64) -> Latency {
    Latency {
        batch,
        stats: LatencyStats {
            runs: 50,
            min_ms: p50 * 0.95,
            p50_ms: p50,
            p90_ms: p50 * 1.08,
            p99_ms: p50 * 1.3,
            max_ms: p50 * 1.6,
            mean_ms: p50 * 1.04,
            ..LatencyStats::default()
        },
    }
}

fn parity(max_abs: f32, tolerance: Tolerance) -> Parity {
    Parity {
        max_abs,
        max_rel: max_abs * 3.0,
        tolerance,
        ok: true,
        problem: None,
    }
}

fn model_check(model: &str, correct: usize, p50_b1: f64) -> ModelCheck {
    ModelCheck {
        model: model.into(),
        host_correct: Some(correct),
        device_correct: Some(correct),
        images: 500,
        bit_identical: model == "fp32",
        parity: parity(
            if model == "fp32" { 0.0 } else { 3.1e-3 },
            Tolerance::Quantized,
        ),
        p50_ms: Some(p50_b1),
        device: ModelResult {
            model: model.into(),
            correct: Some(correct),
            images: 500,
            outputs_sha256: "ab".repeat(32),
            outputs_file: format!("outputs-{model}.bin"),
            latency: vec![device_latency(1, p50_b1), device_latency(32, p50_b1 * 24.0)],
            ..ModelResult::default()
        },
        device_logits: vec![],
    }
}

/// A realistic quick-profile build: teacher, auxiliary, two students, tract fp32/int8 host
/// checks and one emulated Raspberry Pi.
fn input() -> ReportInput {
    let teacher: Vec<EpochRecord> = (1..=8)
        .map(|n| {
            let t = n as f64 / 8.0;
            epoch(
                n,
                "supervised",
                0.80 + 0.11 * t,
                0.62 - 0.35 * t,
                Some(0.76 + 0.14 * t),
            )
        })
        .collect();
    let mut indistill = Vec::new();
    let mut n = 0;
    for block in 0..3 {
        for _ in 0..2 {
            n += 1;
            // Curriculum epochs train feature maps only: the head is untouched.
            indistill.push(epoch(
                n,
                &format!("curriculum:block{block}"),
                0.10 + 0.01 * n as f64,
                0.9 - 0.1 * n as f64,
                None,
            ));
        }
    }
    for k in 0..6 {
        n += 1;
        indistill.push(epoch(
            n,
            "main:indistill",
            0.78 + 0.015 * k as f64,
            0.55 - 0.05 * k as f64,
            Some(0.75 + 0.02 * k as f64),
        ));
    }
    ReportInput {
        name: "fmnist-quick".into(),
        profile: "quick".into(),
        created: "2026-11-28 13:10 UTC".into(),
        version: "0.1.0".into(),
        dataset: "fashion-mnist (60000 train / 10000 test, 1x28x28)".into(),
        stages: vec![
            StageRow {
                stage: "data".into(),
                status: "up to date".into(),
                seconds: 0.02,
                artifacts: vec!["data/fashion-mnist".into()],
                fingerprint: "9f2c1e0a7b3d55aa".into(),
                error: None,
            },
            StageRow {
                stage: "teacher".into(),
                status: "built".into(),
                seconds: 412.0,
                artifacts: vec!["teacher/model.ckpt".into()],
                fingerprint: "1a2b3c4d5e6f7788".into(),
                error: None,
            },
            StageRow {
                stage: "student-indistill".into(),
                status: "built".into(),
                seconds: 265.3,
                artifacts: vec!["student/model.ckpt".into(), "student/history.json".into()],
                fingerprint: "77aa88bb99cc00dd".into(),
                error: None,
            },
            StageRow {
                stage: "export".into(),
                status: "built".into(),
                seconds: 3.4,
                artifacts: vec!["student.onnx".into(), "student-int8.onnx".into()],
                fingerprint: "0011223344556677".into(),
                error: None,
            },
            StageRow {
                stage: "device:rpi4".into(),
                status: "skipped".into(),
                seconds: 0.0,
                artifacts: vec![],
                fingerprint: String::new(),
                error: None,
            },
        ],
        models: vec![
            ModelRow {
                role: "teacher".into(),
                architecture: "cnn64".into(),
                params: 1_234_567,
                macs: 45_600_000,
                accuracy: Some(0.9123),
                map_cosine: Some(0.8011),
                map_l2: Some(0.7712),
                precision_at_k: Some(0.8822),
                k: 10,
                onnx_bytes: Some(4_938_000),
                train_seconds: 412.0,
                validation_accuracy: Some(0.915),
                validation_map_cosine: Some(0.80),
            },
            ModelRow {
                role: "auxiliary".into(),
                architecture: "cnn64-pruned".into(),
                params: 310_000,
                macs: 11_200_000,
                accuracy: None,
                map_cosine: Some(0.71),
                map_l2: Some(0.69),
                precision_at_k: Some(0.80),
                k: 10,
                onnx_bytes: None,
                train_seconds: 0.0,
                validation_accuracy: None,
                validation_map_cosine: Some(0.70),
            },
            ModelRow {
                role: "student alone".into(),
                architecture: "cnn32-small".into(),
                params: 45_100,
                macs: 2_300_000,
                accuracy: Some(0.8702),
                map_cosine: Some(0.66),
                map_l2: Some(0.64),
                precision_at_k: Some(0.79),
                k: 10,
                onnx_bytes: None,
                train_seconds: 180.0,
                validation_accuracy: Some(0.8650),
                validation_map_cosine: Some(0.655),
            },
            ModelRow {
                role: "student (indistill)".into(),
                architecture: "cnn32-small".into(),
                params: 45_100,
                macs: 2_300_000,
                accuracy: Some(0.8840),
                map_cosine: Some(0.7102),
                map_l2: Some(0.6911),
                precision_at_k: Some(0.8123),
                k: 10,
                onnx_bytes: Some(184_525),
                train_seconds: 265.3,
                validation_accuracy: Some(0.8700),
                validation_map_cosine: Some(0.7150),
            },
        ],
        curves: vec![
            Curve {
                stage: "teacher".into(),
                epochs: teacher,
                evaluated_on: "test".into(),
            },
            Curve {
                stage: "student-indistill".into(),
                epochs: indistill,
                evaluated_on: "validation".into(),
            },
        ],
        host_checks: vec![
            EngineReport {
                engine: "tract".into(),
                accuracy: Some(0.8840),
                parity: Some(parity(2.1e-6, Tolerance::Approximate)),
                parity_reference: Some("burn".into()),
                latency: vec![
                    LatencyAt {
                        batch: 1,
                        stats: stats(0.21),
                    },
                    LatencyAt {
                        batch: 32,
                        stats: stats(2.9),
                    },
                ],
                ..EngineReport::default()
            },
            EngineReport {
                engine: "tract".into(),
                accuracy: Some(0.8810),
                parity: Some(parity(4.2e-3, Tolerance::Quantized)),
                parity_reference: Some("burn (fake-quant)".into()),
                latency: vec![
                    LatencyAt {
                        batch: 1,
                        stats: stats(0.15),
                    },
                    LatencyAt {
                        batch: 32,
                        stats: stats(1.8),
                    },
                ],
                ..EngineReport::default()
            },
        ],
        host_check_models: vec!["fp32".into(), "int8".into()],
        devices: vec![BenchReport {
            target: "rpi4".into(),
            device: "qemu-aarch64 (user mode)".into(),
            emulated: true,
            arch: "aarch64".into(),
            models: vec![model_check("fp32", 442, 3.2), model_check("int8", 440, 2.4)],
            latency_budget_ms: 20.0,
            seconds: 48.2,
            passed: true,
            failures: vec![],
            notes: vec!["latency measured under qemu; not a board figure".into()],
            ..BenchReport::default()
        }],
        notes: vec![
            "short schedule: 8 teacher epochs instead of 50 (quick profile)".into(),
            "student top-1 measured on the full 10000-image test split".into(),
        ],
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hex(c: &plotters::style::RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

#[test]
fn writes_markdown_html_and_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input();
    let files = write_report(tmp.path(), &input).unwrap();
    assert_eq!(files.markdown, tmp.path().join("report.md"));
    assert_eq!(files.html, tmp.path().join("report.html"));
    let names: Vec<String> = files
        .plots
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "curve-teacher.svg",
            "curve-student-indistill.svg",
            "latency.svg"
        ]
    );

    // The per-epoch figures are named after the split they were measured on.
    let teacher_svg = read(&tmp.path().join("plots/curve-teacher.svg"));
    let student_svg = read(&tmp.path().join("plots/curve-student-indistill.svg"));
    assert!(teacher_svg.contains("test top-1") && !teacher_svg.contains("validation top-1"));
    assert!(student_svg.contains("validation top-1") && !student_svg.contains("test top-1"));

    let md = read(&files.markdown);
    for heading in [
        "## Stages",
        "## Models",
        "## Host check",
        "## Devices",
        "## Notes",
        "## Plots",
        "| stage | status | time | artifacts | fingerprint |",
        "| role | architecture | params | MACs | top-1 | mAP (cosine) | mAP (L2) | P@10 | ONNX size |",
        "| engine | model | top-1 | parity vs | max \\|diff\\| |",
        "| model | images | host top-1 | device top-1 | bit-identical | max \\|diff\\| |",
    ] {
        assert!(md.contains(heading), "markdown lacks {heading:?}:\n{md}");
    }
    for role in [
        "teacher",
        "auxiliary",
        "student alone",
        "student (indistill)",
    ] {
        assert!(md.contains(&format!("| {role} |")), "role {role}");
    }
    assert!(md.contains("n/a (head untrained)"));
    assert!(md.contains("88.40%") && md.contains("91.23%"));
    assert!(md.contains("180.2 KiB"));
    assert!(md.contains("### rpi4 — **PASS**"));
    assert!(md.contains("emulated: latency is not a board figure"));
    assert!(md.contains("short schedule: 8 teacher epochs"));
    assert!(md.contains("![Training curve: teacher](plots/curve-teacher.svg)"));
    assert!(md.contains("](plots/latency.svg)"));

    let html = read(&files.html);
    assert!(html.len() > 20_000, "html is {} bytes", html.len());
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<style>"));
    assert_eq!(html.matches("<svg").count(), 3, "three inline plots");
    assert!(!html.contains("<?xml"));
    assert!(html.contains("href=\"plots/curve-student-indistill.svg\""));
    assert!(html.contains("emulated: latency is not a board figure"));
    assert!(html.contains("n/a (head untrained)"));
    assert!(html.contains("<td class=\"muted\">up to date</td>"));

    for p in &files.plots {
        let svg = read(p);
        assert!(svg.contains("<svg"), "{}", p.display());
        assert!(
            svg.contains("<polyline") || svg.contains("<path"),
            "{} has no line",
            p.display()
        );
        assert!(svg.contains("<rect"), "{} has no rect", p.display());
        assert!(svg.contains("<text"), "{} has no text", p.display());
    }
}

#[test]
fn curriculum_blocks_are_shaded_and_labelled() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input();
    let files = write_report(tmp.path(), &input).unwrap();
    let band_rects = |svg: &str| {
        svg.lines()
            .filter(|l| l.contains("<rect"))
            .filter(|l| BAND_FILLS.iter().any(|c| l.contains(&hex(c))))
            .count()
    };
    let student = read(&files.plots[1]);
    // Three blocks, each shaded in both panels.
    assert_eq!(band_rects(&student), 6, "{student}");
    for label in ["block0", "block1", "block2", "main"] {
        assert!(
            student.contains(&format!(">\n{label}\n</text>"))
                || student.contains(&format!(">{label}</text>")),
            "label {label}"
        );
    }
    let teacher = read(&files.plots[0]);
    assert_eq!(band_rects(&teacher), 0, "supervised training is not shaded");

    let runs = phase_runs(&input.curves[1].epochs);
    let shaded: Vec<(&str, usize, usize)> = runs
        .iter()
        .filter(|r| r.curriculum)
        .map(|r| (r.label.as_str(), r.first, r.last))
        .collect();
    assert_eq!(
        shaded,
        [("block0", 0, 1), ("block1", 2, 3), ("block2", 4, 5)]
    );
    assert!(!runs.last().unwrap().curriculum);
}

#[test]
fn latency_plot_has_a_row_per_distribution() {
    let tmp = tempfile::tempdir().unwrap();
    let files = write_report(tmp.path(), &input()).unwrap();
    let svg = read(files.plots.last().unwrap());
    // 2 host models x 2 batches + 2 device models x 2 batches.
    for label in [
        "host tract · fp32 · batch 1",
        "host tract · int8 · batch 32",
        "rpi4 · fp32 · batch 1 (emulated)",
        "rpi4 · int8 · batch 32 (emulated)",
    ] {
        assert!(svg.contains(label), "latency plot lacks {label:?}");
    }
    assert!(svg.contains("log scale"), "0.1 ms to 100 ms spans decades");
}

#[test]
fn empty_input_still_makes_a_report() {
    let tmp = tempfile::tempdir().unwrap();
    let input = ReportInput {
        name: "empty".into(),
        profile: "custom".into(),
        created: "now".into(),
        version: "0".into(),
        dataset: "synthetic".into(),
        stages: vec![],
        models: vec![],
        curves: vec![Curve {
            stage: "nothing".into(),
            epochs: vec![],
            evaluated_on: "test".into(),
        }],
        host_checks: vec![],
        host_check_models: vec![],
        devices: vec![],
        notes: vec![],
    };
    let files = write_report(tmp.path(), &input).unwrap();
    assert!(files.plots.is_empty());
    let md = read(&files.markdown);
    assert!(md.contains("No host check was run."));
    assert!(md.contains("No device validation was run."));
    let s = summary(&input, &files.html);
    assert!(s.contains("parity: not checked"));
}

#[test]
fn summary_is_short_and_complete() {
    let input = input();
    let s = summary(&input, Path::new("runs/fmnist-quick/report.html"));
    let lines: Vec<&str> = s.lines().collect();
    assert!(
        (10..=15).contains(&lines.len()),
        "{} lines:\n{s}",
        lines.len()
    );
    assert!(lines[0].contains("fmnist-quick") && lines[0].contains("quick"));
    assert!(s.contains("student (indistill)"));
    assert!(s.contains("-2.83 pp"), "{s}");
    assert!(
        s.contains("indistill vs student alone: top-1 +0.50 pp on validation, +1.38 pp on test · mAP (cosine) +6.00 pp on validation, +5.02 pp on test"),
        "{s}"
    );
    assert!(s.contains("n/a (head untrained)"));
    assert!(s.contains("device rpi4 (emulated: latency is not a board figure): PASS"));
    assert!(s.contains("emulated: latency is not a board figure"));
    assert!(s.contains("parity: OK, all 4 comparisons within tolerance"));
    assert!(s.contains("(1 of 2 device runs bit-identical)"));
    assert_eq!(
        lines.last().copied(),
        Some("report: runs/fmnist-quick/report.html")
    );

    // An ONNX teacher's row is the teacher too: the students are compared with it.
    let mut onnx = input.clone();
    onnx.models[0].role = "teacher (ONNX, measured with tract)".into();
    let s = summary(&onnx, Path::new("r.html"));
    assert!(s.contains("-2.83 pp"), "{s}");

    let mut failing = input.clone();
    failing.devices[0].models[1].parity.ok = false;
    failing.devices[0].passed = false;
    failing.stages[2].status = "failed".into();
    let s = summary(&failing, Path::new("r.html"));
    assert!(s.contains("1 failed (student-indistill)"), "{s}");
    assert!(s.contains("device rpi4 (emulated: latency is not a board figure): FAIL"));
    assert!(
        s.contains("parity: FAIL: rpi4 int8: max |diff| 3.1e-3"),
        "{s}"
    );
}

#[test]
fn writing_twice_replaces_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut input = input();
    write_report(tmp.path(), &input).unwrap();
    input.name = "second".into();
    let files = write_report(tmp.path(), &input).unwrap();
    assert!(read(&files.markdown).contains("second"));
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
}

/// The passing sample, a failing variant and a paper-length schedule, each written in full:
/// every file is there and says what the input says. To look at them, set
/// `REPORT_SAMPLE_DIR=/tmp/r` (the reports then stay there instead of in a temp dir):
/// `REPORT_SAMPLE_DIR=/tmp/r cargo test --lib report::tests::sample_reports`.
#[test]
fn sample_reports_render_passing_failing_and_long_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("REPORT_SAMPLE_DIR")
        .map_or_else(|| tmp.path().to_path_buf(), std::path::PathBuf::from);
    let dir = dir.as_path();

    let input = input();
    let files = write_report(dir, &input).unwrap();
    let md = read(&files.markdown);
    let html = read(&files.html);
    for stage in [
        "data",
        "teacher",
        "student-indistill",
        "export",
        "device:rpi4",
    ] {
        assert!(
            md.contains(&format!("| {stage} |")),
            "markdown lacks stage {stage}"
        );
        assert!(html.contains(stage), "html lacks stage {stage}");
    }
    for text in [
        "fmnist-quick",
        "fashion-mnist (60000 train / 10000 test, 1x28x28)",
    ] {
        assert!(md.contains(text), "markdown lacks {text:?}");
        assert!(html.contains(text), "html lacks {text:?}");
    }
    assert!(md.contains("PASS") && !md.contains("FAIL"), "{md}");
    assert_eq!(files.plots.len(), 3);
    for p in &files.plots {
        assert!(read(p).starts_with("<svg"), "{}", p.display());
    }
    let s = summary(&input, &files.html);
    assert!(
        s.ends_with(&format!("report: {}\n", files.html.display())),
        "{s}"
    );

    let mut failing = input;
    failing.devices[0].passed = false;
    failing.devices[0].emulated = false;
    failing.devices[0].models[1].parity.ok = false;
    failing.devices[0].models[1].p50_ms = Some(31.0);
    failing.devices[0].failures = vec![
        "int8: logits differ from the host beyond the quantized tolerance".into(),
        "int8: batch-1 p50 31.0 ms over the 20.0 ms budget".into(),
    ];
    failing.stages[2].status = "failed".into();
    let files = write_report(&dir.join("failing"), &failing).unwrap();
    assert_eq!(files.html, dir.join("failing/report.html"));
    let md = read(&files.markdown);
    let html = read(&files.html);
    for text in [
        "int8: logits differ from the host beyond the quantized tolerance",
        "int8: batch-1 p50 31.0 ms over the 20.0 ms budget",
        "| student-indistill | **failed** |",
        "FAIL",
    ] {
        assert!(md.contains(text), "markdown lacks {text:?}:\n{md}");
    }
    assert!(html.contains("31.0 ms over the 20.0 ms budget"));
    let s = summary(&failing, &files.html);
    assert!(s.contains("1 failed (student-indistill)"), "{s}");
    assert!(s.contains("device rpi4: FAIL"), "{s}");

    // A paper-length schedule: 3 curriculum blocks of 5 epochs, then 100 main epochs.
    let mut long = failing;
    long.curves.truncate(1);
    long.curves[0].stage = "student-indistill-paper".into();
    long.curves[0].epochs = (1..=115)
        .map(|n| {
            let t = n as f64 / 115.0;
            let phase = match n {
                1..=5 => "curriculum:block0",
                6..=10 => "curriculum:block1",
                11..=15 => "curriculum:block2",
                _ => "main:indistill",
            };
            let wobble = 0.004 * ((n as f64) * 0.7).sin();
            epoch(
                n,
                phase,
                0.70 + 0.2 * t.sqrt() + wobble,
                0.9 - 0.6 * t,
                None,
            )
        })
        .collect();
    let files = write_report(&dir.join("long"), &long).unwrap();
    let names: Vec<String> = files
        .plots
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["curve-student-indistill-paper.svg", "latency.svg"]);
    let curve = read(&files.plots[0]);
    // Three curriculum blocks shaded in both panels, however narrow.
    let bands = curve
        .lines()
        .filter(|l| l.contains("<rect") && BAND_FILLS.iter().any(|c| l.contains(&hex(c))))
        .count();
    assert_eq!(bands, 6, "{curve}");
    assert!(curve.contains("115 epochs") && curve.contains("shaded: curriculum blocks"));
    assert!(!curve.contains("NaN"));
    assert!(read(&files.markdown).contains("curve-student-indistill-paper.svg"));
}

#[test]
fn odd_inputs_still_plot() {
    let tmp = tempfile::tempdir().unwrap();
    let mut input = input();
    // Epoch numbers restarting per phase, a NaN and a single-epoch curve.
    input.curves[1]
        .epochs
        .iter_mut()
        .enumerate()
        .for_each(|(i, e)| e.epoch = i % 2 + 1);
    input.curves[1].epochs[7].test_loss = f64::NAN;
    input.curves[0].epochs.truncate(1);
    // Latency within one decade: linear axis.
    input.devices.clear();
    input.host_checks.truncate(1);
    input.host_checks[0].latency.truncate(1);
    let files = write_report(tmp.path(), &input).unwrap();
    assert_eq!(files.plots.len(), 3);
    let latency = read(&files.plots[2]);
    assert!(latency.contains("linear scale"));
    assert!(latency.contains("host tract · fp32 · batch 1"));
    for p in &files.plots {
        assert!(!read(p).contains("NaN"), "{}", p.display());
    }
}

#[test]
fn a_failed_stage_is_shown_with_its_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut input = input();
    let export = input
        .stages
        .iter_mut()
        .find(|s| s.stage == "export")
        .unwrap();
    export.status = "failed".into();
    export.error = Some("int8: calibration found no finite range".into());
    let files = write_report(tmp.path(), &input).unwrap();
    let md = read(&files.markdown);
    assert!(
        md.contains("> **FAIL:** Stage export failed; the stages after it were skipped."),
        "{md}"
    );
    assert!(
        md.contains("> - int8: calibration found no finite range"),
        "{md}"
    );
    let html = read(&files.html);
    assert!(html.contains("int8: calibration found no finite range"));
}
