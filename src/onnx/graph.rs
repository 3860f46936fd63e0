//! Static analysis of an ONNX graph (any producer, e.g. `torch.onnx.export`), for
//! `distill-edge inspect`: inputs and outputs, the ops tract cannot run (all of them), every
//! convolution with its output shape and whether it can be an InDistill tap, parameters and
//! MACs, and the proposed tap for each block of a student.
//!
//! Shapes are propagated here from the input shape, for batch 1, through the ops image
//! classifiers are made of (Conv, BatchNormalization, activations, pooling, element-wise
//! arithmetic with broadcasting, Flatten, Reshape by a constant, Gemm, MatMul, Concat);
//! the outputs of any other op have an unknown shape, and what depends on them is reported
//! as unknown rather than guessed. Nothing here needs tract to load the graph, so a graph
//! with unsupported ops is still described.
//!
//! **A tap** is the output of a block that InDistill can prune: a `Conv` with `group = 1`,
//! then optionally a `BatchNormalization`, then an activation, then optionally a `MaxPool`
//! or `AveragePool`, where the conv's (and the BN's) output has no consumer but the next node
//! of the chain. The tap tensor is the chain's last output. A conv is refused as a tap with
//! the reason: grouped (depthwise) conv, a residual `Add` (or any other second consumer)
//! reading the conv output before the activation, or no activation.

use std::collections::HashMap;

use serde::Serialize;

use super::proto::pb;
use crate::data::ImageShape;
use crate::model::Architecture;

/// Errors of the analysis.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The model has no graph or no image input.
    #[error("{0}")]
    Invalid(String),
}

/// A graph input or output.
#[derive(Clone, Debug, Serialize)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Declared shape: sizes, symbolic names, `?` when unknown.
    pub declared: Vec<String>,
    /// Shape for batch 1 as propagated (`None` when unknown).
    pub shape: Option<Vec<i64>>,
}

/// An op type tract has no implementation for.
#[derive(Clone, Debug, Serialize)]
pub struct UnsupportedOp {
    /// Op type (with its domain when not the default one).
    pub op: String,
    /// Nodes of that type.
    pub count: usize,
    /// Name (or first output) of the first such node.
    pub first_node: String,
}

/// One convolution.
#[derive(Clone, Debug, Serialize)]
pub struct ConvInfo {
    /// Node name (or its output's name when unnamed).
    pub node: String,
    /// Position among the graph's nodes.
    pub index: usize,
    /// `group` attribute.
    pub groups: i64,
    /// Weight shape `[out, in / groups, kh, kw]`.
    pub weight: Vec<i64>,
    /// Output `[c, h, w]` for batch 1, when known.
    pub output_shape: Option<[i64; 3]>,
    /// The tap tensor (end of the conv's block) when it can be an InDistill tap.
    pub tap: Option<String>,
    /// Shape of the tap tensor `[c, h, w]`, when known.
    pub tap_shape: Option<[i64; 3]>,
    /// Why it cannot be a tap (when `tap` is `None`).
    pub refused: Option<String>,
}

/// The proposed tap for one student block.
#[derive(Clone, Debug, Serialize)]
pub struct TapProposal {
    /// Student block index.
    pub block: usize,
    /// The student block's output shape.
    pub student_shape: ImageShape,
    /// Conv node whose block gives the tap.
    pub conv: Option<String>,
    /// The tap tensor.
    pub tap: Option<String>,
    /// Its shape `[c, h, w]` (channels are pruned to the student's).
    pub tap_shape: Option<[i64; 3]>,
    /// Why there is none.
    pub problem: Option<String>,
}

/// What `inspect` reports.
#[derive(Clone, Debug, Serialize)]
pub struct GraphInfo {
    /// Graph inputs (initializers excluded).
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs.
    pub outputs: Vec<TensorInfo>,
    /// Default-domain opset.
    pub opset: Option<i64>,
    /// Node count.
    pub nodes: usize,
    /// Every op type tract cannot run.
    pub unsupported: Vec<UnsupportedOp>,
    /// Every Conv node, in graph order.
    pub convs: Vec<ConvInfo>,
    /// Parameters held in initializers.
    pub parameters: usize,
    /// Multiply-accumulates of Conv, Gemm and MatMul nodes with known shapes, batch 1.
    pub macs: u64,
    /// Conv/Gemm/MatMul nodes whose MACs are unknown (shape not propagated).
    pub macs_unknown_nodes: usize,
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

fn attr_i(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).and_then(|a| a.i).unwrap_or(default)
}

fn attr_ints(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn node_label(node: &pb::NodeProto) -> String {
    match node.name() {
        "" => node.output.first().cloned().unwrap_or_default(),
        n => n.to_string(),
    }
}

fn declared(vi: &pb::ValueInfoProto) -> Vec<String> {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::type_proto::Value::TensorType(t)) =
        vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return vec![];
    };
    t.shape.as_ref().map_or_else(Vec::new, |s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(Value::DimValue(v)) => v.to_string(),
                Some(Value::DimParam(p)) => p.clone(),
                None => "?".into(),
            })
            .collect()
    })
}

/// Output size of a conv or pool along one axis.
fn window_out(
    size: i64,
    k: i64,
    stride: i64,
    pad_begin: i64,
    pad_end: i64,
    dilation: i64,
    ceil: bool,
) -> i64 {
    let eff = dilation * (k - 1) + 1;
    let span = size + pad_begin + pad_end - eff;
    if span < 0 {
        return 0;
    }
    let q = if ceil {
        (span + stride - 1) / stride
    } else {
        span / stride
    };
    q + 1
}

/// Spatial output of a Conv / MaxPool / AveragePool node on `[n, c, h, w]`.
fn window_node(node: &pb::NodeProto, x: &[i64], kernel: [i64; 2]) -> Option<[i64; 2]> {
    let (h, w) = (*x.get(2)?, *x.get(3)?);
    let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
    let dil = attr_ints(node, "dilations").unwrap_or_else(|| vec![1, 1]);
    let ceil = attr_i(node, "ceil_mode", 0) == 1;
    let auto_pad = attr(node, "auto_pad")
        .and_then(|a| a.s.as_ref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default();
    if auto_pad.starts_with("SAME") {
        return Some([
            (h + strides[0] - 1) / strides[0],
            (w + strides[1] - 1) / strides[1],
        ]);
    }
    let pads = if auto_pad == "VALID" {
        vec![0; 4]
    } else {
        attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4])
    };
    if pads.len() != 4 || strides.len() != 2 || dil.len() != 2 {
        return None;
    }
    Some([
        window_out(h, kernel[0], strides[0], pads[0], pads[2], dil[0], ceil),
        window_out(w, kernel[1], strides[1], pads[1], pads[3], dil[1], ceil),
    ])
}

/// Numpy broadcasting of two shapes.
fn broadcast(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let x = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let y = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

const ACTIVATIONS: &[&str] = &[
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Elu",
    "Selu",
    "PRelu",
    "Softplus",
    "Mish",
    "Gelu",
];

/// Ops besides [`ACTIVATIONS`] whose output has their first input's shape.
const SHAPE_PRESERVING: &[&str] = &[
    "BatchNormalization",
    "Identity",
    "Dropout",
    "Softmax",
    "LogSoftmax",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Sqrt",
    "Erf",
    "Cast",
    "LRN",
];

/// The values of an int64 tensor (from `int64_data` or little-endian `raw_data`).
fn int64_values(t: &pb::TensorProto) -> Option<Vec<i64>> {
    if !t.int64_data.is_empty() {
        return Some(t.int64_data.clone());
    }
    if t.data_type() != pb::tensor_proto::DataType::Int64 as i32 {
        return None;
    }
    t.raw_data.as_ref().map(|raw| {
        raw.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    })
}

/// Propagates shapes (batch 1) from `input` through the graph.
fn propagate(
    graph: &pb::GraphProto,
    input_name: &str,
    input: [i64; 3],
) -> HashMap<String, Vec<i64>> {
    let mut shapes: HashMap<String, Vec<i64>> = HashMap::new();
    let mut consts: HashMap<String, Vec<i64>> = HashMap::new();
    for t in &graph.initializer {
        shapes.insert(t.name().to_string(), t.dims.clone());
        if let Some(v) = int64_values(t) {
            consts.insert(t.name().to_string(), v);
        }
    }
    shapes.insert(
        input_name.to_string(),
        vec![1, input[0], input[1], input[2]],
    );
    for node in &graph.node {
        let get = |i: usize| -> Option<&Vec<i64>> { node.input.get(i).and_then(|n| shapes.get(n)) };
        let out: Option<Vec<i64>> = match node.op_type() {
            "Constant" => {
                if let Some(t) = attr(node, "value").and_then(|a| a.t.as_ref()) {
                    if let (Some(o), Some(v)) = (node.output.first(), int64_values(t)) {
                        consts.insert(o.clone(), v);
                    }
                    Some(t.dims.clone())
                } else {
                    None
                }
            }
            "Conv" => (|| {
                let x = get(0)?;
                let wt = get(1)?;
                let [kh, kw] = [*wt.get(2)?, *wt.get(3)?];
                let [h, w] = window_node(node, x, [kh, kw])?;
                Some(vec![x[0], wt[0], h, w])
            })(),
            "MaxPool" | "AveragePool" => (|| {
                let x = get(0)?;
                let k = attr_ints(node, "kernel_shape")?;
                let [h, w] = window_node(node, x, [*k.first()?, *k.get(1)?])?;
                Some(vec![x[0], x[1], h, w])
            })(),
            "GlobalAveragePool" | "GlobalMaxPool" => get(0).map(|x| {
                let mut s = x.clone();
                for d in s.iter_mut().skip(2) {
                    *d = 1;
                }
                s
            }),
            op if ACTIVATIONS.contains(&op) || SHAPE_PRESERVING.contains(&op) => get(0).cloned(),
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" => (|| {
                let mut s = get(0)?.clone();
                for i in 1..node.input.len() {
                    s = broadcast(&s, get(i)?)?;
                }
                Some(s)
            })(),
            "Flatten" => get(0).and_then(|x| {
                let axis = attr_i(node, "axis", 1);
                let axis = if axis < 0 {
                    axis + x.len() as i64
                } else {
                    axis
                } as usize;
                (axis <= x.len())
                    .then(|| vec![x[..axis].iter().product(), x[axis..].iter().product()])
            }),
            "Reshape" => (|| {
                let x = get(0)?;
                let target = consts.get(node.input.get(1)?)?;
                let total: i64 = x.iter().product();
                let mut out: Vec<i64> = target
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| {
                        if d == 0 {
                            x.get(i).copied().unwrap_or(0)
                        } else {
                            d
                        }
                    })
                    .collect();
                if let Some(p) = out.iter().position(|&d| d == -1) {
                    let known: i64 = out.iter().filter(|&&d| d != -1).product();
                    out[p] = if known == 0 { 0 } else { total / known };
                }
                Some(out)
            })(),
            "Gemm" => (|| {
                let a = get(0)?;
                let b = get(1)?;
                let m = if attr_i(node, "transA", 0) == 1 {
                    a[1]
                } else {
                    a[0]
                };
                let n = if attr_i(node, "transB", 0) == 1 {
                    b[0]
                } else {
                    b[1]
                };
                Some(vec![m, n])
            })(),
            "MatMul" => (|| {
                let a = get(0)?;
                let b = get(1)?;
                if a.len() < 2 || b.len() != 2 {
                    return None;
                }
                let mut s = a.clone();
                *s.last_mut()? = b[1];
                Some(s)
            })(),
            // Integer shape arithmetic (as exporters write for a flatten with a dynamic
            // batch): folded to constants so that a later Reshape has a known shape.
            "Shape" | "Gather" | "Unsqueeze" | "Squeeze"
                if fold_int(node, &shapes, &mut consts).is_some() =>
            {
                node.output
                    .first()
                    .and_then(|o| consts.get(o))
                    .map(|v| vec![v.len() as i64])
            }
            "Concat" if fold_int(node, &shapes, &mut consts).is_some() => node
                .output
                .first()
                .and_then(|o| consts.get(o))
                .map(|v| vec![v.len() as i64]),
            "Concat" => (|| {
                let first = get(0)?.clone();
                let axis = attr_i(node, "axis", 0);
                let axis = if axis < 0 {
                    axis + first.len() as i64
                } else {
                    axis
                } as usize;
                let mut s = first;
                for i in 1..node.input.len() {
                    *s.get_mut(axis)? += get(i)?.get(axis)?;
                }
                Some(s)
            })(),
            _ => None,
        };
        if let (Some(o), Some(shape)) = (node.output.first(), out) {
            shapes.insert(o.clone(), shape);
        }
    }
    shapes
}

/// Folds an integer Shape / Gather (axis 0) / Unsqueeze / Squeeze / Concat (axis 0) whose
/// inputs are known into `consts`; `None` when they are not.
fn fold_int(
    node: &pb::NodeProto,
    shapes: &HashMap<String, Vec<i64>>,
    consts: &mut HashMap<String, Vec<i64>>,
) -> Option<()> {
    let input = |i: usize| node.input.get(i).and_then(|n| consts.get(n));
    let value = match node.op_type() {
        "Shape" => shapes.get(node.input.first()?)?.clone(),
        "Gather" if attr_i(node, "axis", 0) == 0 => {
            let data = input(0)?;
            input(1)?
                .iter()
                .map(|&i| {
                    let i = if i < 0 { i + data.len() as i64 } else { i };
                    data.get(usize::try_from(i).ok()?).copied()
                })
                .collect::<Option<Vec<i64>>>()?
        }
        "Unsqueeze" | "Squeeze" => input(0)?.clone(),
        "Concat" if attr_i(node, "axis", 0) == 0 => {
            let mut v = Vec::new();
            for i in 0..node.input.len() {
                v.extend(input(i)?);
            }
            v
        }
        _ => return None,
    };
    consts.insert(node.output.first()?.clone(), value);
    Some(())
}

fn chw(shape: Option<&Vec<i64>>) -> Option<[i64; 3]> {
    match shape?.as_slice() {
        [_, c, h, w] => Some([*c, *h, *w]),
        _ => None,
    }
}

/// Analyses `model`; `input` (`[c, h, w]`) overrides the graph input's declared height and
/// width (its channels must match a fixed declared channel count).
pub fn analyse(model: &pb::ModelProto, input: Option<[usize; 3]>) -> Result<GraphInfo, GraphError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| GraphError::Invalid("the model has no graph".into()))?;
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name()).collect();
    let real_inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !inits.contains(i.name()))
        .collect();
    let first = real_inputs
        .first()
        .ok_or_else(|| GraphError::Invalid("the graph has no input".into()))?;
    let decl = declared(first);
    let input_chw = match input {
        Some([c, h, w]) => {
            let given = [c as i64, h as i64, w as i64];
            // The channels must be the graph's; a fixed height and width may be overridden
            // (a fully convolutional graph runs at any size; the propagation shows the rest).
            if let Some(d) = decl.get(1).and_then(|d| d.parse::<i64>().ok())
                && d != given[0]
            {
                return Err(GraphError::Invalid(format!(
                    "--input {c}x{h}x{w} does not fit input '{}' of shape [{}]: it has {d} channels",
                    first.name(),
                    decl.join(", ")
                )));
            }
            given
        }
        None => {
            let fixed: Vec<Option<i64>> = decl.iter().map(|d| d.parse().ok()).collect();
            match fixed[..] {
                [_, Some(c), Some(h), Some(w)] => [c, h, w],
                _ => {
                    return Err(GraphError::Invalid(format!(
                        "input '{}' has shape [{}]: give the image size with --input CxHxW",
                        first.name(),
                        decl.join(", ")
                    )));
                }
            }
        }
    };
    let shapes = propagate(graph, first.name(), input_chw);
    let info = |vi: &pb::ValueInfoProto| TensorInfo {
        name: vi.name().to_string(),
        declared: declared(vi),
        shape: shapes.get(vi.name()).cloned(),
    };

    // Ops tract cannot run: every type at once, counted.
    let register = tract_onnx::onnx().op_register;
    let mut unsupported: Vec<UnsupportedOp> = Vec::new();
    for node in &graph.node {
        let op = node.op_type();
        let domain = node.domain();
        if matches!(domain, "" | "ai.onnx") && register.0.contains_key(op) {
            continue;
        }
        let name = if matches!(domain, "" | "ai.onnx") {
            op.to_string()
        } else {
            format!("{domain}.{op}")
        };
        match unsupported.iter_mut().find(|u| u.op == name) {
            Some(u) => u.count += 1,
            None => unsupported.push(UnsupportedOp {
                op: name,
                count: 1,
                first_node: node_label(node),
            }),
        }
    }

    // Consumers of every tensor (graph outputs count as one).
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for x in n.input.iter().filter(|x| !x.is_empty()) {
            consumers.entry(x.as_str()).or_default().push(i);
        }
    }
    let outputs: std::collections::HashSet<&str> = graph.output.iter().map(|o| o.name()).collect();

    let mut convs = Vec::new();
    let mut macs = 0u64;
    let mut unknown = 0usize;
    for (index, node) in graph.node.iter().enumerate() {
        let out_shape = node.output.first().and_then(|o| shapes.get(o));
        match node.op_type() {
            "Conv" => {
                let weight = node
                    .input
                    .get(1)
                    .and_then(|w| shapes.get(w))
                    .cloned()
                    .unwrap_or_default();
                let groups = attr_i(node, "group", 1);
                match (out_shape, weight.as_slice()) {
                    (Some(o), [_, cin_g, kh, kw]) => {
                        macs += (o.iter().product::<i64>() * cin_g * kh * kw) as u64;
                    }
                    _ => unknown += 1,
                }
                let (tap, refused) = tap_of(graph, index, groups, &consumers, &outputs);
                let tap_shape = tap.as_ref().and_then(|t| chw(shapes.get(t)));
                convs.push(ConvInfo {
                    node: node_label(node),
                    index,
                    groups,
                    weight,
                    output_shape: chw(out_shape),
                    tap,
                    tap_shape,
                    refused,
                });
            }
            "Gemm" | "MatMul" => {
                let a = node.input.first().and_then(|x| shapes.get(x));
                match (a, out_shape) {
                    (Some(a), Some(o)) if !a.is_empty() => {
                        let k = if node.op_type() == "Gemm" && attr_i(node, "transA", 0) == 1 {
                            a[0]
                        } else {
                            *a.last().expect("not empty")
                        };
                        macs += (o.iter().product::<i64>() * k) as u64;
                    }
                    _ => unknown += 1,
                }
            }
            _ => {}
        }
    }
    Ok(GraphInfo {
        inputs: real_inputs.iter().map(|i| info(i)).collect(),
        outputs: graph.output.iter().map(info).collect(),
        opset: super::proto::opset(model),
        nodes: graph.node.len(),
        unsupported,
        convs,
        parameters: super::proto::parameter_count(model),
        macs,
        macs_unknown_nodes: unknown,
    })
}

/// The tap of the conv at `index`: (tap tensor, None) or (None, reason).
fn tap_of(
    graph: &pb::GraphProto,
    index: usize,
    groups: i64,
    consumers: &HashMap<&str, Vec<usize>>,
    outputs: &std::collections::HashSet<&str>,
) -> (Option<String>, Option<String>) {
    let refuse = |m: String| (None, Some(m));
    if groups != 1 {
        return refuse(format!(
            "grouped conv (group = {groups}): its filters cannot be pruned one by one"
        ));
    }
    let describe = |ids: &[usize]| {
        ids.iter()
            .map(|&i| {
                format!(
                    "{} '{}'",
                    graph.node[i].op_type(),
                    node_label(&graph.node[i])
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The one consumer of `tensor`, or the reason there is not exactly one.
    let single = |tensor: &str, what: &str| -> Result<usize, String> {
        let ids = consumers.get(tensor).cloned().unwrap_or_default();
        if outputs.contains(tensor) {
            return Err(format!("the {what} output is a graph output"));
        }
        match ids.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!("the {what} output has no consumer")),
            many => {
                if let Some(&add) = many.iter().find(|&&i| graph.node[i].op_type() == "Add") {
                    Err(format!(
                        "a residual Add ('{}') reads the {what} output before the activation",
                        node_label(&graph.node[add])
                    ))
                } else {
                    Err(format!(
                        "the {what} output has {} consumers ({}): a pruned branch cannot stand for them",
                        many.len(),
                        describe(many)
                    ))
                }
            }
        }
    };
    let conv = &graph.node[index];
    let Some(mut tensor) = conv.output.first().cloned() else {
        return refuse("the conv has no output".into());
    };
    let mut next = match single(&tensor, "conv") {
        Ok(n) => n,
        Err(m) => return refuse(m),
    };
    if graph.node[next].op_type() == "BatchNormalization" {
        tensor = graph.node[next].output.first().cloned().unwrap_or_default();
        next = match single(&tensor, "batch norm") {
            Ok(n) => n,
            Err(m) => return refuse(m),
        };
    }
    let act = &graph.node[next];
    if !ACTIVATIONS.contains(&act.op_type()) {
        return refuse(if act.op_type() == "Add" {
            format!(
                "a residual Add ('{}') follows the conv before any activation",
                node_label(act)
            )
        } else {
            format!(
                "no activation after the conv (next: {} '{}')",
                act.op_type(),
                node_label(act)
            )
        });
    }
    tensor = act.output.first().cloned().unwrap_or_default();
    if let Some(ids) = consumers.get(tensor.as_str())
        && let [one] = ids.as_slice()
        && matches!(graph.node[*one].op_type(), "MaxPool" | "AveragePool")
        && !outputs.contains(tensor.as_str())
    {
        tensor = graph.node[*one].output.first().cloned().unwrap_or_default();
    }
    (Some(tensor), None)
}

/// For each block of `student`, the tap whose shape matches it: spatial size equal, at
/// least the student's channels, deeper than the previous block's tap. Among the fitting
/// taps the deepest is chosen that still leaves taps for the later blocks.
pub fn propose_taps(info: &GraphInfo, student: &Architecture) -> Vec<TapProposal> {
    let taps: Vec<&ConvInfo> = info
        .convs
        .iter()
        .filter(|c| c.tap.is_some() && c.tap_shape.is_some())
        .collect();
    let fits = |k: usize, t: &ConvInfo| {
        let s = student.block_shapes[k];
        let [c, h, w] = t.tap_shape.expect("filtered");
        h == s.height as i64 && w == s.width as i64 && c >= s.channels as i64
    };
    let n = student.block_shapes.len();
    // feasible[k][j]: blocks k.. can be matched using taps j.. (in order).
    let m = taps.len();
    let mut feasible = vec![vec![false; m + 1]; n + 1];
    feasible[n].fill(true);
    for k in (0..n).rev() {
        for j in (0..m).rev() {
            feasible[k][j] = feasible[k][j + 1] || (fits(k, taps[j]) && feasible[k + 1][j + 1]);
        }
    }
    let mut out = Vec::with_capacity(n);
    let mut from = 0usize;
    let mut broken = false;
    for k in 0..n {
        let s = student.block_shapes[k];
        let choice = (!broken)
            .then(|| {
                (from..m)
                    .rev()
                    .find(|&j| fits(k, taps[j]) && feasible[k + 1][j + 1] && feasible[k][j])
            })
            .flatten()
            // When the later blocks cannot all be matched, still propose what fits here.
            .or_else(|| (from..m).rev().find(|&j| fits(k, taps[j])));
        match choice {
            Some(j) => {
                let t = taps[j];
                out.push(TapProposal {
                    block: k,
                    student_shape: s,
                    conv: Some(t.node.clone()),
                    tap: t.tap.clone(),
                    tap_shape: t.tap_shape,
                    problem: None,
                });
                from = j + 1;
            }
            None => {
                broken = true;
                let same_size: Vec<String> = info
                    .convs
                    .iter()
                    .filter(|c| {
                        c.output_shape
                            .is_some_and(|[_, h, w]| h == s.height as i64 && w == s.width as i64)
                            || c.tap_shape.is_some_and(|[_, h, w]| {
                                h == s.height as i64 && w == s.width as i64
                            })
                    })
                    .map(|c| match (&c.tap, &c.refused) {
                        (Some(t), _) => format!(
                            "{} -> {} ({})",
                            c.node,
                            t,
                            c.tap_shape
                                .map_or("?".into(), |[c, h, w]| format!("{c}x{h}x{w}"))
                        ),
                        (None, Some(r)) => format!("{} refused: {r}", c.node),
                        (None, None) => c.node.clone(),
                    })
                    .collect();
                let usable: Vec<String> = taps
                    .iter()
                    .map(|t| {
                        let [c, h, w] = t.tap_shape.expect("filtered");
                        format!("{} ({c}x{h}x{w})", t.tap.as_deref().unwrap_or(""))
                    })
                    .collect();
                out.push(TapProposal {
                    block: k,
                    student_shape: s,
                    conv: None,
                    tap: None,
                    tap_shape: None,
                    problem: Some(format!(
                        "no tap of spatial size {}x{} with at least {} channels after the previous block's; convs at {}x{}: [{}]; usable taps: [{}]",
                        s.height,
                        s.width,
                        s.channels,
                        s.height,
                        s.width,
                        same_size.join("; "),
                        usable.join(", ")
                    )),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{
        self, Dim, make_attr_int, make_attr_ints, make_node, make_tensor_f32,
    };
    use pb::tensor_proto::DataType;

    /// A graph builder over the prost types.
    struct G {
        nodes: Vec<pb::NodeProto>,
        inits: Vec<pb::TensorProto>,
    }

    impl G {
        fn new() -> Self {
            Self {
                nodes: vec![],
                inits: vec![],
            }
        }
        #[allow(clippy::too_many_arguments)]
        fn conv(
            &mut self,
            name: &str,
            x: &str,
            cin: i64,
            cout: i64,
            k: i64,
            stride: i64,
            group: i64,
        ) -> String {
            let w = format!("{name}.w");
            let per = cin / group;
            self.inits.push(make_tensor_f32(
                &w,
                &[cout, per, k, k],
                &vec![0.1; (cout * per * k * k) as usize],
            ));
            let out = format!("{name}.out");
            self.nodes.push(make_node(
                "Conv",
                &[x, &w],
                &[&out],
                name,
                vec![
                    make_attr_ints("kernel_shape", &[k, k]),
                    make_attr_ints("strides", &[stride, stride]),
                    make_attr_ints("pads", &[k / 2; 4]),
                    make_attr_int("group", group),
                ],
            ));
            out
        }
        fn op(
            &mut self,
            op: &str,
            name: &str,
            inputs: &[&str],
            attrs: Vec<pb::AttributeProto>,
        ) -> String {
            let out = format!("{name}.out");
            self.nodes.push(make_node(op, inputs, &[&out], name, attrs));
            out
        }
        fn bn(&mut self, name: &str, x: &str, c: i64) -> String {
            let names: Vec<String> = ["s", "b", "m", "v"]
                .iter()
                .map(|p| format!("{name}.{p}"))
                .collect();
            for n in &names {
                self.inits
                    .push(make_tensor_f32(n, &[c], &vec![1.0; c as usize]));
            }
            let refs: Vec<&str> = std::iter::once(x)
                .chain(names.iter().map(String::as_str))
                .collect();
            self.op("BatchNormalization", name, &refs, vec![])
        }
        fn model(self, out: &str, classes: i64) -> pb::ModelProto {
            pb::ModelProto {
                ir_version: Some(8),
                opset_import: vec![pb::OperatorSetIdProto {
                    domain: Some(String::new()),
                    version: Some(17),
                }],
                graph: Some(pb::GraphProto {
                    name: Some("g".into()),
                    node: self.nodes,
                    initializer: self.inits,
                    input: vec![proto::make_value_info(
                        "x",
                        DataType::Float,
                        &[
                            Dim::Symbolic("batch".into()),
                            Dim::Fixed(3),
                            Dim::Fixed(32),
                            Dim::Fixed(32),
                        ],
                    )],
                    output: vec![proto::make_value_info(
                        out,
                        DataType::Float,
                        &[Dim::Symbolic("batch".into()), Dim::Fixed(classes)],
                    )],
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
    }

    /// A ResNet-style graph: stem conv-BN-ReLU-MaxPool, one residual block (conv-BN-ReLU,
    /// conv-BN, Add with the block input, ReLU), a strided conv-BN-ReLU, a depthwise conv,
    /// an unsupported op, global pool, flatten, Gemm.
    fn resnet_like() -> pb::ModelProto {
        let mut g = G::new();
        let c = g.conv("stem", "x", 3, 16, 3, 1, 1);
        let b = g.bn("stem_bn", &c, 16);
        let r = g.op("Relu", "stem_relu", &[&b], vec![]);
        let p = g.op(
            "MaxPool",
            "pool",
            &[&r],
            vec![
                make_attr_ints("kernel_shape", &[2, 2]),
                make_attr_ints("strides", &[2, 2]),
            ],
        );
        let c1 = g.conv("res_a", &p, 16, 16, 3, 1, 1);
        let b1 = g.bn("res_a_bn", &c1, 16);
        let r1 = g.op("Relu", "res_a_relu", &[&b1], vec![]);
        let c2 = g.conv("res_b", &r1, 16, 16, 3, 1, 1);
        let b2 = g.bn("res_b_bn", &c2, 16);
        let add = g.op("Add", "res_add", &[&b2, &p], vec![]);
        let r2 = g.op("Relu", "res_relu", &[&add], vec![]);
        let c3 = g.conv("down", &r2, 16, 32, 3, 2, 1);
        let r3 = g.op("Relu", "down_relu", &[&c3], vec![]);
        let dw = g.conv("dw", &r3, 32, 32, 3, 1, 32);
        let r4 = g.op("Relu", "dw_relu", &[&dw], vec![]);
        let odd = g.op("MysteryOp", "mystery", &[&r4], vec![]);
        let odd2 = g.op("MysteryOp", "mystery2", &[&odd], vec![]);
        let gap = g.op("GlobalAveragePool", "gap", &[&r4], vec![]);
        let _ = odd2;
        let f = g.op("Flatten", "flat", &[&gap], vec![]);
        g.inits
            .push(make_tensor_f32("fc.w", &[32, 10], &[0.0; 320]));
        let fc = g.op("MatMul", "fc", &[&f, "fc.w"], vec![]);
        g.model(&fc, 10)
    }

    #[test]
    fn shapes_taps_unsupported_ops_and_macs() {
        let info = analyse(&resnet_like(), None).unwrap();
        assert_eq!(info.inputs[0].shape, Some(vec![1, 3, 32, 32]));
        assert_eq!(info.outputs[0].shape, Some(vec![1, 10]));
        assert_eq!(info.unsupported.len(), 1, "{:?}", info.unsupported);
        assert_eq!(info.unsupported[0].op, "MysteryOp");
        assert_eq!(info.unsupported[0].count, 2);
        let by = |n: &str| info.convs.iter().find(|c| c.node == n).unwrap();
        assert_eq!(by("stem").output_shape, Some([16, 32, 32]));
        assert_eq!(by("stem").tap.as_deref(), Some("pool.out"));
        assert_eq!(by("stem").tap_shape, Some([16, 16, 16]));
        assert_eq!(by("res_a").tap.as_deref(), Some("res_a_relu.out"));
        let r = by("res_b").refused.clone().unwrap();
        assert!(r.contains("residual Add ('res_add')"), "{r}");
        assert_eq!(by("down").output_shape, Some([32, 8, 8]));
        assert_eq!(by("down").tap_shape, Some([32, 8, 8]));
        let r = by("dw").refused.clone().unwrap();
        assert!(r.contains("grouped conv (group = 32)"), "{r}");
        // MACs: 16*32*32*27 + 2 * 16*16*16*144 + 32*8*8*144 + 32*8*8*9 + 32*10.
        let want = 16 * 32 * 32 * 27 + 2 * 16 * 16 * 16 * 144 + 32 * 64 * 144 + 32 * 64 * 9 + 320;
        assert_eq!(info.macs, want as u64);
        assert_eq!(info.macs_unknown_nodes, 0);
        assert_eq!(
            info.parameters,
            16 * 27 + 4 * 16 + 2 * (16 * 144 + 4 * 16) + 32 * 144 + 32 * 9 + 320
        );
    }

    #[test]
    fn a_conv_read_by_two_nodes_is_refused_with_both_named() {
        let mut g = G::new();
        let c = g.conv("c", "x", 3, 8, 3, 1, 1);
        let r = g.op("Relu", "r", &[&c], vec![]);
        let s = g.op("Sigmoid", "s", &[&c], vec![]);
        let m = g.op("Mul", "m", &[&r, &s], vec![]);
        let gap = g.op("GlobalAveragePool", "gap", &[&m], vec![]);
        let info = analyse(&g.model(&gap, 8), Some([3, 20, 20])).unwrap();
        let refused = info.convs[0].refused.clone().unwrap();
        assert!(
            refused.contains("2 consumers")
                && refused.contains("Relu 'r'")
                && refused.contains("Sigmoid 's'"),
            "{refused}"
        );
        assert_eq!(info.convs[0].output_shape, Some([8, 20, 20]));
    }

    #[test]
    fn taps_are_proposed_per_student_block_or_the_reason_given() {
        use crate::model::ModelSpec;
        let info = analyse(&resnet_like(), None).unwrap();
        let student = ModelSpec::from_toml(
            "name='s'\nfc=[8]\n[[blocks]]\nwidth=8\npadding=1\n[[blocks]]\nwidth=8\npadding=1\npool=1\n[[blocks]]\nwidth=16\npadding=1\n",
            std::path::Path::new("s.toml"),
        )
        .unwrap()
        .bind(ImageShape::new(3, 32, 32), 10)
        .unwrap();
        // Student taps: 8x16x16, 8x16x16, 16x8x8.
        let p = propose_taps(&info, &student);
        assert_eq!(p[0].tap.as_deref(), Some("pool.out"));
        assert_eq!(p[1].tap.as_deref(), Some("res_a_relu.out"));
        assert_eq!(p[2].tap.as_deref(), Some("down_relu.out"));
        // A fourth block at 8x8 finds nothing after 'down': the dw conv is refused.
        let student = ModelSpec::from_toml(
            "name='s'\nfc=[8]\n[[blocks]]\nwidth=8\npadding=1\n[[blocks]]\nwidth=16\npadding=1\n[[blocks]]\nwidth=16\npadding=1\npool=1\n",
            std::path::Path::new("s.toml"),
        )
        .unwrap()
        .bind(ImageShape::new(3, 32, 32), 10)
        .unwrap();
        let p = propose_taps(&info, &student);
        assert!(p[0].tap.is_some() && p[1].tap.is_some());
        let problem = p[2].problem.clone().unwrap();
        assert!(problem.contains("no tap of spatial size 8x8"), "{problem}");
        assert!(problem.contains("dw refused: grouped conv"), "{problem}");
    }

    #[test]
    fn a_symbolic_image_size_needs_input() {
        let mut m = resnet_like();
        let g = m.graph.as_mut().unwrap();
        g.input[0] = proto::make_value_info(
            "x",
            DataType::Float,
            &[
                Dim::Symbolic("batch".into()),
                Dim::Fixed(3),
                Dim::Symbolic("h".into()),
                Dim::Symbolic("w".into()),
            ],
        );
        let e = analyse(&m, None).unwrap_err().to_string();
        assert!(e.contains("--input CxHxW"), "{e}");
        let info = analyse(&m, Some([3, 64, 64])).unwrap();
        assert_eq!(info.convs[0].output_shape, Some([16, 64, 64]));
        let e = analyse(&resnet_like(), Some([1, 32, 32]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--input 1x32x32 does not fit input 'x'"), "{e}");
    }
}
