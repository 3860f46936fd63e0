//! Turning dataset batches into tensors, and whole-split inference.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::Dataset;
use crate::data::prep::{Augment, Normalization, fill_batch};
use crate::model::ConvNet;

/// Images `[b, c, h, w]` (normalised, maybe augmented) and labels `[b]` on `device`.
pub fn batch_tensors(
    ds: &Dataset,
    indices: &[usize],
    norm: &Normalization,
    augment: Option<(&Augment, u64)>,
    buffer: &mut Vec<f32>,
    device: &Device,
) -> (Tensor<4>, Tensor<1, Int>) {
    fill_batch(ds, indices, norm, augment, buffer);
    let s = ds.shape;
    let x = Tensor::<4>::from_data(
        TensorData::new(
            buffer.clone(),
            [indices.len(), s.channels, s.height, s.width],
        ),
        device,
    );
    let labels: Vec<i64> = indices.iter().map(|&i| i64::from(ds.labels[i])).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [indices.len()]), device);
    (x, y)
}

/// Logits and embeddings of a whole split, row-major, computed in eval mode on `device`.
pub struct Predictions {
    /// `[n, classes]`.
    pub logits: Vec<f32>,
    /// `[n, embedding_dim]`.
    pub embeddings: Vec<f32>,
    /// Classes per row of `logits`.
    pub classes: usize,
    /// Width of each row of `embeddings`.
    pub dim: usize,
}

/// Runs `model` (expected in eval mode, e.g. `model.valid()`) over every image of `ds`.
pub fn predict(
    model: &ConvNet,
    ds: &Dataset,
    norm: &Normalization,
    batch_size: usize,
    device: &Device,
) -> Predictions {
    let mut logits = Vec::new();
    let mut embeddings = Vec::new();
    let mut buffer = Vec::new();
    let (mut classes, mut dim) = (0, 0);
    let all: Vec<usize> = (0..ds.len()).collect();
    for chunk in all.chunks(batch_size.max(1)) {
        let (x, _) = batch_tensors(ds, chunk, norm, None, &mut buffer, device);
        let (l, e) = model.forward_with_embedding(x);
        [_, classes] = l.dims();
        [_, dim] = e.dims();
        logits.extend(l.into_data().try_into_vec::<f32>().expect("f32 logits"));
        embeddings.extend(e.into_data().try_into_vec::<f32>().expect("f32 embeddings"));
    }
    Predictions {
        logits,
        embeddings,
        classes,
        dim,
    }
}

/// Mean cross-entropy and top-1 accuracy of `logits` against `labels` (computed in f64).
pub fn loss_and_accuracy(logits: &[f32], classes: usize, labels: &[u16]) -> (f64, f64) {
    if labels.is_empty() {
        return (0.0, 0.0);
    }
    let mut loss = 0.0f64;
    for (row, &label) in logits.chunks_exact(classes).zip(labels) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let lse = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        loss += lse - row[label as usize] as f64;
    }
    let correct = crate::eval::classification::argmax_rows(logits, classes)
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == **l as usize)
        .count();
    (
        loss / labels.len() as f64,
        correct as f64 / labels.len() as f64,
    )
}
