//! A frozen ONNX teacher run by tract (forward only), for PKT and KD.
//!
//! The teacher has its own preprocessing (input size with resize, per-channel mean/std, channel
//! order: `[teacher-onnx]` over the model's distill-edge metadata), its logits output, and an
//! embedding that may be any named tensor inside the graph: when it is not an output, the graph
//! is edited to expose it as one. Training reads its outputs through the teacher-output cache
//! (`train::teacher_cache`), which calls [`OnnxTeacher`] once over the training split.
//!
//! For InDistill the teacher is loaded for a student: one pruned side branch per student block
//! is added to the graph by `onnx::surgery` (its outputs are the curriculum targets), with the
//! taps `[teacher-onnx] taps` names or, without it, the ones `onnx::graph` proposes.

use std::path::Path;

use super::preprocess::{ChannelOrder, Preprocess, PreprocessOverrides};
use super::tract::TractEngine;
use super::{Batch, InferError, ModelIo};
use crate::config::distill::OnnxTeacherSpec;
use crate::data::Dataset;
use crate::data::prep::Normalization;
use crate::model::Architecture;
use crate::onnx::surgery::PrunedTap;
use crate::onnx::{meta, proto};
use crate::train::teacher_cache::{ForeignOutputs, ForeignTeacher};

/// A loaded ONNX teacher.
pub struct OnnxTeacher {
    label: String,
    engine: TractEngine,
    pre: Preprocess,
    logits: usize,
    embedding: usize,
    embedding_name: String,
    classes: usize,
    /// The pruned side branches (InDistill), with the index of each one's output.
    taps: Vec<(PrunedTap, usize)>,
}

fn load_err(path: &Path, message: String) -> InferError {
    InferError::Load {
        path: path.display().to_string(),
        message,
    }
}

impl OnnxTeacher {
    /// Loads `path` with the settings of `spec`. Every operator tract cannot run is listed at
    /// once; a missing embedding tensor names the graph's outputs. With `student` (InDistill),
    /// the graph gets one pruned branch per student block (see `onnx::surgery`); a tap that
    /// cannot serve is refused with the reason and the taps that would.
    pub fn load(
        path: &Path,
        spec: &OnnxTeacherSpec,
        student: Option<&Architecture>,
    ) -> Result<Self, InferError> {
        let bytes = std::fs::read(path).map_err(|e| load_err(path, e.to_string()))?;
        let unsupported = super::tract::unsupported_ops(&bytes).map_err(|e| load_err(path, e))?;
        if !unsupported.is_empty() {
            return Err(load_err(
                path,
                format!(
                    "tract cannot run {} node(s): {}",
                    unsupported.len(),
                    unsupported
                        .iter()
                        .map(|u| format!("{} ({})", u.op_type, u.node))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let mut model = proto::decode(&bytes).map_err(|e| load_err(path, e.to_string()))?;
        let outputs: Vec<String> = model
            .graph
            .as_ref()
            .map(|g| g.output.iter().map(|o| o.name().to_string()).collect())
            .unwrap_or_default();
        let embedding_name = match &spec.embedding {
            Some(name) => name.clone(),
            None if outputs.iter().any(|o| o == crate::onnx::export::EMBEDDING) => {
                crate::onnx::export::EMBEDDING.to_string()
            }
            None => {
                return Err(load_err(
                    path,
                    format!(
                        "which tensor is the embedding? give [teacher-onnx] embedding = \"NAME\" (any tensor of the graph; its outputs are {outputs:?})"
                    ),
                ));
            }
        };
        if !outputs.contains(&embedding_name) {
            proto::expose_outputs(&mut model, std::slice::from_ref(&embedding_name)).map_err(
                |e| {
                    load_err(
                        path,
                        format!("[teacher-onnx] embedding {embedding_name:?}: {e}"),
                    )
                },
            )?;
        }
        let meta_norm = metadata_normalization(&model);
        let overrides = PreprocessOverrides {
            file: None,
            input_size: spec.input_size.clone(),
            mean: spec.mean.clone(),
            std: spec.std.clone(),
            channel_order: spec
                .channel_order
                .as_deref()
                .map(|c| {
                    c.parse::<ChannelOrder>()
                        .map_err(|e| load_err(path, format!("[teacher-onnx] channel-order: {e}")))
                })
                .transpose()?,
            logits_output: spec.logits_output.clone(),
        };
        let pre = Preprocess::resolve(path, &proto::encode(&model), &overrides, meta_norm.as_ref())
            .map_err(|e| load_err(path, e.to_string()))?;
        let pruned = match student {
            Some(student) => {
                let info = crate::onnx::graph::analyse(&model, Some(pre.input))
                    .map_err(|e| load_err(path, e.to_string()))?;
                crate::onnx::surgery::add_pruned_taps(
                    &mut model,
                    &info,
                    student,
                    spec.taps.as_deref(),
                )
                .map_err(|e| load_err(path, format!("InDistill taps: {e}")))?
            }
            None => Vec::new(),
        };
        let bytes = proto::encode(&model);
        if pre.normalization.is_none() {
            return Err(load_err(
                path,
                "no input normalisation: give [teacher-onnx] mean and std (the model has no distill-edge metadata)".into(),
            ));
        }
        let label = path.display().to_string();
        let io = ModelIo {
            input: Some(pre.input),
            logits: Some(pre.logits_output),
        };
        let engine = super::guard(&label, true, || {
            TractEngine::from_bytes_with(&bytes, &label, &io)
        })?;
        let names = engine.output_names().to_vec();
        let find = |name: &str| names.iter().position(|n| n == name);
        let embedding = find(&embedding_name).ok_or_else(|| {
            load_err(
                path,
                format!("tract does not give the embedding output {embedding_name:?} ({names:?})"),
            )
        })?;
        let logits = find(&pre.logits_name).unwrap_or(pre.logits_output);
        let taps = pruned
            .into_iter()
            .map(|t| {
                let i = find(&t.output).ok_or_else(|| {
                    load_err(
                        path,
                        format!("tract does not give the tap output {:?}", t.output),
                    )
                })?;
                Ok((t, i))
            })
            .collect::<Result<Vec<_>, InferError>>()?;
        let mut teacher = OnnxTeacher {
            label,
            engine,
            pre,
            logits,
            embedding,
            embedding_name,
            classes: 0,
            taps,
        };
        // One probe image fixes the number of classes and checks the outputs' shapes.
        let probe = teacher.pre.random_inputs(1, 0);
        let [c, h, w] = teacher.pre.input;
        let out = teacher.engine.run_raw(Batch {
            data: &probe,
            shape: [1, c, h, w],
        })?;
        teacher.classes = out[teacher.logits].1.len();
        for (t, i) in &teacher.taps {
            let want = [1, t.shape[0], t.shape[1], t.shape[2]];
            if out[*i].0 != want {
                return Err(load_err(
                    path,
                    format!(
                        "InDistill tap of block {} ({}): tract gives shape {:?}, the student's block needs {want:?}",
                        t.block, t.conv, out[*i].0
                    ),
                ));
            }
        }
        if teacher.classes == 0 || out[teacher.embedding].1.is_empty() {
            return Err(load_err(
                path,
                "the logits or the embedding output is empty for one image".into(),
            ));
        }
        Ok(teacher)
    }
}

impl OnnxTeacher {
    /// The ONNX teacher of `config`, loaded, when `teacher` is an `.onnx` file (`None`
    /// otherwise); with `indistill`, pruned for the student (bound to the images of `data`).
    pub fn for_config(
        config: &crate::config::DistillConfig,
        data: &Dataset,
        indistill: bool,
    ) -> Result<Option<Self>, InferError> {
        let Some(path) = config
            .teacher
            .as_deref()
            .filter(|p| crate::train::distill::is_onnx(p))
        else {
            return Ok(None);
        };
        let student = if indistill {
            let arch = crate::model::ModelSpec::resolve(&config.student, Path::new("."))
                .and_then(|s| s.bind(data.shape, data.classes.len()))
                .map_err(|e| load_err(path, format!("student {}: {e}", config.student)))?;
            Some(arch)
        } else {
            None
        };
        Self::load(
            path,
            &config.teacher_onnx.clone().unwrap_or_default(),
            student.as_ref(),
        )
        .map(Some)
    }

    /// `[c, h, w]` of the teacher's input.
    pub fn input(&self) -> [usize; 3] {
        self.pre.input
    }

    /// Top-1 accuracy (0..1) of the teacher's logits on `data`, in batches of `batch` images.
    pub fn accuracy(&self, data: &Dataset, batch: usize) -> Result<f64, String> {
        let indices: Vec<usize> = (0..data.len()).collect();
        let mut correct = 0usize;
        for chunk in indices.chunks(batch.max(1)) {
            let out = self.outputs(data, chunk)?;
            for (row, &i) in out.logits.chunks_exact(self.classes).zip(chunk) {
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(j, _)| j);
                correct += usize::from(best == usize::from(data.labels[i]));
            }
        }
        Ok(correct as f64 / data.len().max(1) as f64)
    }
}

/// The normalisation in a distill-edge model's metadata, when it has one that parses.
fn metadata_normalization(model: &proto::pb::ModelProto) -> Option<Normalization> {
    let props = proto::metadata(model);
    let get = |k: &str| {
        props
            .iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| serde_json::from_str::<Vec<f32>>(v).ok())
    };
    Some(Normalization {
        mean: get(meta::NORMALIZATION_MEAN)?,
        std: get(meta::NORMALIZATION_STD)?,
    })
}

impl ForeignTeacher for OnnxTeacher {
    fn identity(&self) -> String {
        let taps: Vec<&PrunedTap> = self.taps.iter().map(|(t, _)| t).collect();
        format!(
            "onnx:{}:{}:{:?}:{}:{}",
            self.embedding_name,
            self.pre.logits_name,
            self.pre.input,
            serde_json::to_string(&self.pre).unwrap_or_default(),
            serde_json::to_string(&taps).unwrap_or_default()
        )
    }

    fn tap_shapes(&self) -> Vec<[usize; 3]> {
        self.taps.iter().map(|(t, _)| t.shape).collect()
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn outputs(&self, data: &Dataset, picks: &[usize]) -> Result<ForeignOutputs, String> {
        let x = self
            .pre
            .images(data, picks)
            .map_err(|e| format!("teacher {}: {e}", self.label))?;
        let [c, h, w] = self.pre.input;
        let out = self
            .engine
            .run_raw(Batch {
                data: &x,
                shape: [picks.len(), c, h, w],
            })
            .map_err(|e| e.to_string())?;
        let n = picks.len();
        let (logits, embedding) = (&out[self.logits].1, &out[self.embedding].1);
        if logits.len() != n * self.classes || embedding.is_empty() || embedding.len() % n != 0 {
            return Err(format!(
                "teacher {}: {} logits and {} embedding values for {n} images",
                self.label,
                logits.len(),
                embedding.len()
            ));
        }
        let mut taps = Vec::with_capacity(self.taps.len());
        for (t, i) in &self.taps {
            let values = &out[*i].1;
            if values.len() != n * t.shape.iter().product::<usize>() {
                return Err(format!(
                    "teacher {}: {} values for the tap of block {} for {n} images of shape {:?}",
                    self.label,
                    values.len(),
                    t.block,
                    t.shape
                ));
            }
            taps.push(values.clone());
        }
        Ok(ForeignOutputs {
            logits: logits.clone(),
            embedding: embedding.clone(),
            dim: embedding.len() / n,
            taps,
        })
    }
}
