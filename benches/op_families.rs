//! tract against ONNX Runtime per op family, on this host: one single-op ONNX model per family
//! (3x3 conv, depthwise 3x3 conv, pointwise 1x1 conv, fully connected Gemm, max pool, global
//! average pool), generated here, each timed with both engines in one run at batch 1 and one
//! thread (tract: the optimised plan with one reused state; ONNX Runtime: all graph
//! optimisations, one intra-op thread).
//!
//! `cargo bench --features ort --bench op_families -- [--runs 300] [--write DIR]` (needs
//! ORT_DYLIB_PATH). Prints one JSON object per family and engine, then a markdown table.
//! `--write DIR` keeps the models (`DIR/<family>.onnx`), e.g. to run them on a board with
//! `distill-edge build --target aarch64-ort --model DIR/conv3x3.onnx --random-inputs 8`.

use std::path::Path;
use std::time::Instant;

use distill_edge::onnx::proto::pb::tensor_proto::DataType;
use distill_edge::onnx::proto::{
    self, Dim, make_attr_int, make_attr_ints, make_node, make_tensor_f32, make_value_info, pb,
};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::SimpleState;

/// One family: its name, the input shape `[c, h, w]`, the nodes, initializers, output shape
/// and multiply-accumulates per image.
struct Family {
    name: &'static str,
    input: [i64; 3],
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    output: Vec<i64>,
    macs: u64,
}

/// Deterministic values in `[-scale, scale]`.
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
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

/// A conv `cin -> cout`, `k`x`k`, same padding, `group` groups, on `hw`x`hw` inputs.
fn conv(name: &'static str, cin: i64, cout: i64, k: i64, group: i64, hw: i64) -> Family {
    let w = [cout, cin / group, k, k];
    let n = w.iter().product::<i64>() as usize;
    Family {
        name,
        input: [cin, hw, hw],
        nodes: vec![make_node(
            "Conv",
            &["x", "w", "b"],
            &["y"],
            "conv",
            vec![
                make_attr_ints("kernel_shape", &[k, k]),
                make_attr_ints("pads", &[k / 2; 4]),
                make_attr_int("group", group),
            ],
        )],
        inits: vec![
            make_tensor_f32("w", &w, &values(n, 1, 0.1)),
            make_tensor_f32("b", &[cout], &values(cout as usize, 2, 0.1)),
        ],
        output: vec![cout, hw, hw],
        macs: (hw * hw * cout * (cin / group) * k * k) as u64,
    }
}

fn families() -> Vec<Family> {
    vec![
        conv("conv3x3", 32, 32, 3, 1, 48),
        conv("depthwise3x3", 64, 64, 3, 64, 48),
        conv("pointwise1x1", 64, 128, 1, 1, 48),
        Family {
            name: "gemm",
            input: [1024, 1, 1],
            nodes: vec![
                make_node(
                    "Flatten",
                    &["x"],
                    &["f"],
                    "flatten",
                    vec![make_attr_int("axis", 1)],
                ),
                make_node(
                    "Gemm",
                    &["f", "w", "b"],
                    &["y"],
                    "fc",
                    vec![make_attr_int("transB", 1)],
                ),
            ],
            inits: vec![
                make_tensor_f32("w", &[1000, 1024], &values(1000 * 1024, 3, 0.05)),
                make_tensor_f32("b", &[1000], &values(1000, 4, 0.1)),
            ],
            output: vec![1000],
            macs: 1000 * 1024,
        },
        Family {
            name: "maxpool2x2",
            input: [64, 48, 48],
            nodes: vec![make_node(
                "MaxPool",
                &["x"],
                &["y"],
                "pool",
                vec![
                    make_attr_ints("kernel_shape", &[2, 2]),
                    make_attr_ints("strides", &[2, 2]),
                ],
            )],
            inits: vec![],
            output: vec![64, 24, 24],
            macs: 0,
        },
        Family {
            name: "globalavgpool",
            input: [256, 12, 12],
            nodes: vec![make_node(
                "GlobalAveragePool",
                &["x"],
                &["y"],
                "gap",
                vec![],
            )],
            inits: vec![],
            output: vec![256, 1, 1],
            macs: 0,
        },
    ]
}

fn model(f: &Family) -> pb::ModelProto {
    let batch = Dim::Symbolic("batch".into());
    let dims = |rest: &[i64]| -> Vec<Dim> {
        std::iter::once(batch.clone())
            .chain(rest.iter().map(|&d| Dim::Fixed(d)))
            .collect()
    };
    // Flattened to `[batch, features]`, as classifier logits are: the host's checks and the
    // board's runner read any model's output that way (a copy at most, small next to the op).
    let mut nodes = f.nodes.clone();
    let last = nodes
        .last()
        .and_then(|n| n.output.first())
        .cloned()
        .unwrap();
    nodes.push(make_node(
        "Flatten",
        &[&last],
        &["out"],
        "flatten_out",
        vec![make_attr_int("axis", 1)],
    ));
    let features: i64 = f.output.iter().product();
    pb::ModelProto {
        ir_version: Some(8),
        producer_name: Some("op_families bench".into()),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(pb::GraphProto {
            name: Some(f.name.into()),
            node: nodes,
            initializer: f.inits.clone(),
            input: vec![make_value_info("x", DataType::Float, &dims(&f.input))],
            output: vec![make_value_info("out", DataType::Float, &dims(&[features]))],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// p50 and p90 of `runs` timed calls of `f` after a warm-up of `runs / 10 + 10` calls, ms.
fn time(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..runs / 10 + 10 {
        f();
    }
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[(v.len() * 9) / 10])
}

fn tract_time(path: &Path, shape: [usize; 4], data: &[f32], runs: usize) -> (f64, f64) {
    let plan = tract_onnx::onnx()
        .model_for_path(path)
        .unwrap()
        .with_input_fact(0, f32::fact(shape).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input: TValue = Tensor::from_shape(&shape, data).unwrap().into();
    let mut state = SimpleState::new(&plan).unwrap();
    time(runs, || {
        state.run(tvec!(input.clone())).unwrap();
    })
}

#[cfg(feature = "ort")]
fn ort_time(path: &Path, shape: [usize; 4], data: &[f32], runs: usize) -> Option<(f64, f64)> {
    use distill_edge::infer::{Batch, Engine};
    distill_edge::infer::ort::available().ok()?;
    let e = distill_edge::infer::ort::OrtEngine::load(path, 1).unwrap();
    Some(time(runs, || {
        e.run(Batch { data, shape }).unwrap();
    }))
}

#[cfg(not(feature = "ort"))]
fn ort_time(_: &Path, _: [usize; 4], _: &[f32], _: usize) -> Option<(f64, f64)> {
    None
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "op_families: skipped (run it with cargo bench --features ort --bench op_families)"
        );
        return;
    }
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(300);
    let tmp = tempfile::tempdir().unwrap();
    let dir = args
        .iter()
        .position(|a| a == "--write")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let mut table = vec![
        "| op family | input | MMACs | tract p50 ms | ORT p50 ms | tract / ORT |".to_string(),
        "|---|---|---:|---:|---:|---:|".to_string(),
    ];
    for f in families() {
        let path = dir.join(format!("{}.onnx", f.name));
        std::fs::write(&path, proto::encode(&model(&f))).unwrap();
        let [c, h, w] = f.input.map(|d| d as usize);
        let shape = [1, c, h, w];
        let data = values(c * h * w, 9, 1.0);
        let (t50, t90) = tract_time(&path, shape, &data, runs);
        let ort = ort_time(&path, shape, &data, runs);
        println!(
            "{}",
            serde_json::json!({"family": f.name, "engine": "tract", "batch": 1, "threads": 1, "p50_ms": t50, "p90_ms": t90, "runs": runs, "macs": f.macs})
        );
        if let Some((o50, o90)) = ort {
            println!(
                "{}",
                serde_json::json!({"family": f.name, "engine": "onnxruntime", "batch": 1, "threads": 1, "p50_ms": o50, "p90_ms": o90, "runs": runs, "macs": f.macs})
            );
        }
        table.push(format!(
            "| {} | {c}x{h}x{w} | {:.2} | {t50:.4} | {} | {} |",
            f.name,
            f.macs as f64 / 1e6,
            ort.map_or("-".into(), |o| format!("{:.4}", o.0)),
            ort.map_or("-".into(), |o| format!("{:.2}", t50 / o.0)),
        ));
    }
    println!("{}", table.join("\n"));
}
