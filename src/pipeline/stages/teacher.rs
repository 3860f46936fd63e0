//! `teacher`: the big network, trained with cross-entropy, or a frozen ONNX teacher whose
//! accuracy is measured with tract.

use std::path::Path;

use anyhow::{Context as _, Result};

use super::training::{EVAL_FILE, StageEval, TrainJob, train_stage, write_eval};
use crate::config::distill::OnnxTeacherRef;
use crate::data::DataSource;
use crate::data::split::ValidationSplit;
use crate::infer::teacher::OnnxTeacher;
use crate::pipeline::config::TeacherSection;
use crate::pipeline::stage::{Context, Inputs, Stage};
use crate::progress::Reporter;

/// Trains the teacher.
pub struct Teacher {
    /// Dataset.
    pub data: DataSource,
    /// Run seed.
    pub seed: u64,
    /// `[teacher]`.
    pub section: TeacherSection,
    /// Images held out of training.
    pub validation: Option<ValidationSplit>,
}

impl Stage for Teacher {
    fn name(&self) -> String {
        "teacher".into()
    }

    fn needs(&self) -> Vec<String> {
        Vec::new()
    }

    fn inputs(&self) -> Result<serde_json::Value> {
        Ok(Inputs::default()
            .add("data", &self.data)?
            .add("seed", &self.seed)?
            .add("section", &self.section)?
            .add_some("validation", &self.validation)?
            .done())
    }

    fn required_artifacts(&self) -> Vec<String> {
        super::training::required_artifacts()
    }

    fn run(&self, ctx: &Context, dir: &Path, reporter: &mut Reporter) -> Result<()> {
        let splits = ctx.training_splits()?;
        let job = TrainJob {
            model: &self.section.model,
            settings: &self.section.train,
            seed: self.seed,
            fingerprint: &super::own_hash(self)?,
            dataset: self.data.name(),
        };
        train_stage(dir, &job, &splits, ctx.compute(), reporter)?;
        write_eval(dir, ctx, true, self.section.train.eval_batch_size, reporter)
    }
}

/// The file an ONNX teacher is copied to in its stage directory.
pub const ONNX_TEACHER_FILE: &str = "teacher.onnx";

/// A frozen ONNX teacher (`teacher = { onnx = … }`): copied into the stage directory and its
/// top-1 on the test split measured with tract (no training).
pub struct OnnxTeacherStage {
    /// Dataset.
    pub data: DataSource,
    /// The model and how to run it.
    pub teacher: OnnxTeacherRef,
    /// Images held out of training (its top-1 is measured on them too).
    pub validation: Option<ValidationSplit>,
}

impl Stage for OnnxTeacherStage {
    fn name(&self) -> String {
        "teacher".into()
    }

    fn needs(&self) -> Vec<String> {
        Vec::new()
    }

    fn inputs(&self) -> Result<serde_json::Value> {
        let path = &self.teacher.onnx;
        let digest = crate::fsutil::sha256_file(path)
            .with_context(|| format!("teacher {}", path.display()))?;
        Ok(Inputs::default()
            .add("data", &self.data)?
            .add("onnx-sha256", &digest)?
            .add("teacher-onnx", &self.teacher.spec)?
            .add_some("validation", &self.validation)?
            .done())
    }

    fn required_artifacts(&self) -> Vec<String> {
        vec![ONNX_TEACHER_FILE.into(), EVAL_FILE.into()]
    }

    fn run(&self, ctx: &Context, dir: &Path, reporter: &mut Reporter) -> Result<()> {
        let splits = ctx.splits()?;
        let src = &self.teacher.onnx;
        let bytes = std::fs::read(src).with_context(|| format!("teacher {}", src.display()))?;
        let copy = dir.join(ONNX_TEACHER_FILE);
        crate::fsutil::write_atomic(&copy, &bytes)?;
        let started = std::time::Instant::now();
        let teacher = OnnxTeacher::load(&copy, &self.teacher.spec, None)?;
        reporter.line(format!(
            "measuring the ONNX teacher {} on the test split with tract",
            src.display()
        ));
        let accuracy = teacher
            .accuracy(&splits.test, 256)
            .map_err(|e| anyhow::anyhow!(e))?;
        let validation = match ctx.validation_splits()? {
            Some(v) => Some(super::training::ValidationEval {
                accuracy: teacher
                    .accuracy(&v.test, 256)
                    .map_err(|e| anyhow::anyhow!(e))?,
                retrieval: None,
            }),
            None => None,
        };
        let model = crate::onnx::proto::decode(&bytes)?;
        let info = crate::onnx::graph::analyse(&model, Some(teacher.input())).ok();
        let eval = StageEval {
            architecture: src
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            params: crate::onnx::proto::parameter_count(&model),
            macs: info.map_or(0, |i| i.macs),
            accuracy,
            classifies: true,
            retrieval: None,
            train_seconds: 0.0,
            validation,
        };
        reporter.line(format!(
            "ONNX teacher top-1 {:.2} % ({:.1} s)",
            100.0 * accuracy,
            started.elapsed().as_secs_f64()
        ));
        crate::fsutil::write_json_atomic(&dir.join(EVAL_FILE), &eval)?;
        Ok(())
    }
}
