//! Batch normalisation in training mode with fused CPU kernels: 2 passes over the activations
//! forward and 2 backward, instead of the generic composition burn-flex 0.22 runs (about 10
//! passes forward and 14 backward, with transposed copies).
//!
//! It is a burn backend extension (`#[backend_extension]`): the `Flex` implementation works on
//! the f32 buffers directly; the `Autodiff` implementation records one node whose backward
//! calls the fused backward kernel. The module stays burn's [`BatchNorm`] (same record, same
//! running-statistics update), so checkpoints are unchanged; only its training-mode forward is
//! replaced by [`forward`]. Other dtypes and backends use burn's own path.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension,
};
use burn::nn::BatchNorm;
use burn::tensor::{DType, Device, Shape, Tensor, TensorData};
use rayon::prelude::*;
use std::cell::Cell;

/// Batch statistics and their gradient as backend operations.
#[backend_extension(Flex, Autodiff)]
pub trait BatchNormKernels: Backend {
    /// `x` `[n, c, ...]`, `gamma`/`beta` `[c]` -> (output, batch mean `[c]`, biased batch
    /// variance `[c]`).
    fn batch_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Gradients of [`batch_norm_fused`](Self::batch_norm_fused) w.r.t. (x, gamma, beta).
    fn batch_norm_fused_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

thread_local! {
    static BURN_PATH: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with burn's own batch norm instead of the fused kernels on this thread (the
/// thread that builds the graph): the reference arithmetic for tests and benchmarks.
pub fn with_burn_batch_norm<R>(f: impl FnOnce() -> R) -> R {
    let before = BURN_PATH.replace(true);
    let result = f();
    BURN_PATH.set(before);
    result
}

/// Training-mode forward of `bn` (batch statistics, running statistics updated as burn's
/// `BatchNorm::forward` does) through the fused kernels on the flex backend; any other case
/// (eval mode, no autodiff, another backend, inside [`with_burn_batch_norm`]) is
/// `bn.forward`.
pub fn forward<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !(device.is_autodiff() && bn.training.is_enabled()) || BURN_PATH.get() || !is_flex(&device) {
        return bn.forward(x);
    }
    let (output, mean, variance) = <Dispatch as BatchNormKernels>::batch_norm_fused(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
    );
    let mean = Tensor::<1>::from_dispatch(mean);
    let variance = Tensor::<1>::from_dispatch(variance);
    let m = bn.momentum;
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    bn.running_mean.update(
        running_mean
            .mul_scalar(1.0 - m)
            .add(mean.detach().mul_scalar(m))
            .detach(),
    );
    bn.running_var.update(
        running_var
            .mul_scalar(1.0 - m)
            .add(variance.detach().mul_scalar(m))
            .detach(),
    );
    Tensor::from_dispatch(output)
}

/// True for the flex CPU device with autodiff (the only one the kernels are written for).
fn is_flex(device: &Device) -> bool {
    *device == Device::flex().autodiff()
}

/// The f32 values of a flex tensor in row-major order (copied only when not contiguous).
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 tensor")
}

fn tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// (batch, channels, elements per channel and sample) of `[n, c, ...]`.
fn geometry(shape: &Shape) -> (usize, usize, usize) {
    let n = shape[0];
    let c = shape[1];
    (n, c, shape.num_elements() / (n * c).max(1))
}

/// Sum with 8 independent accumulators (vectorises), in f64 at the end.
fn sum(v: &[f32]) -> f64 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().map(|&a| a as f64).sum::<f64>() + rest as f64
}

/// Σ (v - mean)² and Σ g·(v - mean) style products: Σ a_i·(b_i - mean).
fn dot_centered(a: &[f32], b: &[f32], mean: f32) -> f64 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * (y - mean))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * (y[i] - mean);
        }
    }
    acc.iter().map(|&a| a as f64).sum::<f64>() + rest as f64
}

/// Per-channel sums of `f(block)` over the batch, channels in parallel.
fn per_channel(n: usize, c: usize, f: impl Fn(usize, usize) -> f64 + Sync) -> Vec<f64> {
    (0..c)
        .into_par_iter()
        .map(|ch| (0..n).map(|b| f(b, ch)).sum())
        .collect()
}

/// `out[b, ch, i] = f(ch, b*c*hw + ch*hw + i)` with samples in parallel.
fn map_blocks(
    n: usize,
    c: usize,
    hw: usize,
    f: impl Fn(usize, &mut [f32], usize) + Sync,
) -> Vec<f32> {
    let mut out = vec![0f32; n * c * hw];
    out.par_chunks_mut((c * hw).max(1))
        .enumerate()
        .for_each(|(b, sample)| {
            for (ch, block) in sample.chunks_mut(hw.max(1)).enumerate() {
                f(ch, block, (b * c + ch) * hw);
            }
        });
    out
}

impl BatchNormKernels for Flex {
    fn batch_norm_fused(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        if x.dtype() != DType::F32 || x.shape().num_dims() < 2 {
            let r = <Flex as ModuleOps<Flex>>::batch_norm_train(x, gamma, beta, epsilon);
            return (r.output, r.mean, r.variance);
        }
        let shape = x.shape();
        let (n, c, hw) = geometry(&shape);
        let m = (n * hw) as f64;
        let x = contiguous(x);
        let (gamma, beta) = (contiguous(gamma), contiguous(beta));
        let xs = values(&x);
        let block = |b: usize, ch: usize| &xs[(b * c + ch) * hw..(b * c + ch + 1) * hw];
        let mean: Vec<f32> = per_channel(n, c, |b, ch| sum(block(b, ch)))
            .into_iter()
            .map(|s| (s / m) as f32)
            .collect();
        let variance: Vec<f32> = per_channel(n, c, |b, ch| {
            let v = block(b, ch);
            dot_centered(v, v, mean[ch])
        })
        .into_iter()
        .map(|s| (s / m) as f32)
        .collect();
        let (g, bt) = (values(&gamma), values(&beta));
        let scale: Vec<f32> = (0..c)
            .map(|ch| g[ch] / (variance[ch] as f64 + epsilon).sqrt() as f32)
            .collect();
        let out = map_blocks(n, c, hw, |ch, out, start| {
            let (mu, s, b) = (mean[ch], scale[ch], bt[ch]);
            for (o, &v) in out.iter_mut().zip(&xs[start..start + hw]) {
                *o = (v - mu) * s + b;
            }
        });
        (
            tensor(out, shape),
            tensor(mean, Shape::new([c])),
            tensor(variance, Shape::new([c])),
        )
    }

    fn batch_norm_fused_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        mean: FlexTensor,
        variance: FlexTensor,
        epsilon: f64,
        output_grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        if x.dtype() != DType::F32 || x.shape().num_dims() < 2 {
            let r = <Flex as ModuleOps<Flex>>::batch_norm_train_backward(
                x,
                gamma,
                mean,
                variance,
                epsilon,
                output_grad,
            );
            return (r.x_grad, r.gamma_grad, r.beta_grad);
        }
        let shape = x.shape();
        let (n, c, hw) = geometry(&shape);
        let m = (n * hw) as f64;
        let (x, grad) = (contiguous(x), contiguous(output_grad));
        let (gamma, mean, variance) = (contiguous(gamma), contiguous(mean), contiguous(variance));
        let (xs, gs) = (values(&x), values(&grad));
        let (g, mu, var) = (values(&gamma), values(&mean), values(&variance));
        let range = |b: usize, ch: usize| (b * c + ch) * hw..(b * c + ch + 1) * hw;
        let beta_grad = per_channel(n, c, |b, ch| sum(&gs[range(b, ch)]));
        let dot = per_channel(n, c, |b, ch| {
            let r = range(b, ch);
            dot_centered(&gs[r.clone()], &xs[r], mu[ch])
        });
        let inv_std: Vec<f64> = var
            .iter()
            .map(|&v| 1.0 / (v as f64 + epsilon).sqrt())
            .collect();
        let gamma_grad: Vec<f32> = (0..c).map(|ch| (dot[ch] * inv_std[ch]) as f32).collect();
        // dx = gamma·inv_std · (g - Σg/m - (x - mean)·inv_std·gamma_grad/m)
        let coef: Vec<(f32, f32, f32)> = (0..c)
            .map(|ch| {
                let k = g[ch] as f64 * inv_std[ch];
                let q = inv_std[ch] * inv_std[ch] * dot[ch] / m;
                (k as f32, (beta_grad[ch] / m) as f32, q as f32)
            })
            .collect();
        let x_grad = map_blocks(n, c, hw, |ch, out, start| {
            let (k, mg, q) = coef[ch];
            let mu = mu[ch];
            let xb = &xs[start..start + hw];
            let gb = &gs[start..start + hw];
            for ((o, &xv), &gv) in out.iter_mut().zip(xb).zip(gb) {
                *o = k * (gv - mg - (xv - mu) * q);
            }
        });
        (
            tensor(x_grad, shape),
            tensor(gamma_grad, Shape::new([c])),
            tensor(
                beta_grad.into_iter().map(|s| s as f32).collect(),
                Shape::new([c]),
            ),
        )
    }
}

/// The autodiff node of the fused batch norm: its backward is the fused backward kernel.
#[derive(Debug)]
struct FusedBatchNormBackward;

impl<B: Backend + BatchNormKernels> Backward<B, 3> for FusedBatchNormBackward {
    /// Checkpointed input and gamma, the batch statistics, epsilon.
    type State = (NodeId, NodeId, FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, gamma_id, mean, variance, epsilon) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_id);
        let gamma = checkpointer.retrieve_node_output::<FloatTensor<B>>(gamma_id);
        let (x_grad, gamma_grad, beta_grad) =
            B::batch_norm_fused_backward(x, gamma, mean, variance, epsilon, grad);
        for (node, value) in [
            (node_x, x_grad),
            (node_gamma, gamma_grad),
            (node_beta, beta_grad),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, value);
            }
        }
    }
}

impl<B: Backend + BatchNormKernels, C: CheckpointStrategy> BatchNormKernels for Autodiff<B, C> {
    fn batch_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let prep = FusedBatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        match prep {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let gamma_id = prep.checkpoint(&gamma);
                let (out, mean, variance) = B::batch_norm_fused(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                let state = (x_id, gamma_id, mean.clone(), variance.clone(), epsilon);
                (
                    prep.finish(state, out),
                    Self::from_inner(mean),
                    Self::from_inner(variance),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (out, mean, variance) = B::batch_norm_fused(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                (
                    prep.finish(out),
                    Self::from_inner(mean),
                    Self::from_inner(variance),
                )
            }
        }
    }

    fn batch_norm_fused_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // Not differentiated again: computed on the inner backend, untracked.
        let (a, b, c) = B::batch_norm_fused_backward(
            x.into_primitive(),
            gamma.into_primitive(),
            mean.into_primitive(),
            variance.into_primitive(),
            epsilon,
            output_grad.into_primitive(),
        );
        (
            Self::from_inner(a),
            Self::from_inner(b),
            Self::from_inner(c),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageShape;
    use crate::model::{ConvNet, ModelSpec, flatten_params};
    use burn::module::Module;
    use burn::nn::BatchNormConfig;
    use burn::optim::GradientsParams;
    use burn::tensor::Int;

    fn vec1(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(x.is_finite() && y.is_finite(), "{what}[{i}]: {x} vs {y}");
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}[{i}]: fused {x} vs burn {y}"
            );
        }
    }

    /// Output, running statistics and the gradients of x, gamma and beta of one training
    /// forward + backward, through `forward` (fused unless `burn`).
    fn run(burn: bool, shape: [usize; 4]) -> Vec<Vec<f32>> {
        // Drawn from a local generator: burn's is one per process, so a test running in
        // parallel could draw between this one's seed and its draws (the two runs then see
        // different inputs).
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut draw = |dims: Vec<usize>, lo: f32, hi: f32| {
            let n = dims.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
            TensorData::new(v, dims)
        };
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::from_data(draw(shape.to_vec(), -1.0, 7.0), &device);
        let weights = Tensor::<4>::from_data(draw(shape.to_vec(), -1.0, 1.0), &device);
        let mut bn = BatchNormConfig::new(shape[1]).init(&device);
        let gamma = draw(vec![shape[1]], 0.5, 1.5);
        bn.gamma = bn
            .gamma
            .map(|g| Tensor::<1>::from_data(gamma, &g.device()).require_grad());
        let x = x.require_grad();
        let y = if burn {
            with_burn_batch_norm(|| forward(&bn, x.clone()))
        } else {
            forward(&bn, x.clone())
        };
        let grads = (y.clone() * weights).sum().backward();
        let flat = |t: Tensor<4>| t.into_data().try_into_vec::<f32>().unwrap();
        vec![
            flat(y),
            vec1(bn.running_mean.value_sync()),
            vec1(bn.running_var.value_sync()),
            flat(x.grad(&grads).unwrap()),
            vec1(bn.gamma.val().grad(&grads).unwrap()),
            vec1(bn.beta.val().grad(&grads).unwrap()),
        ]
    }

    #[test]
    fn fused_batch_norm_matches_burns_values_and_gradients() {
        for shape in [[4, 3, 5, 5], [9, 8, 1, 1], [2, 16, 7, 9]] {
            let fused = run(false, shape);
            let burn = run(true, shape);
            let names = [
                "output",
                "running mean",
                "running var",
                "x grad",
                "gamma grad",
                "beta grad",
            ];
            for ((f, b), name) in fused.iter().zip(&burn).zip(names) {
                close(f, b, 2e-5, &format!("{shape:?} {name}"));
            }
        }
    }

    #[test]
    fn fused_batch_norm_matches_hand_computed_values() {
        // One channel, values 1, 3, 5, 7: mean 4, biased variance 5.
        let device = Device::flex().autodiff();
        let bn = BatchNormConfig::new(1).with_epsilon(1e-5).init(&device);
        let x = Tensor::<4>::from_floats([[[[1.0, 3.0]]], [[[5.0, 7.0]]]], &device).require_grad();
        let y = forward(&bn, x.clone());
        let s = (5.0f64 + 1e-5).sqrt();
        let expected: Vec<f32> = [-3.0, -1.0, 1.0, 3.0]
            .iter()
            .map(|v| (v / s) as f32)
            .collect();
        close(
            &y.clone().into_data().try_into_vec::<f32>().unwrap(),
            &expected,
            1e-6,
            "y",
        );
        close(
            &vec1(bn.running_mean.value_sync()),
            &[0.4],
            1e-6,
            "running mean",
        );
        close(
            &vec1(bn.running_var.value_sync()),
            &[0.9 + 0.1 * 5.0],
            1e-6,
            "running var",
        );
        // d/dx of sum(y * [1, 0, 0, 0]): (1/s)(e0 - 1/4 - xhat * xhat0 / 4).
        let w = Tensor::<4>::from_floats([[[[1.0, 0.0]]], [[[0.0, 0.0]]]], &device);
        let grads = (y * w).sum().backward();
        let xhat: Vec<f64> = [-3.0, -1.0, 1.0, 3.0].iter().map(|v| v / s).collect();
        let dx: Vec<f32> = (0..4)
            .map(|i| {
                let e = if i == 0 { 1.0 } else { 0.0 };
                ((e - 0.25 - xhat[i] * xhat[0] / 4.0) / s) as f32
            })
            .collect();
        let got = x
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        close(&got, &dx, 1e-5, "x grad");
        close(
            &vec1(bn.gamma.val().grad(&grads).unwrap()),
            &[xhat[0] as f32],
            1e-6,
            "gamma grad",
        );
        close(
            &vec1(bn.beta.val().grad(&grads).unwrap()),
            &[1.0],
            1e-6,
            "beta grad",
        );
    }

    /// Every batch norm's running mean and variance, block by block.
    fn running_statistics(net: &ConvNet) -> Vec<f32> {
        net.blocks
            .iter()
            .flat_map(|b| [&b.depthwise_bn, &b.bn])
            .flatten()
            .flat_map(|bn| {
                let mut v = vec1(bn.running_mean.value_sync());
                v.extend(vec1(bn.running_var.value_sync()));
                v
            })
            .collect()
    }

    /// A few SGD steps of whole networks: each step, taken from the same weights once with the
    /// fused kernels and once with burn's arithmetic, gives the same loss, the same weights
    /// and the same running statistics after it, within float tolerance.
    ///
    /// The initial weights come from a local seeded generator and each step starts from shared
    /// weights. With burn's random initialisation and two trajectories side by side this test
    /// failed about one run in six (20 of 120 runs, 2026-12-04). Measured per step instead,
    /// most steps' updates agreed to about 3e-6 of their norm, but 7 of 240 mobilenet96 steps
    /// (32x32, batch 8) differed by more than 1e-5 of it, up to 0.7 % (1.8 % in a later run),
    /// the difference starting at a single batch norm with every layer above it in agreement:
    /// most likely an output within rounding of zero, rounded to either side of the ReLU that
    /// follows, so that its gradient passes in one run and not in the other. A fixed
    /// initialisation without such a tie is checked to 1e-5; it passed 150 of 150 runs with
    /// 1, 2 and 8 rayon threads. mobilenet96 takes 32x32 inputs here (its global pooling takes
    /// any size), which keeps the test at a fraction of a second.
    #[test]
    fn training_steps_with_fused_batch_norm_match_burns_arithmetic() {
        use burn::module::{ModuleMapper, Param};
        use rand::{Rng, SeedableRng};
        /// Replaces every parameter that is not constant (batch norm's initial gamma, beta
        /// and running statistics are) with values drawn uniformly in ±1/√(elements per row)
        /// (±0.1 for a bias): burn's own draws come from one generator per process, which
        /// tests running in parallel share.
        struct Seeded(rand::rngs::StdRng);
        impl ModuleMapper for Seeded {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let values = param.val().into_data().try_into_vec::<f32>().unwrap();
                if values.iter().all(|&v| v == values[0]) {
                    return param;
                }
                let rng = &mut self.0;
                param.map(|t| {
                    let dims = t.dims();
                    let bound = match D {
                        1 => 0.1,
                        _ => 1.0 / ((values.len() / dims[0]) as f32).sqrt(),
                    };
                    let drawn = values
                        .iter()
                        .map(|_| rng.random_range(-bound..bound))
                        .collect();
                    Tensor::from_data(TensorData::new(drawn, dims), &t.device()).require_grad()
                })
            }
        }
        for (preset, input, batch) in [
            ("cnn32-small", ImageShape::new(1, 28, 28), 16),
            ("mobilenet96", ImageShape::new(3, 32, 32), 8),
        ] {
            let arch = ModelSpec::resolve(preset, std::path::Path::new("."))
                .unwrap()
                .bind(input, 10)
                .unwrap();
            let device = Device::flex().autodiff();
            let len = batch * input.len();
            let pixels: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
                .collect();
            let x = Tensor::<4>::from_data(
                TensorData::new(pixels, [batch, input.channels, input.height, input.width]),
                &device,
            );
            let labels: Vec<i64> = (0..batch as i64).map(|i| i % 10).collect();
            let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), &device);
            let ce = burn::nn::loss::CrossEntropyLoss::new(None, &device);
            // Plain SGD keeps the update a linear image of the gradient (Adam's g/√v would turn
            // rounding noise in a near-zero gradient into a full ±lr step).
            let mut optim = burn::optim::SgdConfig::new().init();
            // One step from `weights` on a fresh network (a clone would share the running
            // statistics): the loss and the network after the step.
            let mut step = |weights: &_, burn: bool| {
                let net = ConvNet::new(&arch, &device).load_record(Clone::clone(weights));
                let forward_backward = || {
                    let loss = ce.forward(net.forward(x.clone()), y.clone());
                    let value = loss.clone().into_scalar::<f32>();
                    (value, GradientsParams::from_grads(loss.backward(), &net))
                };
                let (loss, grads) = if burn {
                    with_burn_batch_norm(forward_backward)
                } else {
                    forward_backward()
                };
                (loss, optim.step(0.05, net.clone(), grads))
            };
            let seeded = rand::rngs::StdRng::seed_from_u64(11);
            let mut weights = ConvNet::new(&arch, &device)
                .map(&mut Seeded(seeded))
                .into_record();
            for i in 0..4 {
                let (fused_loss, fused) = step(&weights, false);
                let (burn_loss, reference) = step(&weights, true);
                let what = format!("{preset} step {i}");
                close(&[fused_loss], &[burn_loss], 1e-5, &format!("{what} loss"));
                close(
                    &flatten_params(&fused),
                    &flatten_params(&reference),
                    1e-5,
                    &format!("{what} parameters"),
                );
                close(
                    &running_statistics(&fused),
                    &running_statistics(&reference),
                    1e-5,
                    &format!("{what} running statistics"),
                );
                weights = reference.into_record();
            }
        }
    }
}
