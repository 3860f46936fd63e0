//! The slim engine: a tract NNEF archive (written on the host from the ONNX model) loaded with
//! tract-nnef's tract-core operators only.

use std::collections::HashMap;

use distill_edge_schema::BATCH_SYMBOL;
use tract_core::internal::{bail, format_err};
use tract_core::prelude::*;

use crate::engine::Plan;

/// A typed model whose input is `[N, c, h, w]`, `N` the symbol [`BATCH_SYMBOL`].
pub struct NnefModel {
    model: TypedModel,
}

impl NnefModel {
    /// Parses an NNEF archive (a plain tar).
    pub fn load(bytes: &[u8]) -> TractResult<Self> {
        use tract_core::prelude::Framework as _;
        let model = tract_nnef::nnef()
            .model_for_read(&mut &bytes[..])
            .map_err(|e| format_err!("loading the NNEF archive: {e:#}"))?;
        Ok(NnefModel { model })
    }

    /// The model with its batch symbol set to `batch`, optimised; the input must be
    /// `[batch, c, h, w]` with `shape` = `[c, h, w]`.
    pub fn plan(&self, batch: usize, shape: [usize; 3]) -> TractResult<Plan> {
        let n = self.model.symbols.sym(BATCH_SYMBOL);
        let subs = HashMap::from([(n, TDim::Val(batch as i64))]);
        let model = self.model.set_symbols(&subs)?;
        let fact = model.input_fact(0)?;
        let dims: Vec<Option<i64>> = fact.shape.iter().map(|d| d.to_i64().ok()).collect();
        let want = [batch, shape[0], shape[1], shape[2]].map(|d| Some(d as i64));
        if dims != want {
            bail!(
                "the NNEF model's input is {:?} with {BATCH_SYMBOL} = {batch}; the shard needs {:?}",
                fact.shape,
                [batch, shape[0], shape[1], shape[2]]
            );
        }
        model.into_optimized()?.into_runnable()
    }
}
