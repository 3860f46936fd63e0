//! int8 in operator form: the model loads in tract and ONNX Runtime and tracks the float model;
//! a layer kept in float is a float node of the exported graph; calibration and validation
//! read training images only; an empty or constant calibration shard is an error; a budget
//! nothing can meet ships fp32 only.

mod common;

use std::collections::HashSet;

use distill_edge::config::quant::{Calibration, Int8Form};
use distill_edge::data::prep::{Normalization, fill_batch};
use distill_edge::data::synthetic::{SyntheticSpec, generate};
use distill_edge::data::{Dataset, ImageShape};
use distill_edge::eval::classification::argmax_rows;
use distill_edge::infer::tract::TractEngine;
use distill_edge::infer::{Batch, Engine};
use distill_edge::onnx::export::{ExportOptions, export_model};
use distill_edge::onnx::proto::{self, pb};
use distill_edge::onnx::qop;
use distill_edge::quantize::{self as int8, Int8Request};
use distill_edge::train::checkpoint::Checkpoint;

use common::random_model;

/// int8 against float on the same images: the largest logit difference, as a share of the
/// float logits' span. Measured on this fixture: about 0.02 (per-channel weights, MSE ranges).
const INT8_SPAN_SHARE: f32 = 0.08;
/// Share of images whose top-1 the int8 model must keep.
const INT8_TOP1_AGREEMENT: f64 = 0.9;

fn float_model(seed: u64) -> pb::ModelProto {
    let (net, ckpt) = random_model("cnn32-small", ImageShape::new(1, 28, 28), seed);
    let opts = ExportOptions {
        fold_batch_norm: true,
        embedding_output: false,
    };
    export_model(&net, &ckpt, &opts).unwrap()
}

fn norm() -> Normalization {
    Normalization::identity(1)
}

fn splits() -> distill_edge::data::Splits {
    generate(&SyntheticSpec {
        train: 400,
        test: 64,
        ..SyntheticSpec::default()
    })
    .unwrap()
}

fn request(calibration: Calibration, budget: Option<f64>) -> Int8Request {
    Int8Request {
        form: Int8Form::Qoperator,
        calibration,
        per_channel_weights: true,
        calibration_images: 64,
        validation_images: 200,
        max_accuracy_drop: budget,
        float_layers: Vec::new(),
    }
}

fn logits(bytes: &[u8], data: &Dataset) -> Vec<f32> {
    let engine = TractEngine::from_bytes(bytes, "model").unwrap();
    let indices: Vec<usize> = (0..data.len()).collect();
    let mut x = Vec::new();
    fill_batch(data, &indices, &norm(), None, &mut x);
    engine
        .run(Batch {
            data: &x,
            shape: [data.len(), 1, 28, 28],
        })
        .unwrap()
        .logits
}

/// (max |a - b| / span of b, share of rows with the same argmax).
fn agreement(a: &[f32], b: &[f32]) -> (f32, f64) {
    assert!(a.iter().chain(b).all(|v| v.is_finite()));
    let (lo, hi) = b
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let err = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let (pa, pb) = (argmax_rows(a, 10), argmax_rows(b, 10));
    let same = pa.iter().zip(&pb).filter(|(x, y)| x == y).count();
    (err / (hi - lo), same as f64 / pa.len() as f64)
}

#[test]
fn int8_model_runs_integer_ops_and_tracks_the_float_model() {
    let model = float_model(5);
    let s = splits();
    let (q, report) = int8::quantize(
        &model,
        &s.train,
        &norm(),
        &request(Calibration::Mse, None),
        |_| {},
    )
    .unwrap();
    let q = q.expect("no budget: an int8 model");
    let ops = proto::op_types(&q);
    for op in ["QLinearConv", "MatMulInteger", "QuantizeLinear"] {
        assert!(ops.iter().any(|o| o == op), "{op} in {ops:?}");
    }
    for float_op in ["Conv", "MatMul"] {
        assert!(
            !ops.iter().any(|o| o == float_op),
            "{float_op} left in {ops:?}"
        );
    }
    // The convolutions' Relus are fused; the one after the hidden layer's float bias stays.
    assert_eq!(ops.iter().filter(|o| *o == "Relu").count(), 1, "{ops:?}");
    assert_eq!(report.float_layers, Vec::<String>::new());
    assert_eq!(report.int8_layers.len(), 5, "{:?}", report.int8_layers);
    let f = logits(&proto::encode(&model), &s.test);
    let i = logits(&proto::encode(&q), &s.test);
    let (share, same) = agreement(&i, &f);
    eprintln!("tract int8 vs float: max diff {share:.4} of the span, top-1 agreement {same:.3}");
    assert!(share < INT8_SPAN_SHARE && share > 0.0, "{share}");
    assert!(same >= INT8_TOP1_AGREEMENT, "{same}");
    // Calibration and validation: training indices only, disjoint.
    assert_eq!(report.images.split, "train");
    let cal: HashSet<usize> = report.images.calibration.iter().copied().collect();
    assert_eq!(cal.len(), 64);
    assert_eq!(report.images.validation.len(), 200);
    assert!(report.images.calibration.iter().all(|&i| i < s.train.len()));
    assert!(
        report
            .images
            .validation
            .iter()
            .all(|&i| i < s.train.len() && !cal.contains(&i))
    );
    onnx_runtime_agrees(&q, &i, &s.test);
}

#[cfg(feature = "ort")]
fn onnx_runtime_agrees(q: &pb::ModelProto, tract_logits: &[f32], test: &Dataset) {
    use distill_edge::infer::ort::{OrtEngine, available};
    use distill_edge::infer::parity::{Tolerance, compare};
    if let Err(e) = available() {
        assert!(std::env::var_os("ORT_DYLIB_PATH").is_none(), "{e}");
        distill_edge::testing::missing_tool(
            &format!("ONNX Runtime ({e})"),
            "run scripts/setup.sh, then source scripts/env.sh to set ORT_DYLIB_PATH",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("q.onnx");
    std::fs::write(&path, proto::encode(q)).unwrap();
    let engine = OrtEngine::load(&path, 1).unwrap();
    let indices: Vec<usize> = (0..test.len()).collect();
    let mut x = Vec::new();
    fill_batch(test, &indices, &norm(), None, &mut x);
    let got = engine
        .run(Batch {
            data: &x,
            shape: [test.len(), 1, 28, 28],
        })
        .unwrap();
    let p = compare(&got.logits, tract_logits, Tolerance::Quantized);
    assert!(
        p.ok,
        "ONNX Runtime vs tract on the int8 model: {:?}",
        p.problem
    );
}

#[cfg(not(feature = "ort"))]
fn onnx_runtime_agrees(_: &pb::ModelProto, _: &[f32], _: &Dataset) {}

#[test]
fn a_layer_kept_in_float_is_a_float_node_of_the_exported_graph() {
    let model = float_model(6);
    let s = splits();
    let plan = int8::plan(s.train.len(), 32, 0).unwrap();
    let samples = int8::collect(
        &model,
        &qop::range_tensors(&model),
        &s.train,
        &plan.calibration,
        &norm(),
    )
    .unwrap();
    let (ranges, _) = samples.ranges(&Calibration::MinMax).unwrap();
    let layers = qop::layers(&model);
    assert_eq!(layers[0], "blocks.0.conv");
    let keep = HashSet::from([layers[0].clone(), layers[3].clone()]);
    let mut q = model.clone();
    let summary = qop::quantize_qop(&mut q, &ranges, true, &keep).unwrap();
    assert_eq!(summary.float_layers, [layers[0].clone(), layers[3].clone()]);
    // Survives encoding: read back what was written.
    let q = proto::decode(&proto::encode(&q)).unwrap();
    let graph = q.graph.as_ref().unwrap();
    let reads = |op: &str, weight: &str| {
        graph
            .node
            .iter()
            .any(|n| n.op_type() == op && n.input.iter().any(|i| i == weight))
    };
    assert!(reads("Conv", "blocks.0.conv.weight"));
    assert!(proto::initializer_f32(&q, "blocks.0.conv.weight").is_some());
    assert!(reads("MatMul", &format!("{}.weight", layers[3])));
    assert!(!reads("QLinearConv", "blocks.0.conv.weight_quantized"));
    assert!(reads("QLinearConv", "blocks.1.conv.weight_quantized"));
    assert_eq!(
        proto::op_types(&q)
            .iter()
            .filter(|o| *o == "QLinearConv")
            .count(),
        2
    );
    // And it runs.
    let (share, same) = agreement(
        &logits(&proto::encode(&q), &s.test),
        &logits(&proto::encode(&model), &s.test),
    );
    assert!(
        share < INT8_SPAN_SHARE && same >= INT8_TOP1_AGREEMENT,
        "{share} {same}"
    );
}

#[test]
fn empty_or_constant_calibration_shards_are_errors() {
    let model = float_model(7);
    let mut empty = splits().train;
    empty.images.clear();
    empty.labels.clear();
    let e = int8::quantize(
        &model,
        &empty,
        &norm(),
        &request(Calibration::MinMax, None),
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("calibration shard is empty"), "{e}");
    let mut constant = splits().train;
    constant.images.iter_mut().for_each(|p| *p = 0);
    let e = int8::quantize(
        &model,
        &constant,
        &norm(),
        &request(Calibration::MinMax, None),
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("is constant (every pixel is 0)"), "{e}");
}

#[test]
fn a_budget_no_int8_layer_meets_ships_fp32_only() {
    // A model trained for an epoch, so that its predictions differ from image to image.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = common::synthetic_config(tmp.path(), "q", "[{ epochs = 1, lr = 2e-3 }]", 300);
    let out = common::run(
        tmp.path(),
        &["-q", "train", "--config", cfg.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let path = tmp.path().join("runs/q/train/model.ckpt");
    let ckpt = Checkpoint::read(&path).unwrap();
    let net = ckpt
        .load_model(&distill_edge::runtime::cpu(), &path)
        .unwrap();
    let opts = ExportOptions {
        fold_batch_norm: true,
        embedding_output: false,
    };
    let model = export_model(&net, &ckpt, &opts).unwrap();
    let norm = ckpt.header.normalization.clone();
    let mut train = generate(&SyntheticSpec {
        train: 300,
        test: 200,
        ..SyntheticSpec::default()
    })
    .unwrap()
    .train;
    // Labels = the float model's own predictions: fp32 top-1 is 100 %, and ranges clipped at
    // the median (percentile 50.01) collapse the activations whichever layer is int8.
    let engine = TractEngine::from_bytes(&proto::encode(&model), "float").unwrap();
    let indices: Vec<usize> = (0..train.len()).collect();
    let mut x = Vec::new();
    fill_batch(&train, &indices, &norm, None, &mut x);
    let preds = argmax_rows(
        &engine
            .run(Batch {
                data: &x,
                shape: [train.len(), 1, 28, 28],
            })
            .unwrap()
            .logits,
        10,
    );
    let classes: HashSet<usize> = preds.iter().copied().collect();
    assert!(classes.len() > 2, "the trained model predicts {classes:?}");
    train.labels = preds.iter().map(|&p| p as u16).collect();
    let req = request(Calibration::Percentile { percentile: 50.01 }, Some(0.0));
    let (q, report) = int8::quantize(&model, &train, &norm, &req, |_| {}).unwrap();
    assert!(q.is_none(), "{report:?}");
    assert_eq!(report.shipped, "fp32 only");
    assert!(
        report
            .reason
            .as_deref()
            .unwrap()
            .contains("max-accuracy-drop = 0")
    );
    assert_eq!(report.fp32_accuracy, 1.0);
    assert_eq!(report.float_layers.len(), 5);
    assert!(report.int8_layers.is_empty());
    // The search measured every layer alone, then kept layers float one by one.
    assert_eq!(report.layer_drops.len(), 5);
    assert!(report.steps.len() >= 6, "{:?}", report.steps);
    assert!(
        report.steps.iter().all(|s| s.drop_points > 0.0),
        "{:?}",
        report.steps
    );
}

#[test]
fn export_cli_writes_the_int8_model_and_its_report_and_refuses_bad_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let cfg = common::synthetic_config(p, "cli", "[{ epochs = 1, lr = 2e-3 }]", 300);
    let out = common::run(p, &["-q", "train", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let run = "runs/cli/train";
    let report = common::run_ok_json(
        p,
        &[
            "--json",
            "export",
            run,
            "-o",
            "m.int8.onnx",
            "--quantize",
            "int8",
            "--calibration",
            "percentile",
            "--calibration-images",
            "32",
            "--validation-images",
            "100",
            "--max-accuracy-drop",
            "100",
            "--float-layer",
            "head",
        ],
    );
    let q = &report["quantization"];
    assert_eq!(q["shipped"], "int8");
    assert_eq!(q["form"], "qoperator");
    assert_eq!(q["calibration"]["method"], "percentile");
    assert_eq!(q["float_layers"], serde_json::json!(["head"]));
    assert_eq!(q["images"]["split"], "train");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.join("m.int8.json")).unwrap()).unwrap();
    assert_eq!(written["float_layers"], q["float_layers"]);
    let model = proto::decode(&std::fs::read(p.join("m.int8.onnx")).unwrap()).unwrap();
    let ops = proto::op_types(&model);
    assert!(ops.iter().any(|o| o == "QLinearConv") && ops.iter().any(|o| o == "MatMul"));

    for (args, expect) in [
        (vec!["--percentile", "40"], "--percentile"),
        (vec!["--max-accuracy-drop=-1"], "--max-accuracy-drop"),
        (vec!["--float-layer", "nope"], "\"nope\""),
        (
            vec!["--int8-form", "qdq", "--float-layer", "head"],
            "--float-layer",
        ),
    ] {
        let mut full = vec!["export", run, "-o", "bad.onnx", "--quantize", "int8"];
        full.extend(args.iter().copied());
        let out = common::run(p, &full);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            common::stderr(&out)
        );
        let line = common::error_line(&out, p);
        assert!(line.contains(expect), "{args:?}: {line}");
        assert!(!p.join("bad.onnx").exists(), "{args:?}: no model on error");
    }
}
