//! Host validation of an exported model: accuracy per engine, output parity between burn,
//! tract and ONNX Runtime, latency percentiles at fixed batch sizes, size, params, MACs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::data::Dataset;
use crate::data::prep::{Normalization, fill_batch};
use crate::eval::classification::argmax_rows;
use crate::eval::latency::LatencyStats;
use crate::infer::parity::{Parity, Tolerance, compare};
use crate::infer::{Batch, Engine, InferError};
use crate::model::{Architecture, ConvNet};
use crate::onnx::meta as meta_keys;
use crate::onnx::proto;
use crate::progress::Reporter;

/// What a model file says about itself (from its metadata).
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    /// Path.
    pub path: PathBuf,
    /// File size, bytes.
    pub bytes: u64,
    /// Parameters in initializers (int8 weights count once).
    pub parameters: usize,
    /// Architecture, when the metadata has it (MACs come from it).
    pub architecture: Option<Architecture>,
    /// Normalisation from the metadata.
    pub normalization: Option<Normalization>,
    /// MACs per image.
    pub macs: Option<u64>,
    /// int8 model (QDQ or operator form).
    pub quantized: bool,
    /// Dataset kind the model was trained on.
    pub dataset: Option<String>,
    /// Bytes of the initializers' data (the weights as stored in the file).
    pub weight_bytes: u64,
}

/// Bytes of every initializer's data in `model` (raw data, or the typed fields at their
/// element size).
pub fn weight_bytes(model: &proto::pb::ModelProto) -> u64 {
    let Some(graph) = model.graph.as_ref() else {
        return 0;
    };
    graph
        .initializer
        .iter()
        .map(|t| {
            let raw = t.raw_data.as_ref().map_or(0, |r| r.len());
            let typed = 4 * (t.float_data.len() + t.int32_data.len())
                + 8 * (t.int64_data.len() + t.double_data.len() + t.uint64_data.len());
            (raw + typed) as u64
        })
        .sum()
}

impl ModelInfo {
    /// Reads a model file's metadata.
    pub fn read(path: &Path) -> Result<Self, InferError> {
        let bytes = std::fs::read(path).map_err(|e| InferError::Load {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let model = proto::decode(&bytes).map_err(|e| InferError::Load {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let meta = proto::metadata(&model);
        let get = |k: &str| meta.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        // A key that is present must parse: a model whose metadata lies is refused, not read
        // as if the key were absent.
        let parse = |k: &str| -> Result<Option<serde_json::Value>, InferError> {
            get(k)
                .map(|v| {
                    serde_json::from_str(&v).map_err(|e| InferError::Load {
                        path: path.display().to_string(),
                        message: format!("metadata `{k}` is not valid JSON: {e}"),
                    })
                })
                .transpose()
        };
        fn typed<T: serde::de::DeserializeOwned>(
            path: &Path,
            k: &str,
            v: serde_json::Value,
        ) -> Result<T, InferError> {
            serde_json::from_value(v).map_err(|e| InferError::Load {
                path: path.display().to_string(),
                message: format!("metadata `{k}`: {e}"),
            })
        }
        let architecture: Option<Architecture> = parse(meta_keys::ARCHITECTURE)?
            .map(|v| typed(path, meta_keys::ARCHITECTURE, v))
            .transpose()?;
        let mean = parse(meta_keys::NORMALIZATION_MEAN)?;
        let std = parse(meta_keys::NORMALIZATION_STD)?;
        let normalization = match (mean, std) {
            (Some(m), Some(s)) => Some(Normalization {
                mean: typed(path, meta_keys::NORMALIZATION_MEAN, m)?,
                std: typed(path, meta_keys::NORMALIZATION_STD, s)?,
            }),
            _ => None,
        };
        if let Some(n) = &normalization {
            let bad = n.mean.iter().any(|m| !m.is_finite())
                || n.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
                || n.mean.len() != n.std.len()
                || n.mean.is_empty();
            if bad {
                return Err(InferError::Load {
                    path: path.display().to_string(),
                    message: format!(
                        "metadata normalisation mean {:?} / std {:?}: expected one finite mean and one finite std > 0 per channel",
                        n.mean, n.std
                    ),
                });
            }
        }
        if let Some(a) = &architecture
            && (a.input.channels == 0
                || a.input.height == 0
                || a.input.width == 0
                || a.classes == 0)
        {
            return Err(InferError::Load {
                path: path.display().to_string(),
                message: format!(
                    "metadata `{}`: input {} with {} classes is not a usable model",
                    meta_keys::ARCHITECTURE,
                    a.input,
                    a.classes
                ),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            bytes: bytes.len() as u64,
            parameters: proto::parameter_count(&model),
            weight_bytes: weight_bytes(&model),
            macs: architecture.as_ref().map(Architecture::macs),
            architecture,
            normalization,
            quantized: get(meta_keys::QUANTIZATION).is_some(),
            dataset: get(meta_keys::DATASET),
        })
    }
}

/// Results of one engine.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct EngineReport {
    /// `tract` or `onnxruntime`.
    pub engine: String,
    /// Top-1 on the test split (0..1); `None` on unlabelled (random) inputs.
    pub accuracy: Option<f64>,
    /// Logits compared with the reference (burn when a checkpoint is given, else tract).
    pub parity: Option<Parity>,
    /// What `parity` compares against.
    pub parity_reference: Option<String>,
    /// Latency per batch size.
    pub latency: Vec<LatencyAt>,
    /// Loading the model, milliseconds (when the engine measured it).
    #[serde(default)]
    pub load_ms: Option<f64>,
    /// Plan, first run and warm-up per batch size (ONNX Runtime plans at load: plan 0).
    #[serde(default)]
    pub phases: Vec<distill_edge_schema::Phases>,
}

/// Latency of one batch size.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct LatencyAt {
    /// Images per run.
    pub batch: usize,
    /// Percentiles, milliseconds per run.
    pub stats: LatencyStats,
}

/// How to measure latency.
#[derive(Clone, Debug, Default)]
pub struct LatencyPlan {
    /// Batch sizes.
    pub batches: Vec<usize>,
    /// Untimed runs first.
    pub warmup: usize,
    /// The warm-up lasts at least this many seconds too.
    pub warmup_seconds: f64,
    /// Timed runs (at least).
    pub runs: usize,
    /// Keep running until this many seconds have passed (0 = just `runs`).
    pub min_seconds: f64,
}

/// Every image of `ds` normalised, `[n, c, h, w]`.
pub fn normalised(ds: &Dataset, norm: &Normalization) -> Vec<f32> {
    let all: Vec<usize> = (0..ds.len()).collect();
    let mut out = Vec::new();
    fill_batch(ds, &all, norm, None, &mut out);
    out
}

/// Logits of every test image with `engine`, in batches of `batch`.
pub fn engine_logits(
    engine: &dyn Engine,
    images: &[f32],
    shape: [usize; 3],
    batch: usize,
) -> Result<(Vec<f32>, usize), InferError> {
    let per = shape.iter().product::<usize>();
    let n = images.len() / per;
    let mut logits = Vec::new();
    let mut classes = 0;
    for start in (0..n).step_by(batch.max(1)) {
        let b = batch.min(n - start);
        let out = engine.run(Batch {
            data: &images[start * per..(start + b) * per],
            shape: [b, shape[0], shape[1], shape[2]],
        })?;
        classes = out.classes;
        logits.extend(out.logits);
    }
    Ok((logits, classes))
}

/// Latency percentiles of `engine` at each batch size of `plan` (inputs from `images`,
/// repeated if the split is smaller than the batch), with the phases before them measured
/// apart: plan, first run, warm-up (at least `plan.warmup` runs and `plan.warmup_seconds`).
pub fn measure_latency(
    engine: &dyn Engine,
    images: &[f32],
    shape: [usize; 3],
    plan: &LatencyPlan,
) -> Result<Vec<LatencyAt>, InferError> {
    Ok(measure_phases(engine, images, shape, plan)?.0)
}

/// [`measure_latency`] and the phases of each batch size.
pub fn measure_phases(
    engine: &dyn Engine,
    images: &[f32],
    shape: [usize; 3],
    plan: &LatencyPlan,
) -> Result<(Vec<LatencyAt>, Vec<distill_edge_schema::Phases>), InferError> {
    let per = shape.iter().product::<usize>();
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let mut out = Vec::new();
    let mut phases = Vec::new();
    for &b in &plan.batches {
        let data: Vec<f32> = images.iter().copied().cycle().take(b * per).collect();
        let batch = Batch {
            data: &data,
            shape: [b, shape[0], shape[1], shape[2]],
        };
        let t = Instant::now();
        engine.prepare(b)?;
        let plan_ms = ms(t);
        let t = Instant::now();
        engine.run(batch)?;
        let first_run_ms = ms(t);
        let t = Instant::now();
        let mut warmup_runs = 0;
        while warmup_runs < plan.warmup || t.elapsed().as_secs_f64() < plan.warmup_seconds {
            engine.run(batch)?;
            warmup_runs += 1;
        }
        let warmup_ms = ms(t);
        let mut samples = Vec::with_capacity(plan.runs);
        let started = Instant::now();
        while samples.len() < plan.runs.max(1) || started.elapsed().as_secs_f64() < plan.min_seconds
        {
            let t = Instant::now();
            engine.run(batch)?;
            samples.push(ms(t));
        }
        out.push(LatencyAt {
            batch: b,
            stats: LatencyStats::from_samples(&samples).expect("at least one sample"),
        });
        phases.push(distill_edge_schema::Phases {
            batch: b,
            plan_ms,
            first_run_ms,
            warmup_runs,
            warmup_ms,
        });
    }
    Ok((out, phases))
}

/// Checks `engines` on the test split; `burn` = the trained network, for parity.
pub fn check_engines(
    info: &ModelInfo,
    engines: &[Box<dyn Engine>],
    burn: Option<&ConvNet>,
    test: &Dataset,
    norm: &Normalization,
    plan: &LatencyPlan,
    reporter: &Reporter,
) -> Result<(Option<f64>, Vec<EngineReport>), InferError> {
    let s = test.shape;
    let shape = [s.channels, s.height, s.width];
    let images = normalised(test, norm);
    check_engines_on(
        info,
        engines,
        burn,
        &TestInputs {
            images: &images,
            shape,
            labels: Some(&test.labels),
        },
        plan,
        reporter,
    )
}

/// Prepared inputs for [`check_engines_on`].
pub struct TestInputs<'a> {
    /// `[n, c, h, w]` f32, ready for the model.
    pub images: &'a [f32],
    /// `[c, h, w]`.
    pub shape: [usize; 3],
    /// One label per image; `None` for random inputs (no accuracy then).
    pub labels: Option<&'a [u16]>,
}

/// Checks `engines` on prepared inputs: accuracy (when labelled), parity with `burn` (when
/// given) or the first engine, latency.
pub fn check_engines_on(
    info: &ModelInfo,
    engines: &[Box<dyn Engine>],
    burn: Option<&ConvNet>,
    inputs: &TestInputs<'_>,
    plan: &LatencyPlan,
    reporter: &Reporter,
) -> Result<(Option<f64>, Vec<EngineReport>), InferError> {
    let shape = inputs.shape;
    let images = inputs.images;
    let per = shape.iter().product::<usize>().max(1);
    let count = images.len() / per;
    let accuracy = |logits: &[f32], classes: usize| {
        let labels = inputs.labels?;
        let pred = argmax_rows(logits, classes);
        Some(
            pred.iter()
                .zip(labels)
                .filter(|(p, l)| **p == **l as usize)
                .count() as f64
                / labels.len().max(1) as f64,
        )
    };
    let burn_logits = burn.map(|net| {
        reporter.line("burn: forward pass on the test split");
        let mut all = Vec::new();
        let per = shape.iter().product::<usize>();
        for chunk in images.chunks(500 * per) {
            let (l, _) = crate::onnx::export::burn_logits(
                net,
                chunk,
                [chunk.len() / per, shape[0], shape[1], shape[2]],
            );
            all.extend(l);
        }
        all
    });
    // burn's own output width, not the metadata's class count (which a model file may misstate).
    let burn_accuracy = burn_logits
        .as_ref()
        .filter(|l| !l.is_empty() && count > 0)
        .and_then(|l| accuracy(l, l.len() / count));
    let tolerance = if info.quantized {
        Tolerance::Quantized
    } else {
        Tolerance::Approximate
    };
    let mut reports: Vec<EngineReport> = Vec::new();
    let mut reference: Option<(String, Vec<f32>)> = burn_logits
        .filter(|_| !info.quantized)
        .map(|l| ("burn".to_string(), l));
    for engine in engines {
        reporter.line(format!(
            "{}: {} on {count} {}",
            engine.name(),
            if inputs.labels.is_some() {
                "accuracy"
            } else {
                "outputs"
            },
            if inputs.labels.is_some() {
                "test images"
            } else {
                "seeded random inputs"
            }
        ));
        let (logits, classes) = engine_logits(engine.as_ref(), images, shape, 250)?;
        non_finite_outputs(&info.path, engine.name(), &logits)?;
        let acc = accuracy(&logits, classes);
        let (parity, parity_reference) = match &reference {
            Some((name, r)) => (Some(compare(&logits, r, tolerance)), Some(name.clone())),
            None => {
                reference = Some((engine.name().to_string(), logits.clone()));
                (None, None)
            }
        };
        reporter.line(format!("{}: latency", engine.name()));
        let (latency, phases) = measure_phases(engine.as_ref(), images, shape, plan)?;
        reports.push(EngineReport {
            load_ms: engine.load_ms(),
            phases,
            engine: engine.name().to_string(),
            accuracy: acc,
            parity,
            parity_reference,
            latency,
        });
    }
    Ok((burn_accuracy, reports))
}

/// An error when any of `logits` (an engine's outputs on the test split) is NaN or infinite:
/// such a model is broken whatever its top-1 reads (argmax over NaN picks a class anyway).
pub fn non_finite_outputs(path: &Path, engine: &str, logits: &[f32]) -> Result<(), InferError> {
    let bad = logits.iter().filter(|v| !v.is_finite()).count();
    if bad == 0 {
        return Ok(());
    }
    Err(InferError::Run {
        path: path.display().to_string(),
        message: format!(
            "{engine} produced non-finite outputs: {bad} of {} logits on the test split are NaN or infinite",
            logits.len()
        ),
    })
}

/// The host-check rule, one message per failure: an engine whose output parity with its
/// reference failed, or (with `max_accuracy_drop`, in top-1 points, and burn's accuracy known)
/// whose top-1 is more than that below burn's. Empty: the check passed.
pub fn verdict(
    burn_accuracy: Option<f64>,
    reports: &[EngineReport],
    max_accuracy_drop: Option<f64>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for r in reports {
        if let Some(p) = &r.parity
            && !p.ok
        {
            failures.push(format!(
                "{} vs {}: parity failed: {}",
                r.engine,
                r.parity_reference.as_deref().unwrap_or("?"),
                p.problem.as_deref().unwrap_or("")
            ));
        }
        if let (Some(reference), Some(max_drop), Some(accuracy)) =
            (burn_accuracy, max_accuracy_drop, r.accuracy)
        {
            let drop = 100.0 * (reference - accuracy);
            if drop > max_drop {
                failures.push(format!(
                    "{}: top-1 {} is {drop:.2} points below burn's {} (budget {max_drop})",
                    r.engine,
                    crate::table::pct(accuracy),
                    crate::table::pct(reference)
                ));
            }
        }
    }
    failures
}

#[cfg(test)]
mod verdict_tests {
    use super::*;

    #[test]
    fn non_finite_engine_outputs_are_an_error_naming_the_model() {
        let p = Path::new("m.onnx");
        assert!(non_finite_outputs(p, "tract", &[0.5, -1.0]).is_ok());
        let e = non_finite_outputs(p, "tract", &[f32::NAN, 1.0, f32::INFINITY])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.onnx") && e.contains("non-finite") && e.contains("2 of 3"),
            "{e}"
        );
    }

    fn report(engine: &str, accuracy: f64, parity_ok: Option<bool>) -> EngineReport {
        EngineReport {
            engine: engine.into(),
            accuracy: Some(accuracy),
            parity: parity_ok.map(|ok| Parity {
                max_abs: 0.0,
                max_rel: 0.0,
                tolerance: Tolerance::Approximate,
                ok,
                problem: (!ok).then(|| "max |diff| too large".into()),
            }),
            parity_reference: parity_ok.map(|_| "burn".into()),
            latency: vec![],
            load_ms: None,
            phases: vec![],
        }
    }

    #[test]
    fn parity_and_accuracy_drop_fail_and_nothing_else_does() {
        let ok = [report("tract", 0.90, Some(true))];
        assert!(verdict(Some(0.905), &ok, Some(1.0)).is_empty());
        // No budget or no burn reference: accuracy is not judged.
        assert!(verdict(Some(0.99), &ok, None).is_empty());
        assert!(verdict(None, &ok, Some(0.0)).is_empty());
        let bad = [
            report("tract", 0.80, Some(true)),
            report("onnxruntime", 0.90, Some(false)),
        ];
        let v = verdict(Some(0.90), &bad, Some(1.0));
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].starts_with("tract: top-1"), "{v:?}");
        assert!(v[1].contains("onnxruntime vs burn: parity failed"), "{v:?}");
    }
}
