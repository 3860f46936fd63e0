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
    /// Without augmentation, compute the frozen teacher's outputs once over the training
    /// split and read them back every epoch (`<run dir's parent>/teacher-cache/`); off: run
    /// the teacher on every batch.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub teacher_cache: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
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

/// One named configuration of the student's training, compared side by side by
/// `distill-edge compare` (`[variants.<name>]` in a distill config, or a built-in name).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct VariantSpec {
    /// Method.
    pub method: Method,
    /// Main-phase loss weights (default: as for the built-in variant of that method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<LossWeights>,
    /// Curriculum epochs per block (InDistill only; default: `[distill] curriculum`; all zeros
    /// = no curriculum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curriculum: Option<Vec<usize>>,
    /// Main-phase schedule of this variant (default: `[train] schedule`), e.g. the reference
    /// protocol's student alone at 50 epochs of 1e-3 and 30 of 1e-4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Vec<super::LrStage>>,
    /// Re-create Adam every epoch (default: `[distill] reset-optimizer-each-epoch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_optimizer_each_epoch: Option<bool>,
}

/// Names of the built-in variants, in the order `compare` runs them by default.
pub const BUILTIN_VARIANTS: [&str; 6] = [
    "none",
    "pkt",
    "kd",
    "indistill",
    "indistill-reference",
    "no-curriculum",
];

impl VariantSpec {
    /// The built-in variant `name` for a config whose `[distill]` section is `d`:
    ///
    /// - `none`, `pkt`, `kd`, `indistill`: that method, with the configured `[distill] weights`
    ///   when `[distill] method` is that method (each method keeps its own configured
    ///   weights), otherwise the method's defaults;
    /// - `indistill-reference`: the public reference: the curriculum, then PKT alone (the
    ///   head is never trained);
    /// - `no-curriculum`: the control: `indistill`'s main-phase losses without the curriculum.
    pub fn builtin(name: &str, d: &DistillSettings) -> Option<VariantSpec> {
        let own = |m: Method| VariantSpec {
            method: m,
            weights: Some(if d.method == m {
                d.weights()
            } else {
                m.default_weights()
            }),
            curriculum: None,
            schedule: None,
            reset_optimizer_each_epoch: None,
        };
        Some(match name {
            "none" => own(Method::None),
            "pkt" => own(Method::Pkt),
            "kd" => own(Method::Kd),
            "indistill" => own(Method::Indistill),
            "indistill-reference" => VariantSpec {
                method: Method::Indistill,
                weights: Some(LossWeights {
                    pkt: 1.0,
                    kd: 0.0,
                    ce: 0.0,
                }),
                curriculum: None,
                schedule: None,
                reset_optimizer_each_epoch: None,
            },
            "no-curriculum" => VariantSpec {
                curriculum: Some(vec![0; d.curriculum.len()]),
                ..own(Method::Indistill)
            },
            _ => return None,
        })
    }

    /// The `[distill]` settings of a run of this variant: `base` with the method, weights
    /// and curriculum replaced.
    pub fn apply(&self, base: &DistillSettings) -> DistillSettings {
        let mut d = base.clone();
        d.method = self.method;
        // The method's defaults are left implicit (`None`), so a run's config, and with it its
        // fingerprint, is the same whether `compare` or `distill --method` made it.
        d.weights = self
            .weights
            .clone()
            .filter(|w| *w != self.method.default_weights());
        if let Some(c) = &self.curriculum {
            d.curriculum = c.clone();
        }
        if let Some(r) = self.reset_optimizer_each_epoch {
            d.reset_optimizer_each_epoch = r;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(method: Method, weights: Option<LossWeights>) -> DistillSettings {
        DistillSettings {
            method,
            curriculum: vec![1, 2, 3],
            curriculum_lr: None,
            weights,
            temperature: 4.0,
            kernel: PktKernel::default(),
            reset_optimizer_each_epoch: false,
            teacher_cache: true,
        }
    }

    #[test]
    fn each_method_keeps_its_own_configured_weights() {
        let mine = LossWeights {
            pkt: 1.0,
            kd: 0.0,
            ce: 0.0,
        };
        let d = settings(Method::Indistill, Some(mine.clone()));
        let ind = VariantSpec::builtin("indistill", &d).unwrap().apply(&d);
        assert_eq!(ind.weights, Some(mine.clone()));
        assert_eq!(ind.curriculum, [1, 2, 3]);
        // The other methods are not given InDistill's weights, nor do they lose theirs.
        let kd = VariantSpec::builtin("kd", &d).unwrap().apply(&d);
        assert_eq!(kd.weights(), Method::Kd.default_weights());
        let d_kd = settings(
            Method::Kd,
            Some(LossWeights {
                pkt: 0.0,
                kd: 0.5,
                ce: 0.5,
            }),
        );
        let kd = VariantSpec::builtin("kd", &d_kd).unwrap().apply(&d_kd);
        assert_eq!(kd.weights().kd, 0.5);
        let ind = VariantSpec::builtin("indistill", &d_kd)
            .unwrap()
            .apply(&d_kd);
        assert_eq!(ind.weights, None, "defaults stay implicit");
    }

    #[test]
    fn the_reference_and_the_control() {
        let d = settings(Method::Indistill, None);
        let r = VariantSpec::builtin("indistill-reference", &d)
            .unwrap()
            .apply(&d);
        assert!(!r.weights().trains_head());
        assert_eq!(r.curriculum, [1, 2, 3]);
        let c = VariantSpec::builtin("no-curriculum", &d).unwrap().apply(&d);
        assert_eq!(c.curriculum, [0, 0, 0]);
        assert_eq!(c.weights(), Method::Indistill.default_weights());
        assert!(VariantSpec::builtin("turbo", &d).is_none());
        for name in BUILTIN_VARIANTS {
            assert!(VariantSpec::builtin(name, &d).is_some(), "{name}");
        }
    }
}

/// How to run an ONNX teacher (`teacher = "….onnx"`): the `[teacher-onnx]` section. Each value
/// left out comes from the model: its declared input size, its distill-edge metadata for the
/// normalisation, an output named `embedding`, the first output (or one named `logits`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OnnxTeacherSpec {
    /// The tensor PKT matches: any named tensor of the graph (exposed as an extra output when
    /// it is not one), e.g. the input of the classifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<String>,
    /// The output holding the logits: a name or an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logits_output: Option<String>,
    /// Input size `CxHxW`; dataset images are resized to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<String>,
    /// Per-channel mean of the teacher's input normalisation (on pixels scaled to [0, 1]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f32>>,
    /// `rgb` or `bgr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_order: Option<String>,
    /// InDistill: the teacher tap of each student block, one Conv node name or tap tensor
    /// name per block (see `distill-edge inspect`); proposed when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taps: Option<Vec<String>>,
}

/// A frozen ONNX teacher given as a table: `teacher = { onnx = "teacher.onnx", … }`, the other
/// keys those of [`OnnxTeacherSpec`] (preprocessing, logits output, embedding, taps).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct OnnxTeacherRef {
    /// The model file.
    pub onnx: std::path::PathBuf,
    /// How to run it.
    #[serde(flatten)]
    pub spec: OnnxTeacherSpec,
}

impl OnnxTeacherRef {
    /// Reads `teacher = { onnx = …, … }` (`field` names it in errors); `None` when the table
    /// has no `onnx` key (it is then some other kind of teacher table).
    pub fn from_table(
        table: &toml::Table,
        origin: &str,
        field: &str,
    ) -> Option<Result<Self, super::ConfigError>> {
        let onnx = table.get("onnx")?;
        let bad = |message: String| super::ConfigError::Invalid {
            origin: origin.to_string(),
            field: field.to_string(),
            message,
        };
        let Some(path) = onnx.as_str() else {
            return Some(Err(bad("onnx: expected the path of an .onnx file".into())));
        };
        let mut rest = table.clone();
        rest.remove("onnx");
        Some(
            toml::Value::Table(rest)
                .try_into::<OnnxTeacherSpec>()
                .map_err(|e| bad(e.to_string().trim().replace('\n', " ")))
                .map(|spec| Self {
                    onnx: path.into(),
                    spec,
                }),
        )
    }
}

#[cfg(test)]
mod onnx_teacher_table_tests {
    use crate::config::DistillConfig;

    const REST: &str = "name = \"s\"\nstudent = \"cnn32-small\"\n[data]\nkind = \"synthetic\"\n[train]\nschedule = [{ epochs = 1, lr = 1e-3 }]\n[distill]\nmethod = \"pkt\"\n";

    /// `head` (top-level keys) + the rest + `tail` (tables).
    fn load_with(head: &str, tail: &str) -> Result<DistillConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.toml");
        std::fs::write(&path, format!("{head}{REST}{tail}")).unwrap();
        DistillConfig::load(&path).map_err(|e| e.to_string())
    }

    fn load(head: &str) -> Result<DistillConfig, String> {
        load_with(head, "")
    }

    #[test]
    fn a_teacher_table_with_onnx_is_the_path_plus_its_settings() {
        let c = load("teacher = { onnx = \"t.onnx\", embedding = \"emb\", mean = [0.5], std = [0.25], taps = [\"a\", \"b\", \"c\"] }\n").unwrap();
        assert!(c.teacher.unwrap().ends_with("t.onnx"));
        let spec = c.teacher_onnx.unwrap();
        assert_eq!(spec.embedding.as_deref(), Some("emb"));
        assert_eq!(spec.mean, Some(vec![0.5]));
        assert_eq!(spec.taps.unwrap().len(), 3);
        // Today's forms still work.
        let c = load_with(
            "teacher = \"t.onnx\"\n",
            "[teacher-onnx]\nembedding = \"emb\"\n",
        )
        .unwrap();
        assert_eq!(c.teacher_onnx.unwrap().embedding.as_deref(), Some("emb"));
    }

    #[test]
    fn a_bad_teacher_table_is_refused_naming_the_key() {
        let e = load("teacher = { onnx = \"t.onnx\", embeding = \"emb\" }\n").unwrap_err();
        assert!(e.contains("teacher") && e.contains("embeding"), "{e}");
        let e = load("teacher = { onnx = 3 }\n").unwrap_err();
        assert!(e.contains("teacher: onnx: expected the path"), "{e}");
        let e = load_with(
            "teacher = { onnx = \"t.onnx\" }\n",
            "[teacher-onnx]\nembedding = \"e\"\n",
        )
        .unwrap_err();
        assert!(e.contains("not both"), "{e}");
    }
}
