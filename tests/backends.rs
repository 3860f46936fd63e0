//! Training backends (`--backend`, the `backend` config key).
//!
//! In every build: a backend the binary was built without is refused in one line that names
//! the cargo feature, before anything is written.
//!
//! With `--features wgpu` (scripts/test-gpu.sh): the wgpu backend trains a tiny network on
//! the same seed and data as flex and must follow the same loss curve within
//! [`LOSS_TOLERANCE`]; checkpoints written on one backend load, evaluate and resume on the
//! other. On a machine without a GPU, wgpu runs on Mesa's software Vulkan driver lavapipe
//! (Debian `mesa-vulkan-drivers`); without any adapter (no Vulkan driver, nor the OpenGL one
//! wgpu falls back to) these tests skip, and fail under `CI=true`.

mod common;

use common::{run, stderr, synthetic_config};

/// `--backend wgpu` (flag) and `backend = "wgpu"` (config key) in a build without `wgpu`.
#[cfg(not(feature = "wgpu"))]
#[test]
fn a_backend_not_built_is_refused_in_one_line_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = synthetic_config(tmp.path(), "nb", "[{ epochs = 1, lr = 1e-3 }]", 64);
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "-c", cfg.to_str().unwrap()];
        args.extend_from_slice(extra);
        run(tmp.path(), &args)
    };
    let out = train(&["--backend", "wgpu", "-o", "flag"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        common::error_line(&out, tmp.path()),
        "error: backend 'wgpu': this build has no wgpu support; rebuild distill-edge with `--features wgpu`"
    );
    assert!(!tmp.path().join("flag").exists());

    // The config key, and the flag winning over it.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("backend = \"wgpu\"\n{text}")).unwrap();
    let out = train(&["-o", "key"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(common::error_line(&out, tmp.path()).contains("`--features wgpu`"));
    assert!(!tmp.path().join("key").exists());
    let out = train(&["--backend", "cpu", "-o", "cpu", "--threads", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(tmp.path().join("cpu/model.ckpt").exists());
}

/// `--help` (long and short) of every command with `--backend` lists `wgpu` exactly when the
/// binary was built with the feature.
#[test]
fn help_lists_wgpu_only_in_a_build_with_the_feature() {
    let tmp = tempfile::tempdir().unwrap();
    for cmd in ["train", "distill", "build"] {
        for flag in ["--help", "-h"] {
            let out = run(tmp.path(), &[cmd, flag]);
            assert!(out.status.success(), "{}", stderr(&out));
            let help = String::from_utf8_lossy(&out.stdout);
            assert!(
                help.contains("--backend <BACKEND>"),
                "{cmd} {flag}:\n{help}"
            );
            assert!(help.contains("cpu"), "{cmd} {flag}:\n{help}");
            assert!(help.contains("--devices <N>"), "{cmd} {flag}:\n{help}");
            assert_eq!(
                help.contains("wgpu"),
                cfg!(feature = "wgpu"),
                "{cmd} {flag}:\n{help}"
            );
        }
    }
}

/// Held by the tests of this file that draw from burn's CPU random generator (one per
/// process, seeded globally), so that none draws between another's seed and its draws.
static CPU_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Every float parameter's values, in module order.
fn parameters(net: &distill_edge::model::ConvNet) -> Vec<Vec<f32>> {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0
                .push(p.val().into_data().try_into_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect(Vec::new());
    net.visit(&mut c);
    c.0
}

/// A network moved with `ConvNet::to_device_drawn_here` (as `train` moves a fresh network to
/// a GPU backend) gets the weights it would have drawn had it stayed, in the order a forward
/// pass first uses them (mobilenet96: the depthwise conv runs before the pointwise one
/// declared above it). Here from the CPU autodiff device to the plain CPU one: burn compares
/// devices without autodiff, but the parameters still move through the lazy initialisers.
#[test]
fn a_network_moved_before_use_draws_the_weights_it_would_have_drawn_in_place() {
    use burn::tensor::{Device, Tensor};
    use distill_edge::data::ImageShape;
    use distill_edge::model::{ConvNet, ModelSpec};
    let _rng = CPU_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let here = distill_edge::runtime::cpu_autodiff();
    let there = Device::flex();
    assert!(here.is_autodiff() && !there.is_autodiff());
    for (preset, input) in [
        ("cnn32-small", ImageShape::new(1, 28, 28)),
        ("mobilenet96", ImageShape::new(3, 96, 96)),
    ] {
        let arch = ModelSpec::resolve(preset, std::path::Path::new("."))
            .unwrap()
            .bind(input, 10)
            .unwrap();
        let x = |d: &Device| Tensor::<4>::ones([1, input.channels, input.height, input.width], d);
        here.seed(9);
        let stayed = ConvNet::new(&arch, &here);
        stayed.forward(x(&here));
        here.seed(9);
        let moved = ConvNet::new(&arch, &here).to_device_drawn_here(&there);
        moved.forward(x(&there));
        let expected = parameters(&stayed);
        assert!(parameters(&moved) == expected, "{preset}: other weights");
        // The order matters, so the comparison can fail: drawn in module order instead.
        here.seed(9);
        let module_order = parameters(&ConvNet::new(&arch, &here));
        assert_eq!(
            module_order != expected,
            preset == "mobilenet96",
            "{preset}"
        );
    }
}

/// `--devices N` (flag) and `devices = N` (config key) train data-parallel; on cpu the
/// replicas share the cores. 0 is refused in one line before anything is written.
#[test]
fn devices_train_data_parallel_and_zero_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = synthetic_config(tmp.path(), "dp", "[{ epochs = 1, lr = 1e-3 }]", 64);
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "-c", cfg.to_str().unwrap(), "--threads", "1"];
        args.extend_from_slice(extra);
        run(tmp.path(), &args)
    };
    let out = train(&["--devices", "0", "-o", "zero"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        common::error_line(&out, tmp.path()),
        "error: backend 'cpu': 0 devices asked for (--devices, or the config key `devices`); expected 1 or more"
    );
    assert!(!tmp.path().join("zero").exists());

    let out = train(&["--devices", "2", "-o", "flag"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("backend cpu x2 devices"),
        "{}",
        stderr(&out)
    );
    assert!(tmp.path().join("flag/model.ckpt").exists());

    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("devices = 3\n{text}")).unwrap();
    let out = train(&["-o", "key"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("backend cpu x3 devices"),
        "{}",
        stderr(&out)
    );
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
    /// (floor 5e-6 absolute): the two backends sum in different orders (GPU reductions,
    /// convolution algorithms, burn's batch norm on wgpu against the fused one on flex), so
    /// f32 rounding (~1e-7 per operation, ~1e-6 over a reduction) differs, and Adam carries
    /// it from step to step. Measured on lavapipe: at most 4e-6 relative (test loss, epoch
    /// 3); 1e-4 leaves a 25x margin for other drivers while a real arithmetic difference (a
    /// wrong epsilon, momentum or initial weight) moves the loss by far more.
    const LOSS_TOLERANCE: f64 = 1e-4;

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

    /// More devices than the machine's adapters: one line naming both numbers, before
    /// anything is written.
    #[test]
    fn more_devices_than_adapters_are_refused_in_one_line() {
        if !wgpu_available() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let cfg = synthetic_config(tmp.path(), "many", "[{ epochs = 1, lr = 1e-3 }]", 64);
        let out = run(
            tmp.path(),
            &[
                "train",
                "-c",
                cfg.to_str().unwrap(),
                "--backend",
                "wgpu",
                "--devices",
                "64",
                "-o",
                "many",
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let line = common::error_line(&out, tmp.path());
        assert!(
            line.starts_with(
                "error: backend 'wgpu': 64 devices asked for (--devices), this machine has "
            ),
            "{line}"
        );
        assert!(!tmp.path().join("many").exists());
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
                devices: 1,
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
        let _rng = super::CPU_RNG.lock().unwrap_or_else(|e| e.into_inner());
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
