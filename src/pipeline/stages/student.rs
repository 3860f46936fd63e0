//! `student`: the student, distilled from the auxiliary (or the teacher) with the configured
//! method. Its baselines ([`super::baselines`]) are the same stage with another method.

use std::path::Path;

use anyhow::Result;

use super::training::{distill_stage, write_eval};
use crate::config::DistillConfig;
use crate::pipeline::stage::{Context, Inputs, Stage};
use crate::progress::Reporter;
use crate::train::supervised::MODEL_FILE;

/// Distills `source`'s network into the student.
pub struct Student {
    /// Stage name (`student`, `baseline-<method>`).
    pub stage: String,
    /// The stage whose network teaches (`auxiliary` or `teacher`).
    pub source: String,
    /// The distillation run; its `teacher` is set from `source` when the stage runs (the
    /// source's `teacher.onnx` when `teacher_onnx` is set, else its `model.ckpt`).
    pub config: DistillConfig,
}

impl Stage for Student {
    fn name(&self) -> String {
        self.stage.clone()
    }

    fn needs(&self) -> Vec<String> {
        vec![self.source.clone()]
    }

    fn inputs(&self) -> Result<serde_json::Value> {
        let c = &self.config;
        let inputs = Inputs::default()
            .add("data", &c.data)?
            .add("seed", &c.seed)?
            .add("student", &c.student)?
            .add("train", &c.train)?
            .add("distill", &c.distill)?;
        // Only with an ONNX teacher, so that the fingerprints of other builds stay as they were.
        let inputs = match &c.teacher_onnx {
            Some(spec) => inputs.add("teacher-onnx", spec)?,
            None => inputs,
        };
        let inputs = inputs.add_some("validation", &c.validation)?;
        Ok(inputs.done())
    }

    fn required_artifacts(&self) -> Vec<String> {
        super::training::required_artifacts()
    }

    fn run(&self, ctx: &Context, dir: &Path, reporter: &mut Reporter) -> Result<()> {
        let splits = ctx.training_splits()?;
        let mut dc = self.config.clone();
        dc.teacher = Some(ctx.dir(&self.source).join(match dc.teacher_onnx {
            Some(_) => super::teacher::ONNX_TEACHER_FILE,
            None => MODEL_FILE,
        }));
        distill_stage(&dc, dir, &splits, ctx.compute(), reporter)?;
        write_eval(
            dir,
            ctx,
            dc.distill.weights().trains_head(),
            dc.train.eval_batch_size,
            reporter,
        )
    }
}
