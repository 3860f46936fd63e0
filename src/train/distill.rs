//! Distillation objectives: InDistill (prune-aligned, curriculum-scheduled intermediate
//! layers, then the main phase), PKT-only, Hinton KD, and the student alone.

use burn::module::Module;
use burn::tensor::{Int, Tensor};

use super::losses::{cross_entropy, kd, mse, pkt};
use super::supervised::Objective;
use super::teacher_cache::{
    CacheSource, CacheTeacher, ForeignOutputs, ForeignTeacher, TeacherCache,
};
use crate::config::TrainSettings;
use crate::config::distill::{DistillSettings, Method};
use crate::model::ConvNet;
use crate::prune::PrunedTeacher;

/// The objective of one distillation run.
pub struct Distillation<'a> {
    /// Settings.
    pub settings: &'a DistillSettings,
    /// Main-phase schedule.
    pub main: &'a TrainSettings,
    /// The teacher whose embedding/logits are matched (eval mode, plain device).
    pub teacher: Option<&'a ConvNet>,
    /// Its pruned view (InDistill only).
    pub pruned: Option<&'a PrunedTeacher>,
    /// The teacher's outputs over the training split, computed once (no augmentation).
    pub cache: Option<&'a TeacherCache>,
    /// A foreign (ONNX) teacher run on every batch the student sees (with augmentation).
    pub foreign: Option<ForeignBatches<'a>>,
}

/// A foreign teacher run on each (augmented) batch. The student's normalised images are turned
/// back into 8-bit pixels, exactly (the normalisation maps each 8-bit value of a channel to one
/// float, and crop padding is the value 0), so the teacher sees the augmented images through its
/// own preprocessing.
pub struct ForeignBatches<'a> {
    /// The teacher.
    pub teacher: &'a dyn ForeignTeacher,
    /// The student's input normalisation.
    pub norm: crate::data::prep::Normalization,
    /// The training split (shape and class names of the batch images).
    pub data: &'a crate::data::Dataset,
}

impl ForeignBatches<'_> {
    /// The teacher's outputs for the student's input batch `x`.
    ///
    /// # Panics
    /// When the teacher fails on a batch (it ran on a probe image when it was loaded, and on
    /// batches of the same shape; a failure here is an engine fault).
    fn run(&self, x: &Tensor<4>) -> ForeignOutputs {
        let [n, c, h, w] = x.dims();
        let values = x
            .clone()
            .inner()
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32 inputs");
        let plane = h * w;
        let images: Vec<u8> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = (i / plane) % c;
                let p = (f64::from(v) * f64::from(self.norm.std[ch])
                    + f64::from(self.norm.mean[ch]))
                    * 255.0;
                p.round().clamp(0.0, 255.0) as u8
            })
            .collect();
        let batch = crate::data::Dataset {
            name: format!("{} (augmented batch)", self.data.name),
            shape: self.data.shape,
            images,
            labels: vec![0; n],
            classes: self.data.classes.clone(),
        };
        let picks: Vec<usize> = (0..n).collect();
        self.teacher
            .outputs(&batch, &picks)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The student's batch `x` (without autodiff) on the device of `teacher`, and the device `x`
/// is on: with several devices a replica's batch may live elsewhere than the teacher
/// ([`super::parallel`]); on one device both moves are no-ops.
fn on_device_of(teacher: &ConvNet, x: &Tensor<4>) -> (Tensor<4>, burn::tensor::Device) {
    let input = x.clone().inner();
    let home = input.device();
    let input = match teacher.devices().first() {
        Some(d) if *d != home => input.to_device(d),
        _ => input,
    };
    (input, home)
}

fn tensor2(values: Vec<f32>, shape: [usize; 2], device: &burn::tensor::Device) -> Tensor<2> {
    Tensor::<2>::from_data(burn::tensor::TensorData::new(values, shape), device)
}

/// Where an epoch sits in a distillation run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Curriculum epoch aligning conv block `k`.
    Curriculum(usize),
    /// Main phase, 1-based epoch within it.
    Main(usize),
}

impl Distillation<'_> {
    /// Stage of 1-based `epoch`.
    pub fn stage(&self, epoch: usize) -> Stage {
        let mut end = 0;
        for (k, &e) in self.settings.curriculum_epochs().iter().enumerate() {
            end += e;
            if epoch <= end {
                return Stage::Curriculum(k);
            }
        }
        Stage::Main(epoch - end)
    }

    fn teacher_outputs(&self, x: &Tensor<4>, indices: &[usize]) -> (Tensor<2>, Tensor<2>) {
        if let Some(c) = self.cache {
            return c.outputs(indices, &x.device());
        }
        if let Some(f) = &self.foreign {
            let o = f.run(x);
            let n = indices.len();
            let device = x.device();
            let classes = o.logits.len() / n.max(1);
            return (
                tensor2(o.logits, [n, classes], &device),
                tensor2(o.embedding, [n, o.dim], &device),
            );
        }
        let teacher = self.teacher.expect("a teacher for a distillation loss");
        let (input, home) = on_device_of(teacher, x);
        let (logits, embedding) = teacher.forward_with_embedding(input);
        (
            logits.to_device(&home).autodiff(),
            embedding.to_device(&home).autodiff(),
        )
    }
}

impl Objective for Distillation<'_> {
    fn total_epochs(&self) -> usize {
        self.settings.curriculum_epochs().iter().sum::<usize>() + self.main.total_epochs()
    }

    fn phase(&self, epoch: usize) -> (String, f64) {
        match self.stage(epoch) {
            Stage::Curriculum(k) => (
                format!("curriculum:block{k}"),
                self.settings
                    .curriculum_lr
                    .unwrap_or_else(|| self.main.lr_at(1)),
            ),
            Stage::Main(e) => (
                format!("main:{}", self.settings.method.name()),
                self.main.lr_at(e),
            ),
        }
    }

    fn loss(
        &self,
        model: &ConvNet,
        x: Tensor<4>,
        y: Tensor<1, Int>,
        indices: &[usize],
        epoch: usize,
    ) -> (Tensor<1>, Option<Tensor<2>>) {
        match self.stage(epoch) {
            Stage::Curriculum(k) => {
                let target = match (self.cache.filter(|c| c.has_taps()), &self.foreign) {
                    (Some(c), _) => c.tap(k, indices, &x.device()),
                    (None, Some(f)) => {
                        let [c, h, w] = f.teacher.tap_shapes()[k];
                        let mut o = f.run(&x);
                        Tensor::<4>::from_data(
                            burn::tensor::TensorData::new(
                                o.taps.swap_remove(k),
                                [indices.len(), c, h, w],
                            ),
                            &x.device(),
                        )
                    }
                    (None, None) => {
                        let pruned = self.pruned.expect("InDistill has a pruned teacher");
                        let (input, home) = on_device_of(&pruned.teacher, &x);
                        pruned.target(input, k).to_device(&home).autodiff()
                    }
                };
                (mse(model.forward_until(x, k + 1), target), None)
            }
            Stage::Main(_) => {
                let w = self.settings.weights();
                let (logits, embedding) = model.forward_with_embedding(x.clone());
                let mut total: Option<Tensor<1>> = None;
                let mut add = |t: Tensor<1>| {
                    total = Some(match total.take() {
                        Some(s) => s + t,
                        None => t,
                    });
                };
                if w.pkt > 0.0 || w.kd > 0.0 {
                    let (t_logits, t_emb) = self.teacher_outputs(&x, indices);
                    if w.pkt > 0.0 {
                        add(pkt(embedding, t_emb, self.settings.kernel).mul_scalar(w.pkt));
                    }
                    if w.kd > 0.0 {
                        add(kd(logits.clone(), t_logits, self.settings.temperature)
                            .mul_scalar(w.kd));
                    }
                }
                if w.ce > 0.0 {
                    add(cross_entropy(logits.clone(), y).mul_scalar(w.ce));
                }
                let loss = total.expect("validated: at least one main-phase loss has weight > 0");
                (loss, w.trains_head().then_some(logits))
            }
        }
    }

    fn reset_optimizer_each_epoch(&self) -> bool {
        self.settings.reset_optimizer_each_epoch
    }
}

/// Errors setting up a distillation run.
#[derive(Debug, thiserror::Error)]
pub enum DistillError {
    /// Reading a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] super::CheckpointError),
    /// The student spec is unusable.
    #[error(transparent)]
    Spec(#[from] crate::model::SpecError),
    /// Teacher and student cannot be aligned.
    #[error(transparent)]
    Align(#[from] crate::prune::AlignError),
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] super::TrainError),
    /// Files do not fit together.
    #[error("{0}")]
    Mismatch(String),
    /// The teacher-output cache could not be built.
    #[error(transparent)]
    Cache(#[from] super::teacher_cache::CacheError),
}

/// The identity of a distillation run (the `config_hash` of its checkpoints): its config and
/// the exact teacher/init weights it learns from (their files' SHA-256).
fn identity_hash(
    config: &crate::config::DistillConfig,
    teacher: Option<&str>,
    init: Option<&str>,
) -> String {
    let identity = format!(
        "{}:{}:{}",
        config.hash(),
        teacher.unwrap_or(""),
        init.unwrap_or("")
    );
    crate::fsutil::sha256_hex(identity.as_bytes())[..16].to_string()
}

/// The `config_hash` a finished or partial run of `config` carries in its checkpoints, so a
/// caller can tell whether a run directory holds exactly this run before reusing it.
pub fn run_identity(config: &crate::config::DistillConfig) -> Result<String, DistillError> {
    let digest = |p: &Option<std::path::PathBuf>| -> Result<Option<String>, DistillError> {
        p.as_deref()
            .map(|path| {
                crate::fsutil::sha256_file(path).map_err(|source| {
                    DistillError::from(super::TrainError::Io {
                        path: path.to_path_buf(),
                        source,
                    })
                })
            })
            .transpose()
    };
    let (t, i) = (digest(&config.teacher)?, digest(&config.init)?);
    Ok(identity_hash(config, t.as_deref(), i.as_deref()))
}

/// Whether a teacher file is an ONNX model (by its extension), not a checkpoint.
pub fn is_onnx(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Checks what an ONNX teacher can do here and returns it with its file's SHA-256.
fn check_foreign<'f>(
    config: &crate::config::DistillConfig,
    path: &std::path::Path,
    f: &'f dyn ForeignTeacher,
    arch: &crate::model::Architecture,
) -> Result<(&'f dyn ForeignTeacher, String), DistillError> {
    let refuse = |why: String| {
        Err(DistillError::Mismatch(format!(
            "teacher {}: {why}",
            path.display()
        )))
    };
    if config.distill.method == Method::Indistill {
        let want: Vec<[usize; 3]> = arch
            .block_shapes
            .iter()
            .map(|s| [s.channels, s.height, s.width])
            .collect();
        let got = f.tap_shapes();
        if got != want {
            return refuse(format!(
                "InDistill needs one pruned tap per student block of shapes {want:?}; the teacher was loaded with {got:?}"
            ));
        }
    }
    if f.classes() != arch.classes {
        return refuse(format!(
            "gives {} logits, the data has {} classes",
            f.classes(),
            arch.classes
        ));
    }
    let digest = crate::fsutil::sha256_file(path).map_err(|source| super::TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((f, digest))
}

/// Runs the distillation `config` describes into `out_dir`; `foreign` runs the teacher when
/// `config.teacher` is an ONNX model (see `infer::teacher`).
#[allow(clippy::too_many_arguments)] // what to train, where, how to treat the directory, the engine
pub fn distill(
    config: &crate::config::DistillConfig,
    origin: &str,
    splits: &crate::data::Splits,
    out_dir: &std::path::Path,
    resume: bool,
    force: bool,
    foreign: Option<&dyn ForeignTeacher>,
    reporter: &mut crate::progress::Reporter,
) -> Result<super::TrainReport, DistillError> {
    use super::supervised::{JobIdentity, TrainOptions, check_fit, fit};
    // The teacher runs where the student trains (its cache, when built, too).
    let backend = config.backend.unwrap_or_default();
    let device = backend.device().map_err(super::TrainError::from)?;
    let spec = crate::model::ModelSpec::resolve(&config.student, std::path::Path::new("."))?;
    let arch = spec.bind(splits.train.shape, splits.train.classes.len())?;
    arch.check_memory(config.train.batch_size)?;
    config.validate(origin, arch.spec.blocks.len())?;
    check_fit(&arch, splits)?;
    let load =
        |path: &std::path::Path| -> Result<(super::Checkpoint, ConvNet, String), DistillError> {
            let ckpt = super::Checkpoint::read(path)?;
            let net = ckpt.load_model(&device, path)?.valid();
            let digest =
                crate::fsutil::sha256_file(path).map_err(|source| super::TrainError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            Ok((ckpt, net, digest))
        };
    // An ONNX teacher (`teacher = "….onnx"`) is run by the caller's engine through the cache.
    let onnx_teacher = config.teacher.as_deref().filter(|p| is_onnx(p));
    let foreign = match (onnx_teacher, foreign) {
        (Some(path), Some(f)) => Some(check_foreign(config, path, f, &arch)?),
        (Some(path), None) => {
            return Err(DistillError::Mismatch(format!(
                "teacher {}: an ONNX teacher needs an inference engine, which this caller does not provide",
                path.display()
            )));
        }
        (None, _) => None,
    };
    let teacher = match onnx_teacher {
        Some(_) => None,
        None => config.teacher.as_deref().map(load).transpose()?,
    };
    if let Some((t, _, _)) = &teacher {
        let ta = &t.header.architecture;
        if ta.input != arch.input || ta.classes != arch.classes {
            return Err(DistillError::Mismatch(format!(
                "teacher {}: built for {} with {} classes, the data is {} with {}",
                config.teacher.as_ref().expect("teacher").display(),
                ta.input,
                ta.classes,
                arch.input,
                arch.classes
            )));
        }
    }
    let pruned = match (&teacher, config.distill.method) {
        (Some((t, net, _)), Method::Indistill) => {
            Some(PrunedTeacher::new(net, &t.header.architecture, &arch)?)
        }
        _ => None,
    };
    if let Some(p) = &pruned {
        reporter.line(format!(
            "pruned teacher '{}' to the student's widths {:?} (L1, kept filters per block: {})",
            teacher
                .as_ref()
                .expect("teacher")
                .0
                .header
                .architecture
                .spec
                .name,
            arch.spec.blocks.iter().map(|b| b.width).collect::<Vec<_>>(),
            p.kept
                .iter()
                .map(Vec::len)
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join("/")
        ));
    }
    let init = config.init.as_deref().map(load).transpose()?;
    if let Some((c, _, _)) = &init
        && c.header.architecture != arch
    {
        return Err(DistillError::Mismatch(format!(
            "init {}: architecture '{}' differs from the student '{}'",
            config.init.as_ref().expect("init").display(),
            c.header.architecture.spec.name,
            arch.spec.name
        )));
    }
    let hash = identity_hash(
        config,
        teacher
            .as_ref()
            .map(|t| t.2.as_str())
            .or(foreign.as_ref().map(|f| f.1.as_str())),
        init.as_ref().map(|t| t.2.as_str()),
    );
    // A frozen teacher without augmentation gives the same targets every epoch: compute them
    // once (`<run dir's parent>/teacher-cache/`), shared by every run of the same teacher,
    // split and student there (e.g. all variants and seeds of a comparison).
    let augment = &config.train.augment;
    let w = config.distill.weights();
    let source = match (&teacher, &foreign) {
        (Some((_, net, digest)), _) => Some((CacheTeacher::Burn(net), digest.clone())),
        (None, Some((f, digest))) => Some((CacheTeacher::Foreign(*f), digest.clone())),
        (None, None) => None,
    };
    let cache = match source {
        Some((cache_teacher, digest))
            if config.distill.teacher_cache
                && augment.crop_padding == 0
                && !augment.hflip
                && (w.pkt > 0.0
                    || w.kd > 0.0
                    || pruned.is_some()
                    || config.distill.method == Method::Indistill) =>
        {
            let dir = out_dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .join("teacher-cache");
            let norm = crate::data::prep::Normalization::from_dataset(&splits.train);
            Some(TeacherCache::open_or_build(
                &dir,
                &CacheSource {
                    teacher: cache_teacher,
                    pruned: pruned.as_ref(),
                    foreign_taps: foreign.is_some() && config.distill.method == Method::Indistill,
                    teacher_digest: &digest,
                    data: &splits.train,
                    norm: &norm,
                },
                reporter,
            )?)
        }
        _ => None,
    };
    // Without the cache (augmentation, or `teacher-cache = false`) an ONNX teacher runs on
    // every batch the student sees.
    let foreign_batches = match (&cache, &foreign) {
        (None, Some((f, _))) => Some(ForeignBatches {
            teacher: *f,
            norm: crate::data::prep::Normalization::from_dataset(&splits.train),
            data: &splits.train,
        }),
        _ => None,
    };
    let objective = Distillation {
        settings: &config.distill,
        main: &config.train,
        teacher: teacher.as_ref().map(|t| &t.1),
        pruned: pruned.as_ref(),
        cache: cache.as_ref(),
        foreign: foreign_batches,
    };
    // The saved config names the data by an absolute path (read later from the run dir).
    let toml = {
        let mut saved = config.clone();
        saved.data = saved.data.absolute();
        saved.to_toml()
    };
    Ok(fit(
        &arch,
        &config.train,
        &objective,
        init.map(|t| t.1),
        splits,
        &JobIdentity {
            config_hash: &hash,
            dataset: config.data.name(),
            seed: config.seed,
            kind: "distill",
            config_toml: &toml,
        },
        TrainOptions {
            out_dir,
            resume,
            force,
            reporter,
            backend,
            devices: config.devices.unwrap_or(1),
        },
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LrStage;
    use crate::config::distill::PktKernel;

    fn settings(method: Method, curriculum: Vec<usize>) -> DistillSettings {
        DistillSettings {
            method,
            curriculum,
            curriculum_lr: Some(5e-4),
            weights: None,
            temperature: 4.0,
            kernel: PktKernel::Combined,
            reset_optimizer_each_epoch: false,
            teacher_cache: true,
        }
    }

    fn main_schedule() -> TrainSettings {
        TrainSettings {
            batch_size: 8,
            eval_batch_size: 8,
            schedule: vec![
                LrStage {
                    epochs: 2,
                    lr: 1e-3,
                },
                LrStage {
                    epochs: 1,
                    lr: 1e-4,
                },
            ],
            augment: Default::default(),
            adam: Default::default(),
        }
    }

    #[test]
    fn curriculum_switches_layers_at_the_configured_epochs() {
        let s = settings(Method::Indistill, vec![3, 4, 5]);
        let main = main_schedule();
        let d = Distillation {
            settings: &s,
            main: &main,
            teacher: None,
            pruned: None,
            cache: None,
            foreign: None,
        };
        assert_eq!(d.total_epochs(), 15);
        let phases: Vec<String> = (1..=15).map(|e| d.phase(e).0).collect();
        let expect: Vec<String> = std::iter::repeat_n("curriculum:block0", 3)
            .chain(std::iter::repeat_n("curriculum:block1", 4))
            .chain(std::iter::repeat_n("curriculum:block2", 5))
            .chain(std::iter::repeat_n("main:indistill", 3))
            .map(String::from)
            .collect();
        assert_eq!(phases, expect);
        assert_eq!(d.phase(1).1, 5e-4);
        assert_eq!(d.phase(13).1, 1e-3);
        assert_eq!(d.phase(15).1, 1e-4);
        assert_eq!(d.stage(13), Stage::Main(1));
    }

    #[test]
    fn baselines_have_no_curriculum_and_their_own_losses() {
        let main = main_schedule();
        for (m, trains_head) in [
            (Method::Pkt, false),
            (Method::Kd, true),
            (Method::None, true),
        ] {
            let s = settings(m, vec![3, 4, 5]);
            let d = Distillation {
                settings: &s,
                main: &main,
                teacher: None,
                pruned: None,
                cache: None,
                foreign: None,
            };
            assert_eq!(d.total_epochs(), 3, "{m:?}");
            assert_eq!(s.weights().trains_head(), trains_head, "{m:?}");
        }
        assert!(Method::Indistill.default_weights().trains_head());
    }
}
