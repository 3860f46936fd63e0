//! Command-line types (clap derive). Doc comments here are the `--help` text.
//!
//! Domain enums do not derive clap traits: the values a flag accepts are CLI-only mirror
//! enums here ([`MethodArg`], [`OptimizeArg`]) converted with `From`.

use std::path::PathBuf;

use clap::builder::{EnumValueParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::board::Optimize;
use crate::config::distill::Method;
use crate::config::quant::{CalibrationKind, Int8Form};

/// Train a teacher, distill a compact student and prove it on the target board.
#[derive(Debug, Parser)]
#[command(
    name = "distill-edge",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = crate::exit::HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Print one JSON document on stdout instead of the human summary.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing on stderr but errors (no progress bars, no status lines).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More on the terminal (`build`: every stage's log lines, not only its status).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// CPU threads for training and inference (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train one network with cross-entropy (a teacher, or a student baseline).
    ///
    /// Writes `checkpoint.ckpt` after every epoch (weights, optimizer state, metrics) and
    /// `model.ckpt` at the end into the output directory (default `runs/<name>/train`).
    /// Without `--config`, trains cnn32-small on generated data in about a minute.
    Train(TrainArgs),
    /// Distill a student from a trained teacher (InDistill, PKT, Hinton KD, or none).
    ///
    /// InDistill prunes the teacher (same depth as the student, e.g. the cnn32 auxiliary) to
    /// the student's widths by L1 norm, trains the student's blocks one at a time, shallow to
    /// deep, to match the pruned teacher's outputs (MSE), then runs the main phase (PKT on
    /// the embedding, Hinton KD on the logits, cross-entropy, as weighted in the config).
    Distill(DistillArgs),
    /// Run several distillation methods with the same seeds and print one comparison table
    /// (accuracy, retrieval mAP, precision@100, params, MACs, wall time; mean ± std).
    Compare(CompareArgs),
    /// Evaluate a trained model: top-1 accuracy, confusion matrix and retrieval metrics.
    ///
    /// Retrieval uses the embedding (the last hidden layer): database = train split,
    /// queries = test split, mAP with 11-point interpolated precision and precision of the
    /// top-100, for cosine and L2 distance.
    Eval(EvalArgs),
    /// Export a trained model to ONNX (BN folded, named input/outputs, metadata; int8 with
    /// `--quantize int8`: operator form by default, QDQ with `--int8-form qdq`).
    ///
    /// The graph is traced from the trained burn module with a symbolic batch axis. Input
    /// `input` [N, C, H, W] (normalised as the metadata says), outputs `logits` and, with
    /// `--embedding`, `embedding`.
    Export(ExportArgs),
    /// Validate an ONNX model on the host: top-1 per engine, output parity with burn and
    /// between engines, latency at batch 1 and 32, size, parameters, MACs.
    ///
    /// Exits with 3 when parity fails or the accuracy drop exceeds `--max-accuracy-drop`.
    Check(CheckArgs),
    /// Describe any ONNX model (e.g. a teacher exported from PyTorch): inputs and outputs,
    /// every op tract cannot run, every Conv with its output shape and whether it can be an
    /// InDistill tap (and why not), parameters, MACs, and with `--student` the proposed tap
    /// for each student block.
    Inspect(InspectArgs),
    /// Build everything from data to a validated bundle, like `cargo build`: train the teacher,
    /// the auxiliary and the student (InDistill), export, check on the host, cross-compile
    /// the runner, bundle and validate on the device, then write the report.
    ///
    /// Only stages whose inputs changed run (each stage is fingerprinted by its config section
    /// and its inputs); a killed build resumes; `--from STAGE` forces a rerun. Artifacts go to
    /// `runs/<name>/<stage>/`, the report to `runs/<name>/report.html`.
    ///
    /// With `--model M.onnx` it only cross-compiles the runner and writes the bundle
    /// (`dist/<target>/`: runner, models, test shard, host reference outputs, manifest with
    /// the SHA-256 of every file).
    Build(BuildArgs),
    /// Run a bundle on a device (qemu here by default, `local`, or `ssh://user@host:port`)
    /// and compare it with the host: same top-1 on the shard, outputs within tolerance,
    /// latency against the target's budget.
    Bench(BenchArgs),
    /// Inspect datasets, or write one as an image folder.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
}

/// Where the data comes from, overriding the config file's `[data]` section.
#[derive(Debug, Args, Clone, Default)]
pub struct DataArgs {
    /// Dataset kind: fashion-mnist, mnist, cifar10, cifar100, folder or synthetic.
    #[arg(long, value_name = "KIND")]
    pub data: Option<String>,
    /// Dataset directory (IDX files, CIFAR binary batches, or a folder with train/ and test/).
    #[arg(long, value_name = "DIR")]
    pub data_path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training config (TOML). Command-line options override its values.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Model preset (cnn32, cnn32-small, cnn32-large, mobilenet96, mobilenet96-large) or
    /// path to a model TOML.
    #[arg(long, value_name = "NAME|FILE")]
    pub model: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Learning-rate schedule as EPOCHS:LR stages, e.g. `60:1e-3,10:1e-4`.
    #[arg(long, value_name = "E:LR,...")]
    pub schedule: Option<String>,
    /// Mini-batch size.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Where to train and evaluate (default: the config's `backend`, else cpu).
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub backend: Option<BackendArg>,
    /// Train data-parallel on the backend's first N devices (default: the config's `devices`,
    /// else 1). On cpu, N replicas share the cores: the arithmetic of N GPUs, not a speed-up.
    #[arg(long, value_name = "N")]
    pub devices: Option<usize>,
    /// Seed for weights, shuffling and augmentation.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Run name (default output directory runs/<name>/train).
    #[arg(long)]
    pub name: Option<String>,
    /// Output directory.
    #[arg(long, short, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run from its last complete epoch.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Start over even if the output directory holds an earlier run (its files are replaced).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A model file (`model.ckpt`, `checkpoint.ckpt`) or the directory holding it.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Config whose `[data]` section to use (default: the `config.toml` saved beside the model).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Precision is measured over the top K retrieved images.
    #[arg(long, default_value_t = 100, value_name = "K")]
    pub top_k: usize,
    /// Skip the retrieval metrics (they compare every test image with every train image).
    #[arg(long)]
    pub no_retrieval: bool,
    /// Batch size of the forward passes.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub batch_size: usize,
    /// Write the JSON report to this file as well.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Load a dataset (validating every file) and describe it: sizes, image shape, classes,
    /// class balance and pixel statistics.
    Info(DataInfoArgs),
    /// Write a dataset as an image folder (`OUT/train/<class>/*.png`, `OUT/test/...`) of
    /// square images, e.g. Fashion-MNIST as colourised 96x96 RGB for the mobilenet96 student.
    /// The folder is created whole or not at all; an existing one is refused.
    Make(DataMakeArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The ONNX model.
    #[arg(value_name = "MODEL.onnx")]
    pub model: PathBuf,
    /// Image input as CxHxW, e.g. `3x96x96`: needed when the graph's height or width is
    /// symbolic; overrides a fixed one (the channels must match the graph's).
    #[arg(long, value_name = "CxHxW", value_parser = parse_chw)]
    pub input: Option<[usize; 3]>,
    /// Student model (preset or TOML): propose a teacher tap for each of its blocks.
    #[arg(long, value_name = "NAME|FILE")]
    pub student: Option<String>,
}

/// `3x96x96` -> `[3, 96, 96]`.
fn parse_chw(s: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = s.split('x').collect();
    let bad = || format!("'{s}': expected CxHxW with sizes > 0, e.g. 3x96x96");
    let [c, h, w] = parts[..] else {
        return Err(bad());
    };
    let v: Vec<usize> = [c, h, w]
        .iter()
        .map(|p| p.trim().parse::<usize>().ok().filter(|&n| n > 0))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    Ok([v[0], v[1], v[2]])
}

#[derive(Debug, Args)]
pub struct DataMakeArgs {
    /// The folder to create (must not exist).
    #[arg(value_name = "OUT")]
    pub out: PathBuf,
    /// Config whose `[data]` section is the source.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Side of the written square images, pixels (every image is resized to it).
    #[arg(long, default_value_t = 96, value_name = "PIXELS")]
    pub size: usize,
    /// Channels of the written images: 1 (gray) or 3 (RGB).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub channels: usize,
    /// Training images to write, balanced over the classes (default: all).
    #[arg(long, value_name = "N")]
    pub train: Option<usize>,
    /// Test images to write, balanced over the classes (default: all).
    #[arg(long, value_name = "N")]
    pub test: Option<usize>,
    /// Keep a gray source gray in every channel instead of tinting each image with its own
    /// random colour (colour then carries no class information).
    #[arg(long)]
    pub no_colour: bool,
    /// Seed of the colours.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct DataInfoArgs {
    /// Config whose `[data]` section to load.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Weight quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuantizeMode {
    /// int8 post-training quantization (form: `--int8-form`).
    Int8,
}

/// `--int8-form` values: the CLI mirror of [`Int8Form`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Int8FormArg {
    /// Integer operators (QLinearConv, MatMulInteger): integer kernels in tract and ONNX
    /// Runtime.
    Qoperator,
    /// Quantize/DequantizeLinear pairs around float Conv and MatMul (tract runs it in float).
    Qdq,
}

impl From<Int8FormArg> for Int8Form {
    fn from(f: Int8FormArg) -> Self {
        match f {
            Int8FormArg::Qoperator => Int8Form::Qoperator,
            Int8FormArg::Qdq => Int8Form::Qdq,
        }
    }
}

/// `--calibration` values: the CLI mirror of [`CalibrationKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CalibrationArg {
    /// The observed minimum and maximum.
    MinMax,
    /// The `--percentile`-th and (100 - `--percentile`)-th percentiles.
    Percentile,
    /// The clipped range with the smallest mean squared quantization error.
    Mse,
}

impl From<CalibrationArg> for CalibrationKind {
    fn from(c: CalibrationArg) -> Self {
        match c {
            CalibrationArg::MinMax => CalibrationKind::MinMax,
            CalibrationArg::Percentile => CalibrationKind::Percentile,
            CalibrationArg::Mse => CalibrationKind::Mse,
        }
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A model file (`model.ckpt`) or the directory holding it.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Output file (default: `<name>.onnx`, or `<name>.int8.onnx`, beside the model).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Keep BatchNormalization nodes instead of folding them into the convolutions.
    #[arg(long)]
    pub no_fold: bool,
    /// Add the embedding (last hidden layer) as a second output.
    #[arg(long)]
    pub embedding: bool,
    /// Post-training quantization; calibrates activation ranges on training images.
    #[arg(long, value_enum, value_name = "MODE")]
    pub quantize: Option<QuantizeMode>,
    /// Form of the int8 graph.
    #[arg(long, value_enum, default_value = "qoperator", value_name = "FORM")]
    pub int8_form: Int8FormArg,
    /// How activation ranges are chosen from the calibration values.
    #[arg(long, value_enum, default_value = "mse", value_name = "METHOD")]
    pub calibration: CalibrationArg,
    /// Percentile for `--calibration percentile`, in (50, 100].
    #[arg(long, default_value_t = 99.99, value_name = "P")]
    pub percentile: f64,
    /// Training images used for int8 calibration.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub calibration_images: usize,
    /// Other training images on which the int8 top-1 drop is measured.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub validation_images: usize,
    /// Keep in float the layers that push the int8 top-1 drop (points, on the validation
    /// images) above this; when no layer can be int8 within it, no int8 model is written
    /// (qoperator form only).
    #[arg(long, value_name = "POINTS")]
    pub max_accuracy_drop: Option<f64>,
    /// Keep this layer in float (repeatable; names as in the int8 report: `blocks.0.conv`,
    /// `head`; qoperator form only).
    #[arg(long = "float-layer", value_name = "LAYER")]
    pub float_layers: Vec<String>,
    /// One weight scale per tensor instead of per output channel.
    #[arg(long)]
    pub per_tensor: bool,
    /// Config whose `[data]` section gives the calibration data (default: the
    /// `config.toml` saved beside the model).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

/// How to feed a model that distill-edge did not write (each flag overrides `--preprocess`).
#[derive(Debug, Args, Clone, Default)]
pub struct PreprocessArgs {
    /// Preprocessing TOML: input-size, mean, std, channel-order, logits-output (see README).
    #[arg(long, value_name = "FILE")]
    pub preprocess: Option<PathBuf>,
    /// Input image size when the model's is symbolic, e.g. `3x224x224`.
    #[arg(long, value_name = "CxHxW")]
    pub input_size: Option<String>,
    /// Per-channel mean of pixels scaled to [0, 1], in the model's channel order.
    #[arg(long, value_delimiter = ',', value_name = "M,...")]
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation, in the model's channel order.
    #[arg(long, value_delimiter = ',', value_name = "S,...")]
    pub std: Option<Vec<f32>>,
    /// Channel order of the model's input: rgb (default) or bgr.
    #[arg(long, value_name = "ORDER")]
    pub channel_order: Option<crate::infer::preprocess::ChannelOrder>,
    /// The output holding the logits: its name or index (default `logits`, else the first).
    #[arg(long, value_name = "NAME|INDEX")]
    pub logits_output: Option<String>,
    /// Use N seeded random inputs instead of a labelled dataset: latency, memory, profile and
    /// output parity only, no accuracy (the default for a model without distill-edge metadata
    /// when no dataset is given).
    #[arg(long, value_name = "N")]
    pub random_inputs: Option<usize>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub input_seed: u64,
}

impl PreprocessArgs {
    /// The overrides these flags give.
    pub fn overrides(&self) -> crate::infer::preprocess::PreprocessOverrides {
        crate::infer::preprocess::PreprocessOverrides {
            file: self.preprocess.clone(),
            input_size: self.input_size.clone(),
            mean: self.mean.clone(),
            std: self.std.clone(),
            channel_order: self.channel_order,
            logits_output: self.logits_output.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The ONNX model to check.
    #[arg(value_name = "MODEL.onnx")]
    pub model: PathBuf,
    /// The trained checkpoint it came from: adds burn to the parity and accuracy comparison.
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: Option<PathBuf>,
    /// Config whose `[data]` section gives the test split (default: the `config.toml`
    /// beside the checkpoint).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Engines to use (default: every available one).
    #[arg(long, value_delimiter = ',', value_name = "tract,ort")]
    pub engines: Vec<String>,
    /// Batch sizes for the latency measurement.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 32], value_name = "N,...")]
    pub batches: Vec<usize>,
    /// Timed runs per batch size (after the warm-up).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub runs: usize,
    /// Untimed warm-up runs per batch size (at least; see --warmup-seconds).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub warmup: usize,
    /// The warm-up also lasts at least this many seconds.
    #[arg(long, default_value_t = 0.5, value_name = "S")]
    pub warmup_seconds: f64,
    /// Timed runs also last at least this many seconds.
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    pub seconds: f64,
    /// Fail when an engine's top-1 is more than this many percentage points below burn's
    /// (needs --checkpoint).
    #[arg(long, value_name = "POINTS")]
    pub max_accuracy_drop: Option<f64>,
    /// Test images to use (default: all).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

/// Overrides shared by `distill` and `compare`.
#[derive(Debug, Args, Clone)]
pub struct DistillOverrides {
    /// Teacher: a checkpoint (`model.ckpt` of the teacher or auxiliary), or an ONNX model
    /// (`….onnx`, run by tract; InDistill taps by graph surgery, preprocessing in the config's
    /// `[teacher-onnx]`).
    #[arg(long, value_name = "CKPT|ONNX")]
    pub teacher: Option<PathBuf>,
    /// Student model preset or path to a model TOML.
    #[arg(long, value_name = "NAME|FILE")]
    pub student: Option<String>,
    /// InDistill curriculum: epochs per conv block, shallow to deep, e.g. `3,4,5`.
    #[arg(long, value_delimiter = ',', value_name = "E,...")]
    pub curriculum: Option<Vec<usize>>,
    /// Main-phase learning-rate schedule as EPOCHS:LR stages, e.g. `60:1e-3,10:1e-4`.
    #[arg(long, value_name = "E:LR,...")]
    pub schedule: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Where to train and evaluate (default: the config's `backend`, else cpu).
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub backend: Option<BackendArg>,
    /// Train data-parallel on the backend's first N devices (default: the config's `devices`,
    /// else 1). On cpu, N replicas share the cores: the arithmetic of N GPUs, not a speed-up.
    #[arg(long, value_name = "N")]
    pub devices: Option<usize>,
}

#[derive(Debug, Args)]
pub struct DistillArgs {
    /// Distillation config (TOML). Command-line options override its values.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// Method (default: the config's).
    #[arg(long, value_parser = method_parser())]
    pub method: Option<Method>,
    #[command(flatten)]
    pub overrides: DistillOverrides,
    /// Seed for weights, shuffling and augmentation.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Run name.
    #[arg(long)]
    pub name: Option<String>,
    /// Output directory (default runs/<name>/distill-<method>).
    #[arg(long, short, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run from its last complete epoch (and curriculum stage).
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Start over even if the output directory holds an earlier run.
    #[arg(long)]
    pub force: bool,
}

/// `--backend` values: the CLI mirror of [`crate::runtime::Backend`]. `--help` lists only
/// the backends this binary was built with; every value is accepted, and a backend built
/// without is refused with the feature to rebuild with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// burn's flex backend on the CPU (`--threads`).
    Cpu,
    /// burn's wgpu backend: Vulkan (Linux, Windows) or Metal (macOS).
    #[cfg_attr(not(feature = "wgpu"), value(hide = true))]
    Wgpu,
}

impl From<BackendArg> for crate::runtime::Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Cpu => Self::Cpu,
            BackendArg::Wgpu => Self::Wgpu,
        }
    }
}

/// `--method` values: the CLI mirror of [`Method`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// InDistill: curriculum of pruned-teacher layers (MSE), then the main losses.
    Indistill,
    /// PKT on the embedding only (the head is never trained: judge it by retrieval).
    Pkt,
    /// Hinton KD on the logits (with a little cross-entropy).
    Kd,
    /// The student alone, cross-entropy on the labels.
    None,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Indistill => Method::Indistill,
            MethodArg::Pkt => Method::Pkt,
            MethodArg::Kd => Method::Kd,
            MethodArg::None => Method::None,
        }
    }
}

impl From<Method> for MethodArg {
    fn from(m: Method) -> Self {
        match m {
            Method::Indistill => MethodArg::Indistill,
            Method::Pkt => MethodArg::Pkt,
            Method::Kd => MethodArg::Kd,
            Method::None => MethodArg::None,
        }
    }
}

/// Parses a `--method` value ([`MethodArg`]) into a [`Method`].
pub fn method_parser() -> impl TypedValueParser<Value = Method> {
    EnumValueParser::<MethodArg>::new().map(Method::from)
}

/// `--optimize` values: the CLI mirror of [`Optimize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizeArg {
    /// Profile `runner` (opt-level 3): the fastest runner (about 15 MB on aarch64).
    Speed,
    /// Profile `runner-size` (opt-level "z", position-dependent, no unwind tables on glibc):
    /// about 4.9 MB on aarch64, same outputs, 1.5-1.7x the latency on x86_64 (BENCHMARKS).
    Size,
}

impl From<OptimizeArg> for Optimize {
    fn from(o: OptimizeArg) -> Self {
        match o {
            OptimizeArg::Speed => Optimize::Speed,
            OptimizeArg::Size => Optimize::Size,
        }
    }
}

impl From<Optimize> for OptimizeArg {
    fn from(o: Optimize) -> Self {
        match o {
            Optimize::Speed => OptimizeArg::Speed,
            Optimize::Size => OptimizeArg::Size,
        }
    }
}

/// Parses an `--optimize` value ([`OptimizeArg`]) into an [`Optimize`].
pub fn optimize_parser() -> impl TypedValueParser<Value = Optimize> {
    EnumValueParser::<OptimizeArg>::new().map(Optimize::from)
}

/// Training budget of the variants with a curriculum in a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CurriculumBudget {
    /// Same total epochs for every variant: the curriculum epochs come out of the main phase
    /// (the reference protocol counts them inside its 70 epochs).
    Equal,
    /// The curriculum is added before the same main phase as the others.
    Warmup,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Distillation config (TOML) giving data, teacher, student, schedules and any
    /// `[variants.<name>]`.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// Variants to run, side by side: built-in none, pkt, kd, indistill (each with the
    /// config's weights when `[distill] method` is that method), indistill-reference
    /// (curriculum, then PKT only), no-curriculum (indistill's losses without the
    /// curriculum), or a `[variants.<name>]` of the config.
    #[arg(
        long,
        alias = "methods",
        value_delimiter = ',',
        value_name = "NAME,...",
        default_values = crate::config::distill::BUILTIN_VARIANTS
    )]
    pub variants: Vec<String>,
    /// Seeds; every variant runs once per seed (paired statistics need at least 2; use 5 or
    /// more for intervals worth reading).
    #[arg(long, value_delimiter = ',', default_values_t = [1u64], value_name = "N,...")]
    pub seeds: Vec<u64>,
    /// Budgets of the variants with a curriculum.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [CurriculumBudget::Equal])]
    pub budgets: Vec<CurriculumBudget>,
    /// With a `[validation]` split in the config: also evaluate on the test split (do this
    /// once, for the reported table, after every choice was made on validation).
    #[arg(long)]
    pub test: bool,
    #[command(flatten)]
    pub overrides: DistillOverrides,
    /// Output directory (default runs/<name>/compare); finished runs in it are reused.
    #[arg(long, short, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Precision is measured over the top K retrieved images.
    #[arg(long, default_value_t = 100, value_name = "K")]
    pub top_k: usize,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Targets: file stems in targets/ (aarch64, aarch64-musl, armv7, x86_64) or paths to
    /// target TOMLs; repeat or separate with commas.
    #[arg(long, short, value_delimiter = ',', value_name = "TARGET")]
    pub target: Vec<String>,
    /// Build the runner for speed or size (default: the target file's `optimize`, else
    /// speed). `size` makes it about 3x smaller (15.0 to 4.9 MB on aarch64) and slower;
    /// see docs/BENCHMARKS.md.
    #[arg(long, value_name = "GOAL", value_parser = optimize_parser())]
    pub optimize: Option<crate::board::Optimize>,
    /// Pipeline config (default configs/pipeline/fashion-mnist.toml); with --model, the config whose
    /// `[data]` gives the test shard.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Profile of the pipeline config, e.g. `quick` or `reference` (default: the base values).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Rerun this stage and every stage after it.
    #[arg(long, value_name = "STAGE")]
    pub from: Option<String>,
    /// Where the training stages train and evaluate (default: the config's `backend`, else
    /// cpu).
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub backend: Option<BackendArg>,
    /// Train the training stages data-parallel on the backend's first N devices (default:
    /// the config's `devices`, else 1). On cpu, N replicas share the cores: the arithmetic
    /// of N GPUs, not a speed-up.
    #[arg(long, value_name = "N")]
    pub devices: Option<usize>,
    /// Where to validate the bundles: `qemu` (default for cross targets), `local`, or
    /// `ssh://[user@]host[:port]`.
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// ssh: connection timeout in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_timeout: u64,
    /// ssh: extra `-o` options (repeatable).
    #[arg(long = "ssh-option", value_name = "KEY=VALUE")]
    pub ssh_options: Vec<String>,
    /// Bundle only: the fp32 student model.
    #[arg(long, value_name = "MODEL.onnx")]
    pub model: Option<PathBuf>,
    /// Bundle only: also ship this int8 model.
    #[arg(long, value_name = "MODEL.onnx", requires = "model")]
    pub int8: Option<PathBuf>,
    /// Bundle only: use this runner binary instead of cross-compiling one (it must be built for the
    /// target's triple).
    #[arg(long, value_name = "FILE")]
    pub runner: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Bundle only: test images in the shard.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub shard_size: usize,
    /// Bundle only: bundle directory (default dist/<target>).
    #[arg(long, short, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Bundle only: timed runs per batch size on the device.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub runs: usize,
    /// Latency: untimed warm-up runs (at least; see --warmup-seconds).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub warmup: usize,
    /// Latency: the warm-up also lasts at least this many seconds.
    #[arg(long, default_value_t = 0.5, value_name = "S")]
    pub warmup_seconds: f64,
    /// Bundle only: timed runs also last at least this many seconds.
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    pub seconds: f64,
    /// Latency: batch sizes.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8], value_name = "N,...")]
    pub batches: Vec<usize>,
    /// Threads of tract's kernels on the device.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub device_threads: usize,
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Target name or TOML path (as for `build`); with --devices, the target of boards
    /// that do not name their own.
    #[arg(
        long,
        short,
        value_name = "TARGET",
        required_unless_present = "devices"
    )]
    pub target: Option<String>,
    /// Where to run: `qemu` (default for cross targets), `local`, or
    /// `ssh://[user@]host[:port][/remote/dir]` (uses your ssh agent, keys and known_hosts).
    /// Repeat to run several boards in parallel, one row each.
    #[arg(long, value_name = "DEVICE", conflicts_with = "devices")]
    pub device: Vec<String>,
    /// Inventory of boards (TOML `[[device]]` tables: name, url, target, tags, ssh-options):
    /// every selected board runs in parallel with its own row and result file.
    #[arg(long, value_name = "devices.toml")]
    pub devices: Option<PathBuf>,
    /// With --devices: only the boards carrying this tag (repeat: all of them).
    #[arg(long, value_name = "TAG", requires = "devices")]
    pub tag: Vec<String>,
    /// With several boards: the directory of the per-board result files (`<name>.json`).
    #[arg(long, default_value = "bench-results", value_name = "DIR")]
    pub results: PathBuf,
    /// Bundle directory (default dist/<target>).
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Give up on the runner after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "S")]
    pub timeout: u64,
    /// ssh: connection timeout in seconds.
    #[arg(long, default_value_t = 10, value_name = "S")]
    pub connect_timeout: u64,
    /// ssh: extra `-o` options, e.g. `IdentityFile=~/.ssh/board` (repeatable).
    #[arg(long = "ssh-option", value_name = "KEY=VALUE")]
    pub ssh_options: Vec<String>,
    /// Timed runs per batch size (default: the bundle's).
    #[arg(long, value_name = "N")]
    pub runs: Option<usize>,
    /// Threads of tract's kernels on the device (default: the bundle's).
    #[arg(long, value_name = "N")]
    pub device_threads: Option<usize>,
    /// Timed runs also last at least this many seconds (default: the bundle's).
    #[arg(long, value_name = "S")]
    pub seconds: Option<f64>,
    /// Untimed warm-up runs, at least (default: the bundle's).
    #[arg(long, value_name = "N")]
    pub warmup: Option<usize>,
    /// The warm-up also lasts at least this many seconds (default: the bundle's).
    #[arg(long, value_name = "S")]
    pub warmup_seconds: Option<f64>,
    /// Also profile the batch-1 plan per node with tract (top ops shown, all in the JSON) and
    /// time batch 1 with a fresh tract state per run against one reused state.
    #[arg(long)]
    pub profile: bool,
    /// Store this result (with the device outputs) as a baseline file.
    #[arg(long, value_name = "FILE")]
    pub save_baseline: Option<PathBuf>,
    /// Compare with a baseline file: top-1 within the target's accuracy budget, outputs
    /// within tolerance, latency p50/p90 regressions warned and failed by the thresholds
    /// (never under emulation). A failed comparison exits with code 3.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Latency regression (percent over the baseline) that prints a warning.
    #[arg(long, default_value_t = 10.0, value_name = "PCT")]
    pub warn_regression: f64,
    /// Latency regression (percent over the baseline) that fails the check.
    #[arg(long, default_value_t = 25.0, value_name = "PCT")]
    pub fail_regression: f64,
    /// Write a JUnit XML report (one test case per check) to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Pin the runner to these CPUs (`taskset -c` list, e.g. `2,3`; under qemu the emulator).
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_the_exit_codes() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("EXIT CODES:"), "{help}");
        assert!(help.contains("3  a check ran and failed"), "{help}");
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("distill-edge").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn methods_parse_into_the_domain_type_with_the_same_names_and_defaults() {
        let Command::Compare(c) = parse(&["compare", "-c", "x.toml"]).command else {
            panic!("not compare");
        };
        assert_eq!(c.variants, crate::config::distill::BUILTIN_VARIANTS);
        assert_eq!(c.budgets, [CurriculumBudget::Equal]);
        // `--methods` is still understood, as an alias of `--variants`.
        let Command::Compare(c) =
            parse(&["compare", "-c", "x.toml", "--methods", "kd,pkt"]).command
        else {
            panic!("not compare");
        };
        assert_eq!(c.variants, ["kd", "pkt"]);
        for m in [Method::Indistill, Method::Pkt, Method::Kd, Method::None] {
            let Command::Distill(d) =
                parse(&["distill", "-c", "x.toml", "--method", m.name()]).command
            else {
                panic!("not distill");
            };
            assert_eq!(d.method, Some(m));
            assert_eq!(Method::from(MethodArg::from(m)), m);
        }
        let Command::Distill(d) = parse(&["distill", "-c", "x.toml"]).command else {
            panic!("not distill");
        };
        assert_eq!(d.method, None);
        assert!(
            Cli::try_parse_from(["distill-edge", "distill", "-c", "x", "--method", "bogus"])
                .is_err()
        );
    }

    #[test]
    fn optimize_values_match_the_domain_names() {
        for o in [Optimize::Speed, Optimize::Size] {
            let arg = OptimizeArg::from(o);
            assert_eq!(Optimize::from(arg), o);
            let name = arg.to_possible_value().unwrap().get_name().to_string();
            let parsed: Optimize = serde_json::from_value(serde_json::Value::String(name)).unwrap();
            assert_eq!(parsed, o);
        }
    }
}
