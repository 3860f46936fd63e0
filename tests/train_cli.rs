//! End-to-end tests of `distill-edge train`, `eval` and `data info` on generated data.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn short_training_on_synthetic_data_beats_chance_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = synthetic_config(tmp.path(), "chance", "[{ epochs = 3, lr = 2e-3 }]", 600);
    let report = run_ok_json(
        tmp.path(),
        &[
            "--json",
            "--threads",
            "1",
            "train",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    let acc = report["test_accuracy"].as_f64().unwrap();
    // 10 classes: chance is 10%.
    assert!(acc > 0.6, "test accuracy {acc} is not well above chance");
    assert_eq!(report["epochs"].as_array().unwrap().len(), 3);
    let run_dir = tmp.path().join("runs/chance/train");
    for f in [
        "model.ckpt",
        "checkpoint.ckpt",
        "metrics.json",
        "config.toml",
    ] {
        assert!(run_dir.join(f).is_file(), "{f} missing");
    }

    let eval = run_ok_json(
        tmp.path(),
        &["--json", "eval", run_dir.to_str().unwrap(), "--top-k", "10"],
    );
    assert!((eval["accuracy"].as_f64().unwrap() - acc).abs() < 1e-9);
    let retrieval = eval["retrieval"].as_array().unwrap();
    assert_eq!(retrieval.len(), 2);
    for m in retrieval {
        let map = m["map"].as_f64().unwrap();
        assert!(map > 0.2 && map <= 1.0, "mAP {map}");
        assert_eq!(m["k"], 10);
    }
}

/// Every parameter and running statistic of a model file, in module order.
fn weights(path: &std::path::Path) -> Vec<f32> {
    use distill_edge::train::Checkpoint;
    let ckpt = Checkpoint::read(path).unwrap();
    let net = ckpt
        .load_model(&distill_edge::runtime::cpu(), path)
        .unwrap();
    distill_edge::model::flatten_params(&net)
}

fn read_epochs_done(path: &std::path::Path) -> Option<u64> {
    // The header is JSON right after the 8-byte magic and a u32 length.
    let bytes = std::fs::read(path).ok()?;
    let len = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(12..12 + len)?).ok()?;
    header["epochs_done"].as_u64()
}

#[test]
fn killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    // Long enough (about a second an epoch) that the kill lands well before the end.
    let schedule = "[{ epochs = 5, lr = 1e-3 }, { epochs = 3, lr = 1e-4 }]";
    let cfg = synthetic_config(tmp.path(), "resume", schedule, 3000);
    let cfg = cfg.to_str().unwrap();

    let straight = run(
        tmp.path(),
        &[
            "-q",
            "--threads",
            "1",
            "train",
            "--config",
            cfg,
            "--out",
            "straight",
        ],
    );
    assert!(straight.status.success(), "{}", stderr(&straight));

    // Start the same run, kill it (SIGKILL) once two epochs are checkpointed.
    let mut child = Command::new(bin())
        .current_dir(tmp.path())
        .args([
            "-q",
            "--threads",
            "1",
            "train",
            "--config",
            cfg,
            "--out",
            "killed",
        ])
        .spawn()
        .unwrap();
    let ckpt = tmp.path().join("killed/checkpoint.ckpt");
    let deadline = Instant::now() + Duration::from_secs(600);
    while read_epochs_done(&ckpt).unwrap_or(0) < 2 {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = read_epochs_done(&ckpt).unwrap();
    assert!(done < 8, "the run finished before it was killed");
    assert!(!tmp.path().join("killed/model.ckpt").exists());

    // A fresh start into the same directory is refused rather than overwriting it.
    let refused = run(
        tmp.path(),
        &[
            "-q",
            "--threads",
            "1",
            "train",
            "--config",
            cfg,
            "--out",
            "killed",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("--resume"),
        "{}",
        stderr(&refused)
    );

    // Resuming loads the optimizer state on burn's default device, which distill-edge pins to
    // the CPU: a `BURN_DEVICE` burn does not know (it panics on one) or a GPU built in must
    // not reach it.
    let resumed = Command::new(bin())
        .current_dir(tmp.path())
        .env("BURN_DEVICE", "no-such-backend")
        .args([
            "--json",
            "--threads",
            "1",
            "train",
            "--config",
            cfg,
            "--out",
            "killed",
            "--resume",
        ])
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(json(&resumed)["resumed_after"].as_u64().unwrap(), done);

    let a = weights(&tmp.path().join("straight/model.ckpt"));
    let b = weights(&tmp.path().join("killed/model.ckpt"));
    assert_eq!(a.len(), b.len());
    let differing = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    assert_eq!(
        differing, 0,
        "resumed weights differ from the uninterrupted run"
    );
}

#[test]
fn resume_with_a_changed_config_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = synthetic_config(tmp.path(), "changed", "[{ epochs = 1, lr = 1e-3 }]", 600);
    let cfg = cfg.to_str().unwrap();
    let first = run(tmp.path(), &["-q", "train", "--config", cfg]);
    assert!(first.status.success(), "{}", stderr(&first));
    let out = run(
        tmp.path(),
        &[
            "-q",
            "train",
            "--config",
            cfg,
            "--resume",
            "--schedule",
            "2:1e-3",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out, tmp.path());
    assert!(line.contains("different config"), "{line}");
}

#[test]
fn nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = synthetic_config(
        tmp.path(),
        "nan",
        "[{ epochs = 1, lr = 1e-3 }, { epochs = 2, lr = 1e30 }]",
        600,
    );
    let out = run(
        tmp.path(),
        &["--threads", "1", "train", "--config", cfg.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("loss is"), "{text}");
    assert!(text.contains("last good checkpoint (epoch 1)"), "{text}");
    let ckpt = tmp.path().join("runs/nan/train/checkpoint.ckpt");
    assert_eq!(read_epochs_done(&ckpt), Some(1));
    assert!(!tmp.path().join("runs/nan/train/model.ckpt").exists());
}

#[test]
fn bad_inputs_give_one_line_errors_and_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    std::fs::write(p.join("typo.toml"), "name = \"x\"\nmodel = \"cnn32\"\n[data]\nkind = \"synthetic\"\n[train]\nschedule = [{ epochs = 1, lr = 1e-3 }]\nbatch = 3\n").unwrap();
    std::fs::create_dir(p.join("idx")).unwrap();
    std::fs::write(
        p.join("idx/train-images-idx3-ubyte"),
        b"\x00\x00\x08\x02garbage",
    )
    .unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["train", "--config", "typo.toml"], "unknown field `batch`"),
        (&["train", "--config", "missing.toml"], "missing.toml"),
        (&["train", "--model", "nope"], "unknown model 'nope'"),
        (&["train", "--schedule", "10"], "expected EPOCHS:LR"),
        (
            &["data", "info", "--data", "mnist", "--data-path", "idx"],
            "train-images-idx3-ubyte",
        ),
        (&["data", "info", "--data", "imagenet"], "imagenet"),
        (&["eval", "nowhere"], "nowhere"),
    ];
    for (args, needle) in cases {
        let out = run(p, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let line = error_line(&out, p);
        assert!(line.starts_with("error: "), "{args:?}: {line}");
        assert!(line.contains(needle), "{args:?}: {line}");
    }
}

#[test]
fn data_info_describes_generated_data() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        tmp.path(),
        &["--json", "data", "info", "--data", "synthetic"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let info = json(&out);
    assert_eq!(info["kind"], "synthetic");
    assert_eq!(info["splits"].as_array().unwrap().len(), 2);
    assert_eq!(info["classes"].as_array().unwrap().len(), 10);
}

#[test]
fn the_saved_config_names_a_relative_data_folder_by_its_absolute_path() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let made = run(
        p,
        &[
            "-q",
            "data",
            "make",
            "imgs",
            "--data",
            "synthetic",
            "--size",
            "16",
            "--train",
            "40",
            "--test",
            "20",
        ],
    );
    assert!(made.status.success(), "{}", stderr(&made));
    std::fs::write(
        p.join("t.toml"),
        "name = \"rel\"\nmodel = \"cnn32-small\"\n[data]\nkind = \"folder\"\npath = \"imgs\"\nheight = 28\nwidth = 28\n[train]\nbatch-size = 8\nschedule = [{ epochs = 1, lr = 1e-3 }]\n",
    )
    .unwrap();
    let out = run(p, &["-q", "--threads", "1", "train", "--config", "t.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let saved = std::fs::read_to_string(p.join("runs/rel/train/config.toml")).unwrap();
    let abs = p.join("imgs");
    assert!(
        saved.contains(&format!("path = \"{}\"", abs.display())),
        "{saved}"
    );
}
