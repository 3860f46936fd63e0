//! Batch-norm folding: `conv -> BN(eval)` becomes one conv with rescaled weights and a bias,
//! computed in f64 so the folded network matches the unfolded one to float rounding.

use burn::module::Param;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
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

/// Folds every block's batch norms (running statistics, eval mode) into their convolutions:
/// the output conv's and, in a separable block, the depthwise conv's (a depthwise weight is
/// `[channels, 1, k, k]`, one filter per output channel, so the same per-filter rule applies).
/// Blocks without batch norm are unchanged. The input should be an eval-mode network.
pub fn fold_batch_norm(net: ConvNet) -> ConvNet {
    let ConvNet {
        blocks,
        hidden,
        head,
        global_pool,
    } = net;
    let blocks = blocks.into_iter().map(fold_block).collect();
    ConvNet {
        blocks,
        hidden,
        head,
        global_pool,
    }
}

fn fold_block(block: ConvBlock) -> ConvBlock {
    let ConvBlock {
        conv,
        bn,
        pool,
        depthwise,
        depthwise_bn,
    } = block;
    let depthwise = depthwise.map(|dw| match &depthwise_bn {
        Some(bn) => fold_conv(dw, bn),
        None => dw,
    });
    let conv = match &bn {
        Some(bn) => fold_conv(conv, bn),
        None => conv,
    };
    ConvBlock {
        conv,
        bn: None,
        pool,
        depthwise,
        depthwise_bn: None,
    }
}

/// `conv -> bn` as one conv: per output channel o, `w' = w * s`, `b' = (b - mean) * s + beta`
/// with `s = gamma / sqrt(var + eps)`.
fn fold_conv(mut conv: Conv2d, bn: &BatchNorm) -> Conv2d {
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
    conv
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
        folded_matches("cnn32-small", ImageShape::new(1, 28, 28));
    }

    /// Strided, depthwise-separable blocks and global pooling fold the same way.
    #[test]
    fn folded_mobilenet_matches_the_unfolded_one() {
        folded_matches("mobilenet96", ImageShape::new(3, 40, 40));
    }

    fn folded_matches(preset: &str, input: ImageShape) {
        let device = crate::runtime::cpu_autodiff();
        device.seed(3);
        let arch = ModelSpec::resolve(preset, std::path::Path::new("."))
            .unwrap()
            .bind(input, 10)
            .unwrap();
        let [c, h, w] = [input.channels, input.height, input.width];
        let net = ConvNet::new(&arch, &device);
        // A few training-mode passes give the running statistics non-default values.
        for _ in 0..3 {
            let x = Tensor::<4>::random([16, c, h, w], Distribution::Normal(0.5, 2.0), &device);
            let _ = net.forward(x);
        }
        let eval = net.valid();
        let plain = crate::runtime::cpu();
        let x = Tensor::<4>::random([4, c, h, w], Distribution::Normal(0.0, 1.0), &plain);
        let a = eval
            .forward(x.clone())
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let folded = fold_batch_norm(eval);
        assert!(
            folded
                .blocks
                .iter()
                .all(|b| b.bn.is_none() && b.depthwise_bn.is_none())
        );
        let b = folded.forward(x).into_data().try_into_vec::<f32>().unwrap();
        for (u, v) in a.iter().zip(&b) {
            assert!(u.is_finite() && v.is_finite());
            assert!((u - v).abs() <= 1e-4 + 5e-4 * u.abs(), "{u} vs {v}");
        }
    }
}
