//! Training: the supervised loop, checkpoints, and the pieces distillation reuses.

pub mod checkpoint;
pub mod distill;
pub mod epoch;
pub mod losses;
pub mod parallel;
pub mod supervised;
pub mod teacher_cache;

use std::path::PathBuf;

pub use checkpoint::{Checkpoint, CheckpointError, CheckpointHeader, EpochRecord};
pub use supervised::{TrainOptions, TrainReport, train};

/// Errors that stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// An artifact could not be written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The loss became NaN or infinite.
    #[error(
        "epoch {epoch}, batch {batch}: loss is {value}; training stopped (lower the learning rate or check the data)"
    )]
    NonFinite {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based batch within the epoch.
        batch: usize,
        /// The offending value.
        value: f32,
    },
    /// `--resume` cannot continue from what is on disk, or a fresh run would overwrite one.
    #[error("{path}: {message}")]
    Resume {
        /// Checkpoint or run directory.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// Data and model do not fit together.
    #[error("{0}")]
    Mismatch(String),
    /// burn could not serialise a record.
    #[error("saving weights: {0}")]
    Record(String),
    /// The chosen backend has no device here.
    #[error(transparent)]
    Backend(#[from] crate::runtime::BackendError),
}
