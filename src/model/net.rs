//! The burn module built from an [`Architecture`].

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::batch_norm;
use super::spec::{Architecture, BlockKind, BlockSpec};

/// conv -> [BN] -> ReLU -> [max pool]; for a separable block the depthwise conv -> [BN] ->
/// ReLU comes first and `conv` is the pointwise 1x1 conv.
#[derive(Module, Debug)]
pub struct ConvBlock {
    /// The block's output convolution (with bias): the only conv of a `conv` block, the
    /// pointwise 1x1 conv of a separable block. InDistill prunes its output filters.
    pub conv: Conv2d,
    /// Optional batch normalisation after `conv`.
    pub bn: Option<BatchNorm>,
    /// Optional max pooling (kernel = stride).
    pub pool: Option<MaxPool2d>,
    /// Separable blocks: the depthwise conv (groups = input channels, with bias). `None` for
    /// conv blocks, so their records (checkpoints) are the same as before this field.
    pub depthwise: Option<Conv2d>,
    /// Separable blocks: batch normalisation after the depthwise conv.
    pub depthwise_bn: Option<BatchNorm>,
}

fn padding(p: usize) -> PaddingConfig2d {
    PaddingConfig2d::Explicit(p, p, p, p)
}

impl ConvBlock {
    /// Creates a block from its spec for `in_channels` inputs.
    pub fn new(spec: &BlockSpec, in_channels: usize, device: &Device) -> Self {
        let k = spec.kernel;
        let s = spec.stride.max(1);
        let (conv, depthwise) = match spec.kind {
            BlockKind::Conv => (
                Conv2dConfig::new([in_channels, spec.width], [k, k])
                    .with_padding(padding(spec.padding))
                    .with_stride([s, s])
                    .init(device),
                None,
            ),
            BlockKind::Separable => (
                Conv2dConfig::new([in_channels, spec.width], [1, 1]).init(device),
                Some(
                    Conv2dConfig::new([in_channels, in_channels], [k, k])
                        .with_padding(padding(spec.padding))
                        .with_stride([s, s])
                        .with_groups(in_channels)
                        .init(device),
                ),
            ),
        };
        let separable = spec.kind == BlockKind::Separable;
        Self {
            conv,
            bn: spec
                .batch_norm
                .then(|| BatchNormConfig::new(spec.width).init(device)),
            pool: (spec.pool > 1).then(|| MaxPool2dConfig::new([spec.pool, spec.pool]).init()),
            depthwise,
            depthwise_bn: (separable && spec.batch_norm)
                .then(|| BatchNormConfig::new(in_channels).init(device)),
        }
    }

    /// `[batch, in, h, w]` -> `[batch, width, h', w']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = match &self.depthwise {
            Some(dw) => {
                let x = dw.forward(x);
                relu(match &self.depthwise_bn {
                    Some(bn) => batch_norm::forward(bn, x),
                    None => x,
                })
            }
            None => x,
        };
        let x = self.conv.forward(x);
        let x = match &self.bn {
            Some(bn) => batch_norm::forward(bn, x),
            None => x,
        };
        let x = relu(x);
        match &self.pool {
            Some(pool) => pool.forward(x),
            None => x,
        }
    }
}

/// A conv-stack classifier with taps on every block and on the embedding.
#[derive(Module, Debug)]
pub struct ConvNet {
    /// Convolutional blocks, shallow to deep.
    pub blocks: Vec<ConvBlock>,
    /// Hidden fully connected layers (ReLU after each); the last one's output is the embedding.
    pub hidden: Vec<Linear>,
    /// Classifier: embedding -> logits.
    pub head: Linear,
    /// Global average pooling after the last block (`global-pool = true`); `None` keeps the
    /// records of earlier models unchanged.
    pub global_pool: Option<AdaptiveAvgPool2d>,
}

/// Every intermediate output of one forward pass.
#[derive(Debug, Clone)]
pub struct Features {
    /// Output of each block, `[batch, width_k, h_k, w_k]`.
    pub taps: Vec<Tensor<4>>,
    /// `[batch, embedding_dim]`.
    pub embedding: Tensor<2>,
    /// `[batch, classes]`.
    pub logits: Tensor<2>,
}

impl ConvNet {
    /// Initialises a network with fresh weights on `device` (seed the device first for
    /// reproducible weights).
    pub fn new(arch: &Architecture, device: &Device) -> Self {
        let mut cin = arch.input.channels;
        let blocks = arch
            .spec
            .blocks
            .iter()
            .map(|b| {
                let block = ConvBlock::new(b, cin, device);
                cin = b.width;
                block
            })
            .collect();
        let mut fin = arch.flat_features();
        let hidden = arch
            .spec
            .fc
            .iter()
            .map(|&f| {
                let layer = LinearConfig::new(fin, f).init(device);
                fin = f;
                layer
            })
            .collect();
        let head = LinearConfig::new(fin, arch.classes).init(device);
        Self {
            blocks,
            hidden,
            head,
            global_pool: arch
                .spec
                .global_pool
                .then(|| AdaptiveAvgPool2dConfig::new([1, 1]).init()),
        }
    }

    /// Moves a network fresh from [`ConvNet::new`] to `device` with its weights still drawn
    /// on the device it was created on, from that device's random generator, at the moment
    /// the run first uses each parameter: the same values, drawn in the same order, as if the
    /// network had stayed there. (burn's parameters are lazy, and a plain `to_device` would
    /// draw them on the target device from its own generator.) Parameters already drawn and
    /// the batch-norm running statistics are moved as `to_device` moves them.
    pub fn to_device_drawn_here(self, device: &Device) -> Self {
        struct DrawWhereCreated(Device);
        impl ModuleMapper for DrawWhereCreated {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                if param.is_initialized() {
                    return param;
                }
                let (id, shape) = (param.id, param.lazy_shape());
                // Every parameter of a ConvNet is trainable.
                Param::uninitialized(
                    id,
                    move |device: &Device, require_grad: bool| {
                        // Detached after the move too: a moved tracked tensor is no leaf.
                        let value = param.val().detach().to_device(device).detach();
                        if require_grad {
                            value.require_grad()
                        } else {
                            value
                        }
                    },
                    self.0.clone(),
                    true,
                    shape,
                )
            }
        }
        self.map(&mut DrawWhereCreated(device.clone()))
            .to_device(device)
    }

    /// `[batch, c, h, w]` -> logits `[batch, classes]`. This is the graph exported to ONNX.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.embed(x))
    }

    /// `[batch, c, h, w]` -> embedding `[batch, embedding_dim]`.
    pub fn embed(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.blocks.iter().fold(x, |x, b| b.forward(x));
        self.embed_from_last_tap(x)
    }

    /// Embedding from the last block's output `[batch, c, h, w]`.
    pub fn embed_from_last_tap(&self, x: Tensor<4>) -> Tensor<2> {
        let x = match &self.global_pool {
            Some(gap) => gap.forward(x),
            None => x,
        };
        let x: Tensor<2> = x.flatten(1, 3);
        self.hidden.iter().fold(x, |x, l| relu(l.forward(x)))
    }

    /// Logits and embedding in one pass.
    pub fn forward_with_embedding(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let embedding = self.embed(x);
        (self.head.forward(embedding.clone()), embedding)
    }

    /// Every tap, the embedding and the logits in one pass.
    pub fn forward_features(&self, x: Tensor<4>) -> Features {
        let mut taps = Vec::with_capacity(self.blocks.len());
        let mut x = x;
        for b in &self.blocks {
            x = b.forward(x);
            taps.push(x.clone());
        }
        let embedding = self.embed_from_last_tap(x);
        let logits = self.head.forward(embedding.clone());
        Features {
            taps,
            embedding,
            logits,
        }
    }

    /// Output of the first `n` blocks (`n` >= 1): the tap `block{n-1}`.
    pub fn forward_until(&self, x: Tensor<4>, n: usize) -> Tensor<4> {
        self.blocks[..n].iter().fold(x, |x, b| b.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageShape;
    use crate::model::spec::ModelSpec;
    use std::path::Path;

    #[test]
    fn taps_embedding_and_logits_have_the_architecture_shapes() {
        let device = Device::flex();
        for (preset, input) in [
            ("cnn32-small", ImageShape::new(1, 28, 28)),
            ("cnn32", ImageShape::new(3, 32, 32)),
            ("mobilenet96", ImageShape::new(3, 96, 96)),
        ] {
            let arch = ModelSpec::resolve(preset, Path::new("."))
                .unwrap()
                .bind(input, 10)
                .unwrap();
            let net = ConvNet::new(&arch, &device);
            let x = Tensor::<4>::zeros([2, input.channels, input.height, input.width], &device);
            let f = net.forward_features(x);
            for (tap, shape) in f.taps.iter().zip(&arch.block_shapes) {
                assert_eq!(tap.dims(), [2, shape.channels, shape.height, shape.width]);
            }
            assert_eq!(f.embedding.dims(), [2, arch.embedding_dim()]);
            assert_eq!(f.logits.dims(), [2, 10]);
            // burn also counts the BN running mean and variance (of both BNs of a separable
            // block).
            let mut running = 0;
            let mut cin = input.channels;
            for b in arch.spec.blocks.iter().filter(|b| b.batch_norm) {
                running += 2 * b.width;
                if b.kind == BlockKind::Separable {
                    running += 2 * cin;
                }
                cin = b.width;
            }
            assert_eq!(net.num_params(), arch.trainable_params() + running);
        }
    }
}
