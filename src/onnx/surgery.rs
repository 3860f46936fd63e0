//! InDistill on a foreign ONNX teacher by graph surgery.
//!
//! For each student block, one teacher tap (see [`super::graph`]): a `Conv` (group 1) ->
//! [`BatchNormalization`] -> activation -> [`MaxPool`/`AveragePool`] chain. A side branch is
//! added per tap: the conv's *unpruned* input tensor -> a copy of the conv restricted to the
//! student's width (the output filters of largest L1 norm, bias kept; the same criterion and
//! tie-breaking as [`crate::prune::l1_keep`]) -> the BN restricted to the same channels (scale,
//! shift, mean, var) -> the same activation (a per-channel PRelu slope restricted too) -> the
//! same pooling -> an extra graph output named [`tap_output`]`(k)`. Its output has exactly the
//! student block's shape: the curriculum target of block k, as `prune::PrunedTeacher` gives it
//! for a burn teacher. The original graph is left as it is.
//!
//! A tap that cannot be pruned this way is refused with one line naming the block, the conv,
//! the reason (a residual Add or another consumer between conv and activation, a grouped conv,
//! a shape that differs from the student's, naming both) and the taps that would work.

use super::graph::{ConvInfo, GraphInfo, propose_taps};
use super::proto::{self, pb};
use crate::model::Architecture;

/// The name of the extra graph output holding block `k`'s pruned tap.
pub fn tap_output(k: usize) -> String {
    format!("indistill_tap_{k}")
}

/// One side branch added to the graph.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PrunedTap {
    /// Student block.
    pub block: usize,
    /// The tap's conv node.
    pub conv: String,
    /// The unpruned tap tensor the branch mirrors.
    pub tap: String,
    /// The graph output holding the pruned branch's output.
    pub output: String,
    /// `[c, h, w]` of that output (the student block's shape).
    pub shape: [usize; 3],
    /// Kept output filters of the conv (ascending).
    pub kept: Vec<usize>,
}

/// Why the taps could not be added.
#[derive(Debug, thiserror::Error)]
pub enum SurgeryError {
    /// A requested or proposed tap cannot serve a student block.
    #[error("{0}")]
    Refused(String),
    /// The graph is not what its analysis said (a weight that is not a constant tensor, …).
    #[error("{0}")]
    Invalid(String),
}

fn shape_text(s: [i64; 3]) -> String {
    format!("{}x{}x{}", s[0], s[1], s[2])
}

/// The usable taps, each with its shape, for an error message.
fn usable(info: &GraphInfo) -> String {
    let list: Vec<String> = info
        .convs
        .iter()
        .filter_map(|c| {
            let t = c.tap.as_ref()?;
            Some(format!(
                "{} -> {t} ({})",
                c.node,
                c.tap_shape.map_or("?".into(), shape_text)
            ))
        })
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// The convs of `info` whose taps fit student block `k` (same spatial size, enough channels).
fn fitting(info: &GraphInfo, student: &Architecture, k: usize) -> String {
    let s = student.block_shapes[k];
    let list: Vec<String> = info
        .convs
        .iter()
        .filter(|c| {
            c.tap.is_some()
                && c.tap_shape.is_some_and(|[ch, h, w]| {
                    h == s.height as i64 && w == s.width as i64 && ch >= s.channels as i64
                })
        })
        .map(|c| c.node.clone())
        .collect();
    if list.is_empty() {
        format!("none (usable taps: {})", usable(info))
    } else {
        list.join(", ")
    }
}

/// Chooses the conv of each student block: `requested` names them (conv node names or tap
/// tensor names, one per block), else [`propose_taps`] does. Every refusal is one line.
pub fn choose_taps<'a>(
    info: &'a GraphInfo,
    student: &Architecture,
    requested: Option<&[String]>,
) -> Result<Vec<&'a ConvInfo>, SurgeryError> {
    let n = student.block_shapes.len();
    let Some(requested) = requested else {
        let proposals = propose_taps(info, student);
        return proposals
            .iter()
            .map(|p| match (&p.conv, &p.problem) {
                (Some(conv), _) => Ok(info
                    .convs
                    .iter()
                    .find(|c| &c.node == conv)
                    .expect("proposed from these convs")),
                (None, problem) => Err(SurgeryError::Refused(format!(
                    "block {}: {}",
                    p.block,
                    problem.as_deref().unwrap_or("no tap")
                ))),
            })
            .collect();
    };
    if requested.len() != n {
        return Err(SurgeryError::Refused(format!(
            "taps: {} given, the student has {n} blocks (one conv or tap tensor per block); usable taps: {}",
            requested.len(),
            usable(info)
        )));
    }
    let mut out = Vec::with_capacity(n);
    for (k, name) in requested.iter().enumerate() {
        let conv = info
            .convs
            .iter()
            .find(|c| &c.node == name || c.tap.as_ref() == Some(name))
            .ok_or_else(|| {
                SurgeryError::Refused(format!(
                    "block {k}: taps[{k}] = {name:?} is neither a Conv node nor a tap tensor of the graph; taps that would work: {}",
                    fitting(info, student, k)
                ))
            })?;
        if let Some(why) = &conv.refused {
            return Err(SurgeryError::Refused(format!(
                "block {k}: conv '{}' cannot be a tap: {why}; taps that would work: {}",
                conv.node,
                fitting(info, student, k)
            )));
        }
        let s = student.block_shapes[k];
        let want = [s.channels as i64, s.height as i64, s.width as i64];
        match conv.tap_shape {
            Some([c, h, w]) if h == want[1] && w == want[2] && c >= want[0] => {}
            got => {
                return Err(SurgeryError::Refused(format!(
                    "block {k}: tap '{}' of conv '{}' has shape {}, the student's block {k} has {} (same height and width, at least as many channels); taps that would work: {}",
                    conv.tap.as_deref().unwrap_or(""),
                    conv.node,
                    got.map_or("unknown".into(), shape_text),
                    shape_text(want),
                    fitting(info, student, k)
                )));
            }
        }
        if let Some(prev) = out.last().map(|c: &&ConvInfo| c.index)
            && conv.index <= prev
        {
            return Err(SurgeryError::Refused(format!(
                "block {k}: conv '{}' comes before block {}'s tap in the graph (taps follow the blocks' order); taps that would work: {}",
                conv.node,
                k - 1,
                fitting(info, student, k)
            )));
        }
        out.push(conv);
    }
    Ok(out)
}

/// A constant float tensor of the graph: an initializer or a `Constant` node's value.
fn constant(graph: &pb::GraphProto, name: &str) -> Option<(Vec<i64>, Vec<f32>)> {
    if let Some(t) = graph.initializer.iter().find(|t| t.name() == name) {
        return proto::tensor_f32(t);
    }
    graph
        .node
        .iter()
        .find(|n| n.op_type() == "Constant" && n.output.first().is_some_and(|o| o == name))
        .and_then(|n| n.attribute.iter().find(|a| a.name() == "value"))
        .and_then(|a| a.t.as_ref())
        .and_then(proto::tensor_f32)
}

/// The rows `keep` of a tensor whose first axis has `rows` entries.
fn rows(dims: &[i64], values: &[f32], keep: &[usize]) -> (Vec<i64>, Vec<f32>) {
    let n = dims.first().copied().unwrap_or(1).max(1) as usize;
    let per = values.len() / n;
    let mut out = Vec::with_capacity(keep.len() * per);
    for &k in keep {
        out.extend_from_slice(&values[k * per..(k + 1) * per]);
    }
    let mut d = dims.to_vec();
    if let Some(first) = d.first_mut() {
        *first = keep.len() as i64;
    }
    (d, out)
}

/// Adds the pruned side branch of every student block to `model` (analysed as `info`, for the
/// teacher's input size) and returns what was added. `requested` names the taps, one per
/// block; without it they are proposed.
pub fn add_pruned_taps(
    model: &mut pb::ModelProto,
    info: &GraphInfo,
    student: &Architecture,
    requested: Option<&[String]>,
) -> Result<Vec<PrunedTap>, SurgeryError> {
    let chosen: Vec<ConvInfo> = choose_taps(info, student, requested)?
        .into_iter()
        .cloned()
        .collect();
    let invalid = |m: String| SurgeryError::Invalid(m);
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| invalid("the model has no graph".into()))?;
    let mut added_nodes = Vec::new();
    let mut added_inits = Vec::new();
    let mut taps = Vec::new();
    for (k, conv) in chosen.iter().enumerate() {
        let tap = conv.tap.clone().expect("chosen taps have a tensor");
        let width = student.block_shapes[k].channels;
        let prefix = format!("indistill.b{k}");
        // The chain conv -> … -> tap, each node the single consumer of the previous output
        // (checked by the analysis).
        let mut chain = vec![conv.index];
        while graph.node[*chain.last().expect("non-empty")]
            .output
            .first()
            .is_some_and(|o| *o != tap)
        {
            let out = graph.node[*chain.last().expect("non-empty")].output[0].clone();
            let next = graph
                .node
                .iter()
                .position(|n| n.input.contains(&out))
                .ok_or_else(|| invalid(format!("tap '{tap}': nothing reads {out:?}")))?;
            chain.push(next);
            if chain.len() > 4 {
                return Err(invalid(format!(
                    "tap '{tap}': the chain from conv '{}' is longer than conv, BN, activation, pool",
                    conv.node
                )));
            }
        }
        let conv_node = &graph.node[conv.index];
        let weight_name = conv_node.input.get(1).cloned().unwrap_or_default();
        let (wdims, wvals) = constant(graph, &weight_name).ok_or_else(|| {
            invalid(format!(
                "conv '{}': its weight {weight_name:?} is not a constant float tensor",
                conv.node
            ))
        })?;
        let out_ch = wdims.first().copied().unwrap_or(0) as usize;
        if out_ch < width {
            return Err(SurgeryError::Refused(format!(
                "block {k}: conv '{}' has {out_ch} filters, the student's block has {width} channels",
                conv.node
            )));
        }
        let kept = crate::prune::l1_keep(&wvals, out_ch, width);
        let mut input = conv_node.input[0].clone();
        for (step, &idx) in chain.iter().enumerate() {
            let node = &graph.node[idx];
            let mut copy = node.clone();
            copy.name = Some(format!("{prefix}.{step}.{}", node.op_type()));
            copy.input[0] = input.clone();
            // Per-channel parameters: restricted to the kept filters.
            let per_channel: Vec<usize> = match node.op_type() {
                "Conv" => (1..node.input.len()).collect(),
                "BatchNormalization" => (1..node.input.len()).collect(),
                "PRelu" => vec![1],
                _ => vec![],
            };
            for i in per_channel {
                let name = &node.input[i];
                if name.is_empty() {
                    continue;
                }
                let (dims, values) = constant(graph, name).ok_or_else(|| {
                    invalid(format!(
                        "{} '{}': input {name:?} is not a constant float tensor",
                        node.op_type(),
                        node.name()
                    ))
                })?;
                let first = dims.first().copied().unwrap_or(1);
                if first as usize != out_ch {
                    // A PRelu slope shared by all channels stays as it is.
                    if node.op_type() == "PRelu" && values.len() == 1 {
                        continue;
                    }
                    return Err(invalid(format!(
                        "{} '{}': {name:?} has shape {dims:?}, expected {out_ch} channels first",
                        node.op_type(),
                        node.name()
                    )));
                }
                let (d, v) = rows(&dims, &values, &kept);
                let new_name = format!("{prefix}.{step}.in{i}");
                added_inits.push(proto::make_tensor_f32(&new_name, &d, &v));
                copy.input[i] = new_name;
            }
            // Only the first output (BN's training outputs are not used).
            let output = if idx == *chain.last().expect("non-empty") {
                tap_output(k)
            } else {
                format!("{prefix}.{step}.out")
            };
            copy.output = vec![output.clone()];
            added_nodes.push(copy);
            input = output;
        }
        let [_, h, w] = conv.tap_shape.expect("chosen taps have a shape");
        taps.push(PrunedTap {
            block: k,
            conv: conv.node.clone(),
            tap,
            output: tap_output(k),
            shape: [width, h as usize, w as usize],
            kept,
        });
    }
    graph.node.extend(added_nodes);
    graph.initializer.extend(added_inits);
    let names: Vec<String> = taps.iter().map(|t| t.output.clone()).collect();
    proto::expose_outputs(model, &names).map_err(|e| invalid(e.to_string()))?;
    Ok(taps)
}
