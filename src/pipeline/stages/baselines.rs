//! `baseline-<method>`: the student trained with another method (e.g. `none`: alone) and the
//! same schedule and source, for the report's comparison.

use super::student::Student;
use crate::config::TrainSettings;
use crate::config::distill::Method;

/// One baseline stage per method, each a copy of `student` with that method, the default
/// loss weights, and `train` as its schedule when given.
pub fn baselines(
    student: &Student,
    methods: &[Method],
    train: Option<&TrainSettings>,
) -> Vec<Student> {
    methods
        .iter()
        .map(|m| {
            let mut config = student.config.clone();
            config.distill.method = *m;
            config.distill.weights = None;
            if let Some(t) = train {
                // A schedule of their own is a supervised one: Adam lives across epochs (the
                // reference's student alone re-creates it only when the rate changes).
                config.train = t.clone();
                config.distill.reset_optimizer_each_epoch = false;
            }
            Student {
                stage: format!("baseline-{}", m.name()),
                source: student.source.clone(),
                config,
            }
        })
        .collect()
}
