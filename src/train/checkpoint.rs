//! Checkpoint files: one self-checking container per artifact.
//!
//! Layout: magic `DEDGECK1`, u32 LE header length, JSON header, u64 LE model length, burnpack
//! model record, u64 LE optimizer length, burnpack optimizer record (may be empty), then the
//! SHA-256 of everything before it. A torn or edited file fails the digest check and is
//! reported as corrupt instead of being loaded. Files are written atomically.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::prep::Normalization;
use crate::fsutil::write_atomic;
use crate::model::{Architecture, ConvNet};

const MAGIC: &[u8; 8] = b"DEDGECK1";
/// Version of the header schema.
pub const FORMAT: u32 = 1;

/// Metrics of one finished epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number within the stage.
    pub epoch: usize,
    /// Phase of the schedule this epoch belonged to (e.g. `supervised`, `curriculum:block0`).
    pub phase: String,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Training top-1 accuracy (0..1) on the augmented batches, when the phase has logits.
    pub train_accuracy: Option<f64>,
    /// Loss on the test split (cross-entropy).
    pub test_loss: f64,
    /// Top-1 accuracy on the test split (0..1).
    pub test_accuracy: f64,
    /// Wall time of the training part of the epoch, seconds.
    pub seconds: f64,
    /// Training throughput.
    pub images_per_second: f64,
}

/// Everything a checkpoint says about itself besides the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointHeader {
    /// Header schema version ([`FORMAT`]).
    pub format: u32,
    /// `train` (resumable state), `model` (final weights) or a later stage's name.
    pub kind: String,
    /// Epochs completed.
    pub epochs_done: usize,
    /// Hash of the resolved config that produced it; a resume must match it.
    pub config_hash: String,
    /// The network.
    pub architecture: Architecture,
    /// Input normalisation the weights expect.
    pub normalization: Normalization,
    /// Dataset name (e.g. `fashion-mnist`).
    pub dataset: String,
    /// Class names, index = label.
    pub classes: Vec<String>,
    /// Per-epoch metrics so far.
    pub history: Vec<EpochRecord>,
    /// Stage-specific state (e.g. the curriculum position).
    #[serde(default)]
    pub extra: serde_json::Value,
}

impl CheckpointHeader {
    /// Checks every field as a config is checked: a positive input shape and class count,
    /// one finite mean and one finite std > 0 per channel, class names matching the class
    /// count, and an architecture that binds to its own input shape with the stored block
    /// shapes (and fits in memory). The message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let a = &self.architecture;
        for (field, value) in [
            ("channels", a.input.channels),
            ("height", a.input.height),
            ("width", a.input.width),
        ] {
            if value == 0 {
                return Err(format!(
                    "header field architecture.input: input {field} is 0 (expected > 0)"
                ));
            }
        }
        if a.classes < 2 {
            return Err(format!(
                "header field architecture.classes: {} classes (expected at least 2)",
                a.classes
            ));
        }
        if !self.classes.is_empty() && self.classes.len() != a.classes {
            return Err(format!(
                "header field classes: {} class names for a model with {} classes",
                self.classes.len(),
                a.classes
            ));
        }
        let n = &self.normalization;
        if n.mean.len() != a.input.channels || n.std.len() != a.input.channels {
            return Err(format!(
                "header field normalization: {} means and {} stds for {} input channels",
                n.mean.len(),
                n.std.len(),
                a.input.channels
            ));
        }
        if let Some(m) = n.mean.iter().find(|m| !m.is_finite()) {
            return Err(format!(
                "header field normalization.mean: {m} is not finite"
            ));
        }
        if let Some(s) = n.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!(
                "header field normalization.std: {s} (expected a finite value > 0)"
            ));
        }
        let bound = a
            .spec
            .bind(a.input, a.classes)
            .map_err(|e| format!("header field architecture: {e}"))?;
        if bound.block_shapes != a.block_shapes {
            let shapes = |v: &[crate::data::ImageShape]| {
                v.iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(format!(
                "header field architecture.block-shapes: [{}] do not follow from input {} (expected [{}])",
                shapes(&a.block_shapes),
                a.input,
                shapes(&bound.block_shapes)
            ));
        }
        Ok(())
    }
}

/// A decoded checkpoint file.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Metadata.
    pub header: CheckpointHeader,
    /// Burnpack bytes of the model record.
    pub model: Vec<u8>,
    /// Burnpack bytes of the optimizer record (empty for a final model).
    pub optimizer: Vec<u8>,
}

/// Errors reading or writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a checkpoint, truncated or modified.
    #[error("{path}: {message}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Weights do not fit the architecture, or contain NaN/Inf.
    #[error("{path}: {message}")]
    Weights {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Checkpoint {
    /// Builds a checkpoint from a model (and optionally an optimizer record's bytes).
    pub fn from_model(
        header: CheckpointHeader,
        model: ConvNet,
        optimizer: Vec<u8>,
    ) -> Result<Self, burn::store::RecordError> {
        let bytes = model.into_record().into_bytes()?;
        Ok(Self {
            header,
            model: bytes.to_vec(),
            optimizer,
        })
    }

    /// Serialises to the container format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).expect("header serialises");
        let mut out =
            Vec::with_capacity(64 + header.len() + self.model.len() + self.optimizer.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&(self.model.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.model);
        out.extend_from_slice(&(self.optimizer.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.optimizer);
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Writes the checkpoint atomically.
    pub fn write(&self, path: &Path) -> Result<(), CheckpointError> {
        write_atomic(path, &self.to_bytes()).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads and verifies a checkpoint file.
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes).map_err(|message| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Decodes the container, checking magic, lengths and digest.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err("not a distill-edge checkpoint (bad magic)".into());
        }
        if bytes.len() < MAGIC.len() + 4 + 16 + 32 {
            return Err(format!("truncated checkpoint ({} bytes)", bytes.len()));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err("checksum mismatch: the file is truncated or was modified".into());
        }
        let mut pos = MAGIC.len();
        let mut take = |n: usize| -> Result<&[u8], String> {
            let end = pos
                .checked_add(n)
                .filter(|&e| e <= body.len())
                .ok_or("truncated checkpoint")?;
            let s = &body[pos..end];
            pos = end;
            Ok(s)
        };
        let hlen = u32::from_le_bytes(take(4)?.try_into().unwrap()) as usize;
        let header: CheckpointHeader =
            serde_json::from_slice(take(hlen)?).map_err(|e| format!("unreadable header: {e}"))?;
        if header.format != FORMAT {
            return Err(format!(
                "checkpoint format {} is not supported (expected {FORMAT})",
                header.format
            ));
        }
        header.validate()?;
        let mlen = u64::from_le_bytes(take(8)?.try_into().unwrap()) as usize;
        let model = take(mlen)?.to_vec();
        let olen = u64::from_le_bytes(take(8)?.try_into().unwrap()) as usize;
        let optimizer = take(olen)?.to_vec();
        Ok(Self {
            header,
            model,
            optimizer,
        })
    }

    /// Rebuilds the network on `device` with the stored weights, refusing non-finite weights.
    pub fn load_model(
        &self,
        device: &burn::tensor::Device,
        path: &Path,
    ) -> Result<ConvNet, CheckpointError> {
        let weights = |message: String| CheckpointError::Weights {
            path: path.to_path_buf(),
            message,
        };
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(self.model.clone()))
            .map_err(|e| weights(format!("unreadable weights: {e}")))?;
        let net = ConvNet::new(&self.header.architecture, device)
            .try_load_record(record)
            .map_err(|e| {
                weights(format!(
                    "weights do not fit architecture '{}': {e}",
                    self.header.architecture.spec.name
                ))
            })?;
        if let Some(name) = first_non_finite_param(&net) {
            return Err(weights(format!(
                "parameter '{name}' contains NaN or Inf; the checkpoint is poisoned"
            )));
        }
        Ok(net)
    }
}

/// Path of the first parameter (or running statistic) holding a NaN or Inf, if any.
pub fn first_non_finite_param<M: Module>(module: &M) -> Option<String> {
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct Finder {
        path: Vec<String>,
        found: Option<String>,
    }
    impl ModuleVisitor for Finder {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.found.is_some() {
                return;
            }
            let values = param
                .val()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap_or_default();
            if values.iter().any(|v| !v.is_finite()) {
                self.found = Some(self.path.join("."));
            }
        }
    }
    let mut finder = Finder {
        path: Vec::new(),
        found: None,
    };
    module.visit(&mut finder);
    finder.found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageShape;
    use crate::model::ModelSpec;

    fn header() -> CheckpointHeader {
        let arch = ModelSpec::resolve("cnn32-small", Path::new("."))
            .unwrap()
            .bind(ImageShape::new(1, 28, 28), 10)
            .unwrap();
        CheckpointHeader {
            format: FORMAT,
            kind: "model".into(),
            epochs_done: 0,
            config_hash: "test".into(),
            architecture: arch,
            normalization: Normalization::identity(1),
            dataset: "synthetic".into(),
            classes: (0..10).map(|i| i.to_string()).collect(),
            history: vec![],
            extra: serde_json::Value::Null,
        }
    }

    /// A re-hashed container (valid digest) around `header`.
    fn decode(header: CheckpointHeader) -> Result<Checkpoint, String> {
        let c = Checkpoint {
            header,
            model: vec![],
            optimizer: vec![],
        };
        Checkpoint::from_bytes(&c.to_bytes())
    }

    #[test]
    fn every_header_field_is_validated_on_load_with_the_field_named() {
        assert!(decode(header()).is_ok());
        type Edit = Box<dyn Fn(&mut CheckpointHeader)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|h| h.architecture.input.height = 0),
                "input height",
            ),
            (Box::new(|h| h.architecture.input.width = 0), "input width"),
            (
                Box::new(|h| h.architecture.input.channels = 0),
                "input channels",
            ),
            (
                Box::new(|h| h.architecture.classes = 0),
                "architecture.classes",
            ),
            (
                Box::new(|h| h.normalization.std[0] = 0.0),
                "normalization.std",
            ),
            // (NaN and Inf cannot be written in JSON: serde_json writes null, refused on read.)
            (
                Box::new(|h| h.normalization.std[0] = -1.0),
                "normalization.std",
            ),
            (
                Box::new(|h| h.normalization = Normalization::identity(3)),
                "normalization",
            ),
            (Box::new(|h| h.classes.truncate(3)), "classes"),
            (
                Box::new(|h| h.architecture.input.height = 4),
                "architecture",
            ),
            (
                Box::new(|h| h.architecture.input.height = 32),
                "block-shapes",
            ),
        ];
        for (edit, field) in cases {
            let mut h = header();
            edit(&mut h);
            let err = decode(h).unwrap_err();
            assert!(err.contains(field) && !err.contains('\n'), "{field}: {err}");
        }
    }
}
