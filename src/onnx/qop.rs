//! int8 in operator form ("QOperator"): the integer operators that tract and ONNX Runtime
//! execute with integer kernels, instead of the QDQ pairs of [`super::qdq`] (which tract runs
//! as float convolutions plus the cost of the casts).
//!
//! - A Conv becomes `QLinearConv` (uint8 activations, int8 weights with one scale per output
//!   channel, int32 bias at `x_scale * w_scale[c]`, uint8 output). tract lowers it to its
//!   integer matrix products with the requantization fused; ONNX Runtime runs its U8S8 kernel.
//!   A Relu that is the Conv's only reader is fused: the output is quantized with the Relu
//!   output's range (zero point 0), so saturation at 0 *is* the Relu.
//! - A MatMul with a constant weight becomes `MatMulInteger` (uint8 x int8 -> int32) followed
//!   by `Cast` and a `Mul` by `x_scale * w_scale[n]`: the product leaves the integer domain
//!   exactly, and the following bias `Add` stays float.
//! - Data-movement operators (MaxPool, Reshape, Flatten, ...) run on the uint8 tensor when
//!   their input is quantized: max and reshape commute with a monotone quantization, so they
//!   are exact and move a quarter of the bytes.
//! - A `QuantizeLinear` enters the integer domain where a quantized layer reads a float tensor,
//!   a `DequantizeLinear` leaves it where a float operator (or a graph output) reads a
//!   quantized one. Graph inputs and outputs stay float.
//!
//! Layers named in `keep_float` (and layers whose int32 bias would overflow) stay float Conv /
//! MatMul nodes, so an accuracy-aware search can trade speed for accuracy per layer.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::proto::{self, ProtoError, pb};
use super::qdq::{
    Kind, Names, QuantOp, Ranges, activation_qparams, dims_of, float_initializers, quantizable_ops,
    quantize_bias, quantize_weight,
};

/// What [`quantize_qop`] did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QopSummary {
    /// Layers (see [`layer_name`]) now running in integer arithmetic, in graph order.
    pub int8_layers: Vec<String>,
    /// Quantizable layers left in float, in graph order.
    pub float_layers: Vec<String>,
    /// Relu nodes folded into the saturation of a QLinearConv.
    pub fused_relus: usize,
    /// QuantizeLinear nodes (float -> uint8) inserted.
    pub quantize_nodes: usize,
    /// DequantizeLinear nodes (uint8 -> float) inserted.
    pub dequantize_nodes: usize,
    /// Operators run on uint8 tensors instead of float ones (MaxPool, Reshape, ...).
    pub integer_data_ops: usize,
    /// Bytes of the float weight and bias initializers that were replaced.
    pub weight_bytes_before: usize,
    /// Bytes of what replaced them: integer values and scales.
    pub weight_bytes_after: usize,
}

/// The name a layer goes by in configs and reports: its weight initializer's name without a
/// trailing `.weight` (`blocks.0.conv`, `head`).
pub fn layer_name(weight: &str) -> String {
    weight.strip_suffix(".weight").unwrap_or(weight).to_string()
}

/// Quantizable layers (Conv and MatMul with a float initializer weight), in graph order.
pub fn layers(model: &pb::ModelProto) -> Vec<String> {
    let Some(graph) = model.graph.as_ref() else {
        return Vec::new();
    };
    let floats = float_initializers(graph);
    let mut seen = HashSet::new();
    quantizable_ops(graph, &floats)
        .into_iter()
        .map(|op| layer_name(&op.weight))
        .filter(|l| seen.insert(l.clone()))
        .collect()
}

/// Operators that only move or select values: exact on a uint8 tensor with the input's
/// quantization parameters.
fn moves_data(node: &pb::NodeProto) -> bool {
    match node.op_type() {
        "Reshape" | "Flatten" | "Identity" | "Squeeze" | "Unsqueeze" | "Transpose" => true,
        // MaxPool's optional second output (indices) is int64: keep that form float.
        "MaxPool" => node.output.len() == 1,
        _ => false,
    }
}

/// Tensors whose ranges [`quantize_qop`] may need: inputs and outputs of every quantizable
/// Conv, the output of a Relu reading a Conv, and inputs of every quantizable MatMul;
/// deduplicated, in graph order.
pub fn range_tensors(model: &pb::ModelProto) -> Vec<String> {
    let Some(graph) = model.graph.as_ref() else {
        return Vec::new();
    };
    let floats = float_initializers(graph);
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut push = |name: &str| {
        if seen.insert(name.to_string()) {
            out.push(name.to_string());
        }
    };
    for op in quantizable_ops(graph, &floats) {
        push(&op.activation);
        if op.kind == Kind::Conv {
            let y = &graph.node[op.node].output[0];
            push(y);
            for n in &graph.node {
                if n.op_type() == "Relu" && n.input.first() == Some(y) {
                    push(&n.output[0]);
                }
            }
        }
    }
    out
}

/// A uint8 tensor standing for a float one.
#[derive(Clone)]
struct Quantized {
    name: String,
    scale: String,
    zero_point: String,
    scale_value: f32,
}

struct Builder<'a> {
    names: Names,
    ranges: &'a Ranges,
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    /// float tensor -> its uint8 stand-in
    quantized: HashMap<String, Quantized>,
    /// float tensors that exist (graph inputs, initializers, outputs of emitted float nodes)
    float: HashSet<String>,
    quantize_nodes: usize,
    dequantize_nodes: usize,
}

impl Builder<'_> {
    fn qparams(&mut self, tensor: &str, what: &str) -> Result<Quantized, ProtoError> {
        let range = self.ranges.get(tensor).copied().ok_or_else(|| {
            ProtoError::Invalid(format!(
                "no calibration range for tensor {tensor:?} ({what})"
            ))
        })?;
        let (scale, zp) = activation_qparams(tensor, range, false)?;
        let scale_name = self.names.fresh(&format!("{tensor}_scale"));
        let zp_name = self.names.fresh(&format!("{tensor}_zero_point"));
        self.initializers
            .push(proto::make_tensor_f32(&scale_name, &[], &[scale]));
        self.initializers
            .push(proto::make_tensor_u8(&zp_name, &[], &[zp as u8]));
        Ok(Quantized {
            name: self.names.fresh(&format!("{tensor}_quantized")),
            scale: scale_name,
            zero_point: zp_name,
            scale_value: scale,
        })
    }

    /// The float tensor `name`, dequantized from its uint8 stand-in when no float node
    /// produces it.
    fn float(&mut self, name: &str) -> Result<(), ProtoError> {
        if name.is_empty() || self.float.contains(name) {
            return Ok(());
        }
        let Some(q) = self.quantized.get(name).cloned() else {
            return Err(ProtoError::Invalid(format!(
                "tensor {name:?} is read before any node produces it"
            )));
        };
        let node = self.names.fresh(&format!("{name}_DequantizeLinear"));
        self.nodes.push(proto::make_node(
            "DequantizeLinear",
            &[&q.name, &q.scale, &q.zero_point],
            &[name],
            &node,
            vec![],
        ));
        self.dequantize_nodes += 1;
        self.float.insert(name.to_string());
        Ok(())
    }

    /// The uint8 stand-in of `name`, quantizing the float tensor when there is none yet.
    fn quantized(&mut self, name: &str, what: &str) -> Result<Quantized, ProtoError> {
        if let Some(q) = self.quantized.get(name) {
            return Ok(q.clone());
        }
        self.float(name)?;
        let q = self.qparams(name, what)?;
        let node = self.names.fresh(&format!("{name}_QuantizeLinear"));
        self.nodes.push(proto::make_node(
            "QuantizeLinear",
            &[name, &q.scale, &q.zero_point],
            &[&q.name],
            &node,
            vec![],
        ));
        self.quantize_nodes += 1;
        self.quantized.insert(name.to_string(), q.clone());
        Ok(q)
    }
}

fn label(node: &pb::NodeProto, i: usize) -> String {
    if node.name().is_empty() {
        format!("{} node {i}", node.op_type())
    } else {
        format!("{} node {:?}", node.op_type(), node.name())
    }
}

/// Rewrites `model` into operator-form int8 (see the module docs), leaving the layers named in
/// `keep_float` (names from [`layers`]) in float. Activations are asymmetric uint8 with ranges
/// from `ranges` (a missing range is an error naming the tensor); weights are symmetric int8,
/// per output channel when `per_channel_weights`. Graph inputs and outputs stay float. On
/// error the model is left unchanged.
pub fn quantize_qop(
    model: &mut pb::ModelProto,
    ranges: &Ranges,
    per_channel_weights: bool,
    keep_float: &HashSet<String>,
) -> Result<QopSummary, ProtoError> {
    let opset = proto::opset(model).unwrap_or(0);
    if opset < 10 {
        return Err(ProtoError::Invalid(format!(
            "QLinearConv and MatMulInteger need opset 10 or later, the model has {opset}"
        )));
    }
    let Some(source) = model.graph.as_ref() else {
        return Err(ProtoError::Invalid("the model has no graph".into()));
    };
    if let Some(n) = source.node.iter().find(|n| {
        matches!(
            n.op_type(),
            "QuantizeLinear" | "DequantizeLinear" | "QLinearConv" | "MatMulInteger"
        )
    }) {
        return Err(ProtoError::Invalid(format!(
            "the model is already quantized (node {:?} is {})",
            n.name(),
            n.op_type()
        )));
    }
    let known = layers(model);
    if let Some(unknown) = keep_float.iter().find(|l| !known.contains(l)) {
        return Err(ProtoError::Invalid(format!(
            "no quantizable layer {unknown:?} to keep in float (layers: {})",
            known.join(", ")
        )));
    }
    let floats = float_initializers(source);
    let ops: HashMap<usize, QuantOp> = quantizable_ops(source, &floats)
        .into_iter()
        .map(|op| (op.node, op))
        .collect();
    let graph_outputs: HashSet<&str> = source.output.iter().map(|o| o.name()).collect();
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in source.node.iter().enumerate() {
        for input in &n.input {
            readers.entry(input.as_str()).or_default().push(i);
        }
    }

    let mut b = Builder {
        names: Names::new(source),
        ranges,
        nodes: Vec::new(),
        initializers: Vec::new(),
        quantized: HashMap::new(),
        float: source
            .input
            .iter()
            .map(|i| i.name().to_string())
            .chain(source.initializer.iter().map(|t| t.name().to_string()))
            .collect(),
        quantize_nodes: 0,
        dequantize_nodes: 0,
    };
    let mut fused: HashSet<usize> = HashSet::new();
    let mut replaced: HashSet<String> = HashSet::new();
    let (mut int8_layers, mut float_layers) = (Vec::new(), Vec::new());
    let (mut bytes_before, mut bytes_after, mut integer_data_ops) = (0usize, 0usize, 0usize);
    let mut weights: HashMap<String, (String, String, String, Vec<f32>)> = HashMap::new();

    for (i, node) in source.node.iter().enumerate() {
        if fused.contains(&i) {
            continue;
        }
        let what = label(node, i);
        if let Some(op) = ops.get(&i) {
            let layer = layer_name(&op.weight);
            let keep = keep_float.contains(&layer);
            let (w_dims, w_values) = &floats[op.weight.as_str()];
            if let Some(v) = w_values.iter().find(|v| !v.is_finite()) {
                return Err(ProtoError::Invalid(format!(
                    "weight {:?} of {what} holds a non-finite value ({v})",
                    op.weight
                )));
            }
            // Peek at the input scale, to see whether the bias fits int32.
            let x_scale = match b.quantized.get(&op.activation) {
                Some(q) => Some(q.scale_value),
                None => ranges
                    .get(&op.activation)
                    .map(|r| activation_qparams(&op.activation, *r, false))
                    .transpose()?
                    .map(|(s, _)| s),
            };
            let axis = per_channel_weights.then(|| op.kind.channel_axis());
            let qw = quantize_weight(w_dims, w_values, axis);
            let bias = match (&op.bias, x_scale) {
                (Some(bias), Some(xs)) => {
                    let scales: Vec<f32> = qw.scales.iter().map(|s| s * xs).collect();
                    let values = &floats[bias.as_str()].1;
                    Some(quantize_bias(values, &scales).map(|q| (bias.clone(), q, values.len())))
                }
                _ => None,
            };
            let bias_overflows = matches!(bias, Some(None));
            if keep || bias_overflows {
                if !float_layers.contains(&layer) {
                    float_layers.push(layer);
                }
                for input in &node.input {
                    b.float(input)?;
                }
                b.float.extend(node.output.iter().cloned());
                b.nodes.push(node.clone());
                continue;
            }
            let x = b.quantized(&op.activation, &format!("activation input of {what}"))?;
            let weight_entry = match weights.get(&op.weight) {
                Some(w) => w.clone(),
                None => {
                    let w_name = b.names.fresh(&format!("{}_quantized", op.weight));
                    let s_name = b.names.fresh(&format!("{}_scale", op.weight));
                    let zp_name = b.names.fresh(&format!("{}_zero_point", op.weight));
                    let scale_dims = if axis.is_some() {
                        dims_of(qw.scales.len())
                    } else {
                        vec![]
                    };
                    b.initializers
                        .push(proto::make_tensor_i8(&w_name, w_dims, &qw.values));
                    bytes_before += 4 * w_values.len();
                    bytes_after += qw.values.len();
                    // MatMulInteger takes no weight scale: it is folded into the rescale Mul.
                    if op.kind == Kind::Conv {
                        b.initializers.push(proto::make_tensor_f32(
                            &s_name,
                            &scale_dims,
                            &qw.scales,
                        ));
                        b.initializers
                            .push(proto::make_tensor_i8(&zp_name, &[], &[0]));
                        bytes_after += 4 * qw.scales.len() + 1;
                    }
                    replaced.insert(op.weight.clone());
                    let entry = (w_name, s_name, zp_name, qw.scales.clone());
                    weights.insert(op.weight.clone(), entry.clone());
                    entry
                }
            };
            let (w_name, w_scale, w_zp, w_scales) = weight_entry;
            match op.kind {
                Kind::Conv => {
                    let y = &node.output[0];
                    // Fuse a Relu that is the only reader of the Conv's output.
                    let relu = match readers.get(y.as_str()).map(Vec::as_slice) {
                        Some(&[r])
                            if source.node[r].op_type() == "Relu"
                                && !graph_outputs.contains(y.as_str()) =>
                        {
                            Some(r)
                        }
                        _ => None,
                    };
                    let out = match relu {
                        Some(r) => source.node[r].output[0].clone(),
                        None => y.clone(),
                    };
                    let yq = b.qparams(&out, &format!("output of {what}"))?;
                    let mut inputs = vec![
                        x.name.clone(),
                        x.scale.clone(),
                        x.zero_point.clone(),
                        w_name,
                        w_scale,
                        w_zp,
                        yq.scale.clone(),
                        yq.zero_point.clone(),
                    ];
                    if let Some(Some((bias, q, len))) = &bias {
                        let b_name = b.names.fresh(&format!("{bias}_quantized"));
                        b.initializers
                            .push(proto::make_tensor_i32(&b_name, &dims_of(*len), q));
                        bytes_before += 4 * len;
                        bytes_after += 4 * len;
                        replaced.insert(bias.clone());
                        inputs.push(b_name);
                    }
                    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                    let name = b.names.fresh(&format!("{}_quant", node.name()));
                    b.nodes.push(proto::make_node(
                        "QLinearConv",
                        &inputs,
                        &[&yq.name],
                        &name,
                        node.attribute.clone(),
                    ));
                    if let Some(r) = relu {
                        fused.insert(r);
                    }
                    b.quantized.insert(out, yq);
                }
                Kind::MatMul => {
                    let y = &node.output[0];
                    let acc = b.names.fresh(&format!("{y}_int32"));
                    let acc_f = b.names.fresh(&format!("{y}_int32_float"));
                    let scale = b.names.fresh(&format!("{y}_rescale"));
                    let scales: Vec<f32> = w_scales.iter().map(|s| s * x.scale_value).collect();
                    let dims = if scales.len() > 1 {
                        dims_of(scales.len())
                    } else {
                        vec![]
                    };
                    b.initializers
                        .push(proto::make_tensor_f32(&scale, &dims, &scales));
                    let mm = b.names.fresh(&format!("{}_integer", node.name()));
                    b.nodes.push(proto::make_node(
                        "MatMulInteger",
                        &[&x.name, &w_name, &x.zero_point],
                        &[&acc],
                        &mm,
                        vec![],
                    ));
                    let cast = b.names.fresh(&format!("{y}_Cast"));
                    b.nodes.push(proto::make_node(
                        "Cast",
                        &[&acc],
                        &[&acc_f],
                        &cast,
                        vec![proto::make_attr_int(
                            "to",
                            pb::tensor_proto::DataType::Float as i64,
                        )],
                    ));
                    let mul = b.names.fresh(&format!("{y}_Mul"));
                    b.nodes.push(proto::make_node(
                        "Mul",
                        &[&acc_f, &scale],
                        &[y],
                        &mul,
                        vec![],
                    ));
                    b.float.insert(y.clone());
                }
            }
            int8_layers.push(layer);
            continue;
        }
        let first = node.input.first().map(String::as_str).unwrap_or("");
        if moves_data(node) && b.quantized.contains_key(first) {
            let q = b.quantized[first].clone();
            for input in &node.input[1..] {
                b.float(input)?;
            }
            let y = &node.output[0];
            let out = Quantized {
                name: b.names.fresh(&format!("{y}_quantized")),
                ..q.clone()
            };
            let mut n = node.clone();
            n.input[0] = q.name.clone();
            n.output[0] = out.name.clone();
            b.nodes.push(n);
            b.quantized.insert(y.clone(), out);
            integer_data_ops += 1;
            continue;
        }
        for input in &node.input {
            b.float(input)?;
        }
        b.float.extend(node.output.iter().cloned());
        b.nodes.push(node.clone());
    }
    for output in &source.output {
        b.float(output.name())?;
    }

    let mut graph = source.clone();
    graph.node = b.nodes;
    let still_read: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(graph.output.iter().map(|o| o.name()))
        .collect();
    let drop: HashSet<String> = replaced
        .into_iter()
        .filter(|r| !still_read.contains(r.as_str()))
        .collect();
    graph.initializer.retain(|t| !drop.contains(t.name()));
    graph.initializer.extend(b.initializers);
    // value_info of tensors that are no longer produced would confuse shape inference.
    let produced: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .collect();
    graph.value_info.retain(|v| produced.contains(v.name()));

    let summary = QopSummary {
        int8_layers,
        float_layers,
        fused_relus: fused.len(),
        quantize_nodes: b.quantize_nodes,
        dequantize_nodes: b.dequantize_nodes,
        integer_data_ops,
        weight_bytes_before: bytes_before,
        weight_bytes_after: bytes_after,
    };
    model.graph = Some(graph);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::proto::check_topology;
    use super::proto::fixtures::tiny_cnn;
    use super::*;

    fn ranges() -> Ranges {
        Ranges::from([
            ("x".into(), (-2.0, 3.0)),
            ("conv_out".into(), (-1.0, 2.0)),
            ("relu_out".into(), (0.0, 2.0)),
            ("flat".into(), (0.0, 2.0)),
        ])
    }

    #[test]
    fn layers_and_range_tensors() {
        let model = tiny_cnn();
        assert_eq!(layers(&model), ["conv", "fc"]);
        assert_eq!(range_tensors(&model), ["x", "conv_out", "relu_out", "flat"]);
        assert_eq!(layer_name("head.weight"), "head");
        assert_eq!(layer_name("w"), "w");
    }

    #[test]
    fn all_int8_structure() {
        let mut model = tiny_cnn();
        let s = quantize_qop(&mut model, &ranges(), true, &HashSet::new()).unwrap();
        check_topology(&model).unwrap();
        assert_eq!(
            proto::op_types(&model),
            [
                "QuantizeLinear",
                "QLinearConv",
                "Reshape",
                "MatMulInteger",
                "Cast",
                "Mul",
                "Add"
            ]
        );
        assert_eq!(s.int8_layers, ["conv", "fc"]);
        assert!(s.float_layers.is_empty());
        assert_eq!(
            (s.fused_relus, s.quantize_nodes, s.dequantize_nodes),
            (1, 1, 0)
        );
        assert_eq!(s.integer_data_ops, 1);
        // The Relu's range (0, 2) sets the conv output: zero point 0, scale 2/255.
        let (_, scale) = proto::initializer_f32(&model, "relu_out_scale").unwrap();
        assert_eq!(scale, [2.0 / 255.0]);
        // Float weights are gone; the interface is unchanged.
        assert!(proto::initializer_f32(&model, "conv.weight").is_none());
        assert!(proto::initializer_f32(&model, "fc.weight").is_none());
        // Integer weights still count as parameters; scales and zero points do not.
        assert_eq!(
            proto::parameter_count(&model),
            proto::parameter_count(&tiny_cnn())
        );
        assert_eq!(
            model.graph.as_ref().unwrap().output,
            tiny_cnn().graph.unwrap().output
        );
        let back = proto::decode(&proto::encode(&model)).unwrap();
        assert_eq!(back, model);
    }

    #[test]
    fn a_layer_kept_float_stays_a_float_node() {
        let mut model = tiny_cnn();
        let keep = HashSet::from(["conv".to_string()]);
        let s = quantize_qop(&mut model, &ranges(), true, &keep).unwrap();
        check_topology(&model).unwrap();
        assert_eq!(s.int8_layers, ["fc"]);
        assert_eq!(s.float_layers, ["conv"]);
        let ops = proto::op_types(&model);
        assert_eq!(
            ops,
            [
                "Conv",
                "Relu",
                "Reshape",
                "QuantizeLinear",
                "MatMulInteger",
                "Cast",
                "Mul",
                "Add"
            ]
        );
        assert!(proto::initializer_f32(&model, "conv.weight").is_some());

        let mut model = tiny_cnn();
        let keep = HashSet::from(["fc".to_string()]);
        let s = quantize_qop(&mut model, &ranges(), false, &keep).unwrap();
        check_topology(&model).unwrap();
        assert_eq!(s.float_layers, ["fc"]);
        // The quantized Reshape output is dequantized under its own name for the float MatMul.
        assert_eq!(
            proto::op_types(&model),
            [
                "QuantizeLinear",
                "QLinearConv",
                "Reshape",
                "DequantizeLinear",
                "MatMul",
                "Add"
            ]
        );
        assert!(proto::initializer_f32(&model, "fc.weight").is_some());
    }

    #[test]
    fn errors_name_what_is_wrong_and_leave_the_model() {
        let mut model = tiny_cnn();
        let before = model.clone();
        let mut r = ranges();
        r.remove("relu_out");
        let e = quantize_qop(&mut model, &r, true, &HashSet::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("relu_out") && e.contains("node_0"), "{e}");
        let e = quantize_qop(&mut model, &ranges(), true, &HashSet::from(["nope".into()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("conv, fc"), "{e}");
        assert_eq!(model, before);
        quantize_qop(&mut model, &ranges(), true, &HashSet::new()).unwrap();
        let e = quantize_qop(&mut model, &ranges(), true, &HashSet::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("already quantized"), "{e}");
    }
}
