//! Run directories stay whole: one command at a time per directory (a second `train` or
//! `build` is refused at once, naming the holder's pid), killed runs leave no temporary files
//! behind once the directory is used again, `train --force` never mixes two runs, `eval`
//! refuses a model of another run than its checkpoint, and a run name cannot leave `runs/`.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

/// Starts `distill-edge args…` in `dir` without waiting for it.
fn spawn(dir: &Path, args: &[&str]) -> Child {
    Command::new(bin())
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn distill-edge")
}

/// Waits until `what` holds, failing if `child` ends first or after ten minutes.
fn wait_until(child: &mut Child, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `dir/.lock` names process `pid` as its holder.
fn locked_by(dir: &Path, pid: u32) -> bool {
    std::fs::read_to_string(dir.join(".lock"))
        .is_ok_and(|t| t.split_whitespace().next() == Some(&pid.to_string()))
}

fn epochs_done(path: &Path) -> Option<u64> {
    // The header is JSON right after the 8-byte magic and a u32 length.
    let bytes = std::fs::read(path).ok()?;
    let len = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(12..12 + len)?).ok()?;
    header["epochs_done"].as_u64()
}

/// The names under `dir` (recursively) that look like temporary files.
fn temporaries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".tmp-") || name.contains(".old-") {
            out.push(name);
        } else if e.file_type().unwrap().is_dir() {
            out.extend(temporaries(&e.path()));
        }
    }
    out
}

#[test]
fn two_trains_into_one_out_dir_refuse_the_second_and_keep_the_first_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let long = synthetic_config(p, "long", "[{ epochs = 2, lr = 1e-3 }]", 3000);
    let other = synthetic_config(p, "other", "[{ epochs = 1, lr = 1e-3 }]", 600);
    let args = |cfg: &Path| -> Vec<String> {
        ["-q", "--threads", "1", "train", "--config"]
            .iter()
            .map(|s| s.to_string())
            .chain([cfg.display().to_string(), "--out".into(), "out".into()])
            .collect()
    };
    let first_args = args(&long);
    let first_args: Vec<&str> = first_args.iter().map(String::as_str).collect();
    let mut first = spawn(p, &first_args);
    let out = p.join("out");
    let pid = first.id();
    wait_until(&mut first, "the first run locks out/", || {
        locked_by(&out, pid)
    });

    let started = Instant::now();
    let mut second_args = args(&other);
    second_args.push("--force".into());
    let second_args: Vec<&str> = second_args.iter().map(String::as_str).collect();
    let second = run(p, &second_args);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the refusal was not fast"
    );
    let line = error_line(&second, p);
    assert_eq!(
        line,
        format!(
            "error: out is in use by another distill-edge train (pid {}); wait for it or stop it",
            first.id()
        )
    );
    assert_eq!(
        stderr(&second).trim().lines().count(),
        1,
        "{}",
        stderr(&second)
    );

    let status = first.wait().unwrap();
    assert!(status.success(), "the first run failed");
    // Its files are its own: the config of `long`, weights that evaluate.
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("name = \"long\""), "{config}");
    assert_eq!(epochs_done(&out.join("model.ckpt")), Some(2));
    let eval = run(p, &["-q", "eval", "out", "--no-retrieval"]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    // The lock went with the process: the directory is usable again.
    let again = run(p, &second_args);
    assert!(again.status.success(), "{}", stderr(&again));
}

fn write_pipeline(dir: &Path, name: &str) {
    std::fs::write(
        dir.join("pipe.toml"),
        format!(
            r#"name = "{name}"
seed = 2
[data]
kind = "synthetic"
train = 1500
test = 200
[teacher]
model = "cnn32"
train = {{ batch-size = 32, schedule = [{{ epochs = 2, lr = 2e-3 }}] }}
[student]
model = "cnn32-small"
train = {{ batch-size = 32, schedule = [{{ epochs = 1, lr = 2e-3 }}] }}
distill = {{ method = "indistill", curriculum = [1, 1, 1] }}
baselines = []
[export]
int8 = false
calibration-images = 64
[check]
runs = 2
max-accuracy-drop = 100.0
"#
        ),
    )
    .unwrap();
}

#[test]
fn two_builds_on_one_run_dir_do_not_destroy_artifacts() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    write_pipeline(p, "pipe");
    let args = ["-q", "--threads", "1", "build", "--config", "pipe.toml"];
    let mut first = spawn(p, &args);
    let run_dir = p.join("runs/pipe");
    let pid = first.id();
    wait_until(&mut first, "the first build locks runs/pipe", || {
        locked_by(&run_dir, pid)
    });

    let started = Instant::now();
    let second = run(p, &args);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the refusal was not fast"
    );
    assert_eq!(
        error_line(&second, p),
        format!(
            "error: runs/pipe is in use by another distill-edge build (pid {}); wait for it or stop it",
            first.id()
        )
    );

    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "teacher/model.ckpt",
        "teacher/eval.json",
        "student/model.ckpt",
    ] {
        assert!(run_dir.join(f).is_file(), "{f} missing");
    }
    // And the next build finds everything in place.
    let third = run(
        p,
        &["--json", "--threads", "1", "build", "--config", "pipe.toml"],
    );
    assert!(third.status.success(), "{}", stderr(&third));
    for s in json(&third)["stages"].as_array().unwrap() {
        assert_eq!(s["status"], "up to date", "{s}");
    }
}

#[test]
fn a_killed_train_leaves_no_temporary_files_after_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let cfg = synthetic_config(p, "killed", "[{ epochs = 4, lr = 1e-3 }]", 3000);
    let cfg = cfg.to_str().unwrap();
    let args = [
        "-q",
        "--threads",
        "1",
        "train",
        "--config",
        cfg,
        "--out",
        "out",
    ];
    let mut child = spawn(p, &args);
    let out = p.join("out");
    wait_until(&mut child, "the first checkpoint", || {
        epochs_done(&out.join("checkpoint.ckpt")).unwrap_or(0) >= 1
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let pid = child.id();
    // What a kill in the middle of writes leaves (the timing of the kill cannot be chosen, so
    // they are made here, named for the killed process), and a live process's file.
    let stale = [
        out.join(format!(".model.ckpt.tmp-{pid}-0123456789abcdef")),
        out.join(format!(".checkpoint.ckpt.tmp-{pid}-fedcba9876543210")),
    ];
    for f in &stale {
        std::fs::write(f, b"torn").unwrap();
    }
    let bundle = out.join(format!(".bundle.tmp-{pid}"));
    std::fs::create_dir_all(bundle.join("models")).unwrap();
    let live = out.join(format!(".x.tmp-{}-0123456789abcdef", std::process::id()));
    std::fs::write(&live, b"mine").unwrap();

    let resumed = run(p, &[&args[..], &["--resume"]].concat());
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let left = temporaries(&out);
    let live_name = live.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(left, [live_name], "temporary files left behind");
    assert_eq!(epochs_done(&out.join("model.ckpt")), Some(4));
}

#[test]
fn a_killed_train_force_leaves_no_stale_model() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let old = synthetic_config(p, "old", "[{ epochs = 1, lr = 1e-3 }]", 600);
    let new = synthetic_config(p, "new", "[{ epochs = 4, lr = 1e-3 }]", 3000);
    let base = ["-q", "--threads", "1", "train", "--out", "out", "--config"];
    let first = run(p, &[&base[..], &[old.to_str().unwrap()]].concat());
    assert!(first.status.success(), "{}", stderr(&first));
    let out = p.join("out");
    assert!(out.join("model.ckpt").is_file());

    let mut child = spawn(
        p,
        &[&base[..], &[new.to_str().unwrap(), "--force"]].concat(),
    );
    wait_until(&mut child, "the forced run's config", || {
        std::fs::read_to_string(out.join("config.toml")).is_ok_and(|t| t.contains("\"new\""))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !out.join("model.ckpt").exists(),
        "the old model.ckpt is still beside the new run's config"
    );
    let eval = run(p, &["-q", "eval", "out", "--no-retrieval"]);
    assert_eq!(eval.status.code(), Some(1), "{}", stderr(&eval));
    assert!(
        error_line(&eval, p).contains("no model.ckpt"),
        "{}",
        stderr(&eval)
    );
}

#[test]
fn eval_refuses_a_model_of_another_run_than_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let a = synthetic_config(p, "a", "[{ epochs = 1, lr = 1e-3 }]", 300);
    let b = synthetic_config(p, "b", "[{ epochs = 1, lr = 2e-3 }]", 300);
    for (cfg, dir) in [(&a, "a"), (&b, "b")] {
        let out = run(
            p,
            &[
                "-q",
                "train",
                "--config",
                cfg.to_str().unwrap(),
                "--out",
                dir,
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    std::fs::copy(p.join("b/model.ckpt"), p.join("a/model.ckpt")).unwrap();
    let eval = run(p, &["-q", "eval", "a", "--no-retrieval"]);
    assert_eq!(eval.status.code(), Some(1), "{}", stderr(&eval));
    let line = error_line(&eval, p);
    assert!(line.contains("made by another run"), "{line}");
    assert_eq!(stderr(&eval).trim().lines().count(), 1, "{}", stderr(&eval));
    // Its own model still evaluates.
    let ok = run(p, &["-q", "eval", "b", "--no-retrieval"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
}

/// Every entry under `dir`, as relative paths.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            out.push(
                e.path()
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn a_run_name_of_dotdot_is_refused_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // The commands run one level down, so that `runs/..` and `runs/../..` stay inside tmp.
    let p = tmp.path().join("work");
    std::fs::create_dir(&p).unwrap();
    let train = synthetic_config(&p, "escape", "[{ epochs = 1, lr = 1e-3 }]", 300);
    let text = std::fs::read_to_string(&train)
        .unwrap()
        .replace("name = \"escape\"", "name = \"..\"");
    std::fs::write(&train, text).unwrap();
    write_pipeline(&p, "..");
    std::fs::write(
        p.join("distill.toml"),
        "name = \"..\"\nstudent = \"cnn32-small\"\n[data]\nkind = \"synthetic\"\n[train]\nschedule = [{ epochs = 1, lr = 1e-3 }]\n[distill]\nmethod = \"none\"\n",
    )
    .unwrap();
    let before = listing(tmp.path());
    let cases: &[&[&str]] = &[
        &["train", "--config", "escape.toml"],
        &["train", "--name", ".."],
        &["train", "--name", "../x"],
        &["build", "--config", "pipe.toml"],
        &["distill", "--config", "distill.toml"],
        &["distill", "--config", "distill.toml", "--name", ".."],
        &["compare", "--config", "distill.toml"],
    ];
    for args in cases {
        let out = run(&p, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let line = error_line(&out, &p);
        assert!(
            line.starts_with("error: ") && line.contains("name") && line.contains(".."),
            "{args:?}: {line}"
        );
        assert_eq!(
            stderr(&out).trim().lines().count(),
            1,
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(listing(tmp.path()), before, "{args:?} wrote files");
    }
}
