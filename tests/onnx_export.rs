//! ONNX export: parity burn <-> tract (and ONNX Runtime with the `ort` feature) for every
//! preset, folded <-> unfolded, symbolic batch, validity for the official checker, and the
//! one-line errors of `check`/`export` on bad inputs.

mod common;

use std::path::Path;

use burn::module::Param;
use distill_edge::data::ImageShape;
use distill_edge::infer::parity::{Tolerance, compare};
use distill_edge::infer::tract::TractEngine;
use distill_edge::infer::{Batch, Engine};
use distill_edge::onnx::export::{ExportOptions, burn_logits, export_model};
use distill_edge::onnx::proto;
use distill_edge::train::checkpoint::Checkpoint;

use common::*;

#[test]
fn every_preset_exports_with_parity_for_batches_1_and_7_folded_or_not() {
    for (preset, input) in [
        ("cnn32-small", ImageShape::new(1, 28, 28)),
        ("cnn32", ImageShape::new(3, 32, 32)),
        ("cnn32-large", ImageShape::new(1, 28, 28)),
    ] {
        let (net, ckpt) = random_model(preset, input, 11);
        let mut outputs = Vec::new();
        for fold in [true, false] {
            let model = export_model(
                &net,
                &ckpt,
                &ExportOptions {
                    fold_batch_norm: fold,
                    embedding_output: true,
                },
            )
            .unwrap();
            let ops = proto::op_types(&model);
            assert_eq!(
                ops.iter().any(|o| o == "BatchNormalization"),
                !fold,
                "{preset}: {ops:?}"
            );
            let engine = TractEngine::from_bytes(&proto::encode(&model), preset).unwrap();
            assert_eq!(engine.output_names(), ["logits", "embedding"]);
            for batch in [1usize, 7] {
                let x = test_images(batch, input);
                let shape = [batch, input.channels, input.height, input.width];
                let (want_logits, want_emb) = burn_logits(&net, &x, shape);
                let got = engine.run(Batch { data: &x, shape }).unwrap();
                let p = compare(&got.logits, &want_logits, Tolerance::Approximate);
                assert!(p.ok, "{preset} fold={fold} batch={batch}: {:?}", p.problem);
                let e = compare(
                    got.embedding.as_ref().unwrap(),
                    &want_emb,
                    Tolerance::Approximate,
                );
                assert!(e.ok, "{preset} embedding: {:?}", e.problem);
                outputs.push(got.logits);
            }
        }
        // Folded and unfolded agree with each other too (batch 1 and 7 of each).
        let p = compare(&outputs[0], &outputs[2], Tolerance::Approximate);
        assert!(p.ok, "{preset}: folded vs unfolded: {:?}", p.problem);
    }
}

#[test]
fn metadata_and_names_are_written() {
    let (net, ckpt) = random_model("cnn32-small", ImageShape::new(1, 28, 28), 3);
    let model = export_model(
        &net,
        &ckpt,
        &ExportOptions {
            fold_batch_norm: true,
            embedding_output: false,
        },
    )
    .unwrap();
    let meta = proto::metadata(&model);
    for key in [
        "model_name",
        "dataset",
        "normalization_mean",
        "normalization_std",
        "class_names",
        "distill_edge_version",
        "training_config_hash",
    ] {
        assert!(meta.iter().any(|(k, _)| k == key), "{key} missing");
    }
    let graph = model.graph.as_ref().unwrap();
    assert_eq!(graph.input[0].name.as_deref(), Some("input"));
    assert_eq!(graph.output[0].name.as_deref(), Some("logits"));
    proto::check_topology(&model).unwrap();
    assert!(matches!(
        proto::input_shape(&model, 0).unwrap()[0],
        proto::Dim::Symbolic(_)
    ));
}

/// The official checker (from the `onnx` package in the venv scripts/setup.sh makes).
#[test]
fn the_official_onnx_checker_accepts_exported_models() {
    let Some(python) = onnx_checker_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (net, ckpt) = random_model("cnn32", ImageShape::new(3, 32, 32), 5);
    for (name, fold) in [("folded.onnx", true), ("unfolded.onnx", false)] {
        let model = export_model(
            &net,
            &ckpt,
            &ExportOptions {
                fold_batch_norm: fold,
                embedding_output: true,
            },
        )
        .unwrap();
        let path = tmp.path().join(name);
        std::fs::write(&path, proto::encode(&model)).unwrap();
        assert_onnx_checker_accepts(&python, &path, name);
    }
}

#[cfg(feature = "ort")]
#[test]
fn onnx_runtime_matches_burn() {
    use distill_edge::infer::ort::{OrtEngine, available};
    if let Err(e) = available() {
        // scripts/test.sh exports ORT_DYLIB_PATH (from scripts/setup.sh): then this must work.
        assert!(std::env::var_os("ORT_DYLIB_PATH").is_none(), "{e}");
        distill_edge::testing::missing_tool(
            &format!("ONNX Runtime ({e})"),
            "run scripts/setup.sh, then source scripts/env.sh to set ORT_DYLIB_PATH",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = ImageShape::new(1, 28, 28);
    let (net, ckpt) = random_model("cnn32-small", input, 9);
    let model = export_model(
        &net,
        &ckpt,
        &ExportOptions {
            fold_batch_norm: true,
            embedding_output: true,
        },
    )
    .unwrap();
    let path = tmp.path().join("m.onnx");
    std::fs::write(&path, proto::encode(&model)).unwrap();
    let engine = OrtEngine::load(&path, 1).unwrap();
    for batch in [1usize, 7] {
        let x = test_images(batch, input);
        let shape = [batch, 1, 28, 28];
        let (want, _) = burn_logits(&net, &x, shape);
        let got = engine.run(Batch { data: &x, shape }).unwrap();
        let p = compare(&got.logits, &want, Tolerance::Approximate);
        assert!(p.ok, "batch {batch}: {:?}", p.problem);
    }
}

/// Trains a tiny model on generated data and exports it; returns the run directory.
fn trained(tmp: &Path) -> std::path::PathBuf {
    let cfg = synthetic_config(tmp, "onnx", "[{ epochs = 1, lr = 2e-3 }]", 300);
    let out = run(tmp, &["-q", "train", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    tmp.join("runs/onnx/train")
}

#[test]
fn export_then_check_passes_and_bad_models_fail_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let dir = trained(p);
    let d = dir.to_str().unwrap();
    let out = run(p, &["-q", "export", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        p,
        &[
            "-q",
            "export",
            d,
            "--quantize",
            "int8",
            "--calibration-images",
            "64",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let fp32 = dir.join("cnn32-small.onnx");
    let int8 = dir.join("cnn32-small.int8.onnx");
    let out = run(
        p,
        &[
            "--json",
            "check",
            fp32.to_str().unwrap(),
            "--checkpoint",
            d,
            "--runs",
            "5",
            "--engines",
            "tract",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["passed"], true);
    assert!(report["engines"][0]["parity"]["ok"].as_bool().unwrap());
    assert_eq!(report["engines"][0]["latency"].as_array().unwrap().len(), 2);
    let out = run(
        p,
        &[
            "--json",
            "check",
            int8.to_str().unwrap(),
            "--checkpoint",
            d,
            "--runs",
            "5",
            "--max-accuracy-drop",
            "5",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["model"]["quantized"], true);

    // Bad model files.
    let bytes = std::fs::read(&fp32).unwrap();
    std::fs::write(p.join("empty.onnx"), b"").unwrap();
    std::fs::write(p.join("truncated.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(
        p.join("garbage.onnx"),
        b"this is not a protobuf at all \xff\xfe",
    )
    .unwrap();
    for (file, needle) in [
        ("empty.onnx", "empty file"),
        ("truncated.onnx", "truncated.onnx"),
        ("garbage.onnx", "garbage.onnx"),
        ("missing.onnx", "missing.onnx"),
    ] {
        let out = run(p, &["check", file, "--data", "synthetic"]);
        assert_eq!(out.status.code(), Some(1), "{file}: {}", stderr(&out));
        let line = error_line(&out, p);
        assert!(
            line.starts_with("error: ") && line.contains(needle),
            "{file}: {line}"
        );
        assert_eq!(
            stderr(&out)
                .lines()
                .filter(|l| l.starts_with("error"))
                .count(),
            1
        );
    }
    // Data of the wrong shape for the model.
    let synthetic_rgb = p.join("rgb.toml");
    std::fs::write(
        &synthetic_rgb,
        "[data]\nkind = \"synthetic\"\nchannels = 3\nheight = 32\nwidth = 32\n",
    )
    .unwrap();
    let out = run(
        p,
        &[
            "check",
            fp32.to_str().unwrap(),
            "--config",
            synthetic_rgb.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out, p);
    assert!(
        line.contains("3x32x32") && line.contains("1x28x28"),
        "{line}"
    );

    // A NaN-poisoned checkpoint is refused by export and eval.
    let model_file = dir.join("model.ckpt");
    let ckpt = Checkpoint::read(&model_file).unwrap();
    let mut net = ckpt
        .load_model(&distill_edge::runtime::cpu(), &model_file)
        .unwrap();
    let w = net.head.weight.val();
    net.head.weight = Param::from_tensor(w.clone().div(w.zeros_like()).mul_scalar(0.0));
    let poisoned = p.join("poisoned.ckpt");
    Checkpoint::from_model(ckpt.header.clone(), net, vec![])
        .unwrap()
        .write(&poisoned)
        .unwrap();
    for args in [
        vec!["export", "poisoned.ckpt"],
        vec!["eval", "poisoned.ckpt", "--data", "synthetic"],
    ] {
        let out = run(p, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let line = error_line(&out, p);
        assert!(
            line.contains("NaN") && line.contains("poisoned.ckpt"),
            "{line}"
        );
    }
}
