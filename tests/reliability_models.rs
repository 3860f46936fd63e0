//! Bad models, checkpoints and specs fail with one `error:` line and exit 1 (never a panic or
//! an abort), and leave nothing behind: issue 16, items 3, 4, 5 and 8.

mod common;

use std::path::{Path, PathBuf};

use distill_edge::data::ImageShape;
use distill_edge::data::prep::Normalization;
use distill_edge::model::{ConvNet, ModelSpec};
use distill_edge::onnx::export::{ExportOptions, export_model};
use distill_edge::onnx::proto::{self, pb};
use distill_edge::train::checkpoint::{Checkpoint, CheckpointHeader, FORMAT};

use common::*;

const INPUT: ImageShape = ImageShape::new(1, 28, 28);

/// A randomly initialised cnn32-small for 1x28x28 inputs (the default synthetic data) and
/// its checkpoint.
fn checkpoint() -> Checkpoint {
    let device = distill_edge::runtime::cpu();
    device.seed(3);
    let arch = ModelSpec::resolve("cnn32-small", Path::new("."))
        .unwrap()
        .bind(INPUT, 10)
        .unwrap();
    let net = ConvNet::new(&arch, &device);
    let header = CheckpointHeader {
        format: FORMAT,
        kind: "model".into(),
        epochs_done: 0,
        config_hash: "test".into(),
        architecture: arch,
        normalization: Normalization::identity(1),
        dataset: "synthetic".into(),
        classes: (0..10).map(|i| i.to_string()).collect(),
        history: vec![],
        extra: serde_json::Value::Null,
    };
    Checkpoint::from_model(header, net, vec![]).unwrap()
}

/// The exported ONNX graph of [`checkpoint`].
fn exported() -> pb::ModelProto {
    let ckpt = checkpoint();
    let net = ckpt
        .load_model(&distill_edge::runtime::cpu(), Path::new("x.ckpt"))
        .unwrap();
    export_model(
        &net,
        &ckpt,
        &ExportOptions {
            fold_batch_norm: true,
            embedding_output: false,
        },
    )
    .unwrap()
}

fn write(dir: &Path, name: &str, model: &pb::ModelProto) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, proto::encode(model)).unwrap();
    p
}

/// Appends `Gather(logits, [0..9 with one index 1000], axis = 1)` as the new `logits`.
fn with_out_of_range_gather(mut m: pb::ModelProto) -> pb::ModelProto {
    let g = m.graph.as_mut().unwrap();
    let out = g.output[0].name.clone().unwrap();
    for n in &mut g.node {
        for o in &mut n.output {
            if *o == out {
                *o = "pre_gather".into();
            }
        }
    }
    let mut idx: Vec<i64> = (0..10).collect();
    idx[9] = 1000;
    g.initializer
        .push(proto::make_tensor_i64("bad_index", &[10], &idx));
    g.node.push(proto::make_node(
        "Gather",
        &["pre_gather", "bad_index"],
        &[out.as_str()],
        "bad_gather",
        vec![proto::make_attr_int("axis", 1)],
    ));
    m
}

/// Sets the first weight of the classifier (the float initializer read by the last node that
/// reads one) to NaN: NaN in the last layer reaches the logits whatever ReLU and pooling do.
fn with_nan_weight(mut m: pb::ModelProto) -> pb::ModelProto {
    let g = m.graph.as_mut().unwrap();
    let name = g
        .node
        .iter()
        .rev()
        .flat_map(|n| n.input.iter())
        .find(|i| {
            g.initializer
                .iter()
                .any(|t| t.name.as_ref() == Some(*i) && proto::tensor_f32(t).is_some())
        })
        .cloned()
        .expect("a float initializer");
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.name.as_ref() == Some(&name))
        .unwrap();
    let (dims, mut values) = proto::tensor_f32(t).unwrap();
    values[0] = f32::NAN;
    *t = proto::make_tensor_f32(&name, &dims, &values);
    m
}

/// Makes every max pool's window 100x100, larger than any feature map of a 28x28 input.
fn with_oversized_pool(mut m: pb::ModelProto) -> pb::ModelProto {
    let g = m.graph.as_mut().unwrap();
    let mut found = false;
    for n in g.node.iter_mut().filter(|n| n.op_type() == "MaxPool") {
        n.attribute
            .retain(|a| !matches!(a.name(), "kernel_shape" | "strides"));
        n.attribute
            .push(proto::make_attr_ints("kernel_shape", &[100, 100]));
        n.attribute
            .push(proto::make_attr_ints("strides", &[100, 100]));
        found = true;
    }
    assert!(found, "the exported model has a MaxPool");
    m
}

/// Sets every value of the classifier's bias (the last float initializer read) to +Inf.
fn with_inf_bias(mut m: pb::ModelProto) -> pb::ModelProto {
    let g = m.graph.as_mut().unwrap();
    let is_init = |i: &String| {
        g.initializer
            .iter()
            .any(|t| t.name.as_ref() == Some(i) && proto::tensor_f32(t).is_some())
    };
    let name = g
        .node
        .iter()
        .rev()
        .find_map(|n| n.input.iter().rev().find(|i| is_init(i)))
        .cloned()
        .expect("a node reads an initializer");
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.name.as_ref() == Some(&name))
        .unwrap();
    let (dims, values) = proto::tensor_f32(t).unwrap();
    *t = proto::make_tensor_f32(&name, &dims, &vec![f32::INFINITY; values.len()]);
    m
}

fn error_lines(o: &std::process::Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with("error"))
        .map(str::to_string)
        .collect()
}

/// Exactly one stderr line, starting with `error:` (no panic message, no backtrace note).
fn assert_one_error_line(o: &std::process::Output, what: &str) -> String {
    let text = stderr(o);
    let errors = error_lines(o);
    assert_eq!(errors.len(), 1, "{what}: {text}");
    assert!(
        !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
        "{what}: {text}"
    );
    errors[0].clone()
}

#[test]
fn an_out_of_range_gather_is_one_error_line_in_check_and_build_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let bad = write(p, "bad.onnx", &with_out_of_range_gather(exported()));
    let out = run(
        p,
        &["check", "bad.onnx", "--data", "synthetic", "--runs", "1"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = assert_one_error_line(&out, "check");
    assert!(line.contains("bad.onnx"), "{line}");

    // build --model: the bundle's temporary directory (beside --out) is removed again.
    let runner = p.join("fake-runner");
    std::fs::write(&runner, b"#!/bin/sh\nexit 0\n").unwrap();
    let dist = p.join("dist");
    let out = run(
        p,
        &[
            "build",
            "--target",
            "x86_64",
            "--model",
            bad.to_str().unwrap(),
            "--data",
            "synthetic",
            "--runner",
            runner.to_str().unwrap(),
            "--out",
            dist.join("x86_64").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = assert_one_error_line(&out, "build");
    assert!(line.contains("bad.onnx"), "{line}");
    let left: Vec<_> = std::fs::read_dir(&dist)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind in dist/: {left:?}");
}

#[test]
fn a_nan_weight_fails_check_naming_non_finite_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    write(p, "good.onnx", &exported());
    let out = run(
        p,
        &[
            "-q",
            "check",
            "good.onnx",
            "--data",
            "synthetic",
            "--runs",
            "1",
            "--engines",
            "tract",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    write(p, "nan.onnx", &with_nan_weight(exported()));
    for engines in [&["--engines", "tract"][..], &[]] {
        let mut args = vec!["check", "nan.onnx", "--data", "synthetic", "--runs", "1"];
        args.extend_from_slice(engines);
        let out = run(p, &args);
        assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_ne!(out.status.code(), Some(2), "{}", stderr(&out));
        let line = assert_one_error_line(&out, "check");
        assert!(
            line.contains("non-finite") && line.contains("nan.onnx"),
            "{line}"
        );
    }
}

#[test]
fn inf_bias_oversized_pool_and_lying_metadata_do_not_pass_check() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let mut lying = exported();
    proto::set_metadata(&mut lying, &[("normalization_std", "[0.0]")]);
    for (file, model, needle) in [
        ("inf.onnx", with_inf_bias(exported()), "non-finite"),
        ("pool.onnx", with_oversized_pool(exported()), "pool.onnx"),
        ("lying.onnx", lying, "normalisation"),
    ] {
        write(p, file, &model);
        let out = run(
            p,
            &[
                "check",
                file,
                "--data",
                "synthetic",
                "--runs",
                "1",
                "--engines",
                "tract",
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{file}: {}", stderr(&out));
        let line = assert_one_error_line(&out, file);
        assert!(
            line.contains(file) && line.contains(needle),
            "{file}: {line}"
        );
    }
}

#[test]
fn a_checkpoint_whose_header_says_input_height_0_fails_export_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let mut ckpt = checkpoint();
    ckpt.header.architecture.input.height = 0;
    // to_bytes re-computes the digest: only the header check can catch it.
    std::fs::write(p.join("zero.ckpt"), ckpt.to_bytes()).unwrap();
    let out = run(p, &["export", "zero.ckpt"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = assert_one_error_line(&out, "export");
    assert!(
        line.contains("input height") && line.contains("zero.ckpt"),
        "{line}"
    );
    assert!(!p.join("cnn32-small.onnx").exists());
}

#[test]
fn huge_model_specs_are_refused_with_the_figure_and_no_config_toml() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    for (name, body, needle) in [
        (
            "wide",
            "fc = [8]\n[[blocks]]\nwidth = 10000000000\n",
            "GiB for parameters",
        ),
        (
            "fc",
            "fc = [100000000000]\n[[blocks]]\nwidth = 8\n",
            "GiB for parameters",
        ),
        (
            "pad",
            "fc = [8]\n[[blocks]]\nwidth = 8\npadding = 100000\n",
            "padding 100000",
        ),
    ] {
        std::fs::write(
            p.join(format!("{name}.toml")),
            format!("name = \"{name}\"\n{body}"),
        )
        .unwrap();
        let cfg = p.join(format!("cfg-{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "name = \"{name}\"\nmodel = \"{name}.toml\"\n[data]\nkind = \"synthetic\"\ntrain = 64\ntest = 32\n[train]\nbatch-size = 32\nschedule = [{{ epochs = 1, lr = 1e-3 }}]\n"
            ),
        )
        .unwrap();
        let out = run(p, &["train", "--config", cfg.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        let line = assert_one_error_line(&out, name);
        assert!(line.contains(needle), "{name}: {line}");
        if needle.contains("GiB") {
            assert!(line.contains("(limit "), "{name}: {line}");
        }
        assert!(
            !p.join(format!("runs/{name}/train/config.toml")).exists(),
            "{name}: config.toml written"
        );
    }
}

#[test]
fn crop_padding_of_1000_is_rejected_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let cfg = p.join("crop.toml");
    std::fs::write(
        &cfg,
        "name = \"crop\"\nmodel = \"cnn32-small\"\n[data]\nkind = \"synthetic\"\ntrain = 64\ntest = 32\n[train]\nbatch-size = 32\nschedule = [{ epochs = 1, lr = 1e-3 }]\naugment = { crop-padding = 1000 }\n",
    )
    .unwrap();
    let out = run(p, &["train", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = assert_one_error_line(&out, "crop");
    assert!(line.contains("crop-padding 1000"), "{line}");
    assert!(!p.join("runs/crop/train/config.toml").exists());
}

#[test]
fn a_directory_where_an_idx_file_is_expected_is_not_reported_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let data = p.join("fm");
    std::fs::create_dir_all(data.join("train-images-idx3-ubyte")).unwrap();
    let cfg = p.join("idx.toml");
    std::fs::write(
        &cfg,
        "name = \"idx\"\nmodel = \"cnn32-small\"\n[data]\nkind = \"fashion-mnist\"\npath = \"fm\"\n[train]\nschedule = [{ epochs = 1, lr = 1e-3 }]\n",
    )
    .unwrap();
    let out = run(p, &["train", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = assert_one_error_line(&out, "idx");
    assert!(
        line.contains("is a directory") && line.contains("train-images-idx3-ubyte"),
        "{line}"
    );
}
