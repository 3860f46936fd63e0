//! The fallback engine: an ONNX file parsed with tract-onnx (and typed through tract-hir), for
//! models NNEF with tract-core's operators cannot express.

use tract_core::internal::format_err;
use tract_onnx::prelude::{Framework as _, InferenceModel, InferenceModelExt as _};
use tract_onnx::tract_hir::prelude::*;

use crate::engine::Plan;

/// An ONNX model as tract-onnx parsed it, input shape still open.
pub struct OnnxModel {
    model: InferenceModel,
}

impl OnnxModel {
    /// Parses an ONNX file (its value_info ignored: tract infers the shapes).
    pub fn load(bytes: &[u8]) -> TractResult<Self> {
        let model = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_read(&mut &bytes[..])
            .map_err(|e| format_err!("loading: {e:#}"))?;
        Ok(OnnxModel { model })
    }

    /// The model for `batch` images of `shape` (`[c, h, w]`) per run, optimised.
    pub fn plan(&self, batch: usize, shape: [usize; 3]) -> TractResult<Plan> {
        self.model
            .clone()
            .with_input_fact(0, f32::fact([batch, shape[0], shape[1], shape[2]]).into())?
            .into_optimized()?
            .into_runnable()
    }
}
