//! Where a training step's time goes, op by op, on burn's flex CPU backend with autodiff.
//!
//! `cargo bench --bench train_profile -- [--threads 2] [--batch 128] [--reps 7] [--models a,b]`
//!
//! For each preset (cnn32-small, cnn32, cnn32-large on 1x28x28 and 3x32x32, mobilenet96 on
//! 3x96x96) it walks the network layer by layer with the real shapes of a batch and times, each
//! through burn's public API (median of `--reps` runs):
//! - forward of every op (conv, batch norm, ReLU, pooling, linear, cross-entropy);
//! - its backward: `y.sum().backward()` after the op minus the same on a leaf of `y`'s shape;
//!   for convolutions and linear layers once with the input not requiring a gradient (weight
//!   and bias gradients only) and once requiring it (the difference is the input gradient);
//! - the phases of a whole step (data: a batch of u8 images normalised into a tensor; forward
//!   and loss; backward; Adam step).
//!
//! Prints one JSON object per op and per step on stdout, and a per-category summary on stderr.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::nn::BatchNorm;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::GradientsParams;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Int, Tensor};
use distill_edge::config::AdamSettings;
use distill_edge::data::prep::Normalization;
use distill_edge::data::{Dataset, ImageShape};
use distill_edge::model::infer::batch_tensors;
use distill_edge::model::{ConvNet, ModelSpec, batch_norm};
use distill_edge::train::epoch::adam;

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

struct Profiler {
    reps: usize,
    model: String,
    input: String,
    /// category -> (forward ms, backward ms)
    totals: BTreeMap<&'static str, (f64, f64)>,
}

impl Profiler {
    /// Median time of `y.sum().backward()` on a leaf of `dims`.
    fn sum_backward<const D: usize>(&self, dims: [usize; D], device: &Device) -> f64 {
        let y = Tensor::<D>::random(dims, Distribution::Normal(0.0, 1.0), device);
        median(
            (0..self.reps)
                .map(|_| {
                    let leaf = y.clone().detach().require_grad();
                    let start = Instant::now();
                    let _ = leaf.sum().backward();
                    ms(start)
                })
                .collect(),
        )
    }

    /// Forward and backward medians of `op` on `x`, the input requiring a gradient or not.
    fn time<const DI: usize, const DO: usize>(
        &self,
        x: &Tensor<DI>,
        input_grad: bool,
        op: &impl Fn(Tensor<DI>) -> Tensor<DO>,
    ) -> (f64, f64, [usize; DO]) {
        let fresh = || {
            let x = x.clone().detach();
            if input_grad { x.require_grad() } else { x }
        };
        let _ = op(fresh()).sum().backward(); // warm-up
        let mut fwd = Vec::new();
        let mut bwd = Vec::new();
        let mut dims = [0; DO];
        for _ in 0..self.reps {
            let xi = fresh();
            let start = Instant::now();
            let y = op(xi);
            fwd.push(ms(start));
            dims = y.dims();
            let start = Instant::now();
            let _ = y.sum().backward();
            bwd.push(ms(start));
        }
        let base = self.sum_backward(dims, &x.device());
        (median(fwd), (median(bwd) - base).max(0.0), dims)
    }

    fn record(&mut self, category: &'static str, layer: &str, fwd: f64, bwd: f64, out: &[usize]) {
        let t = self.totals.entry(category).or_default();
        t.0 += fwd;
        t.1 += bwd;
        println!(
            "{}",
            serde_json::json!({
                "kind": "op", "model": self.model, "input": self.input, "category": category,
                "layer": layer, "output": out, "forward_ms": fwd, "backward_ms": bwd,
            })
        );
    }

    /// Times `op` and records it under `category`; returns its output for the next layer.
    fn op<const DI: usize, const DO: usize>(
        &mut self,
        category: &'static str,
        layer: &str,
        x: Tensor<DI>,
        input_grad: bool,
        op: impl Fn(Tensor<DI>) -> Tensor<DO>,
    ) -> Tensor<DO> {
        let (fwd, bwd, dims) = self.time(&x, input_grad, &op);
        self.record(category, layer, fwd, bwd, &dims);
        op(x.detach())
    }

    /// Batch norm twice: burn's own (`batch-norm burn`) and the fused kernels
    /// (`batch-norm fused`, what training uses); only the fused one counts in the step.
    fn batch_norm(&mut self, layer: &str, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
        let (fwd, bwd, dims) = self.time(&x, true, &|t| {
            batch_norm::with_burn_batch_norm(|| bn.forward(t))
        });
        self.record("batch-norm burn (not in step)", layer, fwd, bwd, &dims);
        self.op("batch-norm fused", layer, x, true, |t| {
            batch_norm::forward(bn, t)
        })
    }

    /// A layer with parameters: the weight gradients and the input gradient apart.
    fn param_op<const DI: usize, const DO: usize>(
        &mut self,
        category: (&'static str, &'static str),
        layer: &str,
        x: Tensor<DI>,
        input_grad: bool,
        op: impl Fn(Tensor<DI>) -> Tensor<DO>,
    ) -> Tensor<DO> {
        let (fwd, weights_bwd, dims) = self.time(&x, false, &op);
        self.record(category.0, layer, fwd, weights_bwd, &dims);
        if input_grad {
            let (_, both, _) = self.time(&x, true, &op);
            self.record(category.1, layer, 0.0, (both - weights_bwd).max(0.0), &dims);
        }
        op(x.detach())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("train_profile: skipped (run it with cargo bench)");
        return;
    }
    let threads = arg(&args, "--threads").and_then(|v| v.parse().ok());
    let batch: usize = arg(&args, "--batch")
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let reps: usize = arg(&args, "--reps")
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let only: Option<Vec<&str>> = arg(&args, "--models").map(|m| m.split(',').collect());
    distill_edge::runtime::init_threads(threads);
    let device = distill_edge::runtime::cpu_autodiff();
    device.seed(0);
    let cases = [
        ("cnn32-small", ImageShape::new(1, 28, 28)),
        ("cnn32-small", ImageShape::new(3, 32, 32)),
        ("cnn32", ImageShape::new(1, 28, 28)),
        ("cnn32", ImageShape::new(3, 32, 32)),
        ("cnn32-large", ImageShape::new(1, 28, 28)),
        ("cnn32-large", ImageShape::new(3, 32, 32)),
        ("mobilenet96", ImageShape::new(3, 96, 96)),
    ];
    for (model, input) in cases {
        if only.as_ref().is_some_and(|o| !o.contains(&model)) {
            continue;
        }
        let arch = ModelSpec::resolve(model, std::path::Path::new("."))
            .unwrap()
            .bind(input, 10)
            .unwrap();
        let net = ConvNet::new(&arch, &device);
        let mut p = Profiler {
            reps,
            model: model.to_string(),
            input: input.to_string(),
            totals: BTreeMap::new(),
        };

        // Data: u8 images -> normalised f32 batch tensor and labels.
        let n = batch * 4;
        let mut pixel = 0u32;
        let ds = Dataset {
            name: "random".into(),
            shape: input,
            images: (0..n * input.len())
                .map(|_| {
                    pixel = pixel.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (pixel >> 16) as u8
                })
                .collect(),
            labels: (0..n).map(|i| (i % 10) as u16).collect(),
            classes: (0..10).map(|c| c.to_string()).collect(),
        };
        let norm = Normalization::from_dataset(&ds);
        let indices: Vec<usize> = (0..batch).map(|i| (i * 7) % n).collect();
        let mut buffer = Vec::new();
        let data_ms = median(
            (0..reps)
                .map(|_| {
                    let start = Instant::now();
                    let _ = batch_tensors(&ds, &indices, &norm, None, &mut buffer, &device);
                    ms(start)
                })
                .collect(),
        );
        p.record("data", "batch", data_ms, 0.0, &[batch]);
        let (x, y) = batch_tensors(&ds, &indices, &norm, None, &mut buffer, &device);

        // Layer by layer, in the order of ConvNet::forward.
        let mut h = x.clone();
        for (i, b) in net.blocks.iter().enumerate() {
            let grad_in = i > 0;
            if let Some(dw) = &b.depthwise {
                h = p.param_op(
                    ("conv-depthwise weights", "conv-depthwise input"),
                    &format!("blocks.{i}.depthwise"),
                    h,
                    grad_in,
                    |t| dw.forward(t),
                );
                if let Some(bn) = &b.depthwise_bn {
                    h = p.batch_norm(&format!("blocks.{i}.depthwise_bn"), bn, h);
                }
                h = p.op("relu", &format!("blocks.{i}.relu0"), h, true, relu);
            }
            let first = i == 0 && b.depthwise.is_none();
            h = p.param_op(
                ("conv weights", "conv input"),
                &format!("blocks.{i}.conv"),
                h,
                !first,
                |t| b.conv.forward(t),
            );
            if let Some(bn) = &b.bn {
                h = p.batch_norm(&format!("blocks.{i}.bn"), bn, h);
            }
            h = p.op("relu", &format!("blocks.{i}.relu"), h, true, relu);
            if let Some(pool) = &b.pool {
                h = p.op("pool", &format!("blocks.{i}.pool"), h, true, |t| {
                    pool.forward(t)
                });
            }
        }
        if let Some(gap) = &net.global_pool {
            h = p.op("pool", "global_pool", h, true, |t| gap.forward(t));
        }
        let mut f: Tensor<2> = p.op("reshape", "flatten", h, true, |t| t.flatten(1, 3));
        for (i, l) in net.hidden.iter().enumerate() {
            f = p.param_op(("linear", "linear"), &format!("hidden.{i}"), f, true, |t| {
                l.forward(t)
            });
            f = p.op("relu", &format!("hidden.{i}.relu"), f, true, relu);
        }
        let logits = p.param_op(("linear", "linear"), "head", f, true, |t| {
            net.head.forward(t)
        });
        let ce = CrossEntropyLoss::new(None, &device);
        let _: Tensor<1> = p.op("loss", "cross-entropy", logits, true, |t| {
            ce.forward(t, y.clone()).reshape([1])
        });

        // The whole step, by phase.
        let mut net = net;
        let mut optim = adam(&AdamSettings::default());
        let mut phases: [Vec<f64>; 5] = Default::default();
        for rep in 0..reps + 2 {
            let t0 = Instant::now();
            let (x, y): (Tensor<4>, Tensor<1, Int>) =
                batch_tensors(&ds, &indices, &norm, None, &mut buffer, &device);
            let t1 = Instant::now();
            let loss = ce.forward(net.forward(x), y);
            let _: f32 = loss.clone().into_scalar();
            let t2 = Instant::now();
            let grads = loss.backward();
            let t3 = Instant::now();
            let grads = GradientsParams::from_grads(grads, &net);
            net = optim.step(1e-3, net.clone(), grads);
            let t4 = Instant::now();
            if rep >= 2 {
                let d = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
                for (v, x) in
                    phases
                        .iter_mut()
                        .zip([d(t0, t1), d(t1, t2), d(t2, t3), d(t3, t4), d(t0, t4)])
                {
                    v.push(x);
                }
            }
        }
        let [data, forward, backward, optimizer, step] = phases.map(median);
        println!(
            "{}",
            serde_json::json!({
                "kind": "step", "model": model, "input": input.to_string(), "batch": batch,
                "threads": distill_edge::runtime::threads(), "data_ms": data,
                "forward_ms": forward, "backward_ms": backward, "optimizer_ms": optimizer,
                "step_ms": step,
            })
        );
        let ops: f64 = p
            .totals
            .iter()
            .filter(|(c, _)| !c.contains("not in step"))
            .map(|(_, (f, b))| f + b)
            .sum();
        eprintln!(
            "{model} {input}: step {step:.1} ms (data {data:.1}, forward {forward:.1}, \
             backward {backward:.1}, optimizer {optimizer:.1}); ops timed one by one {ops:.1} ms"
        );
        for (category, (f, b)) in &p.totals {
            eprintln!(
                "  {category:<24} fwd {f:>8.2} ms  bwd {b:>8.2} ms  {:>5.1} %",
                100.0 * (f + b) / step
            );
        }
    }
}
