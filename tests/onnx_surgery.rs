//! InDistill on an ONNX teacher by graph surgery: the project's own burn teacher exported to
//! ONNX and pruned in the graph gives the curriculum targets `prune.rs` gives on the burn
//! module; taps that cannot be pruned are refused in one line with the reason and the taps
//! that would work.

mod common;

use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use common::*;
use distill_edge::data::ImageShape;
use distill_edge::infer::Batch;
use distill_edge::infer::tract::TractEngine;
use distill_edge::model::{Architecture, ModelSpec};
use distill_edge::onnx::export::{ExportOptions, export_model};
use distill_edge::onnx::proto::{
    self, Dim, make_attr_ints, make_node, make_tensor_f32, make_value_info, pb,
};
use distill_edge::onnx::{graph, surgery};
use distill_edge::prune::PrunedTeacher;

/// Exports `teacher` (a preset) with random weights and BN statistics, prunes it to
/// `student` by graph surgery, runs it with tract and compares every block's target with
/// `PrunedTeacher::targets` on the burn module.
fn surgery_equals_prune_rs(teacher: &str, student: &str, input: ImageShape, fold: bool) {
    let (net, ckpt) = random_model(teacher, input, 11);
    let mut model = export_model(
        &net,
        &ckpt,
        &ExportOptions {
            fold_batch_norm: fold,
            embedding_output: false,
        },
    )
    .unwrap();
    let student_arch = ModelSpec::resolve(student, Path::new("."))
        .unwrap()
        .bind(input, 10)
        .unwrap();
    let info = graph::analyse(&model, None).unwrap();
    let taps = surgery::add_pruned_taps(&mut model, &info, &student_arch, None).unwrap();
    assert_eq!(taps.len(), student_arch.block_shapes.len());
    let engine = TractEngine::from_bytes(&proto::encode(&model), "surgery").unwrap();

    let pruned = PrunedTeacher::new(&net, &ckpt.header.architecture, &student_arch).unwrap();
    let n = 3;
    let images = test_images(n, input);
    let out = engine
        .run_raw(Batch {
            data: &images,
            shape: [n, input.channels, input.height, input.width],
        })
        .unwrap();
    let device = distill_edge::runtime::cpu();
    let x = Tensor::<4>::from_data(
        TensorData::new(
            images.clone(),
            [n, input.channels, input.height, input.width],
        ),
        &device,
    );
    let full = pruned.teacher.forward_features(x.clone());
    let want = pruned.targets(x, &full.taps);
    for (k, tap) in taps.iter().enumerate() {
        assert_eq!(tap.kept, pruned.kept[k], "block {k}: kept filters differ");
        let s = student_arch.block_shapes[k];
        assert_eq!(tap.shape, [s.channels, s.height, s.width]);
        let i = engine
            .output_names()
            .iter()
            .position(|o| *o == tap.output)
            .unwrap();
        let (shape, got) = &out[i];
        assert_eq!(shape, &vec![n, s.channels, s.height, s.width]);
        let want = want[k].clone().into_data().try_into_vec::<f32>().unwrap();
        assert!(got.iter().all(|v| v.is_finite()));
        let max = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(max <= 1e-4, "{teacher} block {k}: max |diff| {max}");
        // The branch is not a copy of the full tap: it has fewer channels.
        assert!(s.channels < ckpt.header.architecture.block_shapes[k].channels);
    }
}

#[test]
fn graph_surgery_on_the_exported_burn_teacher_gives_the_prune_rs_targets() {
    surgery_equals_prune_rs("cnn32", "cnn32-small", ImageShape::new(1, 28, 28), false);
}

#[test]
fn graph_surgery_on_separable_blocks_gives_the_prune_rs_targets() {
    // The separable blocks' taps are the pointwise convs, whose input is the unpruned
    // depthwise stage. (With BN folded into the convs, as PyTorch's export does, the L1 norms
    // are those of the folded filters, so the kept filters may differ from prune.rs on the
    // unfolded module: the graph is pruned as it is given.)
    surgery_equals_prune_rs(
        "mobilenet96-large",
        "mobilenet96",
        ImageShape::new(3, 32, 32),
        false,
    );
}

/// x [N,3,8,8] -> stem Conv 3->8 -> Relu -> res Conv 8->8 -> BN -> Add(stem relu) -> Relu ->
/// GlobalAveragePool -> Flatten -> MatMul -> logits.
fn small_resnet() -> pb::ModelProto {
    let conv = |name: &str, x: &str, cin: usize, cout: usize| {
        let w: Vec<f32> = (0..cout * cin * 9)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 20.0)
            .collect();
        (
            make_tensor_f32(&format!("{name}.w"), &[cout as i64, cin as i64, 3, 3], &w),
            make_node(
                "Conv",
                &[x, &format!("{name}.w")],
                &[&format!("{name}.out")],
                name,
                vec![
                    make_attr_ints("kernel_shape", &[3, 3]),
                    make_attr_ints("pads", &[1, 1, 1, 1]),
                ],
            ),
        )
    };
    let (w0, stem) = conv("stem", "x", 3, 8);
    let (w1, res) = conv("res", "stem_relu.out", 8, 8);
    let mut inits = vec![w0, w1];
    for p in ["s", "b", "m", "v"] {
        inits.push(make_tensor_f32(&format!("bn.{p}"), &[8], &[1.0; 8]));
    }
    inits.push(make_tensor_f32("fc.w", &[8, 10], &[0.1; 80]));
    let nodes = vec![
        stem,
        make_node(
            "Relu",
            &["stem.out"],
            &["stem_relu.out"],
            "stem_relu",
            vec![],
        ),
        res,
        make_node(
            "BatchNormalization",
            &["res.out", "bn.s", "bn.b", "bn.m", "bn.v"],
            &["bn.out"],
            "bn",
            vec![],
        ),
        make_node(
            "Add",
            &["bn.out", "stem_relu.out"],
            &["add.out"],
            "res_add",
            vec![],
        ),
        make_node("Relu", &["add.out"], &["relu.out"], "res_relu", vec![]),
        make_node(
            "GlobalAveragePool",
            &["relu.out"],
            &["gap.out"],
            "gap",
            vec![],
        ),
        make_node("Flatten", &["gap.out"], &["flat.out"], "flat", vec![]),
        make_node("MatMul", &["flat.out", "fc.w"], &["logits"], "fc", vec![]),
    ];
    pb::ModelProto {
        ir_version: Some(8),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(pb::GraphProto {
            name: Some("small-resnet".into()),
            node: nodes,
            initializer: inits,
            input: vec![make_value_info(
                "x",
                pb::tensor_proto::DataType::Float,
                &[
                    Dim::Symbolic("N".into()),
                    Dim::Fixed(3),
                    Dim::Fixed(8),
                    Dim::Fixed(8),
                ],
            )],
            output: vec![make_value_info(
                "logits",
                pb::tensor_proto::DataType::Float,
                &[Dim::Symbolic("N".into()), Dim::Fixed(10)],
            )],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn student(widths: [usize; 2]) -> Architecture {
    ModelSpec::from_toml(
        &format!(
            "name = 's'\nfc = [8]\n[[blocks]]\nwidth = {}\npadding = 1\npool = 1\n[[blocks]]\nwidth = {}\npadding = 1\npool = 1\n",
            widths[0], widths[1]
        ),
        Path::new("s.toml"),
    )
    .unwrap()
    .bind(ImageShape::new(3, 8, 8), 10)
    .unwrap()
}

fn refusal(widths: [usize; 2], taps: Option<&[&str]>) -> String {
    let mut model = small_resnet();
    let info = graph::analyse(&model, None).unwrap();
    let requested: Option<Vec<String>> = taps.map(|t| t.iter().map(|s| s.to_string()).collect());
    let e = surgery::add_pruned_taps(&mut model, &info, &student(widths), requested.as_deref())
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\n'), "not one line: {e}");
    e
}

#[test]
fn a_residual_add_between_conv_and_tap_is_refused_with_the_reason() {
    let e = refusal([4, 4], Some(&["stem", "res"]));
    assert!(
        e.contains("block 1: conv 'res' cannot be a tap")
            && e.contains("residual Add ('res_add')")
            && e.contains("taps that would work"),
        "{e}"
    );
    // Proposed taps: block 1 finds none after the stem, and the reason names the conv.
    let e = refusal([4, 4], None);
    assert!(
        e.contains("block 1") && e.contains("res refused: a residual Add"),
        "{e}"
    );
}

#[test]
fn a_tap_of_the_wrong_shape_names_both_shapes() {
    let e = refusal([16, 4], Some(&["stem", "res"]));
    assert!(
        e.contains("block 0: tap 'stem_relu.out' of conv 'stem' has shape 8x8x8")
            && e.contains("the student's block 0 has 16x8x8"),
        "{e}"
    );
    // The one tap of the graph works for a block of its size: the surgery then succeeds
    // for a one-block student and its output is the pruned stem.
    let mut model = small_resnet();
    let info = graph::analyse(&model, None).unwrap();
    let one = ModelSpec::from_toml(
        "name = 's'\nfc = [8]\n[[blocks]]\nwidth = 4\npadding = 1\npool = 1\n",
        Path::new("s.toml"),
    )
    .unwrap()
    .bind(ImageShape::new(3, 8, 8), 10)
    .unwrap();
    let taps = surgery::add_pruned_taps(&mut model, &info, &one, None).unwrap();
    assert_eq!(taps[0].conv, "stem");
    assert_eq!(taps[0].shape, [4, 8, 8]);
    let engine = TractEngine::from_bytes(&proto::encode(&model), "one").unwrap();
    let images = test_images(2, ImageShape::new(3, 8, 8));
    let out = engine
        .run_raw(Batch {
            data: &images,
            shape: [2, 3, 8, 8],
        })
        .unwrap();
    // The pruned branch equals the kept channels of the full stem output.
    let mut full = small_resnet();
    proto::expose_outputs(&mut full, &["stem_relu.out".to_string()]).unwrap();
    let full_out = TractEngine::from_bytes(&proto::encode(&full), "full")
        .unwrap()
        .run_raw(Batch {
            data: &images,
            shape: [2, 3, 8, 8],
        })
        .unwrap();
    let (got, all) = (&out[1].1, &full_out[1].1);
    for n in 0..2 {
        for (j, &c) in taps[0].kept.iter().enumerate() {
            for p in 0..64 {
                let a = got[(n * 4 + j) * 64 + p];
                let b = all[(n * 8 + c) * 64 + p];
                assert!((a - b).abs() <= 1e-5, "image {n} channel {c}: {a} vs {b}");
            }
        }
    }
}
