//! Training throughput (images/s) of the reference networks on burn's flex CPU backend:
//! forward, cross-entropy, backward and an Adam step per batch, on random data.
//!
//! `cargo bench --bench train_throughput -- [--threads N] [--batch 128] [--steps 40]`
//! prints one JSON object per (model, input) on stdout; scripts/bench-train.sh compares them
//! with the same networks in PyTorch (scripts/bench_train_torch.py).

use std::time::Instant;

use burn::nn::loss::CrossEntropyLoss;
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use distill_edge::config::AdamSettings;
use distill_edge::data::ImageShape;
use distill_edge::model::{ConvNet, ModelSpec};
use distill_edge::train::epoch::adam;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
    distill_edge::runtime::init_threads((threads > 0).then_some(threads));
    let device = distill_edge::runtime::cpu_autodiff();
    device.seed(0);
    for model in ["cnn32", "cnn32-small"] {
        for input in [ImageShape::new(1, 28, 28), ImageShape::new(3, 32, 32)] {
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
            let mut step = || {
                let loss = ce.forward(net.forward(x.clone()), y.clone());
                let _: f32 = loss.clone().into_scalar();
                let grads = GradientsParams::from_grads(loss.backward(), &net);
                net = optim.step(1e-3, net.clone(), grads);
            };
            for _ in 0..5 {
                step();
            }
            let start = Instant::now();
            for _ in 0..steps {
                step();
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
