//! Post-training int8 (above `onnx/`, which writes the graphs, and `infer/`, which runs them):
//! which training images calibrate and which validate, activation statistics measured with tract,
//! ranges by the configured method, the quantized graph ([`crate::onnx::qop`] or
//! [`crate::onnx::qdq`]) and, with a `max-accuracy-drop`, the layer-by-layer search that keeps in
//! float the layers that push the top-1 drop over the budget.
//!
//! Only the training split is ever read here: the test split stays for the final evaluation.
//! The calibration and validation images are two disjoint sets of training indices, recorded
//! in the report.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::config::quant::Int8Form;
use crate::data::Dataset;
use crate::data::prep::{Normalization, fill_batch};
use crate::eval::classification::argmax_rows;
use crate::infer::Batch;
use crate::infer::tract::TractEngine;
use crate::onnx::calib::{self, Calibration, RangeChoice};
use crate::onnx::export::{ExportError, INPUT};
use crate::onnx::proto::{self, pb};
use crate::onnx::qdq::{self, QuantizeOptions, Ranges};
use crate::onnx::qop::{self, QopSummary};

/// Values kept per tensor for the percentile and MSE methods (the exact min and max are
/// always kept too).
const MAX_SAMPLES: usize = 4 << 20;
/// Images per tract run.
const CHUNK: usize = 128;

/// The training images used: calibration and held-out validation, disjoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalibrationPlan {
    /// Always `"train"`: the split both index lists point into.
    pub split: String,
    /// Indices into the training split the activation ranges are measured on.
    pub calibration: Vec<usize>,
    /// Indices into the training split the top-1 drop is measured on.
    pub validation: Vec<usize>,
}

/// `n` evenly spaced picks out of `from` (all of it when `n >= from.len()`): they cover every
/// class of a sorted or shuffled set alike.
fn spread(from: &[usize], n: usize) -> Vec<usize> {
    let n = n.min(from.len());
    (0..n).map(|i| from[i * from.len() / n]).collect()
}

/// Chooses `calibration` and `validation` images of a training split of `train_len` images:
/// evenly spaced, disjoint. An empty training split is an error.
pub fn plan(
    train_len: usize,
    calibration: usize,
    validation: usize,
) -> Result<CalibrationPlan, ExportError> {
    if train_len == 0 {
        return Err(ExportError::Calibration(
            "the calibration shard is empty: the training split holds no image".into(),
        ));
    }
    let all: Vec<usize> = (0..train_len).collect();
    let cal = spread(&all, calibration.max(1));
    let taken: HashSet<usize> = cal.iter().copied().collect();
    let rest: Vec<usize> = all.into_iter().filter(|i| !taken.contains(i)).collect();
    Ok(CalibrationPlan {
        split: "train".into(),
        calibration: cal,
        validation: spread(&rest, validation),
    })
}

/// Calibration values of some tensors.
pub struct Samples {
    values: HashMap<String, Vec<f32>>,
}

fn min_max(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        })
}

/// Runs the float `model` with tract on the `indices` images of `train` and keeps the values
/// of `tensors` (the graph input is read from the data). Images that are all one constant are
/// an error: ranges measured on them say nothing about real inputs.
pub fn collect(
    model: &pb::ModelProto,
    tensors: &[String],
    train: &Dataset,
    indices: &[usize],
    norm: &Normalization,
) -> Result<Samples, ExportError> {
    if indices.is_empty() {
        return Err(ExportError::Calibration(
            "the calibration shard is empty (0 images)".into(),
        ));
    }
    if let Some(&bad) = indices.iter().find(|&&i| i >= train.len()) {
        return Err(ExportError::Calibration(format!(
            "calibration index {bad} is outside {} ({} images)",
            train.name,
            train.len()
        )));
    }
    let image = train.shape.len();
    let first = train.images[indices[0] * image];
    if indices.iter().all(|&i| {
        train.images[i * image..(i + 1) * image]
            .iter()
            .all(|&p| p == first)
    }) {
        return Err(ExportError::Calibration(format!(
            "the calibration shard ({} images of {}) is constant (every pixel is {first}): \
             its activation ranges would say nothing about real inputs",
            indices.len(),
            train.name
        )));
    }
    let mut probe = model.clone();
    proto::expose_outputs(&mut probe, tensors)?;
    let engine = TractEngine::from_bytes(&proto::encode(&probe), "<calibration model>")
        .map_err(|e| ExportError::Calibration(e.to_string()))?;
    let outputs = engine.output_names().to_vec();
    let mut values: HashMap<String, Vec<f32>> = HashMap::new();
    let mut extremes: HashMap<String, (f32, f32)> = HashMap::new();
    let mut keep = |name: &str, v: &[f32], per_image: usize| {
        let (lo, hi) = min_max(v);
        let e = extremes
            .entry(name.to_string())
            .or_insert((f32::INFINITY, f32::NEG_INFINITY));
        *e = (e.0.min(lo), e.1.max(hi));
        let stride = (per_image * indices.len()).div_ceil(MAX_SAMPLES).max(1);
        values
            .entry(name.to_string())
            .or_default()
            .extend(v.iter().step_by(stride));
    };
    let s = train.shape;
    let mut buffer = Vec::new();
    for chunk in indices.chunks(CHUNK) {
        fill_batch(train, chunk, norm, None, &mut buffer);
        if tensors.iter().any(|t| t == INPUT) {
            keep(INPUT, &buffer, image);
        }
        let raw = engine
            .run_raw(Batch {
                data: &buffer,
                shape: [chunk.len(), s.channels, s.height, s.width],
            })
            .map_err(|e| ExportError::Calibration(e.to_string()))?;
        for (name, (_, v)) in outputs.iter().zip(raw) {
            if tensors.contains(name) {
                keep(name, &v, v.len() / chunk.len().max(1));
            }
        }
    }
    // The exact extremes, whatever the subsampling dropped.
    for (name, (lo, hi)) in extremes {
        let v = values.entry(name).or_default();
        v.push(lo);
        v.push(hi);
    }
    Ok(Samples { values })
}

impl Samples {
    /// The range of every tensor under `method`.
    pub fn ranges(
        &self,
        method: &Calibration,
    ) -> Result<(Ranges, Vec<(String, RangeChoice)>), ExportError> {
        let mut ranges = Ranges::new();
        let mut choices = Vec::new();
        let mut names: Vec<&String> = self.values.keys().collect();
        names.sort();
        for name in names {
            let c = calib::range(name, &self.values[name], method)
                .map_err(|e| ExportError::Calibration(e.to_string()))?;
            ranges.insert(name.clone(), c.chosen);
            choices.push((name.clone(), c));
        }
        Ok((ranges, choices))
    }
}

/// Top-1 accuracy of an encoded model with tract on the `indices` images of `data`.
pub fn top1(
    bytes: &[u8],
    data: &Dataset,
    indices: &[usize],
    norm: &Normalization,
) -> Result<f64, ExportError> {
    let engine = TractEngine::from_bytes(bytes, "<int8 candidate>")
        .map_err(|e| ExportError::Calibration(e.to_string()))?;
    let s = data.shape;
    let mut buffer = Vec::new();
    let mut correct = 0usize;
    for chunk in indices.chunks(CHUNK) {
        fill_batch(data, chunk, norm, None, &mut buffer);
        let raw = engine
            .run_raw(Batch {
                data: &buffer,
                shape: [chunk.len(), s.channels, s.height, s.width],
            })
            .map_err(|e| ExportError::Calibration(e.to_string()))?;
        let logits = &raw[0].1;
        let classes = logits.len() / chunk.len();
        for (pred, &i) in argmax_rows(logits, classes).into_iter().zip(chunk) {
            correct += usize::from(pred == usize::from(data.labels[i]));
        }
    }
    Ok(correct as f64 / indices.len().max(1) as f64)
}

/// What to build.
#[derive(Clone, Debug)]
pub struct Int8Request {
    /// Graph form.
    pub form: Int8Form,
    /// Range method.
    pub calibration: Calibration,
    /// One weight scale per output channel.
    pub per_channel_weights: bool,
    /// Calibration images (training split).
    pub calibration_images: usize,
    /// Held-out validation images (training split).
    pub validation_images: usize,
    /// Top-1 budget in points for the layer-by-layer search (qoperator only).
    pub max_accuracy_drop: Option<f64>,
    /// Layers kept in float whatever the search finds (qoperator only), e.g. a first
    /// convolution with one input channel, whose int8 kernel is slower than the float one.
    pub float_layers: Vec<String>,
}

/// One candidate measured by the search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchStep {
    /// What was tried.
    pub step: String,
    /// Layers in float in this candidate.
    pub float_layers: Vec<String>,
    /// Top-1 of the candidate on the validation images.
    pub accuracy: f64,
    /// fp32 top-1 minus this, in points.
    pub drop_points: f64,
}

/// The int8 report (`int8.json` beside the models).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Int8Report {
    /// `int8` when an int8 model ships, `fp32 only` when none met the budget.
    pub shipped: String,
    /// Why only fp32 ships.
    pub reason: Option<String>,
    /// `qoperator` or `qdq`.
    pub form: String,
    /// Range method.
    pub calibration: Calibration,
    /// Weight scales per output channel.
    pub per_channel_weights: bool,
    /// The training images used.
    pub images: CalibrationPlan,
    /// fp32 top-1 on the validation images.
    pub fp32_accuracy: f64,
    /// Top-1 of the shipped int8 model on the validation images (absent with fp32 only).
    pub int8_accuracy: Option<f64>,
    /// Its drop in points.
    pub drop_points: Option<f64>,
    /// The budget.
    pub max_accuracy_drop: Option<f64>,
    /// Layers in integer arithmetic in the shipped model.
    pub int8_layers: Vec<String>,
    /// Layers kept in float in the shipped model (all of them with fp32 only).
    pub float_layers: Vec<String>,
    /// Drop in points with only that layer int8, per layer (searched runs only).
    pub layer_drops: Vec<(String, f64)>,
    /// Every candidate measured, in order.
    pub steps: Vec<SearchStep>,
    /// Operator-form details of the shipped model.
    pub qoperator: Option<QopSummary>,
    /// QDQ details of the shipped model.
    pub qdq: Option<qdq::QdqSummary>,
    /// Chosen activation ranges.
    pub ranges: Vec<(String, RangeChoice)>,
}

fn points(fp32: f64, int8: f64) -> f64 {
    (fp32 - int8) * 100.0
}

/// Quantizes the float `model` as `req` says, calibrating and validating on `train` only.
/// Returns the int8 model (None when nothing met the budget: ship fp32 only) and the report.
pub fn quantize(
    model: &pb::ModelProto,
    train: &Dataset,
    norm: &Normalization,
    req: &Int8Request,
    mut progress: impl FnMut(&str),
) -> Result<(Option<pb::ModelProto>, Int8Report), ExportError> {
    let images = plan(train.len(), req.calibration_images, req.validation_images)?;
    let tensors = match req.form {
        Int8Form::Qoperator => qop::range_tensors(model),
        Int8Form::Qdq => qdq::calibration_tensors(model),
    };
    progress(&format!(
        "calibrating {} tensors on {} training images ({:?})",
        tensors.len(),
        images.calibration.len(),
        req.calibration
    ));
    let samples = collect(model, &tensors, train, &images.calibration, norm)?;
    let (ranges, choices) = samples.ranges(&req.calibration)?;
    let validate = !images.validation.is_empty();
    let fp32_accuracy = if validate {
        top1(&proto::encode(model), train, &images.validation, norm)?
    } else {
        0.0
    };
    let mut report = Int8Report {
        shipped: "int8".into(),
        reason: None,
        form: req.form.name().into(),
        calibration: req.calibration,
        per_channel_weights: req.per_channel_weights,
        images,
        fp32_accuracy,
        int8_accuracy: None,
        drop_points: None,
        max_accuracy_drop: req.max_accuracy_drop,
        int8_layers: Vec::new(),
        float_layers: Vec::new(),
        layer_drops: Vec::new(),
        steps: Vec::new(),
        qoperator: None,
        qdq: None,
        ranges: choices,
    };
    let validation = report.images.validation.clone();
    let eval = |m: &pb::ModelProto| -> Result<f64, ExportError> {
        if validation.is_empty() {
            Ok(0.0)
        } else {
            top1(&proto::encode(m), train, &validation, norm)
        }
    };
    if req.form == Int8Form::Qdq && !req.float_layers.is_empty() {
        return Err(ExportError::Calibration(
            "layers kept in float need the qoperator form".into(),
        ));
    }
    if req.form == Int8Form::Qdq {
        let mut q = model.clone();
        let s = qdq::quantize_qdq(
            &mut q,
            &ranges,
            &QuantizeOptions {
                per_channel_weights: req.per_channel_weights,
                activations_signed: false,
            },
        )?;
        let acc = eval(&q)?;
        report.int8_layers = qop::layers(model);
        report.int8_accuracy = Some(acc);
        report.drop_points = Some(points(fp32_accuracy, acc));
        report.qdq = Some(s);
        return Ok((Some(q), report));
    }

    let all = qop::layers(model);
    let build = |keep: &HashSet<String>| -> Result<(pb::ModelProto, QopSummary), ExportError> {
        let mut q = model.clone();
        let s = qop::quantize_qop(&mut q, &ranges, req.per_channel_weights, keep)?;
        Ok((q, s))
    };
    let forced: HashSet<String> = req.float_layers.iter().cloned().collect();
    let (mut best, mut summary) = build(&forced)?;
    let mut acc = eval(&best)?;
    report.steps.push(SearchStep {
        step: if forced.is_empty() {
            "every layer int8".into()
        } else {
            "every layer int8 but the configured float layers".into()
        },
        float_layers: summary.float_layers.clone(),
        accuracy: acc,
        drop_points: points(fp32_accuracy, acc),
    });
    let within = |acc: f64| {
        req.max_accuracy_drop
            .is_none_or(|budget| points(fp32_accuracy, acc) <= budget + 1e-9)
    };
    if !within(acc) {
        if validation.is_empty() {
            return Err(ExportError::Calibration(
                "no training image is left for validation after calibration: lower \
                 calibration-images or drop max-accuracy-drop"
                    .into(),
            ));
        }
        // Sensitivity: the drop with only that layer int8.
        for layer in all.iter().filter(|l| !forced.contains(*l)) {
            progress(&format!(
                "measuring the drop of layer {layer} alone in int8"
            ));
            let keep: HashSet<String> = all.iter().filter(|l| *l != layer).cloned().collect();
            let (q, _) = build(&keep)?;
            let a = eval(&q)?;
            report
                .layer_drops
                .push((layer.clone(), points(fp32_accuracy, a)));
            report.steps.push(SearchStep {
                step: format!("only {layer} int8"),
                float_layers: all.iter().filter(|l| *l != layer).cloned().collect(),
                accuracy: a,
                drop_points: points(fp32_accuracy, a),
            });
        }
        let mut order = report.layer_drops.clone();
        // Most harmful first; ties in graph order (stable sort).
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut keep = forced.clone();
        let mut met = false;
        for (layer, _) in order {
            keep.insert(layer.clone());
            if keep.len() == all.len() {
                break;
            }
            let (q, s) = build(&keep)?;
            let a = eval(&q)?;
            report.steps.push(SearchStep {
                step: format!("+ {layer} float"),
                float_layers: s.float_layers.clone(),
                accuracy: a,
                drop_points: points(fp32_accuracy, a),
            });
            if within(a) {
                (best, summary, acc, met) = (q, s, a, true);
                break;
            }
        }
        if !met {
            let budget = req.max_accuracy_drop.unwrap_or_default();
            report.shipped = "fp32 only".into();
            report.reason = Some(format!(
                "no set of int8 layers keeps the top-1 drop within max-accuracy-drop = {budget} \
                 points on {} held-out training images (every layer int8: {:.2} points)",
                validation.len(),
                report.steps[0].drop_points
            ));
            report.float_layers = all;
            return Ok((None, report));
        }
    }
    report.int8_accuracy = Some(acc);
    report.drop_points = Some(points(fp32_accuracy, acc));
    report.int8_layers = summary.int8_layers.clone();
    report.float_layers = summary.float_layers.clone();
    report.qoperator = Some(summary);
    Ok((Some(best), report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_disjoint_inside_train_and_spread() {
        let p = plan(100, 10, 20).unwrap();
        assert_eq!(p.split, "train");
        assert_eq!(p.calibration, (0..10).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(p.validation.len(), 20);
        let cal: HashSet<_> = p.calibration.iter().collect();
        assert!(p.validation.iter().all(|i| *i < 100 && !cal.contains(i)));
        // Everything to calibration: nothing left to validate.
        let p = plan(5, 10, 20).unwrap();
        assert_eq!(p.calibration, [0, 1, 2, 3, 4]);
        assert!(p.validation.is_empty());
        let e = plan(0, 10, 20).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
