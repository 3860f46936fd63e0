//! L1-structured channel pruning for InDistill's layer alignment.
//!
//! Block k of the (auxiliary) teacher keeps the `student width` output filters of largest L1
//! norm. The pruned block k reads the *unpruned* teacher's block k-1 output, so its output
//! has exactly the student's block-k shape and is a direct MSE target. Unlike the public
//! reference code, the conv bias, BN scale/shift and BN running statistics of the kept
//! channels are carried over, and the pruned teacher runs in eval mode.
//!
//! **Taps of depthwise-separable blocks.** A separable block's tap is its output: the
//! pointwise 1x1 conv -> [BN] -> ReLU -> [pool]. Only the pointwise conv's output filters are
//! pruned (by their L1 norm, with their bias and BN channels); the depthwise stage is kept
//! whole, since it maps the unpruned block k-1 output channel by channel. A teacher block
//! aligns with a student block only when both are of the same kind with the same kernel,
//! padding, stride, pooling and batch norm; anything else is refused with the block named.

use burn::module::{Module, Param, RunningState};
use burn::tensor::{Int, Tensor, TensorData};

use crate::model::{Architecture, BlockKind, ConvBlock, ConvNet};

/// A teacher/student pair that cannot be aligned.
#[derive(Debug, thiserror::Error)]
#[error("cannot align teacher '{teacher}' with student '{student}': {message}")]
pub struct AlignError {
    /// Teacher architecture name.
    pub teacher: String,
    /// Student architecture name.
    pub student: String,
    /// What differs.
    pub message: String,
}

/// Checks that every student block has a teacher block with the same geometry (kernel,
/// padding, pooling, batch norm) and at least the student's width, on the same input.
pub fn check_alignment(teacher: &Architecture, student: &Architecture) -> Result<(), AlignError> {
    let err = |message: String| AlignError {
        teacher: teacher.spec.name.clone(),
        student: student.spec.name.clone(),
        message,
    };
    if teacher.input != student.input {
        return Err(err(format!(
            "inputs differ ({} vs {})",
            teacher.input, student.input
        )));
    }
    let (tb, sb) = (&teacher.spec.blocks, &student.spec.blocks);
    if tb.len() != sb.len() {
        return Err(err(format!(
            "{} conv blocks vs {}: InDistill needs the same depth (use an auxiliary teacher of the student's shape)",
            tb.len(),
            sb.len()
        )));
    }
    for (k, (t, s)) in tb.iter().zip(sb).enumerate() {
        if t.kind != s.kind {
            return Err(err(format!(
                "block {k}: the teacher's is a {} block, the student's a {} block (a tap aligns blocks of the same kind)",
                kind_name(t.kind),
                kind_name(s.kind)
            )));
        }
        if (t.kernel, t.padding, t.stride, t.pool, t.batch_norm)
            != (s.kernel, s.padding, s.stride, s.pool, s.batch_norm)
        {
            return Err(err(format!(
                "block {k}: kernel/padding/stride/pool/batch-norm differ ({}/{}/{}/{}/{} vs {}/{}/{}/{}/{})",
                t.kernel,
                t.padding,
                t.stride,
                t.pool,
                t.batch_norm,
                s.kernel,
                s.padding,
                s.stride,
                s.pool,
                s.batch_norm
            )));
        }
        if t.width < s.width {
            return Err(err(format!(
                "block {k}: teacher width {} is smaller than the student's {}",
                t.width, s.width
            )));
        }
    }
    Ok(())
}

fn kind_name(kind: BlockKind) -> &'static str {
    match kind {
        BlockKind::Conv => "conv",
        BlockKind::Separable => "separable",
    }
}

/// Indices (ascending) of the `keep` filters with the largest L1 norm; ties keep the lower
/// index. `weight` is `[out, per_filter]` row-major.
pub fn l1_keep(weight: &[f32], out_channels: usize, keep: usize) -> Vec<usize> {
    let per = weight.len() / out_channels.max(1);
    let norms: Vec<f64> = (0..out_channels)
        .map(|o| {
            weight[o * per..(o + 1) * per]
                .iter()
                .map(|w| f64::from(w.abs()))
                .sum()
        })
        .collect();
    let mut order: Vec<usize> = (0..out_channels).collect();
    order.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]).then(a.cmp(&b)));
    let mut kept: Vec<usize> = order.into_iter().take(keep).collect();
    kept.sort_unstable();
    kept
}

fn select<const D: usize>(t: Tensor<D>, keep: &[usize]) -> Tensor<D> {
    let device = t.device();
    let idx: Vec<i64> = keep.iter().map(|&i| i as i64).collect();
    t.select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(idx, [keep.len()]), &device),
    )
}

/// The block restricted to the output channels `keep` (weights, bias, BN scale, shift and
/// running statistics of those channels; input channels unchanged). A separable block's
/// depthwise stage is kept whole: only its pointwise conv (`conv`) is pruned.
pub fn prune_block(block: &ConvBlock, keep: &[usize]) -> ConvBlock {
    let mut b = block.clone();
    b.conv.weight = Param::from_tensor(select(block.conv.weight.val(), keep));
    b.conv.bias = block
        .conv
        .bias
        .as_ref()
        .map(|p| Param::from_tensor(select(p.val(), keep)));
    if let (Some(bn), Some(src)) = (b.bn.as_mut(), block.bn.as_ref()) {
        bn.gamma = Param::from_tensor(select(src.gamma.val(), keep));
        bn.beta = Param::from_tensor(select(src.beta.val(), keep));
        bn.running_mean = RunningState::new(select(src.running_mean.value(), keep));
        bn.running_var = RunningState::new(select(src.running_var.value(), keep));
    }
    b
}

/// The teacher (eval mode) and, for every block, its pruned copy.
#[derive(Debug, Clone)]
pub struct PrunedTeacher {
    /// The unpruned teacher, eval mode.
    pub teacher: ConvNet,
    /// Pruned block k: teacher block k restricted to the student's width.
    pub blocks: Vec<ConvBlock>,
    /// Kept filter indices of each block.
    pub kept: Vec<Vec<usize>>,
}

impl PrunedTeacher {
    /// Prunes `teacher` (any mode; an eval copy is taken) to the student's widths.
    pub fn new(
        teacher: &ConvNet,
        teacher_arch: &Architecture,
        student_arch: &Architecture,
    ) -> Result<Self, AlignError> {
        check_alignment(teacher_arch, student_arch)?;
        let teacher = teacher.valid();
        let mut blocks = Vec::new();
        let mut kept = Vec::new();
        for (block, s) in teacher.blocks.iter().zip(&student_arch.spec.blocks) {
            let w = block.conv.weight.val();
            let [out, ..] = w.dims();
            let values = w.into_data().try_into_vec::<f32>().expect("f32 weights");
            let keep = l1_keep(&values, out, s.width);
            blocks.push(prune_block(block, &keep));
            kept.push(keep);
        }
        Ok(Self {
            teacher,
            blocks,
            kept,
        })
    }

    /// Target of block `k` for input `x`: pruned block k applied to the unpruned teacher's
    /// block k-1 output (or to `x` for k = 0). Shape = the student's tap k.
    pub fn target(&self, x: Tensor<4>, k: usize) -> Tensor<4> {
        let inner = if k == 0 {
            x
        } else {
            self.teacher.forward_until(x, k)
        };
        self.blocks[k].forward(inner)
    }

    /// Every block's target at once, from the unpruned teacher's block outputs `taps` of the
    /// same `x` (e.g. [`ConvNet::forward_features`]): block k is fed `taps[k - 1]` (or `x`),
    /// which is what [`Self::target`] recomputes for one block.
    pub fn targets(&self, x: Tensor<4>, taps: &[Tensor<4>]) -> Vec<Tensor<4>> {
        self.blocks
            .iter()
            .enumerate()
            .map(|(k, b)| {
                b.forward(if k == 0 {
                    x.clone()
                } else {
                    taps[k - 1].clone()
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageShape;
    use crate::model::{BlockSpec, ModelSpec};
    use burn::tensor::Distribution;
    use proptest::prelude::*;

    fn arch(widths: &[usize], fc: usize, input: ImageShape) -> Architecture {
        ModelSpec {
            name: format!("w{widths:?}"),
            blocks: widths
                .iter()
                .map(|&w| BlockSpec {
                    width: w,
                    kind: BlockKind::Conv,
                    kernel: 3,
                    padding: 1,
                    stride: 1,
                    batch_norm: true,
                    pool: 2,
                })
                .collect(),
            fc: vec![fc],
            width_multiplier: Default::default(),
            global_pool: false,
        }
        .bind(input, 4)
        .unwrap()
    }

    /// Gives BN non-trivial scale, shift and running statistics.
    fn randomise_bn(net: ConvNet) -> ConvNet {
        let mut net = net;
        for b in &mut net.blocks {
            for bn in [b.bn.as_mut(), b.depthwise_bn.as_mut()]
                .into_iter()
                .flatten()
            {
                let [n] = bn.gamma.val().dims();
                let d = bn.gamma.val().device();
                let r =
                    |lo: f64, hi: f64| Tensor::<1>::random([n], Distribution::Uniform(lo, hi), &d);
                bn.gamma = Param::from_tensor(r(0.5, 1.5));
                bn.beta = Param::from_tensor(r(-0.5, 0.5));
                bn.running_mean = RunningState::new(r(-0.3, 0.3));
                bn.running_var = RunningState::new(r(0.5, 2.0));
            }
        }
        net
    }

    fn naive_keep(weight: &[f32], out: usize, keep: usize) -> Vec<usize> {
        let per = weight.len() / out;
        let mut best: Vec<(f64, usize)> = (0..out)
            .map(|o| {
                let mut s = 0.0;
                for i in 0..per {
                    s += weight[o * per + i].abs() as f64;
                }
                (s, o)
            })
            .collect();
        // Bubble sort: largest norm first, lower index first on ties.
        for i in 0..best.len() {
            for j in 0..best.len() - 1 - i {
                let (a, b) = (best[j], best[j + 1]);
                if b.0 > a.0 || (b.0 == a.0 && b.1 < a.1) {
                    best.swap(j, j + 1);
                }
            }
        }
        let mut k: Vec<usize> = best[..keep].iter().map(|p| p.1).collect();
        k.sort();
        k
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn l1_keep_matches_a_naive_implementation(
            out in 1usize..24,
            per in 1usize..30,
            keep_frac in 0.0f64..=1.0,
            seed in any::<u64>(),
            quantise in any::<bool>(),
        ) {
            let mut state = seed | 1;
            let mut next = || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
            // Quantised weights create ties between filters.
            let weight: Vec<f32> = (0..out * per)
                .map(|_| {
                    let v = (next() % 2001) as f32 / 1000.0 - 1.0;
                    if quantise { (v * 2.0).round() / 2.0 } else { v }
                })
                .collect();
            let keep = ((out as f64 * keep_frac).round() as usize).clamp(1, out);
            prop_assert_eq!(l1_keep(&weight, out, keep), naive_keep(&weight, out, keep));
        }
    }

    /// The pruned block's output equals the kept channels of the unpruned block's output.
    #[test]
    fn pruned_block_output_is_the_kept_channels_of_the_full_output() {
        for (seed, widths_t, widths_s, input) in [
            (1u64, [16, 32, 64], [8, 16, 32], ImageShape::new(1, 28, 28)),
            (2, [12, 20, 9], [5, 20, 1], ImageShape::new(3, 16, 12)),
        ] {
            let t_arch = arch(&widths_t, 32, input);
            let s_arch = arch(&widths_s, 16, input);
            pruned_taps_are_kept_channels(seed, &t_arch, &s_arch, 0.0);
        }
    }

    /// The same for strided, depthwise-separable blocks with global pooling: the pruned
    /// separable block keeps its whole depthwise stage and prunes the pointwise conv.
    #[test]
    fn pruned_separable_blocks_give_the_kept_channels() {
        let input = ImageShape::new(3, 32, 32);
        let resolve = |n| ModelSpec::resolve(n, std::path::Path::new(".")).unwrap();
        let t_arch = resolve("mobilenet96-large").bind(input, 4).unwrap();
        let s_arch = resolve("mobilenet96").bind(input, 4).unwrap();
        assert_eq!(t_arch.spec.blocks[1].width, 2 * s_arch.spec.blocks[1].width);
        // burn's strided convolution sums in an order that depends on the number of output
        // channels, so the pruned conv may differ from the full one by float rounding.
        pruned_taps_are_kept_channels(5, &t_arch, &s_arch, 1e-5);
    }

    fn pruned_taps_are_kept_channels(
        seed: u64,
        t_arch: &Architecture,
        s_arch: &Architecture,
        tolerance: f32,
    ) {
        let device = crate::runtime::cpu();
        let input = t_arch.input;
        let widths_t = &t_arch.spec.blocks;
        {
            device.seed(seed);
            let teacher = randomise_bn(ConvNet::new(t_arch, &device)).valid();
            let pruned = PrunedTeacher::new(&teacher, t_arch, s_arch).unwrap();
            let x = Tensor::<4>::random(
                [3, input.channels, input.height, input.width],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let full = teacher.forward_features(x.clone());
            // All targets from one teacher pass: the same values as one block at a time.
            let all = pruned.targets(x.clone(), &full.taps);
            assert_eq!(all.len(), widths_t.len());
            for (k, one_pass) in all.iter().enumerate() {
                let got = pruned.target(x.clone(), k);
                assert_eq!(
                    one_pass.clone().into_data().try_into_vec::<f32>().unwrap(),
                    got.clone().into_data().try_into_vec::<f32>().unwrap(),
                    "block {k}: targets() and target() differ"
                );
                let s = s_arch.block_shapes[k];
                assert_eq!(got.dims(), [3, s.channels, s.height, s.width]);
                let want =
                    select(full.taps[k].clone().swap_dims(0, 1), &pruned.kept[k]).swap_dims(0, 1);
                let a = got.into_data().try_into_vec::<f32>().unwrap();
                let b = want.into_data().try_into_vec::<f32>().unwrap();
                assert!(a.iter().all(|v| v.is_finite()));
                let max = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, f32::max);
                assert!(max <= tolerance, "block {k}: max |diff| {max}");
            }
        }
    }

    #[test]
    fn mismatched_pairs_are_refused_with_the_reason() {
        let input = ImageShape::new(1, 28, 28);
        let e = check_alignment(&arch(&[8, 16], 8, input), &arch(&[8, 16, 32], 8, input))
            .unwrap_err()
            .to_string();
        assert!(e.contains("same depth"), "{e}");
        let e = check_alignment(&arch(&[8, 8, 8], 8, input), &arch(&[8, 16, 8], 8, input))
            .unwrap_err()
            .to_string();
        assert!(e.contains("block 1") && e.contains("smaller"), "{e}");
        let input = ImageShape::new(3, 32, 32);
        let resolve = |n| ModelSpec::resolve(n, std::path::Path::new(".")).unwrap();
        let mobile = resolve("mobilenet96");
        let mut conv = mobile.clone();
        conv.blocks[2].kind = BlockKind::Conv;
        let e = check_alignment(
            &conv.bind(input, 4).unwrap(),
            &mobile.bind(input, 4).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("block 2: the teacher's is a conv block, the student's a separable block"),
            "{e}"
        );
        let mut strided = mobile.clone();
        strided.blocks[1].stride = 2;
        let e = check_alignment(
            &strided.bind(input, 4).unwrap(),
            &mobile.bind(input, 4).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("block 1: kernel/padding/stride"), "{e}");
    }
}
