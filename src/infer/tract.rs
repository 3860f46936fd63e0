//! tract engine: the same runtime the on-device runner uses.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use super::{Batch, Engine, InferError, Outputs};

type Runnable = Arc<TypedRunnableModel>;

/// Every output of a run: (shape, values).
pub type RawOutputs = Vec<(Vec<usize>, Vec<f32>)>;

/// An ONNX model loaded with tract; one optimised plan per batch size, built on first use.
pub struct TractEngine {
    path: String,
    model: InferenceModel,
    /// `[c, h, w]` of the input as declared by the model (batch excluded).
    input: [usize; 3],
    outputs: Vec<String>,
    plans: Mutex<HashMap<usize, Runnable>>,
}

impl TractEngine {
    /// Loads an ONNX file.
    pub fn load(path: &Path) -> Result<Self, InferError> {
        let bytes = std::fs::read(path).map_err(|e| InferError::Load {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Loads an ONNX model from memory; `label` names it in errors. A model that makes tract
    /// panic is an error, not a crash.
    pub fn from_bytes(bytes: &[u8], label: &str) -> Result<Self, InferError> {
        super::guard(label, true, || Self::from_bytes_unguarded(bytes, label))
    }

    fn from_bytes_unguarded(bytes: &[u8], label: &str) -> Result<Self, InferError> {
        let load = |message: String| InferError::Load {
            path: label.to_string(),
            message,
        };
        if bytes.is_empty() {
            return Err(load("empty file".into()));
        }
        let model = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_read(&mut &bytes[..])
            .map_err(|e| load(format!("{e:#}").replace('\n', " ")))?;
        let fact = model.input_fact(0).map_err(|e| load(e.to_string()))?;
        let dims: Vec<Option<usize>> = fact
            .shape
            .dims()
            .map(|d| d.concretize().and_then(|d| d.as_i64()).map(|d| d as usize))
            .collect();
        let input = match dims[..] {
            [_, Some(c), Some(h), Some(w)] => [c, h, w],
            _ => {
                return Err(load(format!(
                    "expected one NCHW image input with fixed C, H, W; found {:?}",
                    fact.shape
                )));
            }
        };
        let outputs = model
            .outputs
            .iter()
            .map(|o| model.outlet_label(*o).unwrap_or_default().to_string())
            .collect();
        Ok(Self {
            path: label.to_string(),
            model,
            input,
            outputs,
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// `[c, h, w]` the model expects.
    pub fn input_shape(&self) -> [usize; 3] {
        self.input
    }

    /// Names of the graph outputs, in order.
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    fn plan(&self, batch: usize) -> Result<Runnable, InferError> {
        // A panic caught while planning leaves the cache as it was: poisoning does not matter.
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = plans.get(&batch) {
            return Ok(p.clone());
        }
        let [c, h, w] = self.input;
        let plan = self
            .model
            .clone()
            .with_input_fact(0, f32::fact([batch, c, h, w]).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| InferError::Load {
                path: self.path.clone(),
                message: format!("{e:#}").replace('\n', " "),
            })?;
        plans.insert(batch, plan.clone());
        Ok(plan)
    }

    /// Runs a batch and returns every output as a flat f32 vector with its shape.
    pub fn run_raw(&self, batch: Batch<'_>) -> Result<RawOutputs, InferError> {
        let [n, c, h, w] = batch.shape;
        if [c, h, w] != self.input || n == 0 || batch.data.len() != n * c * h * w {
            return Err(InferError::Shape {
                path: self.path.clone(),
                found: batch.shape,
                expected: format!(
                    "[N, {}, {}, {}]",
                    self.input[0], self.input[1], self.input[2]
                ),
            });
        }
        super::guard(&self.path, false, || self.run_planned(batch))
    }

    fn run_planned(&self, batch: Batch<'_>) -> Result<RawOutputs, InferError> {
        let n = batch.shape[0];
        let plan = self.plan(n)?;
        let run_err = |e: TractError| InferError::Run {
            path: self.path.clone(),
            message: format!("{e:#}"),
        };
        let input = Tensor::from_shape(&batch.shape, batch.data).map_err(run_err)?;
        let outputs = plan.run(tvec!(input.into())).map_err(run_err)?;
        outputs
            .iter()
            .map(|t| {
                let view = t.to_plain_array_view::<f32>().map_err(run_err)?;
                Ok((view.shape().to_vec(), view.iter().copied().collect()))
            })
            .collect()
    }
}

impl Engine for TractEngine {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn run(&self, batch: Batch<'_>) -> Result<Outputs, InferError> {
        let raw = self.run_raw(batch)?;
        outputs_from(&self.outputs, raw, &self.path)
    }
}

/// Picks `logits` (or the first output) and `embedding` by name.
pub(crate) fn outputs_from(
    names: &[String],
    mut raw: RawOutputs,
    path: &str,
) -> Result<Outputs, InferError> {
    let find = |n: &str| names.iter().position(|x| x == n);
    let li = find("logits").unwrap_or(0);
    let ei = find("embedding");
    let (lshape, logits) = raw.get(li).cloned().ok_or_else(|| InferError::Run {
        path: path.to_string(),
        message: "the model has no output".into(),
    })?;
    if lshape.len() != 2 || lshape[1] == 0 || lshape[0] * lshape[1] != logits.len() {
        return Err(InferError::Run {
            path: path.to_string(),
            message: format!(
                "expected logits of shape [batch, classes] with classes > 0, got shape {lshape:?}"
            ),
        });
    }
    let embedding = ei.map(|i| std::mem::take(&mut raw[i].1));
    Ok(Outputs {
        logits,
        classes: lshape[1],
        embedding,
    })
}
