//! The metadata keys an exported model carries (`metadata_props` of the ONNX model). Written
//! by [`super::export`]; read back with these names (e.g. by `hostcheck::ModelInfo::read`).

/// The network's preset or spec name.
pub const MODEL_NAME: &str = "model_name";
/// Name of the dataset it was trained on.
pub const DATASET: &str = "dataset";
/// How the input tensor is laid out and normalised, in words.
pub const INPUT_LAYOUT: &str = "input_layout";
/// Input image shape, `CxHxW`.
pub const INPUT_SHAPE: &str = "input_shape";
/// Per-channel normalisation mean (JSON array).
pub const NORMALIZATION_MEAN: &str = "normalization_mean";
/// Per-channel normalisation standard deviation (JSON array).
pub const NORMALIZATION_STD: &str = "normalization_std";
/// Class names, in output order (JSON array).
pub const CLASS_NAMES: &str = "class_names";
/// The bound architecture (JSON), from which MACs are computed.
pub const ARCHITECTURE: &str = "architecture";
/// Hash of the resolved training config.
pub const TRAINING_CONFIG_HASH: &str = "training_config_hash";
/// Whether BatchNormalization was folded into the convolutions (`true`/`false`).
pub const BATCH_NORM_FOLDED: &str = "batch_norm_folded";
/// Version of distill-edge that exported the model.
pub const DISTILL_EDGE_VERSION: &str = "distill_edge_version";
/// Present on int8 models: how they were quantized.
pub const QUANTIZATION: &str = "quantization";
