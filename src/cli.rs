//! Command-line types (clap derive). Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Train a teacher, distill a compact student and prove it on the target board.
#[derive(Debug, Parser)]
#[command(name = "distill-edge", version, about, long_about = None, propagate_version = true)]
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
    /// Evaluate a trained model: top-1 accuracy, confusion matrix and retrieval metrics.
    ///
    /// Retrieval uses the embedding (the last hidden layer): database = train split,
    /// queries = test split, mAP with 11-point interpolated precision and precision of the
    /// top-100, for cosine and L2 distance.
    Eval(EvalArgs),
    /// Inspect datasets.
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
    /// Model preset (cnn32, cnn32-small, cnn32-large) or path to a model TOML.
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
}

#[derive(Debug, Args)]
pub struct DataInfoArgs {
    /// Config whose `[data]` section to load.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}
