//! int8 post-training quantization in QDQ form, laid out as ONNX Runtime's static quantizer
//! writes it: QuantizeLinear/DequantizeLinear pairs on the activation input of every Conv and
//! MatMul, DequantizeLinear on int8 weight initializers and on int32 Conv biases. The graph's
//! inputs and outputs stay float, so callers feed and read the model exactly as before.
//!
//! Scheme:
//! - Activations: per tensor, from calibration ranges widened to include 0 (so zero, i.e.
//!   padding and ReLU's floor, is exact). Default asymmetric uint8 (`scale = (max - min) / 255`,
//!   `zero_point = round(-min / scale)`), which spends all 256 levels on post-ReLU tensors and
//!   is the activation type of ORT's U8S8 kernels, the fast path on ARM. With
//!   [`QuantizeOptions::activations_signed`]: symmetric int8 (`scale = max(|min|, |max|) / 127`,
//!   zero point 0).
//! - Weights: symmetric int8, zero point 0, `scale = max|w| / 127`, values rounded half to even
//!   and clamped to [-127, 127]; per tensor, or per output channel (Conv weight `[M, C/g, kH,
//!   kW]` along axis 0, MatMul weight `[in, out]` along axis 1).
//! - Conv bias: int32 with `scale = input_scale * weight_scale` (per channel when the weights
//!   are), zero point 0, like ORT; both tract and ORT load int32 DequantizeLinear. A bias whose
//!   int32 value would overflow stays float. The bias of a MatMul is a separate Add and stays
//!   float.
//!
//! Per-channel DequantizeLinear (`axis`) needs opset 13; per-tensor QDQ needs opset 10.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::proto::{self, ProtoError, pb};

/// How to quantize.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantizeOptions {
    /// One weight scale per output channel (Conv: axis 0; MatMul `[in, out]`: axis 1) instead of
    /// one per tensor. Default on: small CNNs' channels differ widely in magnitude.
    pub per_channel_weights: bool,
    /// Symmetric int8 activations instead of the default asymmetric uint8.
    pub activations_signed: bool,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        Self {
            per_channel_weights: true,
            activations_signed: false,
        }
    }
}

/// Activation ranges measured on calibration data, keyed by ONNX tensor name: (min, max).
pub type Ranges = HashMap<String, (f32, f32)>;

/// What [`quantize_qdq`] did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QdqSummary {
    /// Conv and MatMul nodes now reading dequantized int8 tensors.
    pub quantized_nodes: usize,
    /// Activation tensors given a QuantizeLinear/DequantizeLinear pair.
    pub activation_tensors: usize,
    /// Conv biases stored as int32.
    pub quantized_biases: usize,
    /// Whether weight scales are per output channel.
    pub per_channel_weights: bool,
    /// `"uint8 asymmetric"` or `"int8 symmetric"`.
    pub activations: String,
    /// Bytes of the float weight and bias initializers that were replaced.
    pub weight_bytes_before: usize,
    /// Bytes of what replaced them: integer values, scales and zero points.
    pub weight_bytes_after: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Conv,
    MatMul,
}

impl Kind {
    /// Axis of the weight's output channels.
    pub(crate) fn channel_axis(self) -> usize {
        match self {
            Kind::Conv => 0,
            Kind::MatMul => 1,
        }
    }
}

/// A Conv or MatMul whose weight (and Conv bias) are float initializers.
pub(crate) struct QuantOp {
    pub(crate) node: usize,
    pub(crate) kind: Kind,
    pub(crate) activation: String,
    pub(crate) weight: String,
    pub(crate) bias: Option<String>,
}

pub(crate) fn float_initializers(graph: &pb::GraphProto) -> HashMap<&str, (Vec<i64>, Vec<f32>)> {
    // An initializer also listed as a graph input can be overridden at run time: not a
    // constant, so not quantizable.
    let inputs: HashSet<&str> = graph.input.iter().map(|i| i.name()).collect();
    graph
        .initializer
        .iter()
        .filter(|t| !inputs.contains(t.name()))
        .filter_map(|t| proto::tensor_f32(t).map(|v| (t.name(), v)))
        .collect()
}

pub(crate) fn quantizable_ops(
    graph: &pb::GraphProto,
    floats: &HashMap<&str, (Vec<i64>, Vec<f32>)>,
) -> Vec<QuantOp> {
    let mut out = Vec::new();
    for (i, node) in graph.node.iter().enumerate() {
        if !node.domain().is_empty() && node.domain() != "ai.onnx" {
            continue;
        }
        let kind = match node.op_type() {
            "Conv" => Kind::Conv,
            "MatMul" => Kind::MatMul,
            _ => continue,
        };
        let (Some(activation), Some(weight)) = (node.input.first(), node.input.get(1)) else {
            continue;
        };
        let Some((dims, _)) = floats.get(weight.as_str()) else {
            continue;
        };
        let rank_ok = match kind {
            Kind::Conv => dims.len() >= 3,
            Kind::MatMul => dims.len() == 2,
        };
        if activation.is_empty() || !rank_ok {
            continue;
        }
        let bias = match kind {
            Kind::Conv => node.input.get(2).filter(|b| {
                floats
                    .get(b.as_str())
                    .is_some_and(|(bd, _)| bd.len() == 1 && bd[0] == dims[0])
            }),
            Kind::MatMul => None,
        };
        out.push(QuantOp {
            node: i,
            kind,
            activation: activation.clone(),
            weight: weight.clone(),
            bias: bias.cloned(),
        });
    }
    out
}

/// Names of the tensors whose ranges [`quantize_qdq`] needs (activation inputs of the Conv and
/// MatMul nodes it quantizes), deduplicated, in graph order.
pub fn calibration_tensors(model: &pb::ModelProto) -> Vec<String> {
    let Some(graph) = model.graph.as_ref() else {
        return Vec::new();
    };
    let floats = float_initializers(graph);
    let mut seen = HashSet::new();
    quantizable_ops(graph, &floats)
        .into_iter()
        .filter(|t| seen.insert(t.activation.clone()))
        .map(|t| t.activation)
        .collect()
}

/// Per-tensor activation scale and zero point from a calibration range (see the module docs).
pub(crate) fn activation_qparams(
    name: &str,
    range: (f32, f32),
    signed: bool,
) -> Result<(f32, i32), ProtoError> {
    let (lo, hi) = range;
    if !lo.is_finite() || !hi.is_finite() || lo > hi {
        return Err(ProtoError::Invalid(format!(
            "calibration range of {name:?} is not a finite (min, max) pair: ({lo}, {hi})"
        )));
    }
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let (scale, zero_point) = if signed {
        (lo.abs().max(hi) / 127.0, 0)
    } else {
        let scale = (hi - lo) / 255.0;
        let zp = if scale >= f32::MIN_POSITIVE {
            (-lo / scale).round_ties_even().clamp(0.0, 255.0) as i32
        } else {
            0
        };
        (scale, zp)
    };
    // An all-zero tensor: any scale represents it exactly, but a zero scale would divide by 0.
    if scale >= f32::MIN_POSITIVE {
        Ok((scale, zero_point))
    } else {
        Ok((1.0, 0))
    }
}

/// Symmetric int8 weight quantization: one scale per tensor (`axis` None) or per index along
/// `axis`.
pub(crate) struct QuantWeight {
    pub(crate) values: Vec<i8>,
    pub(crate) scales: Vec<f32>,
}

fn quantize_to_i8(value: f32, scale: f32) -> i8 {
    (value / scale).round_ties_even().clamp(-127.0, 127.0) as i8
}

fn weight_scale(absmax: f32) -> f32 {
    let scale = absmax / 127.0;
    if scale >= f32::MIN_POSITIVE {
        scale
    } else {
        1.0
    }
}

pub(crate) fn quantize_weight(dims: &[i64], values: &[f32], axis: Option<usize>) -> QuantWeight {
    let (channels, inner) = match axis {
        Some(a) => (
            usize::try_from(dims[a]).unwrap_or(1).max(1),
            proto::element_count(&dims[a + 1..]).unwrap_or(1).max(1),
        ),
        None => (1, 1),
    };
    let channel = |i: usize| (i / inner) % channels;
    let mut absmax = vec![0f32; channels];
    for (i, v) in values.iter().enumerate() {
        let c = channel(i);
        absmax[c] = absmax[c].max(v.abs());
    }
    let scales: Vec<f32> = absmax.into_iter().map(weight_scale).collect();
    let values = values
        .iter()
        .enumerate()
        .map(|(i, &v)| quantize_to_i8(v, scales[channel(i)]))
        .collect();
    QuantWeight { values, scales }
}

/// int32 bias values for these bias scales, or `None` when one would overflow int32.
pub(crate) fn quantize_bias(values: &[f32], scales: &[f32]) -> Option<Vec<i32>> {
    values
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let s = f64::from(scales[if scales.len() == 1 { 0 } else { i }]);
            let q = (f64::from(b) / s).round_ties_even();
            (s > 0.0 && q.is_finite() && q.abs() <= f64::from(i32::MAX)).then_some(q as i32)
        })
        .collect()
}

/// Fresh tensor/node names, avoiding everything the graph already uses.
pub(crate) struct Names(HashSet<String>);

impl Names {
    pub(crate) fn new(graph: &pb::GraphProto) -> Self {
        let mut used = proto::tensor_names(graph);
        used.extend(graph.node.iter().map(|n| n.name().to_string()));
        Self(used)
    }

    pub(crate) fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.0.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.0.insert(name.clone());
        name
    }
}

pub(crate) fn dims_of(len: usize) -> Vec<i64> {
    vec![i64::try_from(len).unwrap_or(i64::MAX)]
}

/// Inserts QuantizeLinear/DequantizeLinear pairs on the activation input of every Conv and
/// MatMul whose weight is a float initializer (range from `ranges`; a missing range is an
/// error naming the tensor) and replaces those weights, and Conv biases, by integer
/// initializers read through DequantizeLinear; see the module docs for the arithmetic. Graph
/// inputs and outputs stay float. Float initializers nothing reads any more are removed. On
/// error the model is left unchanged.
pub fn quantize_qdq(
    model: &mut pb::ModelProto,
    ranges: &Ranges,
    opts: &QuantizeOptions,
) -> Result<QdqSummary, ProtoError> {
    let opset = proto::opset(model).unwrap_or(0);
    let needed = if opts.per_channel_weights { 13 } else { 10 };
    if opset < needed {
        return Err(ProtoError::Invalid(format!(
            "QDQ quantization needs opset {needed} or later (per-channel: 13), the model has {opset}"
        )));
    }
    let Some(source) = model.graph.as_ref() else {
        return Err(ProtoError::Invalid("the model has no graph".into()));
    };
    if let Some(n) = source
        .node
        .iter()
        .find(|n| matches!(n.op_type(), "QuantizeLinear" | "DequantizeLinear"))
    {
        return Err(ProtoError::Invalid(format!(
            "the model is already quantized (node {:?} is {})",
            n.name(),
            n.op_type()
        )));
    }
    let floats = float_initializers(source);
    let ops = quantizable_ops(source, &floats);
    let mut graph = source.clone();
    let mut names = Names::new(&graph);
    let by_node: HashMap<usize, &QuantOp> = ops.iter().map(|t| (t.node, t)).collect();

    let mut initializers: Vec<pb::TensorProto> = Vec::new();
    // tensor -> (its DequantizeLinear output, activation scale)
    let mut activations: HashMap<String, (String, f32)> = HashMap::new();
    // weight -> (DequantizeLinear output, scales)
    let mut weights: HashMap<String, (String, Vec<f32>)> = HashMap::new();
    // (bias, activation, weight) -> DequantizeLinear output, or None when left float
    let mut biases: HashMap<(String, String, String), Option<String>> = HashMap::new();
    let mut replaced: HashSet<String> = HashSet::new();
    let (mut bytes_before, mut bytes_after, mut quantized_biases) = (0usize, 0usize, 0usize);

    let old_nodes = std::mem::take(&mut graph.node);
    let mut nodes = Vec::with_capacity(old_nodes.len() + 4 * ops.len());
    for (i, mut node) in old_nodes.into_iter().enumerate() {
        let Some(t) = by_node.get(&i) else {
            nodes.push(node);
            continue;
        };
        let label = if node.name().is_empty() {
            format!("{} node {i}", node.op_type())
        } else {
            format!("{} node {:?}", node.op_type(), node.name())
        };

        if !activations.contains_key(&t.activation) {
            let x = &t.activation;
            let range = ranges.get(x).copied().ok_or_else(|| {
                ProtoError::Invalid(format!(
                    "no calibration range for tensor {x:?} (activation input of {label})"
                ))
            })?;
            let (scale, zp) = activation_qparams(x, range, opts.activations_signed)?;
            let scale_name = names.fresh(&format!("{x}_scale"));
            let zp_name = names.fresh(&format!("{x}_zero_point"));
            initializers.push(proto::make_tensor_f32(&scale_name, &[], &[scale]));
            initializers.push(if opts.activations_signed {
                proto::make_tensor_i8(&zp_name, &[], &[zp as i8])
            } else {
                proto::make_tensor_u8(&zp_name, &[], &[zp as u8])
            });
            let q = names.fresh(&format!("{x}_QuantizeLinear_Output"));
            let dq = names.fresh(&format!("{x}_DequantizeLinear_Output"));
            let q_node = names.fresh(&format!("{x}_QuantizeLinear"));
            let dq_node = names.fresh(&format!("{x}_DequantizeLinear"));
            nodes.push(proto::make_node(
                "QuantizeLinear",
                &[x, &scale_name, &zp_name],
                &[&q],
                &q_node,
                vec![],
            ));
            nodes.push(proto::make_node(
                "DequantizeLinear",
                &[&q, &scale_name, &zp_name],
                &[&dq],
                &dq_node,
                vec![],
            ));
            activations.insert(x.clone(), (dq, scale));
        }
        let (x_dq, x_scale) = activations[&t.activation].clone();

        if !weights.contains_key(&t.weight) {
            let w = &t.weight;
            let (dims, values) = &floats[w.as_str()];
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                return Err(ProtoError::Invalid(format!(
                    "weight {w:?} of {label} holds a non-finite value ({v})"
                )));
            }
            let axis = opts.per_channel_weights.then(|| t.kind.channel_axis());
            let qw = quantize_weight(dims, values, axis);
            let q_name = names.fresh(&format!("{w}_quantized"));
            let scale_name = names.fresh(&format!("{w}_scale"));
            let zp_name = names.fresh(&format!("{w}_zero_point"));
            let param_dims = if axis.is_some() {
                dims_of(qw.scales.len())
            } else {
                vec![]
            };
            initializers.push(proto::make_tensor_i8(&q_name, dims, &qw.values));
            initializers.push(proto::make_tensor_f32(&scale_name, &param_dims, &qw.scales));
            initializers.push(proto::make_tensor_i8(
                &zp_name,
                &param_dims,
                &vec![0; qw.scales.len()],
            ));
            let dq = names.fresh(&format!("{w}_DequantizeLinear_Output"));
            let dq_node = names.fresh(&format!("{w}_DequantizeLinear"));
            let attrs = axis
                .map(|a| vec![proto::make_attr_int("axis", a as i64)])
                .unwrap_or_default();
            nodes.push(proto::make_node(
                "DequantizeLinear",
                &[&q_name, &scale_name, &zp_name],
                &[&dq],
                &dq_node,
                attrs,
            ));
            bytes_before += 4 * values.len();
            bytes_after += qw.values.len() + 5 * qw.scales.len();
            replaced.insert(w.clone());
            weights.insert(w.clone(), (dq, qw.scales));
        }
        let (w_dq, w_scales) = weights[&t.weight].clone();

        let mut b_dq = None;
        if let Some(b) = &t.bias {
            let key = (b.clone(), t.activation.clone(), t.weight.clone());
            if !biases.contains_key(&key) {
                let (dims, values) = &floats[b.as_str()];
                let scales: Vec<f32> = w_scales.iter().map(|s| s * x_scale).collect();
                let out = match quantize_bias(values, &scales) {
                    Some(q) => {
                        let q_name = names.fresh(&format!("{b}_quantized"));
                        let scale_name = names.fresh(&format!("{b}_scale"));
                        let zp_name = names.fresh(&format!("{b}_zero_point"));
                        let per_channel = scales.len() > 1;
                        let param_dims = if per_channel {
                            dims_of(scales.len())
                        } else {
                            vec![]
                        };
                        initializers.push(proto::make_tensor_i32(&q_name, dims, &q));
                        initializers.push(proto::make_tensor_f32(
                            &scale_name,
                            &param_dims,
                            &scales,
                        ));
                        initializers.push(proto::make_tensor_i32(
                            &zp_name,
                            &param_dims,
                            &vec![0; scales.len()],
                        ));
                        let dq = names.fresh(&format!("{b}_DequantizeLinear_Output"));
                        let dq_node = names.fresh(&format!("{b}_DequantizeLinear"));
                        let attrs = if per_channel {
                            vec![proto::make_attr_int("axis", 0)]
                        } else {
                            vec![]
                        };
                        nodes.push(proto::make_node(
                            "DequantizeLinear",
                            &[&q_name, &scale_name, &zp_name],
                            &[&dq],
                            &dq_node,
                            attrs,
                        ));
                        bytes_before += 4 * values.len();
                        bytes_after += 4 * q.len() + 8 * scales.len();
                        quantized_biases += 1;
                        replaced.insert(b.clone());
                        Some(dq)
                    }
                    None => None,
                };
                biases.insert(key.clone(), out);
            }
            b_dq = biases[&key].clone();
        }

        node.input[0] = x_dq;
        node.input[1] = w_dq;
        if let Some(b) = b_dq {
            node.input[2] = b;
        }
        nodes.push(node);
    }
    graph.node = nodes;

    // Drop the float originals nothing reads any more (a weight shared with an unquantized
    // node stays).
    let still_read: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(graph.output.iter().map(|o| o.name()))
        .collect();
    let still_read: HashSet<String> = replaced
        .iter()
        .filter(|r| still_read.contains(r.as_str()))
        .cloned()
        .collect();
    graph
        .initializer
        .retain(|t| !replaced.contains(t.name()) || still_read.contains(t.name()));
    graph.initializer.extend(initializers);

    let summary = QdqSummary {
        quantized_nodes: ops.len(),
        activation_tensors: activations.len(),
        quantized_biases,
        per_channel_weights: opts.per_channel_weights,
        activations: if opts.activations_signed {
            "int8 symmetric"
        } else {
            "uint8 asymmetric"
        }
        .into(),
        weight_bytes_before: bytes_before,
        weight_bytes_after: bytes_after,
    };
    model.graph = Some(graph);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::proto::fixtures::tiny_cnn;
    use super::proto::{check_topology, initializer_f32};
    use super::*;
    use pb::tensor_proto::DataType;

    fn ranges() -> Ranges {
        Ranges::from([("x".into(), (-2.0, 3.0)), ("flat".into(), (0.0, 4.0))])
    }

    fn init<'a>(model: &'a pb::ModelProto, name: &str) -> &'a pb::TensorProto {
        model
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("no initializer {name}"))
    }

    fn raw(model: &pb::ModelProto, name: &str) -> Vec<u8> {
        init(model, name).raw_data.clone().unwrap()
    }

    fn i8s(model: &pb::ModelProto, name: &str) -> Vec<i8> {
        raw(model, name).into_iter().map(|b| b as i8).collect()
    }

    fn i32s(model: &pb::ModelProto, name: &str) -> Vec<i32> {
        raw(model, name)
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    fn node<'a>(model: &'a pb::ModelProto, name: &str) -> &'a pb::NodeProto {
        model
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .find(|n| n.name() == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    #[test]
    fn calibration_tensors_are_conv_and_matmul_inputs() {
        let model = tiny_cnn();
        assert_eq!(calibration_tensors(&model), ["x", "flat"]);
        assert!(calibration_tensors(&pb::ModelProto::default()).is_empty());
        // A MatMul of two activations has no weight to quantize.
        let mut model = tiny_cnn();
        model.graph.as_mut().unwrap().node[3].input[1] = "flat".into();
        assert_eq!(calibration_tensors(&model), ["x"]);
    }

    #[test]
    fn qdq_structure_per_channel() {
        let mut model = tiny_cnn();
        let params = proto::parameter_count(&model);
        let summary = quantize_qdq(&mut model, &ranges(), &QuantizeOptions::default()).unwrap();
        check_topology(&model).unwrap();
        assert_eq!(
            proto::op_types(&model),
            [
                "QuantizeLinear",
                "DequantizeLinear",
                "DequantizeLinear",
                "DequantizeLinear",
                "Conv",
                "Relu",
                "Reshape",
                "QuantizeLinear",
                "DequantizeLinear",
                "DequantizeLinear",
                "MatMul",
                "Add",
            ]
        );
        assert_eq!(
            summary,
            QdqSummary {
                quantized_nodes: 2,
                activation_tensors: 2,
                quantized_biases: 1,
                per_channel_weights: true,
                activations: "uint8 asymmetric".into(),
                // conv 18 + 2, fc 24 floats
                weight_bytes_before: 4 * 44,
                // int8 values + (f32 scale + i8 zp) per channel; bias i32 + (f32 + i32) per channel
                weight_bytes_after: 18 + 5 * 2 + 24 + 5 * 3 + 4 * 2 + 8 * 2,
            }
        );
        // The float originals are gone, the graph interface is unchanged.
        assert_eq!(initializer_f32(&model, "conv.weight"), None);
        assert!(initializer_f32(&model, "fc.bias").is_some());
        let g = model.graph.as_ref().unwrap();
        assert_eq!(g.input, tiny_cnn().graph.unwrap().input);
        assert_eq!(g.output, tiny_cnn().graph.unwrap().output);
        assert_eq!(proto::parameter_count(&model), params);

        let conv = node(&model, "node_0");
        assert_eq!(
            conv.input,
            [
                "x_DequantizeLinear_Output",
                "conv.weight_DequantizeLinear_Output",
                "conv.bias_DequantizeLinear_Output"
            ]
        );
        let w_dq = node(&model, "conv.weight_DequantizeLinear");
        assert_eq!(w_dq.attribute, [proto::make_attr_int("axis", 0)]);
        let fc_dq = node(&model, "fc.weight_DequantizeLinear");
        assert_eq!(fc_dq.attribute, [proto::make_attr_int("axis", 1)]);
        assert_eq!(init(&model, "fc.weight_scale").dims, [3]);
        assert_eq!(
            init(&model, "fc.weight_zero_point").data_type(),
            DataType::Int8 as i32
        );
        assert_eq!(init(&model, "fc.weight_quantized").dims, [8, 3]);

        // Activation x: range (-2, 3) -> scale 5/255, zero point round(2 / scale) = 102.
        let (_, s) = initializer_f32(&model, "x_scale").unwrap();
        assert!((s[0] - 5.0 / 255.0).abs() < 1e-7);
        assert_eq!(
            init(&model, "x_zero_point").data_type(),
            DataType::Uint8 as i32
        );
        assert_eq!(raw(&model, "x_zero_point"), [102]);
        // flat: range (0, 4) -> zero point 0.
        assert_eq!(raw(&model, "flat_zero_point"), [0]);
        assert_eq!(node(&model, "flat_QuantizeLinear").input[0], "flat");

        // Bias: int32 with scale x_scale * w_scale[c], per channel along axis 0.
        let (_, ws) = initializer_f32(&model, "conv.weight_scale").unwrap();
        let (_, bs) = initializer_f32(&model, "conv.bias_scale").unwrap();
        assert_eq!(bs, [s[0] * ws[0], s[0] * ws[1]]);
        let qb = i32s(&model, "conv.bias_quantized");
        assert_eq!(qb[0], (0.1f64 / f64::from(bs[0])).round() as i32);
        assert_eq!(qb[1], (-0.2f64 / f64::from(bs[1])).round() as i32);
        assert_eq!(i32s(&model, "conv.bias_zero_point"), [0, 0]);
        assert_eq!(
            node(&model, "conv.bias_DequantizeLinear").attribute,
            [proto::make_attr_int("axis", 0)]
        );

        // Survives serialisation.
        let back = proto::decode(&proto::encode(&model)).unwrap();
        assert_eq!(back, model);
    }

    #[test]
    fn qdq_structure_per_tensor_signed() {
        let mut model = tiny_cnn();
        let opts = QuantizeOptions {
            per_channel_weights: false,
            activations_signed: true,
        };
        let summary = quantize_qdq(&mut model, &ranges(), &opts).unwrap();
        check_topology(&model).unwrap();
        assert_eq!(summary.activations, "int8 symmetric");
        assert_eq!(summary.weight_bytes_after, 18 + 5 + 24 + 5 + 4 * 2 + 8);
        assert!(
            node(&model, "conv.weight_DequantizeLinear")
                .attribute
                .is_empty()
        );
        assert!(init(&model, "conv.weight_scale").dims.is_empty());
        // x: symmetric, scale max(2, 3) / 127, zero point int8 0.
        let (_, s) = initializer_f32(&model, "x_scale").unwrap();
        assert_eq!(s, [3.0 / 127.0]);
        assert_eq!(
            init(&model, "x_zero_point").data_type(),
            DataType::Int8 as i32
        );
        assert_eq!(raw(&model, "x_zero_point"), [0]);
        let (_, bs) = initializer_f32(&model, "conv.bias_scale").unwrap();
        assert_eq!(bs.len(), 1);
    }

    #[test]
    fn weight_maths_per_tensor_and_per_channel() {
        // [2, 1, 1, 2]: channel 0 = [31.75, -0.125], channel 1 = [63.5, -1.25] (exact binaries).
        let dims = [2, 1, 1, 2];
        let w = [31.75, -0.125, 63.5, -1.25];
        let per_tensor = quantize_weight(&dims, &w, None);
        assert_eq!(per_tensor.scales, [0.5]);
        // 63.5 -> 64 and -0.25 -> 0 and -2.5 -> -2: round half to even.
        assert_eq!(per_tensor.values, [64, 0, 127, -2]);
        let per_channel = quantize_weight(&dims, &w, Some(0));
        assert_eq!(per_channel.scales, [0.25, 0.5]);
        // -0.5 -> 0, -2.5 -> -2.
        assert_eq!(per_channel.values, [127, 0, 127, -2]);
        // MatMul [in = 2, out = 3] per output column (axis 1).
        let mm = quantize_weight(
            &[2, 3],
            &[3.96875, 0.0, -7.9375, -1.984375, 0.0, 3.125],
            Some(1),
        );
        // Column 1 is all zero: scale 1 rather than 0.
        assert_eq!(mm.scales, [0.03125, 1.0, 0.0625]);
        assert_eq!(mm.values, [127, 0, -127, -64, 0, 50]);
        // Clamping to the symmetric range, also for scales below max|w| / 127.
        assert_eq!(quantize_to_i8(1000.0, 1.0), 127);
        assert_eq!(quantize_to_i8(-1000.0, 1.0), -127);
        assert_eq!(quantize_to_i8(1.5, 1.0), 2);
        assert_eq!(quantize_to_i8(0.5, 1.0), 0);
        // Bias overflow leaves it float.
        assert_eq!(quantize_bias(&[1.0, -2.0], &[0.5]), Some(vec![2, -4]));
        assert_eq!(quantize_bias(&[1.0], &[1e-12]), None);
    }

    #[test]
    fn activation_qparams_maths() {
        assert_eq!(
            activation_qparams("a", (0.0, 63.75), false).unwrap(),
            (0.25, 0)
        );
        assert_eq!(
            activation_qparams("a", (-25.0, 38.75), false).unwrap(),
            (0.25, 100)
        );
        // min > 0 widens to 0, max < 0 widens to 0.
        assert_eq!(
            activation_qparams("a", (1.0, 63.75), false).unwrap(),
            (0.25, 0)
        );
        assert_eq!(
            activation_qparams("a", (-63.75, -1.0), false).unwrap(),
            (0.25, 255)
        );
        assert_eq!(
            activation_qparams("a", (-1.0, 1.0), true).unwrap(),
            (1.0 / 127.0, 0)
        );
        assert_eq!(
            activation_qparams("a", (0.0, 0.0), false).unwrap(),
            (1.0, 0)
        );
        for bad in [(1.0, 0.0), (f32::NAN, 1.0), (0.0, f32::INFINITY)] {
            let e = activation_qparams("act", bad, false)
                .unwrap_err()
                .to_string();
            assert!(e.contains("act"), "{e}");
        }
    }

    #[test]
    fn missing_range_is_an_error_naming_the_tensor() {
        let mut model = tiny_cnn();
        let before = model.clone();
        let ranges = Ranges::from([("x".into(), (-1.0, 1.0))]);
        let e = quantize_qdq(&mut model, &ranges, &QuantizeOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"flat\"") && e.contains("node_3"), "{e}");
        assert_eq!(model, before, "an error leaves the model unchanged");
    }

    #[test]
    fn refuses_requantization_old_opsets_and_bad_weights() {
        let mut model = tiny_cnn();
        quantize_qdq(&mut model, &ranges(), &QuantizeOptions::default()).unwrap();
        let e = quantize_qdq(&mut model, &ranges(), &QuantizeOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("already quantized"), "{e}");

        let mut old = tiny_cnn();
        old.opset_import[0].version = Some(11);
        let e = quantize_qdq(&mut old, &ranges(), &QuantizeOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("opset 13"), "{e}");
        let per_tensor = QuantizeOptions {
            per_channel_weights: false,
            ..Default::default()
        };
        quantize_qdq(&mut old, &ranges(), &per_tensor).unwrap();

        let mut nan = tiny_cnn();
        let g = nan.graph.as_mut().unwrap();
        g.initializer[3] = proto::make_tensor_f32("fc.weight", &[8, 3], &[f32::NAN; 24]);
        let e = quantize_qdq(&mut nan, &ranges(), &QuantizeOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("fc.weight"), "{e}");
    }

    #[test]
    fn shared_activation_and_weight_are_quantized_once() {
        let mut model = tiny_cnn();
        let g = model.graph.as_mut().unwrap();
        // A second MatMul reading the same activation and weight, and an Identity keeping the
        // float weight alive.
        g.node.push(proto::make_node(
            "MatMul",
            &["flat", "fc.weight"],
            &["mm2"],
            "mm2",
            vec![],
        ));
        g.node.push(proto::make_node(
            "Identity",
            &["fc.weight"],
            &["w_copy"],
            "id",
            vec![],
        ));
        g.output
            .push(proto::make_value_info("mm2", DataType::Float, &[]));
        g.output
            .push(proto::make_value_info("w_copy", DataType::Float, &[]));
        // A tensor already called like a generated name.
        g.initializer
            .push(proto::make_tensor_f32("x_scale", &[], &[9.0]));
        let summary = quantize_qdq(&mut model, &ranges(), &QuantizeOptions::default()).unwrap();
        check_topology(&model).unwrap();
        assert_eq!(summary.quantized_nodes, 3);
        assert_eq!(summary.activation_tensors, 2);
        let ops = proto::op_types(&model);
        assert_eq!(ops.iter().filter(|o| *o == "QuantizeLinear").count(), 2);
        assert_eq!(ops.iter().filter(|o| *o == "DequantizeLinear").count(), 5);
        assert_eq!(node(&model, "mm2").input[0], "flat_DequantizeLinear_Output");
        assert!(initializer_f32(&model, "fc.weight").is_some());
        assert_eq!(initializer_f32(&model, "x_scale").unwrap().1, [9.0]);
        assert_eq!(node(&model, "x_QuantizeLinear").input[1], "x_scale_1");
        assert_eq!(i8s(&model, "fc.weight_zero_point"), [0, 0, 0]);
    }
}

#[cfg(test)]
mod tract_tests {
    use super::proto::fixtures::tiny_cnn;
    use super::*;
    use tract_onnx::prelude::*;

    const SHAPE: [usize; 4] = [6, 1, 4, 4];

    fn images() -> Vec<f32> {
        // Deterministic pseudo-random values in about [-2, 2].
        let mut state = 0x2545_f491_u32;
        (0..SHAPE.iter().product::<usize>())
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }

    fn run(model: &pb::ModelProto, ignore_value_info: bool, x: &[f32]) -> Vec<Vec<f32>> {
        let bytes = proto::encode(model);
        let plan = tract_onnx::onnx()
            .with_ignore_value_info(ignore_value_info)
            .model_for_read(&mut &bytes[..])
            .and_then(|m| m.with_input_fact(0, f32::fact(SHAPE).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .unwrap_or_else(|e| panic!("tract loads the model: {e:?}"));
        let input = Tensor::from_shape(&SHAPE, x).unwrap();
        let out = plan.run(tvec!(input.into())).expect("tract runs the model");
        out.iter()
            .map(|t| {
                t.to_plain_array_view::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect()
            })
            .collect()
    }

    fn min_max(v: &[f32]) -> (f32, f32) {
        v.iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            })
    }

    /// Calibrates with tract the way the exporter does: expose the activations as outputs.
    fn calibrate(model: &pb::ModelProto, x: &[f32]) -> Ranges {
        let names = calibration_tensors(model);
        let mut probe = model.clone();
        proto::expose_outputs(&mut probe, &names).unwrap();
        let outputs: Vec<String> = probe
            .graph
            .as_ref()
            .unwrap()
            .output
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let values = run(&probe, true, x);
        let mut ranges = Ranges::new();
        for (name, v) in outputs.iter().zip(&values) {
            if names.contains(name) {
                ranges.insert(name.clone(), min_max(v));
            }
        }
        ranges.insert("x".into(), min_max(x));
        assert_eq!(ranges.len(), names.len());
        ranges
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn quantized_model_runs_in_tract_and_tracks_the_float_one() {
        let float = tiny_cnn();
        let x = images();
        // value_info declares the symbolic batch, which tract cannot unify with a concrete
        // input fact: ignore it (as the engine does) or strip it.
        let reference = run(&float, true, &x).remove(0);
        let mut float_stripped = float.clone();
        proto::strip_value_info(&mut float_stripped);
        assert_eq!(run(&float_stripped, false, &x)[0], reference);
        let (lo, hi) = min_max(&reference);
        let span = hi - lo;
        assert!(span > 0.1, "the fixture's outputs are not degenerate");
        let ranges = calibrate(&float, &x);
        for per_channel_weights in [true, false] {
            for activations_signed in [false, true] {
                let opts = QuantizeOptions {
                    per_channel_weights,
                    activations_signed,
                };
                let mut q = float.clone();
                quantize_qdq(&mut q, &ranges, &opts).unwrap();
                let out = run(&q, true, &x).remove(0);
                let err = max_abs_diff(&out, &reference);
                eprintln!("{opts:?}: max |int8 - float| = {err:.5}, output span {span:.3}");
                assert!(
                    err < 0.02 * span,
                    "{opts:?}: error {err} for an output span {span}"
                );
                assert!(err > 0.0, "{opts:?}: the QDQ model should not be bit-exact");
                proto::strip_value_info(&mut q);
                assert_eq!(run(&q, false, &x)[0], out);
            }
        }
    }
}
