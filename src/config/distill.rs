//! The `[distill]` settings: method, main-phase loss weights, curriculum, PKT kernel. Plain
//! data: the objectives that use them live in `train::distill` and `train::losses`.

use serde::{Deserialize, Serialize};

/// Distillation method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// InDistill: curriculum of pruned-teacher layers (MSE), then the main losses.
    Indistill,
    /// PKT on the embedding only (the head is never trained: judge it by retrieval).
    Pkt,
    /// Hinton KD on the logits (with a little cross-entropy).
    Kd,
    /// The student alone, cross-entropy on the labels.
    None,
}

impl Method {
    /// Main-phase loss weights used when the config gives none.
    pub fn default_weights(self) -> LossWeights {
        match self {
            Method::Indistill => LossWeights {
                pkt: 1.0,
                kd: 0.9,
                ce: 0.1,
            },
            Method::Pkt => LossWeights {
                pkt: 1.0,
                kd: 0.0,
                ce: 0.0,
            },
            Method::Kd => LossWeights {
                pkt: 0.0,
                kd: 0.9,
                ce: 0.1,
            },
            Method::None => LossWeights {
                pkt: 0.0,
                kd: 0.0,
                ce: 1.0,
            },
        }
    }

    /// The name used in configs and tables.
    pub fn name(self) -> &'static str {
        match self {
            Method::Indistill => "indistill",
            Method::Pkt => "pkt",
            Method::Kd => "kd",
            Method::None => "none",
        }
    }
}

/// Weights of the main-phase losses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LossWeights {
    /// PKT on the embedding.
    #[serde(default)]
    pub pkt: f32,
    /// Hinton KD on the logits.
    #[serde(default)]
    pub kd: f32,
    /// Cross-entropy on the labels.
    #[serde(default)]
    pub ce: f32,
}

impl LossWeights {
    /// Whether the classifier head receives a training signal.
    pub fn trains_head(&self) -> bool {
        self.kd > 0.0 || self.ce > 0.0
    }
}

/// The `[distill]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DistillSettings {
    /// Method.
    pub method: Method,
    /// InDistill: epochs per conv block, shallow to deep (reference: 3, 4, 5). Ignored by
    /// the other methods.
    #[serde(default)]
    pub curriculum: Vec<usize>,
    /// Learning rate of the curriculum epochs (default: the main schedule's first rate).
    #[serde(default)]
    pub curriculum_lr: Option<f64>,
    /// Main-phase loss weights (default: the method's, see `Method::default_weights`).
    #[serde(default)]
    pub weights: Option<LossWeights>,
    /// Hinton KD temperature.
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// PKT kernel.
    #[serde(default)]
    pub kernel: PktKernel,
    /// Re-create Adam every epoch, as the reference code does (off: state is kept).
    #[serde(default)]
    pub reset_optimizer_each_epoch: bool,
}

fn default_temperature() -> f32 {
    4.0
}

impl DistillSettings {
    /// Main-phase weights in effect.
    pub fn weights(&self) -> LossWeights {
        self.weights
            .clone()
            .unwrap_or_else(|| self.method.default_weights())
    }

    /// Curriculum epochs in effect (only InDistill has a curriculum).
    pub fn curriculum_epochs(&self) -> &[usize] {
        match self.method {
            Method::Indistill => &self.curriculum,
            _ => &[],
        }
    }
}

/// Similarity kernel of PKT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PktKernel {
    /// (cos + 1) / 2 between L2-normalised rows (the PKT reference).
    Cosine,
    /// 1 / (1 + d) with d the Euclidean distance between rows (heavy-tailed).
    StudentT,
    /// The sum of the two losses (default).
    #[default]
    Combined,
}
