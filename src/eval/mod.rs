//! Evaluation metrics over plain `f32` slices: classification (argmax, confusion matrix),
//! embedding retrieval (mAP with 11-point interpolated precision, precision@k) and latency
//! statistics. Nothing here depends on a tensor library, so the metrics can be computed from
//! any backend's output copied into a `Vec<f32>`; `model::evaluate` applies them to a
//! trained network.

pub mod classification;
pub mod latency;
pub mod paired;
pub mod retrieval;
