//! The pipeline config (`configs/pipeline/fashion-mnist.toml`): dataset, teacher, optional auxiliary,
//! student, baselines, export, host check and targets, with named profiles that overlay it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::distill::{DistillSettings, Method};
use crate::config::quant::{
    Calibration, CalibrationKind, Int8Form, default_percentile, default_validation_images,
    validate_drop, validate_percentile,
};
use crate::config::{ConfigError, TrainSettings};
use crate::data::DataSource;
use crate::data::split::ValidationSplit;

/// A network trained with cross-entropy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TeacherSection {
    /// Model preset or spec path.
    pub model: String,
    /// Schedule.
    pub train: TrainSettings,
}

/// How the auxiliary starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuxInit {
    /// Fresh weights.
    #[default]
    Scratch,
    /// Its own supervised baseline first (`[auxiliary.baseline]` schedule).
    Baseline,
}

/// The auxiliary teacher: the student's depth, wider; learns from the teacher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AuxiliarySection {
    /// Model preset or spec path.
    pub model: String,
    /// Start from scratch or from a supervised baseline.
    #[serde(default)]
    pub init: AuxInit,
    /// Schedule of the supervised baseline (with `init = "baseline"`).
    #[serde(default)]
    pub baseline: Option<TrainSettings>,
    /// Transfer schedule.
    pub train: TrainSettings,
    /// Transfer method and losses (PKT on the embedding in the paper).
    pub distill: DistillSettings,
}

/// The student.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StudentSection {
    /// Model preset or spec path.
    pub model: String,
    /// Main-phase schedule.
    pub train: TrainSettings,
    /// Method (InDistill) and its settings.
    pub distill: DistillSettings,
    /// Baselines trained for the report (e.g. `["none"]`), with the student's main schedule
    /// unless `baselines-train` gives theirs.
    #[serde(default)]
    pub baselines: Vec<Method>,
    /// The baselines' own schedule (e.g. the reference protocol's student alone: 50 epochs at
    /// 1e-3, 30 at 1e-4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baselines_train: Option<TrainSettings>,
}

/// Export options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ExportSection {
    /// Fold batch norm.
    #[serde(default = "yes")]
    pub fold: bool,
    /// Also ship an int8 model.
    #[serde(default)]
    pub int8: bool,
    /// Form of the int8 graph: `qoperator` (integer kernels) or `qdq`.
    #[serde(default)]
    pub int8_form: Int8Form,
    /// Activation ranges: `min-max`, `percentile` or `mse`.
    #[serde(default)]
    pub calibration: CalibrationKind,
    /// Percentile for `calibration = "percentile"`.
    #[serde(default = "default_percentile")]
    pub percentile: f64,
    /// Training images the activation ranges are measured on.
    #[serde(default = "default_calibration")]
    pub calibration_images: usize,
    /// Other training images (held out from calibration) on which the int8 top-1 drop is
    /// measured, layer by layer.
    #[serde(default = "default_validation_images")]
    pub validation_images: usize,
    /// Largest top-1 drop (points) of the int8 model against the fp32 one on the held-out
    /// images: layers that push the drop above it stay float (qoperator form); when no layer
    /// can be int8 within it, only fp32 ships. Absent: every layer int8, no search.
    #[serde(default)]
    pub max_accuracy_drop: Option<f64>,
    /// Layers kept in float whatever the search finds (qoperator form), by name as in
    /// `int8.json` (`blocks.0.conv`, `head`).
    #[serde(default)]
    pub float_layers: Vec<String>,
}

impl Default for ExportSection {
    fn default() -> Self {
        Self {
            fold: true,
            int8: false,
            int8_form: Int8Form::default(),
            calibration: CalibrationKind::default(),
            percentile: default_percentile(),
            calibration_images: default_calibration(),
            validation_images: default_validation_images(),
            max_accuracy_drop: None,
            float_layers: Vec::new(),
        }
    }
}

impl ExportSection {
    /// The resolved calibration method.
    pub fn calibration_method(&self) -> Calibration {
        Calibration::new(self.calibration, self.percentile)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        validate_percentile(origin, "export.percentile", self.percentile)?;
        if let Some(d) = self.max_accuracy_drop {
            validate_drop(origin, "export.max-accuracy-drop", d)?;
        }
        let positive = [
            ("export.calibration-images", self.calibration_images),
            ("export.validation-images", self.validation_images),
        ];
        for (field, n) in positive {
            if n == 0 {
                return Err(ConfigError::Invalid {
                    origin: origin.into(),
                    field: field.into(),
                    message: "expected at least 1 image".into(),
                });
            }
        }
        if self.int8_form == Int8Form::Qdq && !self.float_layers.is_empty() {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                field: "export.float-layers".into(),
                message: "layers kept in float need int8-form = \"qoperator\"".into(),
            });
        }
        if self.int8_form == Int8Form::Qdq && self.max_accuracy_drop.is_some() {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                field: "export.max-accuracy-drop".into(),
                message: "the layer-by-layer search needs int8-form = \"qoperator\"".into(),
            });
        }
        Ok(())
    }
}

/// Host check options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CheckSection {
    /// Latency batch sizes.
    #[serde(default = "default_check_batches")]
    pub batches: Vec<usize>,
    /// Timed runs per batch size.
    #[serde(default = "default_runs")]
    pub runs: usize,
    /// Largest top-1 drop (points) of an engine/int8 model against burn.
    #[serde(default = "default_drop")]
    pub max_accuracy_drop: f64,
}

impl Default for CheckSection {
    fn default() -> Self {
        Self {
            batches: default_check_batches(),
            runs: default_runs(),
            max_accuracy_drop: default_drop(),
        }
    }
}

/// Device bundles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TargetsSection {
    /// Test images in the shard.
    #[serde(default = "default_shard")]
    pub shard_size: usize,
    /// Timed runs per batch size on the device.
    #[serde(default = "default_device_runs")]
    pub runs: usize,
    /// Latency batch sizes on the device.
    #[serde(default = "default_device_batches")]
    pub batches: Vec<usize>,
}

impl Default for TargetsSection {
    fn default() -> Self {
        Self {
            shard_size: default_shard(),
            runs: default_device_runs(),
            batches: default_device_batches(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_calibration() -> usize {
    512
}
fn default_check_batches() -> Vec<usize> {
    vec![1, 32]
}
fn default_runs() -> usize {
    50
}
fn default_drop() -> f64 {
    1.0
}
fn default_shard() -> usize {
    256
}
fn default_device_runs() -> usize {
    20
}
fn default_device_batches() -> Vec<usize> {
    vec![1, 8]
}
fn default_seed() -> u64 {
    1
}

/// The whole pipeline, after the profile is applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PipelineConfig {
    /// Run name: artifacts go to `runs/<name>/`.
    pub name: String,
    /// Seed of every stage.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Dataset.
    pub data: DataSource,
    /// Big teacher, trained by the build (absent when `teacher_onnx` gives one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<TeacherSection>,
    /// A frozen ONNX teacher instead (`teacher = { onnx = "t.onnx", … }`, read by [`Self::load`]
    /// from the `[teacher]` table when it has an `onnx` key): the teacher stage then measures
    /// its accuracy with tract instead of training.
    #[serde(skip)]
    pub teacher_onnx: Option<crate::config::distill::OnnxTeacherRef>,
    /// Optional auxiliary (absent: the student learns from the teacher, which must then have
    /// the student's depth).
    #[serde(default)]
    pub auxiliary: Option<AuxiliarySection>,
    /// Student.
    pub student: StudentSection,
    /// Export.
    #[serde(default)]
    pub export: ExportSection,
    /// Host check.
    #[serde(default)]
    pub check: CheckSection,
    /// Bundles for targets.
    #[serde(default)]
    pub targets: TargetsSection,
    /// Where the training stages train and evaluate: `cpu` (the default) or `wgpu`
    /// (binaries built with the cargo feature `wgpu`); `build --backend` overrides it.
    /// Not part of any stage's fingerprint: switching it reruns nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<crate::runtime::Backend>,
    /// Train the training stages data-parallel on the backend's first `devices` devices
    /// (default 1; on `cpu`, replicas sharing the cores); `build --devices` overrides it. Not
    /// part of any stage's fingerprint, like `backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<usize>,
    /// Images held out of the training split for every training stage; each trained network
    /// is then evaluated on them as well as on the test split.
    #[serde(default)]
    pub validation: Option<ValidationSplit>,
}

/// Deep-merges `over` into `base` (tables merge key by key; other values replace).
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

impl PipelineConfig {
    /// Reads `path`, applies `[profiles.<profile>]` over the rest, and validates.
    /// Returns the config and the profile names the file defines.
    pub fn load(path: &Path, profile: Option<&str>) -> Result<(Self, Vec<String>), ConfigError> {
        let mut table: toml::Table = crate::config::read_toml(path)?;
        let profiles = match table.remove("profiles") {
            Some(toml::Value::Table(t)) => t,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    origin: path.display().to_string(),
                    field: "profiles".into(),
                    message: "expected tables [profiles.<name>]".into(),
                });
            }
            None => toml::Table::new(),
        };
        let names: Vec<String> = profiles.keys().cloned().collect();
        if let Some(p) = profile {
            match profiles.get(p) {
                Some(toml::Value::Table(over)) => merge(&mut table, over),
                _ => {
                    return Err(ConfigError::Invalid {
                        origin: path.display().to_string(),
                        field: format!("profiles.{p}"),
                        message: format!(
                            "no such profile; this file defines: {}",
                            if names.is_empty() {
                                "none".to_string()
                            } else {
                                names.join(", ")
                            }
                        ),
                    });
                }
            }
        }
        let origin = path.display().to_string();
        let onnx = match table.get("teacher") {
            Some(toml::Value::Table(t)) => {
                crate::config::distill::OnnxTeacherRef::from_table(t, &origin, "teacher")
                    .transpose()?
            }
            _ => None,
        };
        if onnx.is_some() {
            table.remove("teacher");
        }
        let mut config: Self =
            crate::config::parse_toml(&toml::to_string(&table).expect("table"), path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.data = config.data.relative_to(base);
        config.teacher_onnx = onnx.map(|mut r| {
            if r.onnx.is_relative() {
                r.onnx = base.join(&r.onnx);
            }
            r
        });
        config.validate(&path.display().to_string())?;
        Ok((config, names))
    }

    /// Range checks of every section.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        crate::config::validate_name(origin, "name", &self.name)?;
        match (&self.teacher, &self.teacher_onnx) {
            (Some(t), None) => t.train.validate(origin, "teacher.train")?,
            (None, Some(_)) => {}
            _ => {
                return Err(ConfigError::Invalid {
                    origin: origin.into(),
                    field: "teacher".into(),
                    message: "expected [teacher] with model and train, or teacher = { onnx = \"teacher.onnx\", … }".into(),
                });
            }
        }
        if let Some(a) = &self.auxiliary {
            a.train.validate(origin, "auxiliary.train")?;
            if a.init == AuxInit::Baseline {
                match &a.baseline {
                    Some(b) => b.validate(origin, "auxiliary.baseline")?,
                    None => {
                        return Err(ConfigError::Invalid {
                            origin: origin.into(),
                            field: "auxiliary.baseline".into(),
                            message: "init = \"baseline\" needs a [auxiliary.baseline] schedule"
                                .into(),
                        });
                    }
                }
            }
        }
        self.student.train.validate(origin, "student.train")?;
        if let Some(b) = &self.student.baselines_train {
            b.validate(origin, "student.baselines-train")?;
        }
        self.export.validate(origin)?;
        // Settings that depend on the image size, where the data source fixes it.
        if let Some((h, w)) = crate::config::image_size(&self.data) {
            let mut schedules: Vec<(&TrainSettings, &str)> = self
                .teacher
                .iter()
                .map(|t| (&t.train, "teacher.train"))
                .collect();
            if let Some(a) = &self.auxiliary {
                schedules.push((&a.train, "auxiliary.train"));
                if let Some(b) = &a.baseline {
                    schedules.push((b, "auxiliary.baseline"));
                }
            }
            schedules.push((&self.student.train, "student.train"));
            if let Some(b) = &self.student.baselines_train {
                schedules.push((b, "student.baselines-train"));
            }
            for (settings, field) in schedules {
                settings.validate_for_images(origin, field, h, w)?;
            }
        }
        Ok(())
    }

    /// Where the run's artifacts go.
    pub fn run_dir(&self) -> PathBuf {
        PathBuf::from("runs").join(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> PathBuf {
        crate::testing::source_root()
            .join("configs/pipeline")
            .join(name)
    }

    #[test]
    fn shipped_pipelines_parse_in_every_profile() {
        for file in ["fashion-mnist.toml", "cifar10.toml"] {
            let (base, profiles) = PipelineConfig::load(&shipped(file), None).unwrap();
            assert!(profiles.contains(&"quick".to_string()), "{file}");
            assert!(profiles.contains(&"reference".to_string()), "{file}");
            for p in &profiles {
                let (c, _) = PipelineConfig::load(&shipped(file), Some(p)).unwrap();
                assert_eq!(c.name, base.name);
            }
            // The public reference protocol, item by item.
            let (r, _) = PipelineConfig::load(&shipped(file), Some("reference")).unwrap();
            assert_eq!(r.teacher.unwrap().train.total_epochs(), 80, "{file}");
            let aux = r.auxiliary.as_ref().unwrap();
            assert_eq!(aux.init, AuxInit::Baseline);
            assert_eq!(aux.baseline.as_ref().unwrap().total_epochs(), 80);
            assert_eq!(aux.train.total_epochs(), 50);
            assert!(!aux.distill.weights().trains_head());
            let s = &r.student;
            assert_eq!(s.distill.curriculum, [3, 4, 5]);
            // The curriculum counts inside the 70 epochs.
            assert_eq!(s.train.total_epochs() + 12, 70);
            assert_eq!(s.train.lr_at(1), 1e-3);
            assert!(
                !s.distill.weights().trains_head(),
                "PKT alone after the curriculum"
            );
            assert!(s.distill.reset_optimizer_each_epoch);
            assert_eq!(s.baselines_train.as_ref().unwrap().total_epochs(), 80);
            assert!(
                r.validation.is_some(),
                "{file}: choices are made on validation"
            );
        }
        // The quick profile: the student alone gets as many epochs as InDistill's curriculum
        // and main phase together, and both are judged on held-out images too.
        let (q, _) = PipelineConfig::load(&shipped("fashion-mnist.toml"), None).unwrap();
        let curriculum: usize = q.student.distill.curriculum.iter().sum();
        assert_eq!(
            q.student.baselines_train.as_ref().unwrap().total_epochs(),
            q.student.train.total_epochs() + curriculum
        );
        assert!(q.validation.is_some());
        let (r, _) =
            PipelineConfig::load(&shipped("fashion-mnist.toml"), Some("reference")).unwrap();
        assert_eq!(r.teacher.as_ref().unwrap().model, "cnn32-large");
        assert_eq!(r.auxiliary.as_ref().unwrap().model, "cnn32");
    }

    #[test]
    fn an_unknown_profile_lists_the_known_ones() {
        let e = PipelineConfig::load(&shipped("fashion-mnist.toml"), Some("turbo"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("profiles.turbo") && e.contains("quick"), "{e}");
    }

    #[test]
    fn profiles_merge_deeply() {
        let mut base: toml::Table = toml::from_str("[a]\nx = 1\ny = 2\n[b]\nz = 3\n").unwrap();
        let over: toml::Table = toml::from_str("[a]\ny = 5\n").unwrap();
        merge(&mut base, &over);
        assert_eq!(base["a"]["x"].as_integer(), Some(1));
        assert_eq!(base["a"]["y"].as_integer(), Some(5));
        assert_eq!(base["b"]["z"].as_integer(), Some(3));
    }

    /// `crop-padding = 1000` on 28x28 images was accepted in a pipeline config.
    #[test]
    fn a_crop_padding_beyond_the_image_size_is_refused_in_a_pipeline_config() {
        let (mut c, _) = PipelineConfig::load(&shipped("fashion-mnist.toml"), None).unwrap();
        c.validate("fashion-mnist.toml").unwrap();
        c.student.train.augment.crop_padding = 1000;
        let e = c.validate("fashion-mnist.toml").unwrap_err().to_string();
        assert!(e.contains("student.train") && e.contains("crop"), "{e}");
    }

    #[test]
    fn int8_settings_parse_kebab_case_and_are_validated() {
        let e: ExportSection = toml::from_str(
            "int8 = true\nint8-form = \"qoperator\"\ncalibration = \"percentile\"\n\
             percentile = 99.9\nmax-accuracy-drop = 0.5\nfloat-layers = [\"blocks.0.conv\"]\n",
        )
        .unwrap();
        assert_eq!(
            e.calibration_method(),
            Calibration::Percentile { percentile: 99.9 }
        );
        e.validate("f.toml").unwrap();
        assert!(toml::from_str::<ExportSection>("calibration = \"entropy\"\n").is_err());
        assert!(toml::from_str::<ExportSection>("calibrate = \"mse\"\n").is_err());
        let bad = [
            ("percentile = 40.0\n", "export.percentile"),
            ("max-accuracy-drop = -1.0\n", "export.max-accuracy-drop"),
            ("calibration-images = 0\n", "export.calibration-images"),
            (
                "int8-form = \"qdq\"\nmax-accuracy-drop = 1.0\n",
                "export.max-accuracy-drop",
            ),
            (
                "int8-form = \"qdq\"\nfloat-layers = [\"head\"]\n",
                "export.float-layers",
            ),
        ];
        for (text, field) in bad {
            let e: ExportSection = toml::from_str(text).unwrap();
            let msg = e.validate("f.toml").unwrap_err().to_string();
            assert!(msg.contains(field), "{text}: {msg}");
        }
        assert_eq!(ExportSection::default().calibration, CalibrationKind::Mse);
    }
}
