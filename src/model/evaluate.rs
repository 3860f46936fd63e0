//! Evaluating a trained network on a dataset: accuracy, confusion matrix, retrieval.

use burn::module::Module;
use serde::Serialize;

use crate::data::Splits;
use crate::data::prep::Normalization;
use crate::eval::classification::{ConfusionMatrix, argmax_rows};
use crate::eval::retrieval::{RetrievalError, RetrievalMetrics, evaluate_both};
use crate::model::ConvNet;
use crate::model::infer::{loss_and_accuracy, predict};

/// What [`evaluate`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct ModelMetrics {
    /// Test images.
    pub test_images: usize,
    /// Top-1 on the test split (0..1).
    pub accuracy: f64,
    /// Mean cross-entropy on the test split.
    pub loss: f64,
    /// Rows = true class, columns = predicted class.
    pub confusion: ConfusionMatrix,
    /// Cosine and L2 retrieval (database = train split, queries = test split).
    pub retrieval: Option<[RetrievalMetrics; 2]>,
}

/// Evaluates `net` (eval mode) on `splits`, on the device its weights live on; retrieval over
/// the top `top_k` when asked.
pub fn evaluate(
    net: &ConvNet,
    splits: &Splits,
    norm: &Normalization,
    batch_size: usize,
    retrieval_top_k: Option<usize>,
) -> Result<ModelMetrics, RetrievalError> {
    let device = net
        .devices()
        .into_iter()
        .next()
        .unwrap_or_else(crate::runtime::cpu);
    let test = predict(net, &splits.test, norm, batch_size, &device);
    let (loss, accuracy) = loss_and_accuracy(&test.logits, test.classes, &splits.test.labels);
    let predictions = argmax_rows(&test.logits, test.classes);
    let confusion = ConfusionMatrix::new(&splits.test.labels, &predictions, test.classes);
    let retrieval = match retrieval_top_k {
        None => None,
        Some(k) => {
            let train = predict(net, &splits.train, norm, batch_size, &device);
            Some(evaluate_both(
                &train.embeddings,
                &splits.train.labels,
                &test.embeddings,
                &splits.test.labels,
                test.dim,
                k,
            )?)
        }
    };
    Ok(ModelMetrics {
        test_images: splits.test.len(),
        accuracy,
        loss,
        confusion,
        retrieval,
    })
}
