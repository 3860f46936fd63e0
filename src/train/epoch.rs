//! One pass over a training split, shared by supervised training and distillation: shuffling
//! from (seed, epoch), augmentation seeded per batch, progress, NaN/Inf detection.

use std::time::Instant;

use burn::optim::{AdamConfig, ModuleOptimizer, decay::WeightDecayConfig};
use burn::tensor::{Device, Int, Tensor};

use super::TrainError;
use crate::config::AdamSettings;
use crate::data::Dataset;
use crate::data::prep::{Augment, Normalization, batches, epoch_order};
use crate::model::infer::batch_tensors;
use crate::progress::Reporter;

/// What one optimisation step reports back.
pub struct StepOutcome {
    /// Value of the loss that was minimised.
    pub loss: f32,
    /// Correct top-1 predictions in the batch, when the step computed logits.
    pub correct: Option<usize>,
}

/// Totals of one epoch.
pub struct EpochTotals {
    /// Mean loss over batches (weighted by batch size).
    pub loss: f64,
    /// Training accuracy, when every step reported it.
    pub accuracy: Option<f64>,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Images seen.
    pub images: usize,
}

/// The fixed inputs of an epoch.
pub struct EpochPlan<'a> {
    /// Training split.
    pub data: &'a Dataset,
    /// Input normalisation.
    pub norm: &'a Normalization,
    /// Augmentation, if any.
    pub augment: Option<&'a Augment>,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Run seed.
    pub seed: u64,
    /// 1-based epoch number (selects the shuffle and augmentation streams).
    pub epoch: usize,
    /// Device the batches are created on.
    pub device: &'a Device,
}

/// Runs `step` on every mini-batch of the epoch. `step` gets the images, the labels and the
/// dataset indices of the batch; a non-finite loss stops the epoch with
/// [`TrainError::NonFinite`].
pub fn run_epoch(
    plan: &EpochPlan<'_>,
    label: &str,
    reporter: &mut Reporter,
    mut step: impl FnMut(Tensor<4>, Tensor<1, Int>, &[usize]) -> StepOutcome,
) -> Result<EpochTotals, TrainError> {
    let order = epoch_order(plan.data.len(), plan.seed, plan.epoch);
    let n_batches = order.len().div_ceil(plan.batch_size);
    reporter.start_bar(n_batches as u64, label);
    let start = Instant::now();
    let mut buffer = Vec::new();
    let (mut loss_sum, mut seen, mut correct) = (0.0f64, 0usize, Some(0usize));
    for (b, indices) in batches(&order, plan.batch_size, false).enumerate() {
        let aug_seed = batch_seed(plan.seed, plan.epoch, b);
        let augment = plan.augment.filter(|a| a.crop_padding > 0 || a.hflip);
        let (x, y) = batch_tensors(
            plan.data,
            indices,
            plan.norm,
            augment.map(|a| (a, aug_seed)),
            &mut buffer,
            plan.device,
        );
        let out = step(x, y, indices);
        if !out.loss.is_finite() {
            reporter.finish_bar();
            return Err(TrainError::NonFinite {
                epoch: plan.epoch,
                batch: b + 1,
                value: out.loss,
            });
        }
        loss_sum += out.loss as f64 * indices.len() as f64;
        seen += indices.len();
        correct = correct.zip(out.correct).map(|(a, c)| a + c);
        reporter.advance(1, || {
            let acc = correct.map_or(String::new(), |c| {
                format!(" acc {:.1}%", 100.0 * c as f64 / seen as f64)
            });
            format!("loss {:.4}{acc}", loss_sum / seen as f64)
        });
    }
    reporter.finish_bar();
    Ok(EpochTotals {
        loss: loss_sum / seen.max(1) as f64,
        accuracy: correct.map(|c| c as f64 / seen.max(1) as f64),
        seconds: start.elapsed().as_secs_f64(),
        images: seen,
    })
}

/// Seed of the augmentation stream of one batch: depends only on (seed, epoch, batch), so a
/// resumed run draws the same augmentations as an uninterrupted one.
pub fn batch_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    let mut z = seed ^ ((epoch as u64) << 32) ^ (batch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Adam with the configured hyper-parameters.
pub fn adam(settings: &AdamSettings) -> ModuleOptimizer {
    AdamConfig::new()
        .with_beta_1(settings.beta1)
        .with_beta_2(settings.beta2)
        .with_epsilon(settings.epsilon)
        .with_weight_decay(
            (settings.weight_decay > 0.0).then(|| WeightDecayConfig::new(settings.weight_decay)),
        )
        .init()
}

/// Number of rows of `logits` (`[b, classes]`) whose argmax equals the label.
pub fn count_correct(logits: Tensor<2>, labels: &[usize], data: &Dataset) -> usize {
    let [_, classes] = logits.dims();
    let values = logits
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32 logits");
    crate::eval::classification::argmax_rows(&values, classes)
        .iter()
        .zip(labels)
        .filter(|(best, i)| **best == data.labels[**i] as usize)
        .count()
}
