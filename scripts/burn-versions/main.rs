//! Training throughput of one burn version (the manifest in `v0.22/` or `v0.23/` picks it) on
//! the networks of `benches/train_throughput.rs` written with burn's own modules only (its
//! own batch norm, not the project's fused one), so the same source measures any version:
//! conv 3x3 (valid) -> BN -> ReLU -> max pool 2, three times; fc; head; cross-entropy and an
//! Adam step on random data, batch 128. One JSON line per case on stdout.
//!
//!   burn-version-bench --label L [--threads N] [--steps N] [--models a,b] [--inputs 1x28x28,3x32x32]
//!
//! scripts/bench-burn-versions.sh builds both versions and alternates them case by case.

use std::time::Instant;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLoss;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};

#[derive(Module, Debug)]
struct Block {
    conv: Conv2d,
    bn: BatchNorm,
    pool: MaxPool2d,
}

#[derive(Module, Debug)]
struct Net {
    blocks: Vec<Block>,
    fc: Linear,
    head: Linear,
}

impl Net {
    fn new(widths: &[usize], fc: usize, channels: usize, side: usize, device: &Device) -> Self {
        let (mut cin, mut s) = (channels, side);
        let mut blocks = Vec::new();
        for &w in widths {
            blocks.push(Block {
                conv: Conv2dConfig::new([cin, w], [3, 3]).init(device),
                bn: BatchNormConfig::new(w).init(device),
                pool: MaxPool2dConfig::new([2, 2]).init(),
            });
            cin = w;
            s = (s - 2) / 2;
        }
        Net {
            blocks,
            fc: LinearConfig::new(cin * s * s, fc).init(device),
            head: LinearConfig::new(fc, 10).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.blocks.iter().fold(x, |x, b| {
            b.pool.forward(relu(b.bn.forward(b.conv.forward(x))))
        });
        self.head.forward(relu(self.fc.forward(x.flatten(1, 3))))
    }
}

/// Bad input: one line on stderr, exit status 1.
fn fail(message: &str) -> ! {
    eprintln!("burn-version-bench: {message}");
    std::process::exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |name: &str, default: usize| {
        value(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| fail(&format!("{name} {v}: expected a whole number")))
        })
    };
    let label = value("--label")
        .unwrap_or_else(|| fail("--label L (the burn version measured) is required"));
    let (threads, steps, batch) = (number("--threads", 2), number("--steps", 20), 128);
    let models = value("--models").unwrap_or_else(|| "cnn32,cnn32-small,cnn32-large".into());
    let inputs = value("--inputs").unwrap_or_else(|| "1x28x28,3x32x32".into());
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .unwrap();
    let device = Device::flex().autodiff();
    device.seed(0);
    for name in models.split(',') {
        let (widths, fc) = match name {
            "cnn32" => (vec![16, 32, 64], 128),
            "cnn32-small" => (vec![8, 16, 32], 64),
            "cnn32-large" => (vec![64, 128, 256], 512),
            other => fail(&format!(
                "--models: unknown model {other} (cnn32, cnn32-small, cnn32-large)"
            )),
        };
        for input in inputs.split(',') {
            let (c, side) = match input {
                "1x28x28" => (1, 28),
                "3x32x32" => (3, 32),
                other => fail(&format!(
                    "--inputs: unknown input {other} (1x28x28, 3x32x32)"
                )),
            };
            let mut net = Net::new(&widths, fc, c, side, &device);
            let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
            let ce = CrossEntropyLoss::new(None, &device);
            let x = Tensor::<4>::random(
                [batch, c, side, side],
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
            for _ in 0..3 {
                step();
            }
            let start = Instant::now();
            for _ in 0..steps {
                step();
            }
            let per_second = (steps * batch) as f64 / start.elapsed().as_secs_f64();
            println!(
                "{{\"framework\":\"{label}\",\"model\":\"{name}\",\"input\":\"{input}\",\"threads\":{threads},\"batch\":{batch},\"steps\":{steps},\"images_per_second\":{per_second:.1}}}"
            );
        }
    }
}
