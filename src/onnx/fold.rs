//! Batch-norm folding: `conv -> BN(eval)` becomes one conv with rescaled weights and a bias,
//! computed in f64 so the folded network matches the unfolded one to float rounding.

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};

use crate::model::{ConvBlock, ConvNet};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .try_into_vec::<f32>()
        .expect("f32 tensor")
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Folds every block's batch norm (running statistics, eval mode) into its convolution.
/// Blocks without batch norm are unchanged. The input should be an eval-mode network.
pub fn fold_batch_norm(net: ConvNet) -> ConvNet {
    let ConvNet {
        blocks,
        hidden,
        head,
    } = net;
    let blocks = blocks.into_iter().map(fold_block).collect();
    ConvNet {
        blocks,
        hidden,
        head,
    }
}

fn fold_block(block: ConvBlock) -> ConvBlock {
    let ConvBlock { mut conv, bn, pool } = block;
    let Some(bn) = bn else {
        return ConvBlock {
            conv,
            bn: None,
            pool,
        };
    };
    let device = conv.weight.val().device();
    let dims = conv.weight.val().dims();
    let out_channels = dims[0];
    let per_filter = dims[1] * dims[2] * dims[3];
    let weight = values(conv.weight.val());
    let bias = match &conv.bias {
        Some(b) => values(b.val()),
        None => vec![0.0; out_channels],
    };
    let gamma = values(bn.gamma.val());
    let beta = values(bn.beta.val());
    let mean = values(bn.running_mean.value());
    let var = values(bn.running_var.value());
    let mut new_weight = Vec::with_capacity(weight.len());
    let mut new_bias = Vec::with_capacity(out_channels);
    for o in 0..out_channels {
        let scale = gamma[o] / (var[o] + bn.epsilon).sqrt();
        new_weight.extend(
            weight[o * per_filter..(o + 1) * per_filter]
                .iter()
                .map(|w| (w * scale) as f32),
        );
        new_bias.push(((bias[o] - mean[o]) * scale + beta[o]) as f32);
    }
    conv.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(new_weight, dims),
        &device,
    ));
    conv.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(new_bias, [out_channels]),
        &device,
    )));
    ConvBlock {
        conv,
        bn: None,
        pool,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageShape;
    use crate::model::ModelSpec;
    use burn::module::Module;
    use burn::tensor::Distribution;

    /// Folding must not change the eval-mode function, with non-trivial BN statistics.
    #[test]
    fn folded_network_matches_the_unfolded_one() {
        let device = crate::runtime::cpu_autodiff();
        device.seed(3);
        let arch = ModelSpec::resolve("cnn32-small", std::path::Path::new("."))
            .unwrap()
            .bind(ImageShape::new(1, 28, 28), 10)
            .unwrap();
        let net = ConvNet::new(&arch, &device);
        // A few training-mode passes give the running statistics non-default values.
        for _ in 0..3 {
            let x = Tensor::<4>::random([16, 1, 28, 28], Distribution::Normal(0.5, 2.0), &device);
            let _ = net.forward(x);
        }
        let eval = net.valid();
        let plain = crate::runtime::cpu();
        let x = Tensor::<4>::random([4, 1, 28, 28], Distribution::Normal(0.0, 1.0), &plain);
        let a = eval
            .forward(x.clone())
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let folded = fold_batch_norm(eval);
        assert!(folded.blocks.iter().all(|b| b.bn.is_none()));
        let b = folded.forward(x).into_data().try_into_vec::<f32>().unwrap();
        for (u, v) in a.iter().zip(&b) {
            assert!(u.is_finite() && v.is_finite());
            assert!((u - v).abs() <= 1e-4 + 5e-4 * u.abs(), "{u} vs {v}");
        }
    }
}
