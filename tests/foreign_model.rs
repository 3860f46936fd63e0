//! A model distill-edge did not write: a small ResNet-style network (residual Adds, a strided
//! block with a 1x1 projection, GlobalAveragePool, two outputs with the logits second, a
//! symbolic batch) written here with the ONNX protobuf types, fed through `check`,
//! `build --model` and `bench`, with and without labelled data.

mod common;

use std::path::Path;

use common::*;
use distill_edge::onnx::proto::pb::tensor_proto::DataType;
use distill_edge::onnx::proto::{
    self, Dim, make_attr_int, make_attr_ints, make_node, make_tensor_f32, make_value_info, pb,
};

/// Deterministic weights in `[-scale, scale]`.
fn weights(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn conv(
    name: &str,
    input: &str,
    output: &str,
    [out_c, in_c, k]: [i64; 3],
    stride: i64,
    inits: &mut Vec<pb::TensorProto>,
    seed: u64,
) -> pb::NodeProto {
    let w = format!("{name}.weight");
    let b = format!("{name}.bias");
    let fan_in = (in_c * k * k) as f32;
    inits.push(make_tensor_f32(
        &w,
        &[out_c, in_c, k, k],
        &weights((out_c * in_c * k * k) as usize, seed, 1.5 / fan_in.sqrt()),
    ));
    inits.push(make_tensor_f32(
        &b,
        &[out_c],
        &weights(out_c as usize, seed + 100, 0.1),
    ));
    let pad = k / 2;
    make_node(
        "Conv",
        &[input, &w, &b],
        &[output],
        name,
        vec![
            make_attr_ints("kernel_shape", &[k, k]),
            make_attr_ints("strides", &[stride, stride]),
            make_attr_ints("pads", &[pad, pad, pad, pad]),
        ],
    )
}

/// The ResNet-style model; `extra` nodes are appended (for unsupported-operator tests).
fn resnet(extra: Vec<pb::NodeProto>) -> pb::ModelProto {
    let mut inits = Vec::new();
    let relu = |i: &str, o: &str| make_node("Relu", &[i], &[o], &format!("relu_{o}"), vec![]);
    let mut nodes = vec![
        conv("stem", "pixels", "c0", [8, 3, 3], 1, &mut inits, 1),
        relu("c0", "r0"),
        // Residual block, identity shortcut.
        conv("block1.conv1", "r0", "b1a", [8, 8, 3], 1, &mut inits, 2),
        relu("b1a", "b1r"),
        conv("block1.conv2", "b1r", "b1b", [8, 8, 3], 1, &mut inits, 3),
        make_node("Add", &["b1b", "r0"], &["add1"], "block1.add", vec![]),
        relu("add1", "r1"),
        // Residual block, strided, with a 1x1 projection shortcut.
        conv("block2.conv1", "r1", "b2a", [16, 8, 3], 2, &mut inits, 4),
        relu("b2a", "b2r"),
        conv("block2.conv2", "b2r", "b2b", [16, 16, 3], 1, &mut inits, 5),
        conv("block2.proj", "r1", "proj", [16, 8, 1], 2, &mut inits, 6),
        make_node("Add", &["b2b", "proj"], &["add2"], "block2.add", vec![]),
        relu("add2", "r2"),
        make_node("GlobalAveragePool", &["r2"], &["gap"], "pool", vec![]),
        make_node(
            "Flatten",
            &["gap"],
            &["features"],
            "flatten",
            vec![make_attr_int("axis", 1)],
        ),
    ];
    inits.push(make_tensor_f32(
        "fc.weight",
        &[10, 16],
        &weights(160, 7, 0.5),
    ));
    inits.push(make_tensor_f32("fc.bias", &[10], &weights(10, 8, 0.1)));
    nodes.push(make_node(
        "Gemm",
        &["features", "fc.weight", "fc.bias"],
        &["scores"],
        "fc",
        vec![make_attr_int("transB", 1)],
    ));
    nodes.extend(extra);
    let batch = Dim::Symbolic("batch".into());
    pb::ModelProto {
        ir_version: Some(8),
        producer_name: Some("a test, not distill-edge".into()),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(pb::GraphProto {
            name: Some("resnet_tiny".into()),
            node: nodes,
            initializer: inits,
            input: vec![make_value_info(
                "pixels",
                DataType::Float,
                &[batch.clone(), Dim::Fixed(3), Dim::Fixed(16), Dim::Fixed(16)],
            )],
            output: vec![
                make_value_info(
                    "features",
                    DataType::Float,
                    &[batch.clone(), Dim::Fixed(16)],
                ),
                make_value_info("scores", DataType::Float, &[batch, Dim::Fixed(10)]),
            ],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn write_model(dir: &Path, name: &str, model: &pb::ModelProto) {
    std::fs::write(dir.join(name), proto::encode(model)).unwrap();
}

/// Flags that feed the model: the logits are its second output; grey synthetic images are
/// resized to 16x16 and replicated to three channels.
const FEED: &[&str] = &[
    "--logits-output",
    "scores",
    "--mean",
    "0.5,0.5,0.5",
    "--std",
    "0.25,0.25,0.25",
];

#[test]
fn a_foreign_resnet_is_checked_with_random_inputs_and_with_labelled_data() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    write_model(p, "resnet.onnx", &resnet(vec![]));

    // No dataset: seeded random inputs, said so, no accuracy, tract's outputs checked.
    let mut args = vec![
        "--json",
        "check",
        "resnet.onnx",
        "--engines",
        "tract",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--batches",
        "1,4",
        "--limit",
        "12",
        "--seconds",
        "0",
        "--warmup-seconds",
        "0",
    ];
    args.extend_from_slice(FEED);
    let v = run_ok_json(p, &args);
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["test_images"], 12);
    assert!(
        v["inputs"]
            .as_str()
            .unwrap()
            .contains("seeded random inputs"),
        "{v}"
    );
    assert!(v["engines"][0]["accuracy"].is_null(), "{v}");
    assert_eq!(v["preprocess"]["logits_output"], 1);
    assert_eq!(v["preprocess"]["input"], serde_json::json!([3, 16, 16]));
    let e = &v["engines"][0];
    assert_eq!(e["latency"].as_array().unwrap().len(), 2);
    assert!(e["load_ms"].as_f64().unwrap() > 0.0, "{e}");
    for ph in e["phases"].as_array().unwrap() {
        assert!(ph["plan_ms"].as_f64().unwrap() > 0.0, "{ph}");
        assert!(ph["first_run_ms"].as_f64().unwrap() > 0.0, "{ph}");
        assert_eq!(ph["warmup_runs"], 1, "{ph}");
    }
    assert!(e["latency"][0]["stats"]["std_ms"].is_number(), "{e}");
    assert_eq!(
        e["latency"][0]["stats"]["unsupported"],
        serde_json::json!(["p90", "p95", "p99"])
    );

    // A labelled dataset: accuracy on it.
    let mut labelled = args.clone();
    labelled.extend_from_slice(&["--data", "synthetic"]);
    let v = run_ok_json(p, &labelled);
    let acc = v["engines"][0]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{v}");
    assert!(v["inputs"].as_str().unwrap().contains("labelled"), "{v}");

    // Labelled data without a normalisation: one line naming the flags.
    let out = run(
        p,
        &[
            "check",
            "resnet.onnx",
            "--engines",
            "tract",
            "--data",
            "synthetic",
            "--limit",
            "4",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = error_line(&out, p);
    assert!(err.contains("--mean") && err.contains("--std"), "{err}");

    // The same through a preprocessing file, with the output given by index.
    std::fs::write(
        p.join("pre.toml"),
        "mean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 0.25]\nlogits-output = 1\n",
    )
    .unwrap();
    let v = run_ok_json(
        p,
        &[
            "--json",
            "check",
            "resnet.onnx",
            "--engines",
            "tract",
            "--runs",
            "2",
            "--warmup",
            "0",
            "--batches",
            "1",
            "--limit",
            "12",
            "--data",
            "synthetic",
            "--preprocess",
            "pre.toml",
            "--seconds",
            "0",
            "--warmup-seconds",
            "0",
        ],
    );
    assert_eq!(v["engines"][0]["accuracy"].as_f64(), Some(acc), "{v}");

    // A bad field in the file: named.
    std::fs::write(p.join("bad.toml"), "means = [0.5]\n").unwrap();
    let out = run(p, &["check", "resnet.onnx", "--preprocess", "bad.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = error_line(&out, p);
    assert!(err.contains("bad.toml") && err.contains("means"), "{err}");
    // An output the model does not have: the outputs listed.
    let out = run(p, &["check", "resnet.onnx", "--logits-output", "probs"]);
    assert_eq!(out.status.code(), Some(1));
    let err = error_line(&out, p);
    assert!(err.contains("features") && err.contains("scores"), "{err}");
}

#[test]
fn every_operator_tract_cannot_run_is_listed_before_the_cross_build() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let mut custom = make_node("FancyNorm", &["scores"], &["fancy"], "head.fancy", vec![]);
    custom.domain = Some("com.example".into());
    let model = resnet(vec![
        custom,
        make_node("NoSuchOnnxOp", &["features"], &["odd"], "head.odd", vec![]),
    ]);
    write_model(p, "odd.onnx", &model);
    let out = run(
        p,
        &[
            "build",
            "--target",
            "aarch64",
            "--model",
            "odd.onnx",
            "--out",
            "dist/aarch64",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = error_line(&out, p);
    assert!(err.contains("tract cannot run 2 node(s)"), "{err}");
    assert!(
        err.contains("com.example::FancyNorm") && err.contains("head.fancy"),
        "{err}"
    );
    assert!(
        err.contains("NoSuchOnnxOp") && err.contains("head.odd"),
        "{err}"
    );
    assert!(
        !stderr(&out).contains("cross-compiling"),
        "{}",
        stderr(&out)
    );
    assert!(!p.join("dist").exists());
}

#[test]
fn a_foreign_resnet_builds_and_benches_under_qemu_with_and_without_labels() {
    if let Some(tool) = common::missing_cross_tool() {
        distill_edge::testing::missing_tool(&tool, "scripts/setup.sh installs it");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    write_model(p, "resnet.onnx", &resnet(vec![]));
    for (bundle, labelled) in [("dist/random", false), ("dist/labelled", true)] {
        let mut args = vec![
            "--json",
            "build",
            "--target",
            "aarch64",
            "--model",
            "resnet.onnx",
            "--out",
            bundle,
            "--shard-size",
            "20",
            "--runs",
            "3",
            "--seconds",
            "0",
            "--warmup",
            "1",
            "--warmup-seconds",
            "0",
            "--batches",
            "1,2",
        ];
        args.extend_from_slice(FEED);
        if labelled {
            args.extend_from_slice(&["--data", "synthetic"]);
        }
        let built = run_ok_json(p, &args);
        let inputs = built["manifest"]["inputs"].as_str().unwrap();
        assert_eq!(inputs.contains("random"), !labelled, "{inputs}");
        assert_eq!(built["manifest"]["logits_output"], 1);

        let v = run_ok_json(
            p,
            &[
                "--json",
                "bench",
                "--target",
                "aarch64",
                "--bundle",
                bundle,
                "--profile",
            ],
        );
        assert_eq!(v["passed"], true, "{v}");
        assert_eq!(v["emulated"], true);
        assert!(
            v["notes"].as_array().unwrap().iter().any(|n| n
                .as_str()
                .unwrap()
                .contains("emulated: latency is not a board figure")),
            "{v}"
        );
        assert_runner_json(&v);
        assert_eq!(v["models"][0]["host_correct"].is_null(), !labelled, "{v}");
        let env = &v["environment"];
        assert!(
            v["emulated_cpu"].as_str().unwrap().contains("cortex-a72"),
            "{v}"
        );
        assert!(
            v["sizes"]["bundle_bytes"].as_u64().unwrap() > 1_000_000,
            "{v}"
        );
        assert!(
            v["sizes"]["models"][0]["weight_bytes"].as_u64().unwrap() > 10_000,
            "{v}"
        );
        assert_eq!(
            env["runner_sha256"], built["manifest"]["files"][0]["sha256"],
            "the runner that ran is the one bundled"
        );
    }
}

/// Edits a figure of a saved baseline through `f`.
fn edit_baseline(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// A baseline compared on this host (not emulated, so latency is gated): it passes on itself;
/// a baseline edited to be faster or more accurate than reality fails with exit code 3; the
/// JUnit report is XML listing every check.
#[test]
fn a_baseline_passes_on_itself_and_fails_when_edited_to_be_better() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    write_model(p, "resnet.onnx", &resnet(vec![]));
    let runner = distill_edge::testing::host_runner();
    let mut args = vec![
        "-q",
        "build",
        "--target",
        "x86_64",
        "--model",
        "resnet.onnx",
        "--runner",
        runner.to_str().unwrap(),
        "--out",
        "dist/x86_64",
        "--data",
        "synthetic",
        "--shard-size",
        "40",
        "--runs",
        "20",
        "--seconds",
        "0",
        "--warmup",
        "2",
        "--warmup-seconds",
        "0",
        "--batches",
        "1",
    ];
    args.extend_from_slice(FEED);
    let out = run(p, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let bench = |extra: &[&str]| {
        let mut a = vec![
            "--json",
            "bench",
            "--target",
            "x86_64",
            "--device",
            "local",
            "--bundle",
            "dist/x86_64",
        ];
        a.extend_from_slice(extra);
        run(p, &a)
    };
    let saved = bench(&["--save-baseline", "base.json", "--junit", "first.xml"]);
    let first = json(&saved);
    // The batch-1 budget of the x86_64 target may or may not hold on a loaded machine; the
    // baseline is saved either way.
    assert!(p.join("base.json").is_file(), "{}", stderr(&saved));
    let budget_ok = first["passed"] == true;

    // On itself (a loose latency threshold: the same machine, moments apart).
    let again = bench(&[
        "--baseline",
        "base.json",
        "--fail-regression",
        "400",
        "--warn-regression",
        "300",
        "--junit",
        "junit.xml",
    ]);
    let v = json(&again);
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in [
        "fp32 top-1 vs host",
        "fp32 outputs vs host",
        "fp32 top-1 vs baseline",
        "fp32 outputs vs baseline",
        "fp32 batch-1 p50 vs baseline",
        "fp32 batch-1 p90 vs baseline",
    ] {
        assert!(names.contains(&n), "{n}: {names:?}");
    }
    let baseline_checks: Vec<_> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().unwrap().ends_with("vs baseline"))
        .collect();
    assert!(
        baseline_checks.iter().all(|c| c["outcome"] == "passed"),
        "{baseline_checks:?}"
    );
    if budget_ok {
        assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    }
    let xml = std::fs::read_to_string(p.join("junit.xml")).unwrap();
    let events: Vec<_> = xml::reader::EventReader::from_str(&xml)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("JUnit report is well-formed XML");
    let cases = events
        .iter()
        .filter(|e| {
            matches!(e, xml::reader::XmlEvent::StartElement { name, .. } if name.local_name == "testcase")
        })
        .count();
    assert_eq!(cases, names.len(), "{xml}");
    assert!(
        xml.contains("name=\"fp32 batch-1 p50 vs baseline\""),
        "{xml}"
    );

    // Latency edited to be 10x better than measured: a failed check, exit code 3.
    edit_baseline(&p.join("base.json"), |b| {
        let l = &mut b["report"]["models"][0]["device"]["latency"][0];
        l["p50_ms"] = (l["p50_ms"].as_f64().unwrap() / 10.0).into();
    });
    let out = bench(&["--baseline", "base.json", "--junit", "junit.xml"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        error_line(&out, p).contains("fp32 batch-1 p50 vs baseline"),
        "{}",
        stderr(&out)
    );
    let xml = std::fs::read_to_string(p.join("junit.xml")).unwrap();
    assert!(xml.contains("<failure message="), "{xml}");

    // Accuracy edited to be better: exit code 3 as well.
    std::fs::write(
        p.join("acc.json"),
        serde_json::to_vec(&first_baseline(&p.join("base.json"))).unwrap(),
    )
    .unwrap();
    edit_baseline(&p.join("acc.json"), |b| {
        let m = &mut b["report"]["models"][0];
        let images = m["images"].clone();
        m["device_correct"] = images;
        let l = &mut m["device"]["latency"][0];
        l["p50_ms"] = (l["p50_ms"].as_f64().unwrap() * 10.0).into();
    });
    let out = bench(&["--baseline", "acc.json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        error_line(&out, p).contains("fp32 top-1 vs baseline"),
        "{}",
        stderr(&out)
    );
    // --cpus pins the runner: its own affinity says so.
    let pinned = json(&bench(&["--cpus", "0", "--profile"]));
    assert_eq!(pinned["environment"]["affinity"], "0", "{pinned}");
    // On the host too, the runner's JSON carries every phase, memory figure, the profile and
    // the environment.
    assert_runner_json(&pinned);
    assert!(pinned["emulated_cpu"].is_null());
    assert_eq!(pinned["emulated"], false);
    let out = bench(&["--cpus", "0;1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(error_line(&out, p).contains("--cpus"), "{}", stderr(&out));

    // Not a baseline: one line naming the file, exit 1, before anything runs.
    std::fs::write(p.join("junk.json"), "{}").unwrap();
    let out = bench(&["--baseline", "junk.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(error_line(&out, p).contains("junk.json: not a distill-edge bench baseline"));
}

/// The baseline file as JSON.
fn first_baseline(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Several boards from the command line and from an inventory: one row and one result file
/// each; an unreachable board fails its row (exit 1 naming it), the others pass.
#[test]
fn several_boards_get_a_row_and_a_result_file_each() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    write_model(p, "resnet.onnx", &resnet(vec![]));
    let runner = distill_edge::testing::host_runner();
    let mut args = vec![
        "-q",
        "build",
        "--target",
        "x86_64",
        "--model",
        "resnet.onnx",
        "--runner",
        runner.to_str().unwrap(),
        "--out",
        "dist/x86_64",
        "--random-inputs",
        "8",
        "--runs",
        "3",
        "--seconds",
        "0",
        "--warmup",
        "1",
        "--warmup-seconds",
        "0",
        "--batches",
        "1",
    ];
    args.extend_from_slice(FEED);
    let out = run(p, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = format!("ssh://nobody@127.0.0.1:{closed}");
    let out = run(
        p,
        &[
            "--json",
            "bench",
            "--target",
            "x86_64",
            "--device",
            "local",
            "--device",
            "local",
            "--device",
            &gone,
            "--connect-timeout",
            "3",
            "--results",
            "rows",
            "--junit",
            "fleet.xml",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = json(&out);
    let rows = v["devices"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{v}");
    assert_eq!(rows[0]["result"]["passed"], true, "{v}");
    assert_eq!(rows[1]["result"]["passed"], true, "{v}");
    assert!(rows[2]["result"].is_null());
    assert!(
        rows[2]["error"].as_str().unwrap().contains("127.0.0.1"),
        "{v}"
    );
    let line = error_line(&out, p);
    assert!(
        line.contains("1 of 3 boards did not run") && line.contains("3-ssh"),
        "{line}"
    );
    for row in rows {
        let name = row["name"].as_str().unwrap();
        assert!(
            p.join("rows").join(format!("{name}.json")).is_file(),
            "{name}"
        );
    }
    let xml = std::fs::read_to_string(p.join("fleet.xml")).unwrap();
    assert_eq!(xml.matches("<testsuite ").count(), 3, "{xml}");
    assert!(xml.contains("<failure message="), "{xml}");

    // An inventory, selected by tag: the two reachable boards only, exit 0.
    std::fs::write(
        p.join("devices.toml"),
        format!(
            "[[device]]\nname = \"here\"\nurl = \"local\"\ntarget = \"x86_64\"\ntags = [\"lab\"]\n\
             [[device]]\nname = \"here-too\"\nurl = \"local\"\ntags = [\"lab\", \"x86\"]\n\
             [[device]]\nname = \"gone\"\nurl = \"{gone}\"\n"
        ),
    )
    .unwrap();
    let v = run_ok_json(
        p,
        &[
            "--json",
            "bench",
            "--target",
            "x86_64",
            "--devices",
            "devices.toml",
            "--tag",
            "lab",
            "--results",
            "lab",
        ],
    );
    let names: Vec<&str> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["here", "here-too"]);
    assert!(p.join("lab/here-too.json").is_file());
}

/// The runner's result as `bench --json --profile` shows it: every phase, memory figure, the
/// profile, the state-reuse timing and the environment record.
fn assert_runner_json(v: &serde_json::Value) {
    let m = &v["models"][0];
    assert_eq!(m["bit_identical"], true, "{m}");
    let d = &m["device"];
    assert!(d["load_ms"].as_f64().unwrap() > 0.0, "{d}");
    for ph in d["phases"].as_array().unwrap() {
        assert!(ph["plan_ms"].as_f64().unwrap() > 0.0, "{ph}");
        assert!(ph["first_run_ms"].as_f64().unwrap() > 0.0, "{ph}");
        assert!(ph["warmup_runs"].as_u64().unwrap() >= 1, "{ph}");
    }
    let lat = &d["latency"][0];
    for k in [
        "runs", "min_ms", "mean_ms", "std_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms",
    ] {
        assert!(lat[k].is_number(), "{k}: {lat}");
    }
    assert_eq!(lat["unsupported"], serde_json::json!(["p90", "p95", "p99"]));
    for k in ["after_load_kib", "after_plan_kib", "after_runs_kib"] {
        assert!(d["memory"][k].as_u64().unwrap() > 0, "{k}: {d}");
    }
    let profile = &d["profile"];
    let ops = profile["ops"].as_array().unwrap();
    assert!(ops.len() >= 5, "{profile}");
    let share: f64 = ops.iter().map(|o| o["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-6, "{share}");
    assert!(
        ops.iter()
            .any(|o| o["macs"].as_u64().is_some_and(|m| m > 0)),
        "{profile}"
    );
    let reuse = &d["state_reuse"];
    assert!(reuse["reused"]["p50_ms"].as_f64().unwrap() > 0.0, "{reuse}");
    assert!(reuse["fresh"]["p50_ms"].as_f64().unwrap() > 0.0, "{reuse}");
    let env = &v["environment"];
    for k in [
        "tract_cpu_kind",
        "kernel_family",
        "runner_sha256",
        "affinity",
    ] {
        assert!(env[k].is_string(), "{k}: {env}");
    }
    assert!(env["cores"].as_u64().unwrap() >= 1, "{env}");
    assert_eq!(env["threads"], 1);
}
