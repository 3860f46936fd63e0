//! Settings: TOML files (kebab-case keys, unknown keys rejected) with command-line overrides
//! merged over them. The resolved config is saved beside every artifact and its hash identifies
//! the artifact, so a resume or a later stage can tell whether it still fits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod distill;
pub mod quant;

use crate::config::distill::VariantSpec;
use crate::data::DataSource;
use crate::data::prep::Augment;
use crate::data::split::ValidationSplit;
use crate::fsutil::sha256_hex;
pub use distill::DistillSettings;

/// Errors reading or validating a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// Config file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax or schema error (the message names the key).
    #[error("{path}: {message}")]
    Parse {
        /// Config file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A value is out of range.
    #[error("{origin}: {field}: {message}")]
    Invalid {
        /// Config file or `command line`.
        origin: String,
        /// Dotted key, e.g. `train.batch-size`.
        field: String,
        /// What was expected.
        message: String,
    },
}

/// One learning-rate stage of a schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LrStage {
    /// Epochs in this stage.
    pub epochs: usize,
    /// Adam learning rate.
    pub lr: f64,
}

/// Adam hyper-parameters. Defaults follow PyTorch (epsilon 1e-8, not burn's 1e-5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AdamSettings {
    /// First-moment decay.
    #[serde(default = "default_beta1")]
    pub beta1: f32,
    /// Second-moment decay.
    #[serde(default = "default_beta2")]
    pub beta2: f32,
    /// Denominator epsilon.
    #[serde(default = "default_epsilon")]
    pub epsilon: f32,
    /// L2 weight decay (0 = none).
    #[serde(default)]
    pub weight_decay: f32,
}

impl Default for AdamSettings {
    fn default() -> Self {
        Self {
            beta1: default_beta1(),
            beta2: default_beta2(),
            epsilon: default_epsilon(),
            weight_decay: 0.0,
        }
    }
}

fn default_beta1() -> f32 {
    0.9
}
fn default_beta2() -> f32 {
    0.999
}
fn default_epsilon() -> f32 {
    1e-8
}
fn default_batch_size() -> usize {
    128
}
fn default_eval_batch_size() -> usize {
    500
}
fn default_seed() -> u64 {
    1
}

/// How to train one network with cross-entropy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrainSettings {
    /// Mini-batch size.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Batch size for evaluation passes (no effect on results).
    #[serde(default = "default_eval_batch_size")]
    pub eval_batch_size: usize,
    /// Learning-rate stages, run in order (reference: 1e-3 then 1e-4).
    pub schedule: Vec<LrStage>,
    /// Train-time augmentation.
    #[serde(default)]
    pub augment: Augment,
    /// Optimizer.
    #[serde(default)]
    pub adam: AdamSettings,
}

impl TrainSettings {
    /// Total epochs of the schedule.
    pub fn total_epochs(&self) -> usize {
        self.schedule.iter().map(|s| s.epochs).sum()
    }

    /// Learning rate of 1-based `epoch`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let mut end = 0;
        for s in &self.schedule {
            end += s.epochs;
            if epoch <= end {
                return s.lr;
            }
        }
        self.schedule.last().map_or(0.0, |s| s.lr)
    }

    /// Checks ranges; `origin` and `prefix` locate the section in messages.
    pub fn validate(&self, origin: &str, prefix: &str) -> Result<(), ConfigError> {
        let bad = |field: &str, message: &str| ConfigError::Invalid {
            origin: origin.to_string(),
            field: format!("{prefix}.{field}"),
            message: message.to_string(),
        };
        if self.batch_size == 0 {
            return Err(bad("batch-size", "expected a positive integer"));
        }
        if self.eval_batch_size == 0 {
            return Err(bad("eval-batch-size", "expected a positive integer"));
        }
        if self.schedule.is_empty() || self.total_epochs() == 0 {
            return Err(bad(
                "schedule",
                "expected at least one stage with epochs > 0, e.g. [{ epochs = 10, lr = 1e-3 }]",
            ));
        }
        if let Some(s) = self
            .schedule
            .iter()
            .find(|s| !(s.lr.is_finite() && s.lr > 0.0))
        {
            return Err(bad(
                "schedule",
                &format!("learning rate {} is not a positive finite number", s.lr),
            ));
        }
        let a = &self.adam;
        if !(0.0..1.0).contains(&a.beta1) || !(0.0..1.0).contains(&a.beta2) {
            return Err(bad("adam", "beta1 and beta2 must be in [0, 1)"));
        }
        if !(a.epsilon.is_finite()
            && a.epsilon > 0.0
            && a.weight_decay.is_finite()
            && a.weight_decay >= 0.0)
        {
            return Err(bad("adam", "epsilon must be > 0 and weight-decay >= 0"));
        }
        Ok(())
    }

    /// Checks the settings that depend on the image size (`height` x `width`): the crop
    /// padding must be smaller than the images. Call it wherever the size is known.
    pub fn validate_for_images(
        &self,
        origin: &str,
        prefix: &str,
        height: usize,
        width: usize,
    ) -> Result<(), ConfigError> {
        self.augment
            .validate(height, width)
            .map_err(|message| ConfigError::Invalid {
                origin: origin.to_string(),
                field: format!("{prefix}.augment.crop-padding"),
                message,
            })
    }

    /// Parses a schedule written as `EPOCHS:LR[,EPOCHS:LR…]`, e.g. `60:1e-3,10:1e-4`.
    pub fn parse_schedule(text: &str) -> Result<Vec<LrStage>, String> {
        text.split(',')
            .map(|part| {
                let (e, lr) = part
                    .trim()
                    .split_once(':')
                    .ok_or_else(|| format!("'{part}': expected EPOCHS:LR, e.g. 10:1e-3"))?;
                Ok(LrStage {
                    epochs: e
                        .trim()
                        .parse()
                        .map_err(|_| format!("'{e}': epochs must be a non-negative integer"))?,
                    lr: lr
                        .trim()
                        .parse()
                        .map_err(|_| format!("'{lr}': learning rate must be a number"))?,
                })
            })
            .collect()
    }
}

/// `distill-edge train`: one network trained with cross-entropy on one dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrainConfig {
    /// Run name: the default output directory is `runs/<name>/train`.
    pub name: String,
    /// Seed for weights, shuffling and augmentation.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Model preset name or path to a model TOML (relative to the config file).
    pub model: String,
    /// Dataset.
    pub data: DataSource,
    /// Schedule and optimizer.
    pub train: TrainSettings,
    /// Hold training images out as a validation split (the same `images` and `seed` as the
    /// distillation configs that learn from this network, so no stage trains on them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationSplit>,
    /// Where training runs: `cpu` (the default) or `wgpu` (binaries built with the cargo
    /// feature `wgpu`). `--backend` overrides it. Not part of the config hash:
    /// checkpoints do not depend on the backend, so a run may resume on another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<crate::runtime::Backend>,
    /// Train data-parallel on the backend's first `devices` devices (default 1; on `cpu`,
    /// replicas sharing the cores). `--devices` overrides it. Not part of the config hash,
    /// like `backend`; batch-norm statistics and PKT are then computed per device's shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<usize>,
}

impl TrainConfig {
    /// The config used when no file is given: the reference student on generated data, a
    /// short schedule, nothing to install.
    pub fn default_synthetic() -> Self {
        toml::from_str(DEFAULT_TRAIN_TOML).expect("built-in default config parses")
    }

    /// Reads a config file; relative paths inside it stay relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut table: toml::Table = read_toml(path)?;
        onnx_teacher_table(&mut table, path)?;
        let mut config: Self =
            parse_toml(&toml::to_string(&table).expect("a table serialises"), path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.data = config.data.relative_to(base);
        config.model = rebase_model(&config.model, base);
        Ok(config)
    }

    /// Checks every section.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        validate_name(origin, "name", &self.name)?;
        self.train.validate(origin, "train")?;
        if let Some((h, w)) = image_size(&self.data) {
            self.train.validate_for_images(origin, "train", h, w)?;
        }
        Ok(())
    }

    /// Stable hash of the resolved config (what an artifact was made from; the backend it
    /// ran on is left out).
    pub fn hash(&self) -> String {
        let what = Self {
            backend: None,
            devices: None,
            ..self.clone()
        };
        sha256_hex(&serde_json::to_vec(&what).expect("config serialises"))[..16].to_string()
    }

    /// The resolved config as TOML, saved beside artifacts.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises to TOML")
    }
}

/// Height and width of the images `data` gives, when the source fixes them without reading
/// any file (the IDX sets are 28x28, the CIFAR sets 32x32).
pub fn image_size(data: &DataSource) -> Option<(usize, usize)> {
    match data {
        DataSource::FashionMnist { pad, .. } => Some((28 + 2 * pad, 28 + 2 * pad)),
        DataSource::Mnist { .. } => Some((28, 28)),
        DataSource::Cifar10 { .. } | DataSource::Cifar100 { .. } => Some((32, 32)),
        DataSource::Folder { height, width, .. } | DataSource::Synthetic { height, width, .. } => {
            Some((*height, *width))
        }
    }
}

/// Checks a name that becomes a file or directory name (a run name, `runs/<name>/`): non-empty,
/// not `.` or `..`, and only ASCII letters, digits, `.`, `_` and `-` (so no path separator).
/// `origin` is the config file or `command line`, `field` the key, for the error message.
pub fn validate_name(origin: &str, field: &str, value: &str) -> Result<(), ConfigError> {
    let problem = if value.is_empty() {
        Some("is empty")
    } else if value == "." || value == ".." {
        Some("is not a name")
    } else if value.contains(['/', '\\']) {
        Some("contains a path separator")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Some("has characters outside A-Z a-z 0-9 . _ -")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(ConfigError::Invalid {
            origin: origin.to_string(),
            field: field.to_string(),
            message: format!(
                "{value:?} {problem}: expected a name of ASCII letters, digits, '.', '_' and '-'"
            ),
        }),
    }
}

/// Reads and parses a TOML config file.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_toml(&text, path)
}

/// A model reference from a config in `base`: presets stay names, an existing relative spec
/// file is taken relative to `base`.
fn rebase_model(model: &str, base: &Path) -> String {
    let is_preset = crate::model::spec::PRESETS.iter().any(|(n, _)| *n == model);
    if !is_preset && Path::new(model).is_relative() && base.join(model).is_file() {
        base.join(model).to_string_lossy().into_owned()
    } else {
        model.to_string()
    }
}

/// Parses TOML into `T`, turning errors into one line that names the file and the key.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: one_line(&e.to_string()),
    })
}

/// Collapses a multi-line parser message (with its source excerpt) into one line.
fn one_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_string();
    // toml's message: "TOML parse error at line L, column C", excerpt lines, then the reason.
    let reason = message
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('|') && !l.contains(" | ") && *l != first)
        .unwrap_or_default();
    if reason.is_empty() {
        first
    } else {
        format!("{first}: {reason}")
    }
}

/// The built-in default for `distill-edge train` without `--config`.
pub const DEFAULT_TRAIN_TOML: &str = r#"
name = "synthetic-student"
seed = 1
model = "cnn32-small"

[data]
kind = "synthetic"

[train]
batch-size = 64
schedule = [{ epochs = 3, lr = 1e-3 }, { epochs = 1, lr = 1e-4 }]
"#;

/// `teacher = { onnx = "t.onnx", … }` in a train or distill config, rewritten in place as
/// `teacher = "t.onnx"` with `[teacher-onnx]` (giving both forms is refused).
fn onnx_teacher_table(table: &mut toml::Table, path: &Path) -> Result<(), ConfigError> {
    let Some(toml::Value::Table(t)) = table.get("teacher") else {
        return Ok(());
    };
    let Some(r) = distill::OnnxTeacherRef::from_table(t, &path.display().to_string(), "teacher")
    else {
        return Ok(());
    };
    let r = r?;
    if table.contains_key("teacher-onnx") {
        return Err(ConfigError::Invalid {
            origin: path.display().to_string(),
            field: "teacher-onnx".into(),
            message: "give the ONNX teacher's settings in teacher = { onnx = … } or in [teacher-onnx], not both".into(),
        });
    }
    table.insert(
        "teacher".into(),
        toml::Value::String(r.onnx.to_string_lossy().into_owned()),
    );
    table.insert(
        "teacher-onnx".into(),
        toml::Value::try_from(&r.spec).expect("the spec serialises"),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_fashion_mnist_is_32x32() {
        let d: DataSource = toml::from_str("kind = \"fashion-mnist\"\npad = 2").unwrap();
        assert_eq!(image_size(&d), Some((32, 32)));
    }

    #[test]
    fn shipped_train_and_distill_configs_parse_and_validate() {
        let root = crate::testing::source_root().join("configs");
        let files = |dir: &str| {
            let mut v: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            v.sort();
            v
        };
        let train = files("train");
        assert!(train.len() >= 4, "{train:?}");
        for f in &train {
            let c = TrainConfig::load(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            c.validate(&f.display().to_string()).unwrap();
        }
        let distill = files("distill");
        assert!(distill.len() >= 4, "{distill:?}");
        for f in &distill {
            let c = DistillConfig::load(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            // Every shipped student and auxiliary has three conv blocks.
            c.validate(&f.display().to_string(), 3).unwrap();
        }
        // The reference config: the curriculum inside 70 epochs, Adam per epoch, the student
        // alone on its own 50 + 30 schedule with Adam kept, and a validation split.
        let r = DistillConfig::load(&root.join("distill/fashion-mnist-reference.toml")).unwrap();
        assert_eq!(r.train.total_epochs(), 70);
        assert!(r.distill.reset_optimizer_each_epoch);
        assert_eq!(r.validation.as_ref().unwrap().images, 10_000);
        let none = &r.variants["none"];
        assert_eq!(
            none.schedule
                .as_ref()
                .unwrap()
                .iter()
                .map(|s| s.epochs)
                .sum::<usize>(),
            80
        );
        assert!(!none.apply(&r.distill).reset_optimizer_each_epoch);
    }

    #[test]
    fn names_are_checked_in_one_place() {
        for ok in ["fashion-mnist", "run_2.quick", "a", "...x"] {
            validate_name("cmd", "name", ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in [
            "", ".", "..", "a/b", "a\\b", "/abs", "sp ace", "tab\t", "é", "a:b",
        ] {
            let err = validate_name("x.toml", "name", bad)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("x.toml: name: "), "{bad:?}: {err}");
        }
        let err = validate_name("x.toml", "name", "a/b")
            .unwrap_err()
            .to_string();
        assert!(err.contains("path separator"), "{err}");
    }

    #[test]
    fn crop_padding_of_1000_is_rejected_for_28x28_images() {
        let mut c = TrainConfig::default_synthetic();
        c.data = DataSource::FashionMnist { path: None, pad: 0 };
        c.train.augment.crop_padding = 1000;
        let err = c.validate("x.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("x.toml: train.augment.crop-padding: crop-padding 1000")
                && err.contains("28x28"),
            "{err}"
        );
        c.train.augment.crop_padding = 4;
        c.validate("x.toml").unwrap();
    }

    #[test]
    fn default_config_is_valid() {
        let c = TrainConfig::default_synthetic();
        c.validate("default").unwrap();
        assert_eq!(c.train.total_epochs(), 4);
        assert_eq!(c.train.lr_at(3), 1e-3);
        assert_eq!(c.train.lr_at(4), 1e-4);
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let err = parse_toml::<TrainConfig>(
            "name='x'\nmodel='cnn32'\n[data]\nkind='synthetic'\n[train]\nschedule=[]\nbatchsize=3\n",
            Path::new("cfg.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("cfg.toml:"), "{err}");
        assert!(err.contains("batchsize"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn schedule_parses_and_rejects_garbage() {
        let s = TrainSettings::parse_schedule("60:1e-3, 10:1e-4").unwrap();
        assert_eq!(
            s,
            [
                LrStage {
                    epochs: 60,
                    lr: 1e-3
                },
                LrStage {
                    epochs: 10,
                    lr: 1e-4
                }
            ]
        );
        assert!(TrainSettings::parse_schedule("60").is_err());
        assert!(TrainSettings::parse_schedule("x:1").is_err());
    }

    #[test]
    fn zero_batch_size_names_the_field() {
        let mut c = TrainConfig::default_synthetic();
        c.train.batch_size = 0;
        let err = c.validate("c.toml").unwrap_err().to_string();
        assert_eq!(err, "c.toml: train.batch-size: expected a positive integer");
    }

    #[test]
    fn hash_changes_with_the_schedule_only() {
        let a = TrainConfig::default_synthetic();
        let mut b = a.clone();
        assert_eq!(a.hash(), b.hash());
        b.train.schedule[0].epochs += 1;
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn the_backend_key_parses_and_stays_out_of_the_hash() {
        use crate::runtime::Backend;
        let a = TrainConfig::default_synthetic();
        assert_eq!(a.backend, None);
        assert!(
            !a.to_toml().contains("backend"),
            "cpu configs serialise as before"
        );
        let text = format!("backend = \"wgpu\"\n{}", a.to_toml());
        let b: TrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(b.backend, Some(Backend::Wgpu));
        assert_eq!(a.hash(), b.hash(), "a run may resume on another backend");
        let bad = format!("backend = \"gpu\"\n{}", a.to_toml());
        let e = toml::from_str::<TrainConfig>(&bad).unwrap_err().to_string();
        assert!(e.contains("backend") && e.contains("wgpu"), "{e}");
    }
}

/// `distill-edge distill`: a student trained from a teacher checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DistillConfig {
    /// Run name: the default output directory is `runs/<name>/distill-<method>`.
    pub name: String,
    /// Seed for weights, shuffling and augmentation.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Dataset.
    pub data: DataSource,
    /// The teacher's `model.ckpt` (for InDistill: the auxiliary, of the student's depth), or
    /// an ONNX model (`….onnx`, e.g. exported from PyTorch; see `[teacher-onnx]`), also
    /// written `teacher = { onnx = "….onnx", <[teacher-onnx] keys> }`.
    /// Not needed by `method = "none"`.
    #[serde(default)]
    pub teacher: Option<PathBuf>,
    /// How to run the teacher when it is an ONNX model (`teacher = "….onnx"`): preprocessing,
    /// logits output, embedding, InDistill taps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_onnx: Option<distill::OnnxTeacherSpec>,
    /// Student model preset name or path to a model TOML.
    pub student: String,
    /// Start the student from these weights (e.g. an auxiliary from its supervised
    /// baseline) instead of a fresh initialisation.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// Main-phase schedule, batch size, augmentation, optimizer.
    pub train: TrainSettings,
    /// Method and its settings.
    pub distill: DistillSettings,
    /// Hold training images out as a validation split: training and the per-epoch pass use
    /// the rest; `compare` reports on it and on the test split only with `--test`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationSplit>,
    /// Named variants for `distill-edge compare` (`[variants.<name>]`), next to the
    /// built-in ones (`config::distill::BUILTIN_VARIANTS`); a name of a built-in replaces it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<String, VariantSpec>,
    /// Where training runs: `cpu` (the default) or `wgpu` (binaries built with the cargo
    /// feature `wgpu`). `--backend` overrides it. Not part of the config hash:
    /// checkpoints do not depend on the backend, so a run may resume on another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<crate::runtime::Backend>,
    /// Train data-parallel on the backend's first `devices` devices (default 1; on `cpu`,
    /// replicas sharing the cores). `--devices` overrides it. Not part of the config hash,
    /// like `backend`; batch-norm statistics and PKT are then computed per device's shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<usize>,
}

/// Loss weights must be finite, non-negative, and not all zero.
fn check_weights(
    d: &DistillSettings,
    bad: &dyn Fn(&str, String) -> ConfigError,
    field: &str,
) -> Result<(), ConfigError> {
    let w = d.weights();
    if [w.pkt, w.kd, w.ce]
        .iter()
        .any(|v| !(v.is_finite() && *v >= 0.0))
        || w.pkt + w.kd + w.ce <= 0.0
    {
        return Err(bad(
            field,
            "expected non-negative weights, at least one > 0".into(),
        ));
    }
    Ok(())
}

impl DistillConfig {
    /// Reads a config file; relative paths are taken relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut table: toml::Table = read_toml(path)?;
        onnx_teacher_table(&mut table, path)?;
        let mut config: Self =
            parse_toml(&toml::to_string(&table).expect("a table serialises"), path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.data = config.data.relative_to(base);
        let rebase = |p: &mut Option<PathBuf>| {
            if let Some(p) = p
                && p.is_relative()
            {
                *p = base.join(&*p);
            }
        };
        rebase(&mut config.teacher);
        rebase(&mut config.init);
        config.student = rebase_model(&config.student, base);
        Ok(config)
    }

    /// Checks every section.
    pub fn validate(&self, origin: &str, student_blocks: usize) -> Result<(), ConfigError> {
        use distill::Method;
        let bad = |field: &str, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            field: field.to_string(),
            message,
        };
        validate_name(origin, "name", &self.name)?;
        self.train.validate(origin, "train")?;
        if let Some((h, w)) = image_size(&self.data) {
            self.train.validate_for_images(origin, "train", h, w)?;
        }
        let d = &self.distill;
        let w = d.weights();
        check_weights(d, &bad, "distill.weights")?;
        if !(d.temperature.is_finite() && d.temperature > 0.0) {
            return Err(bad(
                "distill.temperature",
                "expected a positive number".into(),
            ));
        }
        if d.method == Method::Indistill && d.curriculum.len() != student_blocks {
            return Err(bad(
                "distill.curriculum",
                format!(
                    "expected {student_blocks} entries (epochs per conv block of the student, shallow to deep, e.g. [3, 4, 5]), found {}",
                    d.curriculum.len()
                ),
            ));
        }
        if let Some(lr) = d.curriculum_lr
            && !(lr.is_finite() && lr > 0.0)
        {
            return Err(bad(
                "distill.curriculum-lr",
                "expected a positive number".into(),
            ));
        }
        let needs_teacher = d.method != Method::None && (w.pkt > 0.0 || w.kd > 0.0)
            || d.method == Method::Indistill;
        if needs_teacher && self.teacher.is_none() {
            return Err(bad(
                "teacher",
                format!(
                    "method '{}' needs a teacher checkpoint (teacher = \"runs/…/model.ckpt\")",
                    d.method.name()
                ),
            ));
        }
        if let Some(v) = &self.validation
            && v.images == 0
        {
            return Err(bad(
                "validation.images",
                "expected a positive number of training images to hold out".into(),
            ));
        }
        for (name, v) in &self.variants {
            validate_name(origin, &format!("variants.{name}"), name)?;
            let field = format!("variants.{name}");
            let settings = v.apply(d);
            check_weights(&settings, &bad, &format!("{field}.weights"))?;
            if let Some(schedule) = &v.schedule {
                let mut train = self.train.clone();
                train.schedule = schedule.clone();
                train.validate(origin, &field)?;
            }
            if let Some(c) = &v.curriculum
                && c.len() != student_blocks
            {
                return Err(bad(
                    &format!("{field}.curriculum"),
                    format!(
                        "expected {student_blocks} entries (one per conv block of the student), found {}",
                        c.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Stable hash of the resolved config (the backend left out).
    pub fn hash(&self) -> String {
        let what = Self {
            backend: None,
            devices: None,
            ..self.clone()
        };
        sha256_hex(&serde_json::to_vec(&what).expect("config serialises"))[..16].to_string()
    }

    /// The resolved config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises to TOML")
    }
}
