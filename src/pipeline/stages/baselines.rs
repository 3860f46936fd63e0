//! `baseline-<method>`: the student trained with another method (e.g. `none`: alone) and the
//! same schedule and source, for the report's comparison.

use super::student::Student;
use crate::config::distill::Method;

/// One baseline stage per method, each a copy of `student` with that method and the default
/// loss weights.
pub fn baselines(student: &Student, methods: &[Method]) -> Vec<Student> {
    methods
        .iter()
        .map(|m| {
            let mut config = student.config.clone();
            config.distill.method = *m;
            config.distill.weights = None;
            Student {
                stage: format!("baseline-{}", m.name()),
                source: student.source.clone(),
                config,
            }
        })
        .collect()
}
