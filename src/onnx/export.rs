//! Export a trained [`ConvNet`] to ONNX: traced by burn-onnx from the very module we trained,
//! then edited with the official ONNX protobuf types (names, metadata, optional int8 QDQ).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use burn_onnx::export::{AxisSpec, InputSpec, OnnxExporter};
use serde::Serialize;

use super::fold::fold_batch_norm;
use super::meta;
use super::proto::{self, pb};
use super::qdq::{self, QuantizeOptions, Ranges};
use crate::data::Dataset;
use crate::data::prep::fill_batch;
use crate::infer::Batch;
use crate::infer::tract::TractEngine;
use crate::model::ConvNet;
use crate::train::Checkpoint;

/// Name of the graph input.
pub const INPUT: &str = "input";
/// Name of the logits output.
pub const LOGITS: &str = "logits";
/// Name of the optional embedding output.
pub const EMBEDDING: &str = "embedding";

/// Errors of the export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// burn-onnx could not trace or lower the network.
    #[error("tracing {model} to ONNX failed: {message}")]
    Trace {
        /// Architecture name.
        model: String,
        /// burn-onnx message.
        message: String,
    },
    /// Editing the ModelProto failed.
    #[error(transparent)]
    Proto(#[from] proto::ProtoError),
    /// Calibration for quantization failed.
    #[error("int8 calibration: {0}")]
    Calibration(String),
}

/// How to export.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Fold batch norm into the convolutions (default on).
    pub fold_batch_norm: bool,
    /// Also output the embedding (for retrieval on device).
    pub embedding_output: bool,
}

/// What was exported.
#[derive(Clone, Debug, Serialize)]
pub struct ExportSummary {
    /// Output file.
    pub path: PathBuf,
    /// Bytes written.
    pub bytes: u64,
    /// Parameters held in initializers.
    pub parameters: usize,
    /// ONNX op types, in graph order.
    pub ops: Vec<String>,
    /// Default-domain opset.
    pub opset: i64,
    /// Whether batch norm was folded.
    pub folded: bool,
    /// Present for int8 models.
    pub quantization: Option<qdq::QdqSummary>,
}

/// Traces `net` (eval mode) with a symbolic batch axis and returns the edited ModelProto.
pub fn export_model(
    net: &ConvNet,
    ckpt: &Checkpoint,
    opts: &ExportOptions,
) -> Result<pb::ModelProto, ExportError> {
    let header = &ckpt.header;
    let arch = &header.architecture;
    let device: Device = crate::runtime::cpu();
    let net = net.valid();
    let net = if opts.fold_batch_norm {
        fold_batch_norm(net)
    } else {
        net
    };
    let s = arch.input;
    let sample = Tensor::<4>::zeros([2, s.channels, s.height, s.width], &device);
    let validation = Tensor::<4>::zeros([3, s.channels, s.height, s.width], &device);
    let spec = [InputSpec::new([
        AxisSpec::dynamic("batch"),
        AxisSpec::Static,
        AxisSpec::Static,
        AxisSpec::Static,
    ])];
    let trace_err = |e: burn_onnx::export::ExportError| ExportError::Trace {
        model: arch.spec.name.clone(),
        message: e.to_string(),
    };
    let exporter = OnnxExporter::new();
    let onnx = if opts.embedding_output {
        exporter
            .export_dynamic(&net, sample, validation, &spec, |m: &ConvNet, x| {
                m.forward_with_embedding(x)
            })
            .map_err(trace_err)?
    } else {
        exporter
            .export_dynamic(&net, sample, validation, &spec, |m: &ConvNet, x| {
                m.forward(x)
            })
            .map_err(trace_err)?
    };
    let mut model = proto::decode(onnx.as_bytes())?;
    proto::rename_input(&mut model, 0, INPUT)?;
    proto::rename_output(&mut model, 0, LOGITS)?;
    if opts.embedding_output {
        proto::rename_output(&mut model, 1, EMBEDDING)?;
    }
    proto::set_producer(&mut model, "distill-edge", env!("CARGO_PKG_VERSION"));
    if let Some(graph) = model.graph.as_mut() {
        graph.name = Some(arch.spec.name.clone());
    }
    let entries = [
        (meta::MODEL_NAME, arch.spec.name.clone()),
        (meta::DATASET, header.dataset.clone()),
        (
            meta::INPUT_LAYOUT,
            "NCHW float32, (pixel / 255 - mean) / std per channel".into(),
        ),
        (meta::INPUT_SHAPE, arch.input.to_string()),
        (meta::NORMALIZATION_MEAN, json(&header.normalization.mean)),
        (meta::NORMALIZATION_STD, json(&header.normalization.std)),
        (meta::CLASS_NAMES, json(&header.classes)),
        (meta::ARCHITECTURE, json(arch)),
        (meta::TRAINING_CONFIG_HASH, header.config_hash.clone()),
        (meta::BATCH_NORM_FOLDED, opts.fold_batch_norm.to_string()),
        (meta::DISTILL_EDGE_VERSION, env!("CARGO_PKG_VERSION").into()),
    ];
    let refs: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (*k, v.as_str())).collect();
    proto::set_metadata(&mut model, &refs);
    Ok(model)
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("metadata serialises")
}

/// Measures the (min, max) of every tensor [`qdq::calibration_tensors`] names by running the
/// float model with tract on `images` normalised training images.
pub fn calibrate(
    model: &pb::ModelProto,
    data: &Dataset,
    norm: &crate::data::prep::Normalization,
    images: usize,
) -> Result<Ranges, ExportError> {
    let names = qdq::calibration_tensors(model);
    let mut probe = model.clone();
    proto::expose_outputs(&mut probe, &names)?;
    let engine = TractEngine::from_bytes(&proto::encode(&probe), "<calibration model>")
        .map_err(|e| ExportError::Calibration(e.to_string()))?;
    let outputs = engine.output_names().to_vec();
    let mut ranges: Ranges = Ranges::new();
    let n = images.clamp(1, data.len());
    // Evenly spaced images cover every class of a sorted or shuffled set alike.
    let picks: Vec<usize> = (0..n).map(|i| i * data.len() / n).collect();
    let mut buffer = Vec::new();
    let s = data.shape;
    for chunk in picks.chunks(64) {
        fill_batch(data, chunk, norm, None, &mut buffer);
        let raw = engine
            .run_raw(Batch {
                data: &buffer,
                shape: [chunk.len(), s.channels, s.height, s.width],
            })
            .map_err(|e| ExportError::Calibration(e.to_string()))?;
        for (name, (_, values)) in outputs.iter().zip(raw) {
            if !names.contains(name) {
                continue;
            }
            let (lo, hi) = values
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let e = ranges.entry(name.clone()).or_insert((lo, hi));
            e.0 = e.0.min(lo);
            e.1 = e.1.max(hi);
        }
    }
    // The graph input itself is not a node output: measure it from the data directly.
    if names.iter().any(|n| n == INPUT) {
        let mut all = Vec::new();
        fill_batch(data, &picks, norm, None, &mut all);
        let (lo, hi) = all
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        ranges.insert(INPUT.to_string(), (lo, hi));
    }
    Ok(ranges)
}

/// Quantizes `model` to int8 QDQ after calibration.
pub fn quantize(
    model: &mut pb::ModelProto,
    ranges: &Ranges,
    opts: &QuantizeOptions,
) -> Result<qdq::QdqSummary, ExportError> {
    let summary = qdq::quantize_qdq(model, ranges, opts)?;
    proto::set_metadata(model, &[(meta::QUANTIZATION, "int8 QDQ (post-training)")]);
    Ok(summary)
}

/// Summarises an encoded model written at `path`.
pub fn summarize(
    model: &pb::ModelProto,
    path: &Path,
    bytes: u64,
    folded: bool,
    quantization: Option<qdq::QdqSummary>,
) -> ExportSummary {
    ExportSummary {
        path: path.to_path_buf(),
        bytes,
        parameters: proto::parameter_count(model),
        ops: proto::op_types(model),
        opset: proto::opset(model).unwrap_or(0),
        folded,
        quantization,
    }
}

/// Normalised f32 images `[n, c, h, w]` of the first `n` images of `data` (test helpers,
/// parity checks).
pub fn images_f32(
    data: &Dataset,
    indices: &[usize],
    norm: &crate::data::prep::Normalization,
) -> Vec<f32> {
    let mut out = Vec::new();
    fill_batch(data, indices, norm, None, &mut out);
    out
}

/// burn's own forward pass on normalised images, for parity checks.
pub fn burn_logits(net: &ConvNet, images: &[f32], shape: [usize; 4]) -> (Vec<f32>, Vec<f32>) {
    let device = crate::runtime::cpu();
    let x = Tensor::<4>::from_data(TensorData::new(images.to_vec(), shape), &device);
    let (l, e) = net.valid().forward_with_embedding(x);
    (
        l.into_data().try_into_vec::<f32>().expect("f32"),
        e.into_data().try_into_vec::<f32>().expect("f32"),
    )
}
