//! Inference engines behind one trait: tract (pure Rust, the on-device engine) and, with the
//! `ort` cargo feature, ONNX Runtime.

pub mod parity;
pub mod tract;

#[cfg(feature = "ort")]
pub mod ort;

/// A batch of images, `[batch, channels, height, width]`, row-major f32 (normalised).
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// Values, `shape.iter().product()` of them.
    pub data: &'a [f32],
    /// NCHW shape.
    pub shape: [usize; 4],
}

/// What one forward pass returned.
#[derive(Clone, Debug, PartialEq)]
pub struct Outputs {
    /// `[batch, classes]` row-major.
    pub logits: Vec<f32>,
    /// Classes per row.
    pub classes: usize,
    /// `[batch, dim]` when the model has an `embedding` output.
    pub embedding: Option<Vec<f32>>,
}

/// Errors of an inference engine; messages name the model file.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The model could not be loaded (corrupt, empty, unsupported).
    #[error("{path}: cannot load model: {message}")]
    Load {
        /// Model file.
        path: String,
        /// Engine message.
        message: String,
    },
    /// The input does not fit the model.
    #[error("{path}: input shape {found:?} does not fit the model's input {expected}")]
    Shape {
        /// Model file.
        path: String,
        /// Shape given.
        found: [usize; 4],
        /// Shape the model declares.
        expected: String,
    },
    /// The run itself failed.
    #[error("{path}: inference failed: {message}")]
    Run {
        /// Model file.
        path: String,
        /// Engine message.
        message: String,
    },
    /// The engine's runtime library is not usable.
    #[error("{0}")]
    Unavailable(String),
}

/// A loaded model that can run batches.
pub trait Engine {
    /// Short engine name, e.g. `tract` or `onnxruntime`.
    fn name(&self) -> &'static str;
    /// Runs one batch.
    fn run(&self, batch: Batch<'_>) -> Result<Outputs, InferError>;
}
