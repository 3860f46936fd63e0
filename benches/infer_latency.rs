//! Inference latency of an ONNX model: tract in several configurations against ONNX Runtime,
//! in one run, to separate tract's configuration from the runtime itself.
//!
//! `cargo bench --features ort --bench infer_latency -- MODEL.onnx [--runs 300] [--profile]`
//! (needs ORT_DYLIB_PATH for the ONNX Runtime rows). Prints one JSON object per row. With
//! `--profile`, also one row per node of tract's optimised plan (1 thread): the op, its output
//! datum type (an integer type means an integer kernel) and its share of the time, measured
//! around each node's evaluation over `--runs` runs.

use std::time::Instant;

use tract_onnx::prelude::*;

fn p50(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[(v.len() * 9) / 10])
}

fn time(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..runs / 10 + 3 {
        f();
    }
    let samples: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    p50(samples)
}

/// Per-node time of tract's optimised plan, summed over `runs` runs after a warm-up.
fn profile(
    plan: &std::sync::Arc<TypedSimplePlan>,
    input: &TValue,
    runs: usize,
) -> Vec<(String, String, String, f64)> {
    let model = plan.model();
    let mut total = vec![0f64; model.nodes.len()];
    for i in 0..runs + runs / 10 + 3 {
        let mut state = plan.spawn().unwrap();
        state
            .run_plan_with_eval(tvec!(input.clone()), |ctx, op_state, node, inputs| {
                let t = Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                if i >= runs / 10 + 3 {
                    total[node.id] += t.elapsed().as_secs_f64() * 1e3;
                }
                out
            })
            .unwrap();
    }
    model
        .nodes
        .iter()
        .map(|n| {
            let dt = n
                .outputs
                .first()
                .map(|o| format!("{:?}", o.fact.datum_type))
                .unwrap_or_default();
            (
                n.name.clone(),
                n.op().name().to_string(),
                dt,
                total[n.id] / runs as f64,
            )
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("infer_latency: skipped (run it with cargo bench -- MODEL.onnx)");
        return;
    }
    let Some(model_path) = args.iter().skip(1).find(|a| a.ends_with(".onnx")).cloned() else {
        eprintln!("usage: cargo bench --bench infer_latency -- MODEL.onnx [--runs N]");
        std::process::exit(1);
    };
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(300);
    let profiling = args.iter().any(|a| a == "--profile");
    let model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_path(&model_path)
        .expect("model");
    let fact = model.input_fact(0).unwrap().clone();
    let dims: Vec<usize> = fact
        .shape
        .dims()
        .skip(1)
        .map(|d| {
            use tract_onnx::tract_hir::infer::Factoid;
            d.concretize().and_then(|d| d.as_i64()).unwrap() as usize
        })
        .collect();
    let row = |engine: &str, config: &str, batch: usize, (p50, p90): (f64, f64)| {
        println!(
            "{}",
            serde_json::json!({"model": model_path, "engine": engine, "config": config, "batch": batch, "p50_ms": p50, "p90_ms": p90, "runs": runs})
        );
    };
    for batch in [1usize, 32] {
        let shape = [batch, dims[0], dims[1], dims[2]];
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|i| (i % 255) as f32 / 255.0).collect();
        let input: TValue = Tensor::from_shape(&shape, &data).unwrap().into();
        let typed = model
            .clone()
            .with_input_fact(0, f32::fact(shape).into())
            .unwrap()
            .into_typed()
            .unwrap();
        let decluttered = typed
            .clone()
            .into_decluttered()
            .unwrap()
            .into_runnable()
            .unwrap();
        row(
            "tract",
            "decluttered, not optimised",
            batch,
            time(runs, || {
                decluttered.run(tvec!(input.clone())).unwrap();
            }),
        );
        let optimised = typed
            .clone()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        row(
            "tract",
            "optimised, concrete shape (default)",
            batch,
            time(runs, || {
                optimised.run(tvec!(input.clone())).unwrap();
            }),
        );
        if profiling {
            let rows = profile(&optimised, &input, runs);
            let sum: f64 = rows.iter().map(|r| r.3).sum();
            for (node, op, datum_type, ms) in rows {
                println!(
                    "{}",
                    serde_json::json!({"model": model_path, "engine": "tract", "profile": true, "batch": batch, "node": node, "op": op, "output_type": datum_type, "ms": ms, "share": ms / sum})
                );
            }
        }
        tract_linalg::multithread::set_default_executor(
            tract_linalg::multithread::Executor::multithread(2),
        );
        row(
            "tract",
            "optimised, 2 threads",
            batch,
            time(runs, || {
                optimised.run(tvec!(input.clone())).unwrap();
            }),
        );
        tract_linalg::multithread::set_default_executor(
            tract_linalg::multithread::Executor::SingleThread,
        );
        #[cfg(feature = "ort")]
        {
            use distill_edge::infer::{Batch, Engine};
            if distill_edge::infer::ort::available().is_ok() {
                for threads in [1usize, 2] {
                    let e = distill_edge::infer::ort::OrtEngine::load(
                        std::path::Path::new(&model_path),
                        threads,
                    )
                    .unwrap();
                    row(
                        "onnxruntime",
                        &format!("{threads} thread(s), all optimisations"),
                        batch,
                        time(runs, || {
                            e.run(Batch { data: &data, shape }).unwrap();
                        }),
                    );
                }
            }
        }
    }
}
