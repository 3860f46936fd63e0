//! Distillation losses on burn tensors: PKT, MSE, Hinton KD, cross-entropy.

use crate::config::distill::PktKernel;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Int, Tensor};

/// Guards divisions and logarithms, as in the PKT reference code.
const EPS: f32 = 1e-7;

/// Row-normalised kernel matrix `[b, b]` of `x` `[b, d]`.
fn kernel_probabilities(x: Tensor<2>, kernel: PktKernel) -> Tensor<2> {
    let sim = match kernel {
        PktKernel::Cosine => {
            let norm = x.clone().powf_scalar(2.0).sum_dim(1).sqrt().add_scalar(EPS);
            let xn = x.div(norm);
            xn.clone()
                .matmul(xn.transpose())
                .add_scalar(1.0)
                .div_scalar(2.0)
        }
        PktKernel::StudentT | PktKernel::Combined => {
            let sq = x.clone().powf_scalar(2.0).sum_dim(1); // [b, 1]
            let gram = x.clone().matmul(x.transpose()); // [b, b]
            let d2 = sq.clone() + sq.transpose() - gram.mul_scalar(2.0);
            // eps inside the root keeps the diagonal's gradient finite.
            let d = d2.clamp_min(0.0).add_scalar(EPS).sqrt();
            d.add_scalar(1.0).recip()
        }
    };
    let rows = sim.clone().sum_dim(1);
    sim.div(rows)
}

/// Jeffreys divergence between row-stochastic matrices, averaged over all entries:
/// mean((t - m) * ln((t + eps) / (m + eps))).
fn jeffreys(target: Tensor<2>, model: Tensor<2>) -> Tensor<1> {
    let ratio = target
        .clone()
        .add_scalar(EPS)
        .div(model.clone().add_scalar(EPS))
        .log();
    (target - model).mul(ratio).mean()
}

/// Probabilistic knowledge transfer: matches the student's pairwise-similarity distribution
/// over the batch to the teacher's. `student` `[b, d_s]`, `teacher` `[b, d_t]` (widths may
/// differ); the teacher is treated as a constant.
pub fn pkt(student: Tensor<2>, teacher: Tensor<2>, kernel: PktKernel) -> Tensor<1> {
    let teacher = teacher.detach();
    match kernel {
        PktKernel::Combined => {
            pkt(student.clone(), teacher.clone(), PktKernel::Cosine)
                + pkt(student, teacher, PktKernel::StudentT)
        }
        k => jeffreys(
            kernel_probabilities(teacher, k),
            kernel_probabilities(student, k),
        ),
    }
}

/// Mean squared error over every element.
pub fn mse<const D: usize>(student: Tensor<D>, target: Tensor<D>) -> Tensor<1> {
    (student - target.detach()).powf_scalar(2.0).mean()
}

/// Hinton knowledge distillation: T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the
/// batch.
pub fn kd(student_logits: Tensor<2>, teacher_logits: Tensor<2>, temperature: f32) -> Tensor<1> {
    let [b, _] = student_logits.dims();
    let t = temperature;
    let p_t = softmax(teacher_logits.detach().div_scalar(t), 1);
    let log_p_t = p_t.clone().add_scalar(EPS).log();
    let log_p_s = log_softmax(student_logits.div_scalar(t), 1);
    (p_t * (log_p_t - log_p_s))
        .sum()
        .mul_scalar(t * t / b as f32)
}

/// Mean cross-entropy of `logits` against integer `labels`.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let [b, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    logp.gather(1, labels.reshape([b, 1]))
        .sum()
        .neg()
        .div_scalar(b as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Module, Param};
    use burn::optim::{GradientsParams, SgdConfig};
    use burn::tensor::{Device, TensorData};

    fn t2(values: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
    }

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar()
    }

    #[test]
    fn mse_by_hand() {
        let d = crate::runtime::cpu();
        let v = scalar(mse(
            t2(&[1.0, 2.0, 3.0, 4.0], [2, 2], &d),
            t2(&[1.0, 0.0, 3.0, 6.0], [2, 2], &d),
        ));
        assert!((v - 2.0).abs() < 1e-6, "{v}"); // (0 + 4 + 0 + 4) / 4
    }

    #[test]
    fn kd_by_hand() {
        // T = 1, one row: teacher logits (0, ln 3) -> p = (1/4, 3/4); student (0, 0) -> q = (1/2, 1/2).
        // KL(p || q) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812.
        let d = crate::runtime::cpu();
        let v = scalar(kd(
            t2(&[0.0, 0.0], [1, 2], &d),
            t2(&[0.0, 3f32.ln()], [1, 2], &d),
            1.0,
        ));
        assert!((v - 0.130_812).abs() < 1e-4, "{v}");
        // T = 2 scales logits by 1/2 and the loss by 4: teacher (0, ln 3 / 2) -> p = (1/(1+√3), √3/(1+√3)).
        let p1 = 1.0 / (1.0 + 3f64.sqrt());
        let p2 = 1.0 - p1;
        let expect = 4.0 * (p1 * (p1 / 0.5).ln() + p2 * (p2 / 0.5).ln());
        let v = scalar(kd(
            t2(&[0.0, 0.0], [1, 2], &d),
            t2(&[0.0, 3f32.ln()], [1, 2], &d),
            2.0,
        ));
        assert!((v as f64 - expect).abs() < 1e-4, "{v} vs {expect}");
    }

    #[test]
    fn cross_entropy_by_hand() {
        let d = crate::runtime::cpu();
        let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), &d);
        let v = scalar(cross_entropy(t2(&[0.0, 0.0, 2.0, 0.0], [2, 2], &d), labels));
        // ln 2 and ln(1 + e^-2), averaged.
        let expect = (2f64.ln() + (1.0 + (-2f64).exp()).ln()) / 2.0;
        assert!((v as f64 - expect).abs() < 1e-5, "{v} vs {expect}");
    }

    /// PKT with the cosine kernel on a 2-sample batch, computed by hand.
    #[test]
    fn pkt_cosine_by_hand() {
        let d = crate::runtime::cpu();
        // Teacher rows orthogonal: cos = [[1,0],[0,1]] -> kernel [[1, .5], [.5, 1]] -> rows /1.5.
        // Student rows identical: kernel all 1 -> rows 1/2.
        // t = [[2/3, 1/3], [1/3, 2/3]], m = 1/2 everywhere.
        let t = [2.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 2.0 / 3.0];
        let expect: f64 = t
            .iter()
            .map(|&ti: &f64| (ti - 0.5) * ((ti + 1e-7) / (0.5 + 1e-7)).ln())
            .sum::<f64>()
            / 4.0;
        let v = scalar(pkt(
            t2(&[1.0, 1.0, 2.0, 2.0], [2, 2], &d),
            t2(&[1.0, 0.0, 0.0, 3.0], [2, 2], &d),
            PktKernel::Cosine,
        ));
        assert!((v as f64 - expect).abs() < 1e-5, "{v} vs {expect}");
    }

    /// PKT with the 1/(1+d) kernel, by hand: teacher rows at distance 1, student rows at 3.
    #[test]
    fn pkt_student_t_by_hand() {
        let d = crate::runtime::cpu();
        // Teacher kernel [[1, 1/2], [1/2, 1]] -> t = [[2/3, 1/3], ...]; student [[1, 1/4], ...]
        // -> m = [[4/5, 1/5], ...]. (eps in the root shifts this by ~1e-4 relative.)
        let (t1, t2v, m1, m2): (f64, f64, f64, f64) = (2.0 / 3.0, 1.0 / 3.0, 0.8, 0.2);
        let expect: f64 = 2.0 * ((t1 - m1) * (t1 / m1).ln() + (t2v - m2) * (t2v / m2).ln()) / 4.0;
        let v = scalar(pkt(
            t2(&[0.0, 0.0, 3.0, 0.0], [2, 2], &d),
            t2(&[0.0, 0.0, 0.0, 1.0], [2, 2], &d),
            PktKernel::StudentT,
        ));
        assert!((v as f64 - expect).abs() < 1e-3, "{v} vs {expect}");
        // Identical geometry gives zero loss, for every kernel.
        let same = t2(&[1.0, 2.0, -1.0, 0.5, 0.0, 3.0], [3, 2], &d);
        for k in [PktKernel::Cosine, PktKernel::StudentT, PktKernel::Combined] {
            let v = scalar(pkt(same.clone(), same.clone(), k));
            assert!(v.abs() < 1e-6, "{k:?}: {v}");
        }
    }

    #[derive(Module, Debug)]
    struct Toy {
        w: Param<Tensor<2>>,
    }

    /// Gradients flow through each loss: a few SGD steps on a free parameter reduce it.
    #[test]
    fn every_loss_decreases_under_gradient_descent() {
        let device = crate::runtime::cpu_autodiff();
        device.seed(5);
        let target = Tensor::<2>::random(
            [6, 4],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let labels =
            Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3, 0, 1], [6]), &device);
        type LossFn = Box<dyn Fn(Tensor<2>, Tensor<2>) -> Tensor<1>>;
        let l = labels.clone();
        let losses: Vec<(&str, LossFn)> = vec![
            ("pkt", Box::new(|s, t| pkt(s, t, PktKernel::Combined))),
            ("mse", Box::new(mse)),
            ("kd", Box::new(|s, t| kd(s, t, 4.0))),
            ("ce", Box::new(move |s, _| cross_entropy(s, l.clone()))),
        ];
        for (name, f) in losses {
            let mut toy = Toy {
                w: Param::from_tensor(Tensor::random(
                    [6, 4],
                    burn::tensor::Distribution::Normal(0.0, 1.0),
                    &device,
                )),
            };
            let mut opt = SgdConfig::new().init();
            let first: f32 = f(toy.w.val(), target.clone()).into_scalar();
            for _ in 0..50 {
                let loss = f(toy.w.val(), target.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &toy);
                toy = opt.step(0.5, toy, grads);
            }
            let last: f32 = f(toy.w.val(), target.clone()).into_scalar();
            assert!(
                last.is_finite() && last < first * 0.9,
                "{name}: {first} -> {last}"
            );
        }
    }
}
