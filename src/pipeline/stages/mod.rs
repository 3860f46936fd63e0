//! The stages of `distill-edge build`, one file each. [`all`] lists them in build order;
//! adding a stage is a new file and one line there.

pub mod auxiliary;
pub mod baselines;
pub mod bench;
pub mod bundle;
pub mod check;
pub mod export;
pub mod student;
pub mod teacher;
pub mod training;

use anyhow::Result;

use super::BuildOptions;
use super::config::{AuxInit, PipelineConfig};
use super::stage::{Stage, fingerprint};
use crate::config::DistillConfig;
use crate::device::SshSettings;

/// Every stage of the build, in order: `teacher`, [`auxiliary-baseline`], [`auxiliary`],
/// `student`, `baseline-<method>`..., `export`, `check`, then `bundle-<target>` and
/// `bench-<target>` per target.
pub fn all(config: &PipelineConfig, opts: &BuildOptions) -> Vec<Box<dyn Stage>> {
    let mut stages: Vec<Box<dyn Stage>> = match (&config.teacher, &config.teacher_onnx) {
        (_, Some(onnx)) => vec![Box::new(teacher::OnnxTeacherStage {
            data: config.data.clone(),
            teacher: onnx.clone(),
            validation: config.validation.clone(),
        })],
        (Some(section), None) => vec![Box::new(teacher::Teacher {
            data: config.data.clone(),
            seed: config.seed,
            section: section.clone(),
            validation: config.validation.clone(),
        })],
        (None, None) => unreachable!("validated: a teacher section or an ONNX teacher"),
    };
    // How the auxiliary or the student reads an ONNX teacher (`None`: the teacher's model.ckpt).
    let onnx_spec = config.teacher_onnx.as_ref().map(|t| t.spec.clone());
    let mut source = "teacher";
    if let Some(a) = &config.auxiliary {
        // `init = "baseline"` without a schedule is refused when the config is read.
        let baseline = a.baseline.as_ref().filter(|_| a.init == AuxInit::Baseline);
        if let Some(schedule) = baseline {
            stages.push(Box::new(auxiliary::AuxiliaryBaseline {
                data: config.data.clone(),
                seed: config.seed,
                model: a.model.clone(),
                schedule: schedule.clone(),
                validation: config.validation.clone(),
            }));
        }
        stages.push(Box::new(auxiliary::Auxiliary {
            run: config.name.clone(),
            data: config.data.clone(),
            seed: config.seed,
            section: a.clone(),
            from_baseline: baseline.is_some(),
            validation: config.validation.clone(),
            teacher_onnx: onnx_spec.clone(),
        }));
        source = "auxiliary";
    }
    let student = student::Student {
        stage: "student".into(),
        source: source.into(),
        config: DistillConfig {
            name: format!("{}-student", config.name),
            seed: config.seed,
            data: config.data.clone(),
            teacher: None,
            student: config.student.model.clone(),
            init: None,
            train: config.student.train.clone(),
            distill: config.student.distill.clone(),
            validation: config.validation.clone(),
            teacher_onnx: if source == "teacher" {
                onnx_spec.clone()
            } else {
                None
            },
            variants: Default::default(),
            backend: None,
            devices: None,
        },
    };
    let baselines = baselines::baselines(
        &student,
        &config.student.baselines,
        config.student.baselines_train.as_ref(),
    );
    stages.push(Box::new(student));
    for b in baselines {
        stages.push(Box::new(b));
    }
    stages.push(Box::new(export::Export {
        section: config.export.clone(),
    }));
    stages.push(Box::new(check::Check {
        section: config.check.clone(),
    }));
    for target in &opts.targets {
        stages.push(Box::new(bundle::Bundle {
            target: target.clone(),
            section: config.targets.clone(),
        }));
        stages.push(Box::new(bench::Bench {
            target: target.clone(),
            device: opts.device.clone(),
            ssh: SshSettings {
                connect_timeout: opts.connect_timeout,
                options: opts.ssh_options.clone(),
            },
        }));
    }
    stages
}

/// A hash of a stage's own inputs (without its upstream), to identify a training job in its
/// checkpoint: a partial directory only ever holds the work of one fingerprint, so this is
/// enough to refuse a resume of something else.
fn own_hash(stage: &dyn Stage) -> Result<String> {
    fingerprint(&stage.name(), &stage.inputs()?, &[])
}
