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
    /// Index of the logits output, when given (else `logits` by name, else the first).
    logits: Option<usize>,
    /// One optimised plan per batch size, each with the one tract state reused by every run
    /// at that size (a fresh state per run costs its allocations every time).
    plans: Mutex<HashMap<usize, TypedSimpleState>>,
    /// Milliseconds spent parsing the model.
    load_ms: f64,
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

    /// Loads an ONNX file with the input size and logits output of `io` (a model whose input
    /// dimensions are symbolic needs `io.input`).
    pub fn load_with(path: &Path, io: &super::ModelIo) -> Result<Self, InferError> {
        let bytes = std::fs::read(path).map_err(|e| InferError::Load {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let label = path.display().to_string();
        super::guard(&label, true, || Self::from_bytes_with(&bytes, &label, io))
    }

    /// Loads an ONNX model from memory; `label` names it in errors. A model that makes tract
    /// panic is an error, not a crash.
    pub fn from_bytes(bytes: &[u8], label: &str) -> Result<Self, InferError> {
        super::guard(label, true, || Self::from_bytes_unguarded(bytes, label))
    }

    fn from_bytes_unguarded(bytes: &[u8], label: &str) -> Result<Self, InferError> {
        Self::from_bytes_with(bytes, label, &super::ModelIo::default())
    }

    pub(crate) fn from_bytes_with(
        bytes: &[u8],
        label: &str,
        io: &super::ModelIo,
    ) -> Result<Self, InferError> {
        let started = std::time::Instant::now();
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
        let input = match (&dims[..], io.input) {
            (&[_, Some(c), Some(h), Some(w)], None) => [c, h, w],
            (&[_, c, h, w], Some(given)) => {
                for (declared, given, what) in
                    [(c, given[0], "C"), (h, given[1], "H"), (w, given[2], "W")]
                {
                    if let Some(d) = declared
                        && d != given
                    {
                        return Err(load(format!(
                            "the input size given ({}x{}x{}) has {what} = {given}, the model declares {d}",
                            io.input.unwrap()[0],
                            io.input.unwrap()[1],
                            io.input.unwrap()[2]
                        )));
                    }
                }
                given
            }
            (_, None) if dims.len() == 4 => {
                return Err(load(format!(
                    "the input {:?} has symbolic C, H or W: give the input size (--input-size CxHxW or input-size in --preprocess)",
                    fact.shape
                )));
            }
            _ => {
                return Err(load(format!(
                    "expected one NCHW image input; found {:?}",
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
            logits: io.logits,
            outputs,
            plans: Mutex::new(HashMap::new()),
            load_ms: started.elapsed().as_secs_f64() * 1e3,
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

    /// Builds (once) the optimised plan and its state for `batch` images per run.
    pub fn prepare(&self, batch: usize) -> Result<(), InferError> {
        super::guard(&self.path, true, || {
            let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
            if let std::collections::hash_map::Entry::Vacant(slot) = plans.entry(batch) {
                let plan = self.plan(batch)?;
                let state = TypedSimpleState::new(&plan).map_err(|e| InferError::Load {
                    path: self.path.clone(),
                    message: format!("{e:#}"),
                })?;
                slot.insert(state);
            }
            Ok(())
        })
    }

    /// The model typed and decluttered with its batch dimension left symbolic (symbol
    /// `batch_symbol`), the form tract's NNEF writer serialises (`infer::nnef`).
    pub fn symbolic_batch_model(&self, batch_symbol: &str) -> Result<TypedModel, InferError> {
        let [c, h, w] = self.input;
        let n = self.model.symbols.sym(batch_symbol);
        self.model
            .clone()
            .with_input_fact(
                0,
                f32::fact(&[n.to_dim(), c.to_dim(), h.to_dim(), w.to_dim()]).into(),
            )
            .and_then(|m| m.into_typed())
            .and_then(|m| m.into_decluttered())
            .map_err(|e| InferError::Load {
                path: self.path.clone(),
                message: format!("{e:#}").replace('\n', " "),
            })
    }

    fn plan(&self, batch: usize) -> Result<Runnable, InferError> {
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
        self.prepare(n)?;
        let run_err = |e: TractError| InferError::Run {
            path: self.path.clone(),
            message: format!("{e:#}"),
        };
        let input = Tensor::from_shape(&batch.shape, batch.data).map_err(run_err)?;
        // A panic caught mid-run leaves a state tract resets on its next run: poisoning
        // does not matter.
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        let state = plans.get_mut(&n).expect("prepared above");
        let outputs = state.run(tvec!(input.into())).map_err(run_err)?;
        drop(plans);
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

    fn load_ms(&self) -> Option<f64> {
        Some(self.load_ms)
    }

    fn prepare(&self, batch: usize) -> Result<(), InferError> {
        TractEngine::prepare(self, batch)
    }

    fn run(&self, batch: Batch<'_>) -> Result<Outputs, InferError> {
        let raw = self.run_raw(batch)?;
        outputs_from(&self.outputs, raw, &self.path, self.logits)
    }
}

/// Picks the logits (output `logits` when given, else the one named `logits`, else the first)
/// and `embedding` by name.
pub(crate) fn outputs_from(
    names: &[String],
    mut raw: RawOutputs,
    path: &str,
    logits: Option<usize>,
) -> Result<Outputs, InferError> {
    let find = |n: &str| names.iter().position(|x| x == n);
    let li = logits.or_else(|| find("logits")).unwrap_or(0);
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

/// An ONNX node tract has no implementation for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UnsupportedOp {
    /// Node name in the graph (or `#index` when unnamed).
    pub node: String,
    /// ONNX operator type, with its domain when not the default one.
    pub op_type: String,
}

/// Every node of the ONNX model `bytes` (main graph and nested graphs) whose operator tract
/// cannot build, in graph order: all of them at once, not the first one tract trips on.
pub fn unsupported_ops(bytes: &[u8]) -> Result<Vec<UnsupportedOp>, String> {
    let model = crate::onnx::proto::decode(bytes).map_err(|e| e.to_string())?;
    let register = tract_onnx::onnx().op_register;
    let mut out = Vec::new();
    fn walk(
        graph: &crate::onnx::proto::pb::GraphProto,
        register: &tract_onnx::model::OnnxOpRegister,
        out: &mut Vec<UnsupportedOp>,
    ) {
        for (i, node) in graph.node.iter().enumerate() {
            if !register.0.contains_key(node.op_type()) {
                out.push(UnsupportedOp {
                    node: if node.name().is_empty() {
                        format!("#{i}")
                    } else {
                        node.name().to_string()
                    },
                    op_type: if node.domain().is_empty() || node.domain() == "ai.onnx" {
                        node.op_type().to_string()
                    } else {
                        format!("{}::{}", node.domain(), node.op_type())
                    },
                });
            }
            for attr in &node.attribute {
                if let Some(g) = &attr.g {
                    walk(g, register, out);
                }
                for g in &attr.graphs {
                    walk(g, register, out);
                }
            }
        }
    }
    if let Some(g) = &model.graph {
        walk(g, &register, &mut out);
    }
    Ok(out)
}
