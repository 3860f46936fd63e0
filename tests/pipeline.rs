//! `distill-edge build`: the pipeline as a build on generated data. Fingerprints (no-op
//! rebuild, a schedule change reruns only what follows), resume after a kill, corrupted
//! artifacts, `--from`, the report, and a full run to a qemu-validated aarch64 bundle.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn write_pipeline(dir: &Path, student_epochs: usize, train_images: usize) {
    write_pipeline_with_drop(dir, student_epochs, train_images, 10.0);
}

/// The pipeline with a given `[check] max-accuracy-drop` (a negative one always fails).
fn write_pipeline_with_drop(dir: &Path, student_epochs: usize, train_images: usize, drop: f64) {
    std::fs::write(
        dir.join("pipe.toml"),
        format!(
            r#"name = "pipe"
seed = 2
[data]
kind = "synthetic"
train = {train_images}
test = 200
[teacher]
model = "cnn32"
train = {{ batch-size = 32, schedule = [{{ epochs = 2, lr = 2e-3 }}] }}
[student]
model = "cnn32-small"
train = {{ batch-size = 32, schedule = [{{ epochs = {student_epochs}, lr = 2e-3 }}] }}
distill = {{ method = "indistill", curriculum = [1, 1, 1] }}
baselines = ["none"]
[export]
int8 = true
calibration-images = 64
[check]
runs = 5
max-accuracy-drop = {drop:.1}
[targets]
shard-size = 64
runs = 3
"#
        ),
    )
    .unwrap();
}

fn statuses(out: &std::process::Output) -> Vec<(String, String)> {
    json(out)["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn build(dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--json", "--threads", "1", "build", "--config", "pipe.toml"];
    args.extend_from_slice(extra);
    run(dir, &args)
}

#[test]
fn stages_rebuild_only_when_their_inputs_change() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    write_pipeline(p, 1, 400);
    let first = build(p, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let stages: Vec<String> = statuses(&first).into_iter().map(|s| s.0).collect();
    assert_eq!(
        stages,
        ["teacher", "student", "baseline-none", "export", "check"]
    );
    assert!(statuses(&first).iter().all(|s| s.1 == "built"));
    let report = p.join("runs/pipe/report.html");
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.len() > 4000, "report too small");
    assert!(p.join("runs/pipe/report.md").is_file());
    let plots: Vec<_> = std::fs::read_dir(p.join("runs/pipe/plots"))
        .unwrap()
        .collect();
    assert!(plots.len() >= 2, "{plots:?}");
    for f in [
        "teacher/stage.log",
        "student/stage.log",
        "export/student.int8.onnx",
        "check/check.json",
    ] {
        assert!(p.join("runs/pipe").join(f).is_file(), "{f}");
    }

    // Nothing changed: nothing runs, and it says so.
    let second = build(p, &[]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        statuses(&second).iter().all(|s| s.1 == "up to date"),
        "{:?}",
        statuses(&second)
    );
    let human = run(p, &["--threads", "1", "build", "--config", "pipe.toml"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("nothing to do"));

    // The student's schedule changes: the teacher is kept, the student and what follows rerun.
    write_pipeline(p, 2, 400);
    let third = build(p, &[]);
    assert!(third.status.success(), "{}", stderr(&third));
    let s = statuses(&third);
    assert_eq!(s[0], ("teacher".into(), "up to date".into()));
    for (stage, status) in &s[1..] {
        assert_eq!(status, "built", "{stage}");
    }

    // A corrupted artifact is detected and its stage rebuilt.
    let onnx = p.join("runs/pipe/export/student.onnx");
    let mut bytes = std::fs::read(&onnx).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    std::fs::write(&onnx, bytes).unwrap();
    let fourth = build(p, &[]);
    assert!(fourth.status.success(), "{}", stderr(&fourth));
    let s = statuses(&fourth);
    assert!(s.contains(&("export".into(), "built".into())), "{s:?}");
    assert!(
        s.contains(&("teacher".into(), "up to date".into())),
        "{s:?}"
    );
    assert!(stderr(&fourth).contains("corrupt"), "{}", stderr(&fourth));

    // --from forces a stage and everything after it.
    let fifth = build(p, &["--from", "export"]);
    assert!(fifth.status.success(), "{}", stderr(&fifth));
    let s = statuses(&fifth);
    assert_eq!(s[2], ("baseline-none".into(), "up to date".into()));
    assert_eq!(s[3], ("export".into(), "built".into()));
    assert_eq!(s[4], ("check".into(), "built".into()));
    let bad = build(p, &["--from", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        error_line(&bad, p).contains("no such stage"),
        "{}",
        stderr(&bad)
    );

    // A failed host check: exit code 3, the stage shown as failed in the summary and the
    // report, the previous check kept.
    write_pipeline_with_drop(p, 2, 400, -100.0);
    let failed = build(p, &[]);
    assert_eq!(failed.status.code(), Some(3), "{}", stderr(&failed));
    let s = statuses(&failed);
    assert_eq!(s[3], ("export".into(), "up to date".into()));
    assert_eq!(s[4], ("check".into(), "failed".into()));
    assert!(
        json(&failed)["stages"][4]["error"]
            .as_str()
            .unwrap()
            .contains("host check failed"),
        "{s:?}"
    );
    assert!(
        error_line(&failed, p).contains("host check failed"),
        "{}",
        stderr(&failed)
    );
    let md = std::fs::read_to_string(p.join("runs/pipe/report.md")).unwrap();
    assert!(md.contains("Stage check failed"), "{md}");
    assert!(p.join("runs/pipe/check/check.json").is_file());
    assert!(p.join("runs/pipe/check.partial/check.json").is_file());

    // A validation split held out of training: every training stage trains on the rest
    // (so all rerun) and is evaluated on both; the summary compares the distilled student
    // with the student alone on validation and test.
    write_pipeline(p, 2, 400);
    let toml = std::fs::read_to_string(p.join("pipe.toml")).unwrap();
    std::fs::write(
        p.join("pipe.toml"),
        format!("{toml}[validation]\nimages = 100\nseed = 3\n"),
    )
    .unwrap();
    let held = build(p, &[]);
    assert!(held.status.success(), "{}", stderr(&held));
    assert!(
        statuses(&held).iter().all(|s| s.1 == "built"),
        "{:?}",
        statuses(&held)
    );
    let dataset = json(&held)["dataset"].as_str().unwrap().to_string();
    assert!(
        dataset.contains("300 train / 100 validation / 200 test"),
        "{dataset}"
    );
    for stage in ["teacher", "student", "baseline-none"] {
        let eval: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(p.join("runs/pipe").join(stage).join("eval.json")).unwrap(),
        )
        .unwrap();
        let v = eval["validation"]["accuracy"].as_f64();
        assert!(
            v.is_some_and(|a| (0.0..=1.0).contains(&a)),
            "{stage}: {eval}"
        );
    }
    let human = run(p, &["--threads", "1", "build", "--config", "pipe.toml"]);
    let text = String::from_utf8_lossy(&human.stdout).to_string();
    assert!(text.contains("nothing to do"), "{text}");
    let md = std::fs::read_to_string(p.join("runs/pipe/report.md")).unwrap();
    assert!(md.contains("validation top-1"), "{md}");
    assert!(
        md.contains("indistill vs student alone: top-1 ") && md.contains(" on validation, "),
        "{md}"
    );
}

#[test]
fn a_build_killed_mid_stage_resumes_and_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    write_pipeline(p, 1, 3000);
    let mut child = Command::new(bin())
        .current_dir(p)
        .args(["-q", "--threads", "1", "build", "--config", "pipe.toml"])
        .spawn()
        .unwrap();
    let ckpt = p.join("runs/pipe/teacher.partial/checkpoint.ckpt");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !ckpt.exists() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!p.join("runs/pipe/teacher/stage.json").exists());

    let out = run(p, &["--threads", "1", "build", "--config", "pipe.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    let log = std::fs::read_to_string(p.join("runs/pipe/teacher/stage.log")).unwrap();
    assert!(log.contains("resuming after epoch 1/2"), "{log}");
    assert!(p.join("runs/pipe/report.html").is_file());
}

/// The whole path, to a bundle validated under qemu (the cross build is cached outside the
/// clone and shared with scripts/ci-cross-check.sh).
#[test]
fn a_full_build_ends_with_the_aarch64_bundle_validated_under_qemu() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    write_pipeline(p, 1, 400);
    let out = build(p, &["--target", "aarch64"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = statuses(&out);
    assert!(
        s.contains(&("bundle-aarch64".into(), "built".into())),
        "{s:?}"
    );
    assert!(
        s.contains(&("bench-aarch64".into(), "built".into())),
        "{s:?}"
    );
    let device: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.join("runs/pipe/bench-aarch64/bench.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(device["passed"], true);
    assert_eq!(device["emulated"], true);
    assert_eq!(device["arch"], "aarch64");
    // The slim bundle: every model (fp32 and int8) as tract NNEF, checked on the host against
    // its ONNX model, run by the runner built with the NNEF engine alone.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.join("runs/pipe/bundle-aarch64/bundle/manifest.json")).unwrap(),
    )
    .unwrap();
    assert!(manifest.get("onnx_fallback").is_none(), "{manifest}");
    let models = manifest["models"].as_array().unwrap();
    assert!(models.iter().any(|m| m["name"] == "int8"), "{manifest}");
    for m in models {
        assert_eq!(m["format"], "nnef", "{m}");
        assert!(
            m["nnef_check"]["max_abs_diff"].as_f64().unwrap() <= 1e-4,
            "{m}"
        );
    }
    for m in device["models"].as_array().unwrap() {
        eprintln!(
            "{}: bit-identical to the host's ONNX reference: {}",
            m["model"], m["bit_identical"]
        );
    }
    let md = std::fs::read_to_string(p.join("runs/pipe/report.md")).unwrap();
    assert!(
        md.contains("aarch64") && md.to_lowercase().contains("emulated"),
        "{md}"
    );
}
