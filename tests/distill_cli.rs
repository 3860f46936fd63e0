//! End-to-end distillation on generated data: InDistill's curriculum, resume inside the
//! curriculum, the comparison table, CIFAR-10-format data, mismatched pairs.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Trains a cnn32 auxiliary teacher on generated data of `train` images.
fn teacher(dir: &Path, data_extra: &str, train: usize) -> std::path::PathBuf {
    let cfg = dir.join("teacher.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"teacher\"\nseed = 3\nmodel = \"cnn32\"\n[data]\nkind = \"synthetic\"\ntrain = {train}\ntest = 200\n{data_extra}\n[train]\nbatch-size = 32\nschedule = [{{ epochs = 2, lr = 2e-3 }}]\n"
        ),
    )
    .unwrap();
    let out = run(
        dir,
        &[
            "-q",
            "--threads",
            "1",
            "train",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    dir.join("runs/teacher/train/model.ckpt")
}

fn distill_config(
    dir: &Path,
    teacher: &Path,
    curriculum: &str,
    main: &str,
    data: &str,
) -> std::path::PathBuf {
    let cfg = dir.join("distill.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"student\"\nseed = 5\nstudent = \"cnn32-small\"\nteacher = \"{}\"\n[data]\n{data}\n[train]\nbatch-size = 32\nschedule = {main}\n[distill]\nmethod = \"indistill\"\ncurriculum = {curriculum}\n",
            teacher.display()
        ),
    )
    .unwrap();
    cfg
}

const SYNTH: &str = "kind = \"synthetic\"\ntrain = 600\ntest = 200";

#[test]
fn indistill_runs_its_curriculum_then_the_main_phase_and_classifies() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let t = teacher(p, "", 600);
    let cfg = distill_config(p, &t, "[1, 1, 1]", "[{ epochs = 2, lr = 2e-3 }]", SYNTH);
    let out = run(
        p,
        &[
            "--json",
            "--threads",
            "1",
            "distill",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json(&out);
    let phases: Vec<&str> = report["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "curriculum:block0",
            "curriculum:block1",
            "curriculum:block2",
            "main:indistill",
            "main:indistill"
        ]
    );
    assert!(report["test_accuracy"].as_f64().unwrap() > 0.5, "{report}");
    assert!(stderr(&out).contains("pruned teacher 'cnn32'"));
}

#[test]
fn a_run_killed_inside_the_curriculum_resumes_in_the_same_stage_with_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let data = "kind = \"synthetic\"\ntrain = 3000\ntest = 200";
    let t = teacher(p, "", 600);
    let cfg = distill_config(p, &t, "[2, 2, 2]", "[{ epochs = 1, lr = 1e-3 }]", data);
    let cfg = cfg.to_str().unwrap();
    let straight = run(
        p,
        &[
            "-q",
            "--threads",
            "1",
            "distill",
            "--config",
            cfg,
            "--out",
            "straight",
        ],
    );
    assert!(straight.status.success(), "{}", stderr(&straight));

    let mut child = Command::new(bin())
        .current_dir(p)
        .args([
            "-q",
            "--threads",
            "1",
            "distill",
            "--config",
            cfg,
            "--out",
            "killed",
        ])
        .spawn()
        .unwrap();
    let ckpt = p.join("killed/checkpoint.ckpt");
    let deadline = Instant::now() + Duration::from_secs(600);
    let epochs_done = |path: &Path| -> Option<u64> {
        let c = distill_edge::train::Checkpoint::read(path).ok()?;
        Some(c.header.epochs_done as u64)
    };
    while epochs_done(&ckpt).unwrap_or(0) < 1 {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = epochs_done(&ckpt).unwrap();
    assert!(done < 7, "finished before the kill");

    let report = run_ok_json(
        p,
        &[
            "--json",
            "--threads",
            "1",
            "distill",
            "--config",
            cfg,
            "--out",
            "killed",
            "--resume",
        ],
    );
    assert_eq!(report["resumed_after"].as_u64().unwrap(), done);
    let phases: Vec<&str> = report["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases.len(), 7);
    assert_eq!(phases[2], "curriculum:block1");

    let weights = |path: &Path| {
        let c = distill_edge::train::Checkpoint::read(path).unwrap();
        distill_edge::model::flatten_params(
            &c.load_model(&distill_edge::runtime::cpu(), path).unwrap(),
        )
    };
    let a = weights(&p.join("straight/model.ckpt"));
    let b = weights(&p.join("killed/model.ckpt"));
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "resumed weights differ"
    );
}

#[test]
fn compare_prints_one_table_over_seeds_and_reuses_finished_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let t = teacher(p, "", 600);
    let cfg = distill_config(p, &t, "[1, 1, 1]", "[{ epochs = 4, lr = 2e-3 }]", SYNTH);
    let args = [
        "--threads",
        "1",
        "compare",
        "--config",
        cfg.to_str().unwrap(),
        "--seeds",
        "1,2",
        "--variants",
        "none,pkt,indistill,indistill-reference,no-curriculum",
        "--top-k",
        "10",
    ];
    let out = run(p, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    for needle in [
        "no validation split configured",
        "none",
        "pkt",
        "n/a (head untrained)",
        "indistill-reference",
        "no-curriculum",
        "±",
        "P@10",
        "seed 2",
        "Paired differences over the 2 seeds",
        "none - indistill",
    ] {
        assert!(table.contains(needle), "{needle} missing from\n{table}");
    }
    let md = std::fs::read_to_string(p.join("runs/student/compare/compare.md")).unwrap();
    assert_eq!(md, table);
    // Equal budget (the default): the curriculum counts inside the main schedule.
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.join("runs/student/compare/compare.json")).unwrap(),
    )
    .unwrap();
    let epochs = |label: &str| {
        j["results"][0]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["label"] == label)
            .unwrap()["epochs"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(epochs("indistill"), 4);
    assert_eq!(epochs("no-curriculum"), 4);
    assert_eq!(epochs("none"), 4);
    // One pair row per pair of the 5 variants.
    assert_eq!(j["results"][0]["pairs"].as_array().unwrap().len(), 10);
    // A second invocation trains nothing.
    let started = Instant::now();
    let again = run(p, &args);
    assert!(again.status.success());
    assert!(!stderr(&again).contains("epoch "), "{}", stderr(&again));
    assert!(started.elapsed() < Duration::from_secs(120));
}

#[test]
fn compare_keeps_each_methods_configured_weights_and_chooses_on_validation() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let t = teacher(p, "", 600);
    let cfg = distill_config(p, &t, "[1, 1, 1]", "[{ epochs = 4, lr = 2e-3 }]", SYNTH);
    // InDistill configured as the reference (PKT only), and a custom variant.
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("weights = { pkt = 1.0 }\n[validation]\nimages = 100\nseed = 7\n[variants.kd-soft]\nmethod = \"kd\"\nweights = { kd = 0.5, ce = 0.5 }\n");
    std::fs::write(&cfg, text).unwrap();
    let base = [
        "--threads",
        "1",
        "compare",
        "--config",
        cfg.to_str().unwrap(),
        "--variants",
        "indistill,kd-soft",
        "--top-k",
        "10",
    ];
    let out = run(p, &base);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    // The configured weights were used: InDistill never trained its head (compare used to
    // reset every method to its default weights, which train the head).
    let row = table
        .lines()
        .find(|l| l.contains("indistill"))
        .unwrap_or_else(|| panic!("no indistill row in\n{table}"));
    assert!(row.contains("n/a (head untrained)"), "{row}");
    let resolved =
        std::fs::read_to_string(p.join("runs/student/compare/indistill-equal-seed1/config.toml"))
            .unwrap();
    assert!(
        resolved.contains("kd = 0.0") && resolved.contains("ce = 0.0"),
        "{resolved}"
    );
    let kd =
        std::fs::read_to_string(p.join("runs/student/compare/kd-soft-seed1/config.toml")).unwrap();
    assert!(kd.contains("kd = 0.5") && kd.contains("ce = 0.5"), "{kd}");
    // Figures on validation only; the test split is not looked at without --test.
    assert!(table.contains("validation split"), "{table}");
    assert!(!table.contains("test split"), "{table}");
    assert!(
        table.contains("database = the training images without the validation images"),
        "{table}"
    );
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.join("runs/student/compare/compare.json")).unwrap(),
    )
    .unwrap();
    assert!(j["runs"][0]["test"].is_null());
    assert_eq!(j["runs"][0]["validation"]["test_images"], 100);
    // --test adds the test split, with the same trained runs.
    let mut with_test = base.to_vec();
    with_test.push("--test");
    let out = run(p, &with_test);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("epoch "), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table.contains("validation split") && table.contains("test split"),
        "{table}"
    );
    // An unknown variant names the known ones.
    let out = run(
        p,
        &[
            "compare",
            "--config",
            cfg.to_str().unwrap(),
            "--variants",
            "turbo",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains("turbo") && e.contains("indistill-reference") && e.contains("kd-soft"),
        "{e}"
    );
}

#[test]
fn distillation_works_on_cifar10_format_files() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    // Generated CIFAR-10 binary batches: class-dependent colour blocks.
    let dir = p.join("cifar");
    std::fs::create_dir(&dir).unwrap();
    let write = |name: &str, n: usize, salt: usize| {
        let labels: Vec<u8> = (0..n).map(|i| ((i + salt) % 10) as u8).collect();
        let mut images = vec![0u8; n * 3072];
        for (i, &l) in labels.iter().enumerate() {
            for c in 0..3 {
                for y in 0..32 {
                    for x in 0..32 {
                        let on =
                            (x / 8 + y / 8 + c) % 10 == l as usize % 10 || (x * y + i) % 17 == 0;
                        images[i * 3072 + c * 1024 + y * 32 + x] = if on { 200 } else { 30 };
                    }
                }
            }
        }
        distill_edge::data::cifar::write_cifar10_batch(&dir.join(name), &labels, &images).unwrap();
    };
    for b in 1..=5 {
        write(&format!("data_batch_{b}.bin"), 60, b);
    }
    write("test_batch.bin", 50, 0);
    let data = format!("kind = \"cifar10\"\npath = \"{}\"", dir.display());
    let tcfg = p.join("t.toml");
    std::fs::write(
        &tcfg,
        format!("name = \"teacher\"\nmodel = \"cnn32\"\n[data]\n{data}\n[train]\nbatch-size = 32\nschedule = [{{ epochs = 2, lr = 2e-3 }}]\n"),
    )
    .unwrap();
    let out = run(
        p,
        &[
            "-q",
            "--threads",
            "1",
            "train",
            "--config",
            tcfg.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let t = p.join("runs/teacher/train/model.ckpt");
    let cfg = distill_config(p, &t, "[1, 1, 1]", "[{ epochs = 1, lr = 2e-3 }]", &data);
    let out = run(
        p,
        &[
            "--json",
            "--threads",
            "1",
            "distill",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["epochs"].as_array().unwrap().len(), 4);
}

#[test]
fn a_teacher_of_another_depth_or_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let t = teacher(p, "", 300);
    // Student spec with two blocks: InDistill needs the same depth.
    std::fs::write(
        p.join("shallow.toml"),
        "name = \"shallow\"\nfc = [16]\n[[blocks]]\nwidth = 4\n[[blocks]]\nwidth = 8\n",
    )
    .unwrap();
    let cfg = distill_config(p, &t, "[1, 1]", "[{ epochs = 1, lr = 1e-3 }]", SYNTH);
    let out = run(
        p,
        &[
            "distill",
            "--config",
            cfg.to_str().unwrap(),
            "--student",
            "shallow.toml",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out, p);
    assert!(line.contains("same depth"), "{line}");
    // Data the teacher was not built for.
    let cfg = distill_config(
        p,
        &t,
        "[1, 1, 1]",
        "[{ epochs = 1, lr = 1e-3 }]",
        "kind = \"synthetic\"\nchannels = 3\nheight = 32\nwidth = 32",
    );
    let out = run(p, &["distill", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out, p);
    assert!(
        line.contains("1x28x28") && line.contains("3x32x32"),
        "{line}"
    );
    // A curriculum that does not match the student's depth.
    let cfg = distill_config(p, &t, "[1, 1]", "[{ epochs = 1, lr = 1e-3 }]", SYNTH);
    let out = run(p, &["distill", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out, p).contains("distill.curriculum"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_teacher_cache_gives_the_weights_of_running_the_teacher_and_a_corrupt_one_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let t = teacher(p, "", 600);
    // InDistill with its default main losses: the cache serves the curriculum targets of
    // every block, the logits (KD) and the embedding (PKT).
    let cfg = distill_config(p, &t, "[1, 1, 1]", "[{ epochs = 2, lr = 2e-3 }]", SYNTH);
    let no_cache = p.join("no-cache.toml");
    std::fs::write(
        &no_cache,
        std::fs::read_to_string(&cfg).unwrap() + "teacher-cache = false\n",
    )
    .unwrap();
    let distill = |config: &Path, out: &str| {
        let o = run(
            p,
            &[
                "--threads",
                "1",
                "distill",
                "--config",
                config.to_str().unwrap(),
                "--out",
                out,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let weights = model_weights;
    distill(&cfg, "cached");
    let caches: Vec<_> = std::fs::read_dir(p.join("teacher-cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    let log = distill(&no_cache, "direct");
    assert!(!log.contains("teacher outputs from the cache"), "{log}");
    let a = weights(&p.join("cached/model.ckpt"));
    let b = weights(&p.join("direct/model.ckpt"));
    assert_eq!(a.len(), b.len());
    // The cached targets were computed in batches of 256, the direct ones in the training
    // batches of 32: the same arithmetic per image, but the convolution kernels may round
    // differently with the batch size; 5 epochs of Adam carry such differences along.
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0f32, f32::max);
    assert!(
        max < 1e-3,
        "cached vs direct: max relative difference {max}"
    );
    // A second run reads the cache, and gives the first run's weights exactly.
    let log = distill(&cfg, "again");
    assert!(log.contains("teacher outputs from the cache"), "{log}");
    assert_eq!(weights(&p.join("again/model.ckpt")), a);
    // A corrupt cache is noticed, rebuilt, and gives the same weights again.
    let mut bytes = std::fs::read(&caches[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&caches[0], &bytes).unwrap();
    let log = distill(&cfg, "rebuilt");
    assert!(log.contains("rebuilding"), "{log}");
    assert!(log.contains("SHA-256"), "{log}");
    assert_eq!(weights(&p.join("rebuilt/model.ckpt")), a);
    // A truncated one too.
    let len = std::fs::metadata(&caches[0]).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&caches[0])
        .unwrap();
    f.set_len(len - 100).unwrap();
    drop(f);
    let log = distill(&cfg, "rebuilt2");
    assert!(log.contains("rebuilding"), "{log}");
    assert_eq!(weights(&p.join("rebuilt2/model.ckpt")), a);
}
