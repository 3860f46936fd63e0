//! Export a trained [`ConvNet`] to ONNX: traced by burn-onnx from the very module we trained,
//! then edited with the official ONNX protobuf types (names, metadata); int8 in `int8`.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use burn_onnx::export::{AxisSpec, InputSpec, OnnxExporter};
use serde::Serialize;

use super::fold::fold_batch_norm;
use super::meta;
use super::proto::{self, pb};
use crate::data::Dataset;
use crate::data::prep::fill_batch;
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

/// The metadata value of [`meta::QUANTIZATION`] for an int8 model in `form`.
pub fn quantization_label(form: crate::config::quant::Int8Form) -> &'static str {
    match form {
        crate::config::quant::Int8Form::Qoperator => "int8 QOperator (post-training)",
        crate::config::quant::Int8Form::Qdq => "int8 QDQ (post-training)",
    }
}

/// Summarises an encoded model written at `path`.
pub fn summarize(model: &pb::ModelProto, path: &Path, bytes: u64, folded: bool) -> ExportSummary {
    ExportSummary {
        path: path.to_path_buf(),
        bytes,
        parameters: proto::parameter_count(model),
        ops: proto::op_types(model),
        opset: proto::opset(model).unwrap_or(0),
        folded,
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
