//! The student family for real boards (strided convolutions, depthwise-separable blocks,
//! global average pooling): ONNX export with parity burn <-> tract and ONNX Runtime, folded
//! and unfolded; a MobileNet-style student trained on a generated 96x96 folder dataset,
//! exported and checked by the CLI.

mod common;

use distill_edge::data::ImageShape;
use distill_edge::infer::parity::{Tolerance, compare};
use distill_edge::infer::tract::TractEngine;
use distill_edge::infer::{Batch, Engine};
use distill_edge::model::ConvNet;
use distill_edge::onnx::export::{ExportOptions, burn_logits, export_model};
use distill_edge::onnx::proto::{self, pb};
use distill_edge::train::checkpoint::Checkpoint;

use common::*;

fn export(net: &ConvNet, ckpt: &Checkpoint, fold: bool) -> pb::ModelProto {
    export_model(
        net,
        ckpt,
        &ExportOptions {
            fold_batch_norm: fold,
            embedding_output: true,
        },
    )
    .unwrap()
}

/// `group` attribute of every Conv node, in graph order.
fn conv_groups(model: &pb::ModelProto) -> Vec<i64> {
    model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("Conv"))
        .map(|n| {
            n.attribute
                .iter()
                .find(|a| a.name.as_deref() == Some("group"))
                .and_then(|a| a.i)
                .unwrap_or(1)
        })
        .collect()
}

const INPUT96: ImageShape = ImageShape {
    channels: 3,
    height: 96,
    width: 96,
};

#[test]
fn mobilenet_students_export_with_tract_parity_folded_or_not() {
    for preset in ["mobilenet96", "mobilenet96-large"] {
        let (net, ckpt) = random_model(preset, INPUT96, 21);
        let arch = &ckpt.header.architecture;
        let mut outputs = Vec::new();
        for fold in [true, false] {
            let model = export(&net, &ckpt, fold);
            proto::check_topology(&model).unwrap();
            let ops = proto::op_types(&model);
            assert_eq!(
                ops.iter().any(|o| o == "BatchNormalization"),
                !fold,
                "{preset}: {ops:?}"
            );
            assert!(ops.iter().any(|o| o == "GlobalAveragePool"), "{ops:?}");
            // The stem conv, then depthwise (groups = channels in) + pointwise per block.
            let mut want = vec![1];
            let mut cin = arch.spec.blocks[0].width as i64;
            for b in &arch.spec.blocks[1..] {
                want.extend([cin, 1]);
                cin = b.width as i64;
            }
            assert_eq!(conv_groups(&model), want, "{preset}");
            let engine = TractEngine::from_bytes(&proto::encode(&model), preset).unwrap();
            for batch in [1usize, 3] {
                let x = test_images(batch, INPUT96);
                let shape = [batch, 3, 96, 96];
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
        let p = compare(&outputs[0], &outputs[2], Tolerance::Approximate);
        assert!(p.ok, "{preset}: folded vs unfolded: {:?}", p.problem);
    }
}

#[cfg(feature = "ort")]
#[test]
fn onnx_runtime_runs_mobilenet_students_with_parity() {
    use distill_edge::infer::ort::{OrtEngine, available};
    if let Err(e) = available() {
        assert!(std::env::var_os("ORT_DYLIB_PATH").is_none(), "{e}");
        distill_edge::testing::missing_tool(
            &format!("ONNX Runtime ({e})"),
            "run scripts/setup.sh, then source scripts/env.sh to set ORT_DYLIB_PATH",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (net, ckpt) = random_model("mobilenet96", INPUT96, 23);
    for fold in [true, false] {
        let path = tmp.path().join(format!("m-{fold}.onnx"));
        std::fs::write(&path, proto::encode(&export(&net, &ckpt, fold))).unwrap();
        let engine = OrtEngine::load(&path, 1).unwrap();
        for batch in [1usize, 3] {
            let x = test_images(batch, INPUT96);
            let shape = [batch, 3, 96, 96];
            let (want, _) = burn_logits(&net, &x, shape);
            let got = engine.run(Batch { data: &x, shape }).unwrap();
            let p = compare(&got.logits, &want, Tolerance::Approximate);
            assert!(p.ok, "fold={fold} batch {batch}: {:?}", p.problem);
        }
    }
}

/// The official checker (from the `onnx` package in the venv scripts/setup.sh makes)
/// accepts the grouped convolutions and the global pooling.
#[test]
fn the_official_onnx_checker_accepts_mobilenet_students() {
    let Some(python) = onnx_checker_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (net, ckpt) = random_model("mobilenet96", INPUT96, 5);
    for fold in [true, false] {
        let path = tmp.path().join(format!("m-{fold}.onnx"));
        std::fs::write(&path, proto::encode(&export(&net, &ckpt, fold))).unwrap();
        assert_onnx_checker_accepts(&python, &path, &format!("fold={fold}"));
    }
}

/// `data make` writes a 96x96 RGB folder dataset from generated data; a mobilenet96 student
/// trains one short epoch on it, exports, and `check` finds the ONNX model in parity with
/// burn under tract (and ONNX Runtime when built with it).
#[test]
fn a_mobilenet_student_trains_on_a_generated_96px_folder_exports_and_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let made = run_ok_json(
        p,
        &[
            "--json",
            "data",
            "make",
            "rgb96",
            "--data",
            "synthetic",
            "--train",
            "40",
            "--test",
            "20",
            "--size",
            "96",
        ],
    );
    assert_eq!(made["shape"]["height"], 96);
    assert_eq!(made["train"], 40);
    // An existing folder is refused with one line and left alone.
    let again = run(p, &["data", "make", "rgb96", "--data", "synthetic"]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        error_line(&again, p).contains("rgb96: already exists"),
        "{}",
        stderr(&again)
    );
    // An absolute data path: `check` reads the config saved beside the model, in the run
    // directory, where a relative one would not resolve.
    std::fs::write(
        p.join("m96.toml"),
        format!(
            "name = \"m96\"\nseed = 3\nmodel = \"mobilenet96\"\n\n[data]\nkind = \"folder\"\npath = \"{}\"\nheight = 96\nwidth = 96\n\n[train]\nbatch-size = 8\nschedule = [{{ epochs = 1, lr = 1e-3 }}]\n",
            p.join("rgb96").display()
        ),
    )
    .unwrap();
    let out = run(p, &["-q", "train", "--config", "m96.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = p.join("runs/m96/train");
    let d = dir.to_str().unwrap();
    let out = run(p, &["-q", "export", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    let onnx = dir.join("mobilenet96.onnx");
    let engines = if cfg!(feature = "ort") && std::env::var_os("ORT_DYLIB_PATH").is_some() {
        "tract,ort"
    } else {
        "tract"
    };
    let report = run_ok_json(
        p,
        &[
            "--json",
            "check",
            onnx.to_str().unwrap(),
            "--checkpoint",
            d,
            "--runs",
            "2",
            "--warmup",
            "1",
            "--batches",
            "1,4",
            "--engines",
            engines,
        ],
    );
    assert_eq!(report["passed"], true, "{report}");
    let checked = report["engines"].as_array().unwrap();
    assert_eq!(checked.len(), engines.split(',').count(), "{report}");
    for e in checked {
        assert!(e["parity"]["ok"].as_bool().unwrap(), "{report}");
    }
}

/// The acceptance path: a mobilenet96 student trained on a generated 96x96 folder runs in
/// the aarch64 bundle under qemu with outputs within tolerance of the host's (the cross
/// build is cached under the cargo target directory, shared with tests/pipeline.rs).
#[test]
fn a_mobilenet_student_runs_in_the_aarch64_bundle_under_qemu() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    run_ok_json(
        p,
        &[
            "--json",
            "data",
            "make",
            "rgb96",
            "--data",
            "synthetic",
            "--train",
            "30",
            "--test",
            "10",
        ],
    );
    std::fs::write(
        p.join("m96.toml"),
        format!(
            "name = \"m96\"\nseed = 5\nmodel = \"mobilenet96\"\n\n[data]\nkind = \"folder\"\npath = \"{}\"\nheight = 96\nwidth = 96\n\n[train]\nbatch-size = 10\nschedule = [{{ epochs = 1, lr = 1e-3 }}]\n",
            p.join("rgb96").display()
        ),
    )
    .unwrap();
    let out = run(p, &["-q", "train", "--config", "m96.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = p.join("runs/m96/train");
    let out = run(p, &["-q", "export", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let onnx = dir.join("mobilenet96.onnx");
    let out = run(
        p,
        &[
            "-q",
            "build",
            "--target",
            "aarch64",
            "--model",
            onnx.to_str().unwrap(),
            "--config",
            "m96.toml",
            "--batches",
            "1,2",
            "--runs",
            "1",
            "--warmup",
            "0",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = run_ok_json(
        p,
        &["--json", "bench", "--target", "aarch64", "--runs", "1"],
    );
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["emulated"], true, "{report}");
    assert_eq!(report["arch"], "aarch64", "{report}");
}

/// `inspect` on an exported mobilenet96-large: the stem and every pointwise conv are taps,
/// every depthwise conv is refused as grouped, and each mobilenet96 block gets the teacher
/// block of the same index.
#[test]
fn inspect_proposes_a_tap_per_student_block_on_an_exported_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let (net, ckpt) = random_model("mobilenet96-large", INPUT96, 4);
    let path = tmp.path().join("teacher.onnx");
    std::fs::write(&path, proto::encode(&export(&net, &ckpt, true))).unwrap();
    let report = run_ok_json(
        tmp.path(),
        &[
            "--json",
            "inspect",
            path.to_str().unwrap(),
            "--student",
            "mobilenet96",
        ],
    );
    assert_eq!(
        report["unsupported"].as_array().unwrap().len(),
        0,
        "{report}"
    );
    let convs = report["convs"].as_array().unwrap();
    assert_eq!(convs.len(), 11, "{report}");
    for c in convs {
        if c["groups"] == 1 {
            assert!(c["tap"].is_string(), "{c}");
        } else {
            assert!(
                c["refused"].as_str().unwrap().contains("grouped conv"),
                "{c}"
            );
        }
    }
    let teacher = &ckpt.header.architecture;
    let taps = report["taps"].as_array().unwrap();
    assert_eq!(taps.len(), 6);
    for (k, t) in taps.iter().enumerate() {
        let s = teacher.block_shapes[k];
        assert_eq!(
            t["tap_shape"],
            serde_json::json!([s.channels, s.height, s.width]),
            "block {k}: {t}"
        );
    }
    // Parameters as the architecture counts them (BN folded into the convs: weights and
    // biases only).
    let params = report["parameters"].as_u64().unwrap() as usize;
    let bn: usize = {
        let mut cin = 3;
        let mut n = 0;
        for b in &teacher.spec.blocks {
            n += 2 * b.width;
            if b.kind == distill_edge::model::BlockKind::Separable {
                n += 2 * cin;
            }
            cin = b.width;
        }
        n
    };
    assert_eq!(params, teacher.trainable_params() - bn);
    assert_eq!(report["macs"].as_u64().unwrap(), teacher.macs());

    // The human form names the taps; bad input is one line and exit code 1.
    let out = run(tmp.path(), &["inspect", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tract: every op is supported"), "{text}");
    assert!(text.contains("grouped conv (group = 32)"), "{text}");
    std::fs::write(tmp.path().join("junk.onnx"), b"not a model").unwrap();
    let out = run(tmp.path(), &["inspect", "junk.onnx"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        error_line(&out, tmp.path()).contains("junk.onnx"),
        "{}",
        stderr(&out)
    );
    let out = run(
        tmp.path(),
        &["inspect", path.to_str().unwrap(), "--input", "1x96x96"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        error_line(&out, tmp.path()).contains("does not fit input 'input'"),
        "{}",
        stderr(&out)
    );
}

/// InDistill from a mobilenet96-large auxiliary to a mobilenet96 student: the pruned teacher
/// (depthwise stages whole, pointwise convs pruned to the student's widths) gives one
/// curriculum phase per block, then the main phase.
#[test]
fn indistill_aligns_separable_blocks_from_mobilenet96_large_to_mobilenet96() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let data = "[data]\nkind = \"synthetic\"\ntrain = 24\ntest = 8\nchannels = 3\nheight = 96\nwidth = 96\n";
    std::fs::write(
        p.join("teacher.toml"),
        format!(
            "name = \"t\"\nseed = 2\nmodel = \"mobilenet96-large\"\n\n{data}\n[train]\nbatch-size = 8\nschedule = [{{ epochs = 1, lr = 1e-3 }}]\n"
        ),
    )
    .unwrap();
    let out = run(p, &["-q", "train", "--config", "teacher.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(
        p.join("distill.toml"),
        format!(
            "name = \"d\"\nseed = 2\nstudent = \"mobilenet96\"\nteacher = \"runs/t/train/model.ckpt\"\n\n{data}\n[train]\nbatch-size = 8\nschedule = [{{ epochs = 1, lr = 1e-3 }}]\n\n[distill]\nmethod = \"indistill\"\ncurriculum = [1, 1, 1, 1, 1, 1]\n"
        ),
    )
    .unwrap();
    let out = run(p, &["--json", "distill", "--config", "distill.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json(&out);
    let phases: Vec<&str> = report["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    let mut want: Vec<String> = (0..6).map(|k| format!("curriculum:block{k}")).collect();
    want.push("main:indistill".into());
    assert_eq!(phases, want);
    assert!(
        stderr(&out).contains("pruned teacher 'mobilenet96-large'"),
        "{}",
        stderr(&out)
    );
}
