//! Loading a bundled model into tract, by file format (the manifest's `format`): an NNEF
//! archive with tract-nnef (feature `nnef`, the slim runner) or an ONNX file with tract-onnx
//! (feature `onnx`, the fallback). Both give a tract-core plan per batch size; everything after
//! loading (the shard, latency, profile) is the same code in `main.rs`.

use std::sync::Arc;

use distill_edge_schema::ModelFormat;
use tract_core::internal::format_err;
use tract_core::prelude::*;

#[cfg(not(any(feature = "nnef", feature = "onnx")))]
compile_error!("the runner needs an engine: build it with feature `nnef`, `onnx` or both");

/// An optimised plan for one batch size.
pub type Plan = Arc<TypedRunnableModel>;

/// A loaded model, ready to be planned for any batch size.
pub enum TractModel {
    /// An NNEF archive: a typed model whose batch dimension is a symbol.
    #[cfg(feature = "nnef")]
    Nnef(crate::engine_nnef::NnefModel),
    /// An ONNX file, as tract-onnx parsed it.
    #[cfg(feature = "onnx")]
    Onnx(crate::engine_onnx::OnnxModel),
}

/// The engines this runner was built with (`nnef`, `onnx`).
pub fn engines() -> Vec<&'static str> {
    let mut out = Vec::new();
    if cfg!(feature = "nnef") {
        out.push(ModelFormat::Nnef.name());
    }
    if cfg!(feature = "onnx") {
        out.push(ModelFormat::Onnx.name());
    }
    out
}

impl TractModel {
    /// Parses `bytes` as a model of `format`; a format this runner was built without is an
    /// error naming the feature it needs.
    pub fn load(format: ModelFormat, bytes: &[u8]) -> TractResult<Self> {
        match format {
            #[cfg(feature = "nnef")]
            ModelFormat::Nnef => Ok(TractModel::Nnef(crate::engine_nnef::NnefModel::load(
                bytes,
            )?)),
            #[cfg(feature = "onnx")]
            ModelFormat::Onnx => Ok(TractModel::Onnx(crate::engine_onnx::OnnxModel::load(
                bytes,
            )?)),
            #[allow(unreachable_patterns)]
            other => Err(format_err!(
                "a {} model, but this runner was built without its `{}` feature (it has: {}); rebuild the bundle with distill-edge build",
                other.name(),
                other.name(),
                engines().join(", ")
            )),
        }
    }

    /// The model optimised for `batch` images of `shape` (`[c, h, w]`) per run.
    pub fn plan(&self, batch: usize, shape: [usize; 3]) -> TractResult<Plan> {
        match self {
            #[cfg(feature = "nnef")]
            TractModel::Nnef(m) => m.plan(batch, shape),
            #[cfg(feature = "onnx")]
            TractModel::Onnx(m) => m.plan(batch, shape),
        }
    }
}
