//! Training throughput (images/s) of the reference networks on burn's flex CPU backend:
//! forward, cross-entropy, backward and an Adam step per batch, on random data.
//!
//! `cargo bench --bench train_throughput -- [--threads N] [--batch 128] [--steps 40]
//! [--models a,b] [--compare-batch-norm]`
//! prints one JSON object per (model, input) on stdout; scripts/bench-train.sh compares them
//! with the same networks in PyTorch (scripts/bench_train_torch.py). mobilenet96 (3x96x96)
//! runs a quarter of the steps (at least 5).
//!
//! `--compare-batch-norm` alternates steps with burn's own batch norm and with the fused
//! kernels (`model::batch_norm`) on the same network, and reports both (median step time):
//! a before/after measured side by side on a shared, noisy machine.

use std::time::Instant;

use burn::nn::loss::CrossEntropyLoss;
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use distill_edge::config::AdamSettings;
use distill_edge::data::ImageShape;
use distill_edge::model::{ConvNet, ModelSpec, batch_norm};
use distill_edge::train::epoch::adam;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs benches once in test mode (without `--bench`).
    if !args.iter().any(|a| a == "--bench") {
        println!("train_throughput: skipped (run it with cargo bench)");
        return;
    }
    let threads = arg(&args, "--threads", 0);
    let batch = arg(&args, "--batch", 128);
    let steps = arg(&args, "--steps", 40);
    let compare = args.iter().any(|a| a == "--compare-batch-norm");
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--models")
        .and_then(|i| args.get(i + 1))
        .map(|m| m.split(',').map(String::from).collect());
    distill_edge::runtime::init_threads((threads > 0).then_some(threads));
    let device = distill_edge::runtime::cpu_autodiff();
    device.seed(0);
    let small = [ImageShape::new(1, 28, 28), ImageShape::new(3, 32, 32)];
    let cases = [
        ("cnn32", &small[..]),
        ("cnn32-small", &small[..]),
        ("cnn32-large", &small[..]),
        ("mobilenet96", &[ImageShape::new(3, 96, 96)][..]),
    ];
    for (model, inputs) in cases {
        if only.as_ref().is_some_and(|o| !o.iter().any(|m| m == model)) {
            continue;
        }
        let steps = if model == "mobilenet96" {
            (steps / 4).max(5)
        } else {
            steps
        };
        for &input in inputs {
            let arch = ModelSpec::resolve(model, std::path::Path::new("."))
                .unwrap()
                .bind(input, 10)
                .unwrap();
            let mut net = ConvNet::new(&arch, &device);
            let mut optim = adam(&AdamSettings::default());
            let ce = CrossEntropyLoss::new(None, &device);
            let x = Tensor::<4>::random(
                [batch, input.channels, input.height, input.width],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let labels: Vec<i64> = (0..batch as i64).map(|i| i % 10).collect();
            let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), &device);
            let mut step = |burn_bn: bool| {
                let start = Instant::now();
                let run = || {
                    let loss = ce.forward(net.forward(x.clone()), y.clone());
                    let _: f32 = loss.clone().into_scalar();
                    GradientsParams::from_grads(loss.backward(), &net)
                };
                let grads = if burn_bn {
                    batch_norm::with_burn_batch_norm(run)
                } else {
                    run()
                };
                net = optim.step(1e-3, net.clone(), grads);
                start.elapsed().as_secs_f64()
            };
            for i in 0..5 {
                step(compare && i % 2 == 0);
            }
            if compare {
                let (mut burn_bn, mut fused) = (Vec::new(), Vec::new());
                for _ in 0..steps {
                    burn_bn.push(step(true));
                    fused.push(step(false));
                }
                let (b, f) = (median(burn_bn), median(fused));
                println!(
                    "{}",
                    serde_json::json!({
                        "framework": "burn-flex", "model": model, "input": input.to_string(),
                        "batch": batch, "threads": distill_edge::runtime::threads(),
                        "steps": steps, "burn_batch_norm_images_per_second": batch as f64 / b,
                        "fused_batch_norm_images_per_second": batch as f64 / f,
                        "speedup": b / f,
                    })
                );
                continue;
            }
            let start = Instant::now();
            for _ in 0..steps {
                step(false);
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({
                    "framework": "burn-flex",
                    "model": model,
                    "input": input.to_string(),
                    "batch": batch,
                    "threads": distill_edge::runtime::threads(),
                    "steps": steps,
                    "images_per_second": (steps * batch) as f64 / secs,
                })
            );
        }
    }
}
