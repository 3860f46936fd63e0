//! tract NNEF on the host: a bundle's ONNX models converted for the slim runner (tract-core
//! and tract-nnef only, no ONNX parser on the board), and the check that the converted model
//! computes what the ONNX model computes.
//!
//! The conversion types and declutters the ONNX model with its batch dimension left as the
//! symbol [`BATCH_SYMBOL`] (one archive serves every batch size) and writes it with tract-nnef's
//! default registries (NNEF plus tract-core's operators). An operator only an extension
//! registry can write (tract-onnx-opl's, e.g. `LRN`, `NonZero`, `Multinomial`, the ONNX-ML
//! operators) is not expressible: the error lists every such node, and the bundle falls back
//! to ONNX.

use std::collections::HashMap;

use distill_edge_schema::{BATCH_SYMBOL, NnefCheck, SHARD_BATCH, Shard};
use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::binary::TypedBinOp;
use tract_nnef::tract_core::ops::element_wise::ElementWiseOp;

use super::InferError;
use super::parity::{Tolerance, compare};
use super::tract::TractEngine;

/// Why a model has no NNEF form, or its NNEF form cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NnefError {
    /// tract could not load or type the ONNX model.
    #[error(transparent)]
    Infer(#[from] InferError),
    /// NNEF with tract-core's operators cannot express these nodes.
    #[error("{path}: NNEF (tract-core operators) cannot express {}", nodes.join(", "))]
    Unsupported {
        /// The ONNX file.
        path: String,
        /// `name (Op)` of each node, in graph order.
        nodes: Vec<String>,
    },
    /// tract-nnef failed to write or to read back the model.
    #[error("{path}: NNEF conversion: {message}")]
    Convert {
        /// The ONNX file.
        path: String,
        /// tract's message.
        message: String,
    },
    /// The NNEF model's outputs differ from the ONNX model's beyond the tolerance.
    #[error(
        "{path}: the NNEF model's outputs differ from the ONNX model's on the shard (max |diff| {max_abs:e}, tolerance {tolerance})"
    )]
    Mismatch {
        /// The ONNX file.
        path: String,
        /// Largest absolute difference.
        max_abs: f32,
        /// The tolerance, in words.
        tolerance: String,
    },
}

/// The tolerance an NNEF model must meet against its ONNX source: the two are the same tract
/// operators after decluttering, so the only expected differences come from the optimiser
/// choosing other kernels for a graph it sees in another order (float summation order).
pub const NNEF_TOLERANCE: Tolerance = Tolerance::Approximate;

fn tolerance_words(t: Tolerance) -> String {
    let (atol, rtol) = t.bounds();
    format!("atol {atol:e}, rtol {rtol:e}")
}

/// Whether one of `nnef`'s registries has a writer for `node`'s operator (the same lookup
/// tract-nnef's serialiser does, without writing).
fn expressible(nnef: &Nnef, node: &TypedNode) -> bool {
    let op = node.op();
    if node.op_is::<tract_nnef::tract_core::ops::identity::Identity>() {
        return true;
    }
    nnef.registries.iter().any(|reg| {
        if let Some(ew) = op.downcast_ref::<ElementWiseOp>() {
            let id = ew.0.type_id();
            reg.unit_element_wise_ops
                .iter()
                .any(|(_, o)| o.as_ref().type_id() == id)
                || reg.element_wise_ops.iter().any(|e| e.1 == id)
        } else if let Some(bin) = op.downcast_ref::<TypedBinOp>() {
            let id = bin.0.type_id();
            reg.binary_ops.iter().any(|b| b.1.as_ref().type_id() == id)
        } else {
            reg.from_tract.contains_key(&op.type_id())
        }
    })
}

/// Rewrites tract-core's per-tensor `QuantizeLinearU8`/`I8` and `DequantizeLinearF32` (what
/// tract-onnx makes of ONNX `QuantizeLinear`/`DequantizeLinear`), which tract-nnef 0.23 has no
/// writer for, into the element-wise operators it writes, computing the same values:
/// quantize `clamp(round_half_even(x * (1/scale)) + zero_point, lo, hi)` then a cast
/// (tract's `quantize_linear_f32_u8`), dequantize `(cast_f32(x) - zero_point) * scale` (the
/// integer difference is exact in f32 for 8-bit inputs). Returns how many nodes it rewrote.
fn expand_quantize_ops(model: &mut TypedModel) -> TractResult<usize> {
    use tract_nnef::tract_core::ops::cast::cast;
    use tract_nnef::tract_core::ops::math::{add, max, min, mul, round_half_to_even, sub};
    use tract_nnef::tract_core::ops::quant::{
        DequantizeLinearF32, QuantizeLinearI8, QuantizeLinearU8,
    };
    let mut rewritten = 0;
    for id in 0..model.nodes().len() {
        let node = model.node(id).clone();
        let quantize = node.op_as::<ElementWiseOp>().and_then(|ew| {
            if let Some(q) = ew.0.downcast_ref::<QuantizeLinearU8>() {
                Some((q.scale, q.zero_point as f32, (0.0, 255.0), u8::datum_type()))
            } else {
                ew.0.downcast_ref::<QuantizeLinearI8>().map(|q| {
                    (
                        q.scale,
                        q.zero_point as f32,
                        (-128.0, 127.0),
                        i8::datum_type(),
                    )
                })
            }
        });
        let dequantize = node.op_as::<DequantizeLinearF32>().cloned();
        if quantize.is_none() && dequantize.is_none() {
            continue;
        }
        let rank = model.outlet_fact(node.inputs[0])?.rank();
        let mut patch = TypedModelPatch::new(format!("expand {}", node.name));
        let x = patch.tap_model(model, node.inputs[0])?;
        let name = &node.name;
        let scalar = |patch: &mut TypedModelPatch, what: &str, v: f32| {
            patch.add_const(
                format!("{name}.{what}"),
                tensor0(v).broadcast_into_rank(rank)?,
            )
        };
        let out = if let Some((scale, zero_point, (lo, hi), dt)) = quantize {
            let scale = scalar(&mut patch, "inv_scale", scale)?;
            let zero_point = scalar(&mut patch, "zero_point", zero_point)?;
            let lo = scalar(&mut patch, "lo", lo)?;
            let hi = scalar(&mut patch, "hi", hi)?;
            let mut w = patch.wire_node(format!("{name}.mul"), mul(), &[x, scale])?;
            w = patch.wire_node(format!("{name}.round"), round_half_to_even(), &w)?;
            w = patch.wire_node(format!("{name}.add"), add(), &[w[0], zero_point])?;
            w = patch.wire_node(format!("{name}.max"), max(), &[w[0], lo])?;
            w = patch.wire_node(format!("{name}.min"), min(), &[w[0], hi])?;
            patch.wire_node(format!("{name}.cast"), cast(dt), &w)?
        } else {
            let d = dequantize.expect("checked above");
            let zero_point = scalar(&mut patch, "zero_point", d.zero_point as f32)?;
            let scale = scalar(&mut patch, "scale", d.scale)?;
            let w = patch.wire_node(format!("{name}.cast"), cast(f32::datum_type()), &[x])?;
            let w = patch.wire_node(format!("{name}.sub"), sub(), &[w[0], zero_point])?;
            patch.wire_node(format!("{name}.mul"), mul(), &[w[0], scale])?
        };
        patch.shunt_outside(model, OutletId::new(id, 0), out[0])?;
        patch.apply(model)?;
        rewritten += 1;
    }
    if rewritten > 0 {
        model.compact()?;
    }
    Ok(rewritten)
}

/// Converts the ONNX model `engine` holds (loaded from `path`) to a tract NNEF archive (an
/// uncompressed tar, as the runner reads it), batch dimension symbolic.
pub fn to_nnef(engine: &TractEngine, path: &str) -> Result<Vec<u8>, NnefError> {
    let mut typed = engine.symbolic_batch_model(BATCH_SYMBOL)?;
    expand_quantize_ops(&mut typed).map_err(|e| NnefError::Convert {
        path: path.to_string(),
        message: format!("expanding the quantize operators: {e:#}").replace('\n', " "),
    })?;
    let nnef = tract_nnef::nnef();
    let nodes: Vec<String> = typed
        .nodes()
        .iter()
        .filter(|n| !expressible(&nnef, n))
        .map(|n| format!("{} ({})", n.name, n.op().name()))
        .collect();
    if !nodes.is_empty() {
        return Err(NnefError::Unsupported {
            path: path.to_string(),
            nodes,
        });
    }
    nnef.write_to_tar(&typed, Vec::new())
        .map_err(|e| NnefError::Convert {
            path: path.to_string(),
            message: format!("{e:#}").replace('\n', " "),
        })
}

/// The bytes of tensor data in an NNEF tar (the `.dat` entries less their 128-byte
/// headers): the model's weights, as the host check's `weight_bytes` counts an ONNX
/// model's initializers, except the small constants tract writes inline in `graph.nnef`
/// (e.g. short bias vectors). `None` when `bytes` is not a well-formed tar.
pub fn weight_bytes(bytes: &[u8]) -> Option<u64> {
    const BLOCK: usize = 512;
    const DAT_HEADER: u64 = 128;
    let mut total = 0u64;
    let mut at = 0usize;
    while at + BLOCK <= bytes.len() {
        let header = &bytes[at..at + BLOCK];
        if header.iter().all(|&b| b == 0) {
            return Some(total);
        }
        let name = String::from_utf8_lossy(&header[..100]);
        let name = name.trim_end_matches('\0');
        let size_field = String::from_utf8_lossy(&header[124..136]);
        let size = u64::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
            .ok()?;
        if name.ends_with(".dat") {
            total += size.saturating_sub(DAT_HEADER);
        }
        at += BLOCK + (size as usize).div_ceil(BLOCK) * BLOCK;
    }
    None
}

/// An NNEF archive loaded the way the runner loads it (tract-nnef, tract-core operators).
pub struct NnefModel {
    model: TypedModel,
    path: String,
}

impl NnefModel {
    /// Parses `bytes` (an NNEF tar); `path` names the model in errors.
    pub fn load(bytes: &[u8], path: &str) -> Result<Self, NnefError> {
        let model = tract_nnef::nnef()
            .model_for_read(&mut &bytes[..])
            .map_err(|e| NnefError::Convert {
                path: path.to_string(),
                message: format!("reading the NNEF archive back: {e:#}").replace('\n', " "),
            })?;
        Ok(Self {
            model,
            path: path.to_string(),
        })
    }

    /// The input dimensions as written (the batch one symbolic).
    pub fn input_shape(&self) -> String {
        self.model
            .input_fact(0)
            .map(|f| format!("{:?}", f.shape))
            .unwrap_or_default()
    }

    /// Every output of a run of `batch` (`[n, c, h, w]`, row-major): the model planned for
    /// `n` as the runner plans it (batch symbol set, optimised).
    pub fn run(&self, data: &[f32], shape: [usize; 4]) -> Result<Vec<Vec<f32>>, NnefError> {
        let err = |e: TractError| NnefError::Convert {
            path: self.path.clone(),
            message: format!("running the NNEF model: {e:#}").replace('\n', " "),
        };
        let n = self.model.symbols.sym(BATCH_SYMBOL);
        let subs = HashMap::from([(n, TDim::Val(shape[0] as i64))]);
        let plan = self
            .model
            .set_symbols(&subs)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(err)?;
        let input = Tensor::from_shape(&shape, data).map_err(err)?;
        let outputs = plan.run(tvec!(input.into())).map_err(err)?;
        outputs
            .iter()
            .map(|o| {
                o.to_plain_array_view::<f32>()
                    .map(|v| v.iter().copied().collect())
                    .map_err(err)
            })
            .collect()
    }

    /// Output `logits_output` over the shard, in batches of [`SHARD_BATCH`] as the runner
    /// runs it.
    pub fn shard_logits(&self, shard: &Shard, logits_output: usize) -> Result<Vec<f32>, NnefError> {
        let per: usize = shard.shape.iter().product();
        let n = shard.len();
        let mut all = Vec::new();
        for start in (0..n).step_by(SHARD_BATCH) {
            let b = SHARD_BATCH.min(n - start);
            let shape = [b, shard.shape[0], shard.shape[1], shard.shape[2]];
            let mut outs = self.run(&shard.images[start * per..(start + b) * per], shape)?;
            if logits_output >= outs.len() {
                return Err(NnefError::Convert {
                    path: self.path.clone(),
                    message: format!(
                        "the NNEF model has {} outputs, the logits are output #{logits_output}",
                        outs.len()
                    ),
                });
            }
            all.extend(outs.swap_remove(logits_output));
        }
        Ok(all)
    }
}

/// Converts the ONNX model `engine` holds and checks the result: the NNEF archive, read back
/// as the runner reads it, must give `reference` (the ONNX model's logits on `shard`, output
/// `logits_output`) within [`NNEF_TOLERANCE`]. Returns the archive and the check.
pub fn convert_checked(
    engine: &TractEngine,
    path: &str,
    source_sha256: &str,
    shard: &Shard,
    logits_output: usize,
    reference: &[f32],
) -> Result<(Vec<u8>, NnefCheck), NnefError> {
    let bytes = to_nnef(engine, path)?;
    let model = NnefModel::load(&bytes, path)?;
    let logits = model.shard_logits(shard, logits_output)?;
    let parity = compare(&logits, reference, NNEF_TOLERANCE);
    if !parity.ok {
        return Err(NnefError::Mismatch {
            path: path.to_string(),
            max_abs: parity.max_abs,
            tolerance: parity
                .problem
                .map(|p| format!("{}: {p}", tolerance_words(NNEF_TOLERANCE)))
                .unwrap_or_else(|| tolerance_words(NNEF_TOLERANCE)),
        });
    }
    let bit_identical = logits.len() == reference.len()
        && logits
            .iter()
            .zip(reference)
            .all(|(a, b)| a.to_bits() == b.to_bits());
    Ok((
        bytes,
        NnefCheck {
            source_sha256: source_sha256.to_string(),
            images: shard.len(),
            bit_identical,
            max_abs_diff: parity.max_abs,
            tolerance: tolerance_words(NNEF_TOLERANCE),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{self, fixtures::tiny_cnn};

    fn engine_of(model: &proto::pb::ModelProto) -> TractEngine {
        TractEngine::from_bytes(&proto::encode(model), "tiny.onnx").unwrap()
    }

    fn shard(n: usize) -> Shard {
        let images = (0..n * 16)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        Shard {
            shape: [1, 4, 4],
            classes: 0,
            labels: Vec::new(),
            images,
        }
    }

    #[test]
    fn the_nnef_model_gives_the_onnx_models_outputs() {
        let engine = engine_of(&tiny_cnn());
        // 21 images: a full shard batch of 16 and a remainder of 5, as the runner runs them.
        let shard = shard(21);
        let reference = crate::board::bundle::shard_logits(&engine, &shard).unwrap();
        assert!(reference.iter().all(|v| v.is_finite()));
        assert_eq!(reference.len(), 21 * 3);
        let (bytes, check) =
            convert_checked(&engine, "tiny.onnx", "abc", &shard, 0, &reference).unwrap();
        // A plain tar (the runner is built without gzip support).
        assert_eq!(&bytes[257..262], b"ustar");
        // Its tensor files hold the weights, conv 2x1x3x3 and fc 8x3 (f32); tract writes the
        // biases (2 and 3 values) inline in graph.nnef.
        assert_eq!(weight_bytes(&bytes), Some((18 + 24) * 4));
        assert_eq!(weight_bytes(b"not a tar"), None);
        assert_eq!(check.images, 21);
        assert!(check.max_abs_diff <= 1e-4, "{check:?}");
        // The batch stays symbolic: one archive for every batch size.
        let model = NnefModel::load(&bytes, "tiny.nnef.tar").unwrap();
        assert!(
            model.input_shape().contains(BATCH_SYMBOL),
            "{}",
            model.input_shape()
        );
        // Independently of the check: the logits read back are the reference's, bit for bit.
        let logits = model.shard_logits(&shard, 0).unwrap();
        assert_eq!(logits.len(), reference.len());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(check.bit_identical, bits(&logits) == bits(&reference));
        assert!(check.bit_identical, "max |diff| {}", check.max_abs_diff);
    }

    /// The operator-form int8 model (QLinearConv, MatMulInteger) is expressible too: tract
    /// lowers both to tract-core's quantized operators, which NNEF writes, and the
    /// QuantizeLinear / DequantizeLinear at the edges are expanded (`expand_quantize_ops`).
    #[test]
    fn the_int8_operator_form_converts_with_the_same_outputs() {
        let model = tiny_cnn();
        let ranges = crate::onnx::qdq::Ranges::from([
            ("x".into(), (-2.0, 3.0)),
            ("conv_out".into(), (-1.0, 2.0)),
            ("relu_out".into(), (0.0, 2.0)),
            ("flat".into(), (0.0, 2.0)),
        ]);
        // All int8 (QuantizeLinear in front), then each layer kept float (DequantizeLinear
        // before it).
        for keep in [&[][..], &["fc"][..], &["conv"][..]] {
            let mut model = model.clone();
            let keep = keep.iter().map(|k| k.to_string()).collect();
            crate::onnx::qop::quantize_qop(&mut model, &ranges, true, &keep).unwrap();
            let ops = proto::op_types(&model);
            assert!(ops.iter().any(|o| o == "QuantizeLinear"), "{ops:?}");
            let engine = engine_of(&model);
            let shard = shard(21);
            let reference = crate::board::bundle::shard_logits(&engine, &shard).unwrap();
            let (_, check) =
                convert_checked(&engine, "int8.onnx", "abc", &shard, 0, &reference).unwrap();
            assert!(check.max_abs_diff <= 1e-4, "{keep:?}: {check:?}");
            // The expansion computes tract's quantize and dequantize exactly.
            assert!(check.bit_identical, "{keep:?}: {check:?}");
        }
    }

    #[test]
    fn a_wrong_reference_fails_the_check() {
        let engine = engine_of(&tiny_cnn());
        let shard = shard(3);
        let mut reference = crate::board::bundle::shard_logits(&engine, &shard).unwrap();
        reference[4] += 0.5;
        let e = convert_checked(&engine, "tiny.onnx", "abc", &shard, 0, &reference).unwrap_err();
        assert!(matches!(e, NnefError::Mismatch { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("tiny.onnx: the NNEF model's outputs differ"),
            "{e}"
        );
    }

    /// `LRN` becomes tract-onnx-opl's operator, which NNEF with tract-core cannot write: the
    /// error names the node, so the bundle can fall back to ONNX and say why.
    #[test]
    fn an_onnx_only_operator_is_named() {
        let mut model = tiny_cnn();
        let graph = model.graph.as_mut().unwrap();
        graph.node[1] = proto::make_node(
            "LRN",
            &["conv_out"],
            &["relu_out"],
            "node_lrn",
            vec![proto::make_attr_int("size", 1)],
        );
        let e = to_nnef(&engine_of(&model), "lrn.onnx").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, NnefError::Unsupported { .. }), "{msg}");
        assert!(
            msg.starts_with("lrn.onnx: NNEF (tract-core operators) cannot express"),
            "{msg}"
        );
        assert!(msg.contains("node_lrn"), "{msg}");
    }
}
