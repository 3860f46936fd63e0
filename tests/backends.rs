//! Training backends (`--backend`, the `backend` config key).
//!
//! In every build: a backend the binary was built without is refused in one line that names
//! the cargo feature, before anything is written.
//!
//! With `--features wgpu` (scripts/test-gpu.sh): the wgpu backend trains a tiny network on
//! the same seed and data as flex and must follow the same loss curve within
//! [`LOSS_TOLERANCE`]; checkpoints written on one backend load, evaluate and resume on the
//! other. On a machine without a GPU, wgpu runs on Mesa's software Vulkan driver lavapipe
//! (Debian `mesa-vulkan-drivers`); without any Vulkan driver these tests skip, and fail under
//! `CI=true`.

mod common;

use common::{error_line, run, stderr, synthetic_config};

/// `--backend wgpu` (flag) and `backend = "wgpu"` (config key) in a build without `wgpu`.
#[cfg(not(feature = "wgpu"))]
#[test]
fn a_backend_not_built_is_refused_in_one_line_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = synthetic_config(tmp.path(), "nb", "[{ epochs = 1, lr = 1e-3 }]", 64);
    let out = run(
        tmp.path(),
        &[
            "train",
            "-c",
            cfg.to_str().unwrap(),
            "--backend",
            "wgpu",
            "-o",
            "flag",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        error_line(&out, tmp.path()),
        "error: backend 'wgpu': this build has no wgpu support; rebuild distill-edge with `--features wgpu`"
    );
    assert!(!tmp.path().join("flag").exists());

    // The config key, and the flag winning over it.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("backend = \"wgpu\"\n{text}")).unwrap();
    let out = run(
        tmp.path(),
        &["train", "-c", cfg.to_str().unwrap(), "-o", "key"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(error_line(&out, tmp.path()).contains("`--features wgpu`"));
    assert!(!tmp.path().join("key").exists());
    let out = run(
        tmp.path(),
        &[
            "train",
            "-c",
            cfg.to_str().unwrap(),
            "--backend",
            "cpu",
            "-o",
            "cpu",
            "--threads",
            "1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(tmp.path().join("cpu/model.ckpt").exists());
}

/// An unknown backend name in a config names the key and the accepted values.
#[test]
fn an_unknown_backend_in_a_config_names_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = synthetic_config(tmp.path(), "bad", "[{ epochs = 1, lr = 1e-3 }]", 64);
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("backend = \"gpu\"\n{text}")).unwrap();
    let out = run(tmp.path(), &["train", "-c", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("unknown backend 'gpu': expected cpu or wgpu"),
        "{err}"
    );
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use super::*;
    use std::path::Path;

    use distill_edge::config::{LrStage, TrainSettings};
    use distill_edge::data::{DataSource, Splits};
    use distill_edge::model::ModelSpec;
    use distill_edge::model::infer::predict;
    use distill_edge::progress::Reporter;
    use distill_edge::runtime::Backend;
    use distill_edge::train::Checkpoint;
    use distill_edge::train::supervised::{JobIdentity, TrainOptions, TrainReport, train};

    /// How far the wgpu run may drift from the flex run, per epoch, relative to the loss
    /// (floor 1e-4 absolute): the two backends sum in different orders (GPU reductions,
    /// convolution algorithms), and Adam carries the rounding from step to step.
    const LOSS_TOLERANCE: f64 = 2e-3;

    /// The wgpu device, or `None` after reporting the missing driver (a failure under CI).
    fn wgpu_available() -> bool {
        match Backend::Wgpu.device() {
            Ok(_) => true,
            Err(e) => {
                distill_edge::testing::missing_tool(
                    &format!("a Vulkan driver for wgpu: {e}"),
                    "apt-get install mesa-vulkan-drivers libvulkan1, or scripts/setup.sh",
                );
                false
            }
        }
    }

    fn close(a: f64, b: f64) -> bool {
        a.is_finite()
            && b.is_finite()
            && (a - b).abs() <= LOSS_TOLERANCE * a.abs().max(b.abs()).max(0.05)
    }

    fn splits() -> Splits {
        let source: DataSource =
            toml::from_str("kind = \"synthetic\"\ntrain = 32\ntest = 64\nseed = 3").unwrap();
        distill_edge::data::load(&source).unwrap()
    }

    /// Trains cnn32-small for `epochs` one-batch epochs (32 images, batch 32: one Adam step
    /// per epoch, so each epoch's loss is one step's).
    fn fit(
        dir: &Path,
        splits: &Splits,
        epochs: usize,
        backend: Backend,
        resume: bool,
    ) -> TrainReport {
        let arch = ModelSpec::resolve("cnn32-small", Path::new("."))
            .unwrap()
            .bind(splits.train.shape, splits.train.classes.len())
            .unwrap();
        let mut settings: TrainSettings =
            toml::from_str("schedule = [{ epochs = 1, lr = 1e-3 }]\nbatch-size = 32").unwrap();
        settings.schedule = vec![LrStage { epochs, lr: 1e-3 }];
        let mut reporter = Reporter::new(true);
        train(
            &arch,
            &settings,
            splits,
            &JobIdentity {
                config_hash: "backends-test",
                dataset: "synthetic",
                seed: 11,
                kind: "train",
                config_toml: "",
            },
            TrainOptions {
                out_dir: dir,
                resume,
                force: !resume,
                reporter: &mut reporter,
                backend,
            },
        )
        .unwrap()
    }

    fn assert_same_curve(
        cpu: &TrainReport,
        gpu: &TrainReport,
        epochs: std::ops::RangeInclusive<usize>,
    ) {
        for e in epochs {
            let (a, b) = (&cpu.epochs[e - 1], &gpu.epochs[e - 1]);
            assert_eq!((a.epoch, b.epoch), (e, e));
            eprintln!(
                "epoch {e}: train loss flex {:.6} wgpu {:.6}, test loss flex {:.6} wgpu {:.6}",
                a.train_loss, b.train_loss, a.test_loss, b.test_loss
            );
            assert!(
                close(a.train_loss, b.train_loss),
                "epoch {e}: train loss {} vs {}",
                a.train_loss,
                b.train_loss
            );
            assert!(
                close(a.test_loss, b.test_loss),
                "epoch {e}: test loss {} vs {}",
                a.test_loss,
                b.test_loss
            );
        }
    }

    /// The loss must actually move, or the comparison says nothing.
    fn assert_learns(r: &TrainReport) {
        let (first, last) = (r.epochs[0].train_loss, r.epochs.last().unwrap().train_loss);
        assert!(
            last < first * 0.95,
            "loss {first} -> {last}: the network did not learn"
        );
    }

    #[test]
    fn wgpu_follows_the_flex_loss_curve_and_checkpoints_cross_backends() {
        if !wgpu_available() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let splits = splits();
        let epochs = 6;
        let cpu = fit(
            &tmp.path().join("cpu"),
            &splits,
            epochs,
            Backend::Cpu,
            false,
        );
        let gpu = fit(
            &tmp.path().join("wgpu"),
            &splits,
            epochs,
            Backend::Wgpu,
            false,
        );
        assert_learns(&cpu);
        assert_same_curve(&cpu, &gpu, 1..=epochs);

        // Checkpoints: the wgpu model evaluated on flex and the flex model on wgpu give the
        // logits of evaluating each on its own backend.
        let norm = distill_edge::data::prep::Normalization::from_dataset(&splits.train);
        for (model, other) in [(&gpu.model, Backend::Cpu), (&cpu.model, Backend::Wgpu)] {
            let ckpt = Checkpoint::read(model).unwrap();
            let logits = |b: Backend| {
                let device = b.device().unwrap();
                let net = ckpt.load_model(&device, model).unwrap();
                predict(&net, &splits.test, &norm, 64, &device).logits
            };
            let (mine, theirs) = (
                logits(if other == Backend::Cpu {
                    Backend::Wgpu
                } else {
                    Backend::Cpu
                }),
                logits(other),
            );
            assert_eq!(mine.len(), theirs.len());
            let worst = mine
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
                .fold(0.0f32, f32::max);
            assert!(
                worst < 1e-4,
                "{}: logits on {other} differ by {worst}",
                model.display()
            );
        }

        // Resume across backends: two epochs on flex, the rest on wgpu from its checkpoint
        // (weights and Adam moments), against the uninterrupted flex run.
        let dir = tmp.path().join("resumed");
        fit(&dir, &splits, 2, Backend::Cpu, false);
        let resumed = fit(&dir, &splits, epochs, Backend::Wgpu, true);
        assert_eq!(resumed.resumed_after, 2);
        assert_same_curve(&cpu, &resumed, 3..=epochs);
    }

    /// `train --backend wgpu` end to end, and its model evaluated by `eval` (flex).
    #[test]
    fn the_cli_trains_on_wgpu_and_eval_reads_the_model_on_the_cpu() {
        if !wgpu_available() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let cfg = synthetic_config(tmp.path(), "g", "[{ epochs = 2, lr = 1e-3 }]", 64);
        let out = run(
            tmp.path(),
            &[
                "--json",
                "train",
                "-c",
                cfg.to_str().unwrap(),
                "--backend",
                "wgpu",
                "-o",
                "g",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("backend wgpu"), "{}", stderr(&out));
        let report = common::json(&out);
        let trained = report["test_loss"].as_f64().unwrap();
        let eval = common::run_ok_json(
            tmp.path(),
            &[
                "--json",
                "eval",
                "g/model.ckpt",
                "--no-retrieval",
                "--threads",
                "1",
            ],
        );
        let on_cpu = eval["loss"].as_f64().expect("eval JSON has the test loss");
        assert!(
            close(trained, on_cpu),
            "test loss {trained} on wgpu, {on_cpu} on the cpu"
        );
    }
}
