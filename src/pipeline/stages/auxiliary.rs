//! `auxiliary-baseline` (optional) and `auxiliary`: the auxiliary teacher, the student's
//! depth and wider, learning from the teacher, optionally from its own supervised baseline.

use std::path::Path;

use anyhow::Result;

use super::training::{TrainJob, distill_stage, train_stage, write_eval};
use crate::config::{DistillConfig, TrainSettings};
use crate::data::DataSource;
use crate::data::split::ValidationSplit;
use crate::pipeline::config::AuxiliarySection;
use crate::pipeline::stage::{Context, Inputs, Stage};
use crate::progress::Reporter;
use crate::train::supervised::MODEL_FILE;

/// Stage name of the auxiliary's supervised baseline.
const BASELINE: &str = "auxiliary-baseline";

/// Trains the auxiliary with cross-entropy, to start its transfer from.
pub struct AuxiliaryBaseline {
    /// Dataset.
    pub data: DataSource,
    /// Run seed.
    pub seed: u64,
    /// The auxiliary's model.
    pub model: String,
    /// `[auxiliary.baseline]`.
    pub schedule: TrainSettings,
    /// Images held out of training.
    pub validation: Option<ValidationSplit>,
}

impl Stage for AuxiliaryBaseline {
    fn name(&self) -> String {
        BASELINE.into()
    }

    fn needs(&self) -> Vec<String> {
        Vec::new()
    }

    fn inputs(&self) -> Result<serde_json::Value> {
        Ok(Inputs::default()
            .add("data", &self.data)?
            .add("seed", &self.seed)?
            .add("model", &self.model)?
            .add("train", &self.schedule)?
            .add_some("validation", &self.validation)?
            .done())
    }

    fn required_artifacts(&self) -> Vec<String> {
        super::training::required_artifacts()
    }

    fn run(&self, ctx: &Context, dir: &Path, reporter: &mut Reporter) -> Result<()> {
        let splits = ctx.training_splits()?;
        let job = TrainJob {
            model: &self.model,
            settings: &self.schedule,
            seed: self.seed,
            fingerprint: &super::own_hash(self)?,
            dataset: self.data.name(),
        };
        train_stage(dir, &job, &splits, ctx.compute(), reporter)?;
        write_eval(dir, ctx, true, self.schedule.eval_batch_size, reporter)
    }
}

/// Distills the teacher into the auxiliary.
pub struct Auxiliary {
    /// Run name.
    pub run: String,
    /// Dataset.
    pub data: DataSource,
    /// Run seed.
    pub seed: u64,
    /// `[auxiliary]`.
    pub section: AuxiliarySection,
    /// Starts from [`AuxiliaryBaseline`]'s network.
    pub from_baseline: bool,
    /// Images held out of training.
    pub validation: Option<ValidationSplit>,
    /// How to run the teacher when it is an ONNX model (the teacher stage's `teacher.onnx`).
    pub teacher_onnx: Option<crate::config::distill::OnnxTeacherSpec>,
}

impl Stage for Auxiliary {
    fn name(&self) -> String {
        "auxiliary".into()
    }

    fn needs(&self) -> Vec<String> {
        let mut needs = vec!["teacher".to_string()];
        if self.from_baseline {
            needs.push(BASELINE.into());
        }
        needs
    }

    fn inputs(&self) -> Result<serde_json::Value> {
        let inputs = Inputs::default()
            .add("seed", &self.seed)?
            .add("section", &self.section)?;
        let inputs = inputs.add_some("validation", &self.validation)?;
        // Only with an ONNX teacher, so that the fingerprints of other builds stay as they were.
        let inputs = match &self.teacher_onnx {
            Some(spec) => inputs.add("teacher-onnx", spec)?,
            None => inputs,
        };
        Ok(inputs.done())
    }

    fn required_artifacts(&self) -> Vec<String> {
        super::training::required_artifacts()
    }

    fn run(&self, ctx: &Context, dir: &Path, reporter: &mut Reporter) -> Result<()> {
        let splits = ctx.training_splits()?;
        let a = &self.section;
        let dc = DistillConfig {
            name: format!("{}-auxiliary", self.run),
            seed: self.seed,
            data: self.data.clone(),
            teacher: Some(ctx.dir("teacher").join(match self.teacher_onnx {
                Some(_) => super::teacher::ONNX_TEACHER_FILE,
                None => MODEL_FILE,
            })),
            student: a.model.clone(),
            init: self
                .from_baseline
                .then(|| ctx.dir(BASELINE).join(MODEL_FILE)),
            train: a.train.clone(),
            distill: a.distill.clone(),
            validation: self.validation.clone(),
            teacher_onnx: self.teacher_onnx.clone(),
            variants: Default::default(),
            backend: None,
            devices: None,
        };
        distill_stage(&dc, dir, &splits, ctx.compute(), reporter)?;
        write_eval(
            dir,
            ctx,
            a.distill.weights().trains_head(),
            a.train.eval_batch_size,
            reporter,
        )
    }
}
