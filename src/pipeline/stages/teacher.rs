//! `teacher`: the big network, trained with cross-entropy.

use std::path::Path;

use anyhow::Result;

use super::training::{TrainJob, train_stage, write_eval};
use crate::data::DataSource;
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
            .done())
    }

    fn required_artifacts(&self) -> Vec<String> {
        super::training::required_artifacts()
    }

    fn run(&self, ctx: &Context, dir: &Path, reporter: &mut Reporter) -> Result<()> {
        let splits = ctx.splits()?;
        let job = TrainJob {
            model: &self.section.model,
            settings: &self.section.train,
            seed: self.seed,
            fingerprint: &super::own_hash(self)?,
            dataset: self.data.name(),
        };
        train_stage(dir, &job, &splits, ctx.backend(), reporter)?;
        write_eval(
            dir,
            &splits,
            true,
            self.section.train.eval_batch_size,
            ctx.backend(),
            reporter,
        )
    }
}
