//! ONNX Runtime as the runner's second engine (cargo feature `ort`). The library is the one the
//! bundle carries (`Manifest::ort_library`, verified against the manifest like every other
//! file), loaded at run time; each model runs on the same shard and is timed with the same
//! phases and statistics as with tract, and its logits go to `outputs-<model>-ort.bin`.
//!
//! ONNX Runtime optimises the graph while it creates the session, so its `load_ms` holds what
//! tract splits into load and plan, and `plan_ms` is 0; a new input shape is planned inside its
//! first run, which `first_run_ms` holds.

use std::path::Path;
use std::time::Instant;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorRef, ValueType};
use tract_core::internal::format_err;
use tract_core::prelude::TractResult;

use distill_edge_schema::{
    BenchSettings, Latency, Manifest, Memory, ModelResult, ORT, Phases, SHARD_BATCH, Shard,
    f32_le_bytes, sha256_hex,
};

use crate::{listed_read, ms, timed_runs, vm_hwm_kib};

/// Resets the process's peak resident set (`VmHWM`) so that the memory figures of ONNX Runtime
/// are its own, not tract's peak before it. `false` where the kernel refuses.
fn reset_peak_memory() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Loads the library `manifest.ort_library` from the bundle directory and runs every model of
/// the manifest with it.
pub fn run_models(
    dir: &Path,
    manifest: &Manifest,
    shard: &Shard,
    bench: &BenchSettings,
    verify: bool,
) -> Result<Vec<ModelResult>, String> {
    let Some(library) = &manifest.ort_library else {
        return Ok(Vec::new());
    };
    let path = dir.join(library);
    let environment = ort::init_from(&path)
        .map_err(|e| format!("{library}: cannot load ONNX Runtime: {e}"))?
        .with_name("distill-edge-runner")
        .build()
        .map_err(|e| format!("{library}: cannot start ONNX Runtime: {e}"))?;
    let mut out = Vec::new();
    for m in &manifest.models {
        // ONNX Runtime reads ONNX only: an NNEF bundle ships each model's ONNX file too.
        let file = m.ort_file().ok_or_else(|| {
            format!(
                "{}: no ONNX file of model {} for ONNX Runtime in the manifest",
                m.file, m.name
            )
        })?;
        let onnx = listed_read(dir, manifest, file, verify)?;
        out.push(
            run_model(
                dir,
                &environment,
                &m.name,
                &onnx,
                shard,
                bench,
                manifest.logits_output,
            )
            .map_err(|e| format!("{file} on ONNX Runtime: {e:#}"))?,
        );
    }
    Ok(out)
}

/// The batch size the model's first input fixes (`None`: a dynamic batch dimension).
fn fixed_batch(session: &Session) -> Option<usize> {
    match session.inputs().first()?.dtype() {
        ValueType::Tensor { shape, .. } => shape
            .first()
            .copied()
            .filter(|&d| d > 0)
            .map(|d| d as usize),
        _ => None,
    }
}

/// One run of `session` on `data` (`[batch, c, h, w]`), the logits output as a flat vector.
fn run_once(
    session: &mut Session,
    input: &str,
    logits: &str,
    shape: [usize; 4],
    data: &[f32],
) -> TractResult<Vec<f32>> {
    let tensor = TensorRef::from_array_view((shape, data))?;
    let outputs = session.run(ort::inputs![input => tensor])?;
    let (_, values) = outputs[logits].try_extract_tensor::<f32>()?;
    Ok(values.to_vec())
}

fn run_model(
    dir: &Path,
    environment: &ort::environment::Environment,
    name: &str,
    onnx: &[u8],
    shard: &Shard,
    bench: &BenchSettings,
    logits_output: usize,
) -> TractResult<ModelResult> {
    let measured_memory = reset_peak_memory();
    let t = Instant::now();
    let mut session = Session::builder(environment)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| format_err!("{e}"))?
        .with_intra_threads(bench.threads.max(1))
        .map_err(|e| format_err!("{e}"))?
        .with_inter_threads(1)
        .map_err(|e| format_err!("{e}"))?
        .commit_from_memory(onnx)?;
    let load_ms = ms(t);
    let mut memory = Memory {
        after_load_kib: vm_hwm_kib(),
        ..Memory::default()
    };
    let input = session
        .inputs()
        .first()
        .map(|o| o.name().to_string())
        .ok_or_else(|| format_err!("the model has no input"))?;
    let logits = session
        .outputs()
        .get(logits_output)
        .map(|o| o.name().to_string())
        .ok_or_else(|| {
            format_err!("the model has no output #{logits_output} (the logits output)")
        })?;
    let fixed = fixed_batch(&session);
    let [c, h, w] = shard.shape;
    let per = c * h * w;
    let n = shard.len();
    let step = fixed.unwrap_or(SHARD_BATCH);
    let mut all = Vec::new();
    for start in (0..n).step_by(step) {
        let b = step.min(n - start);
        if fixed.is_some_and(|f| f != b) {
            return Err(format_err!(
                "the model's input has a fixed batch of {step}, which does not divide the shard's {n} images"
            ));
        }
        all.extend(run_once(
            &mut session,
            &input,
            &logits,
            [b, c, h, w],
            &shard.images[start * per..(start + b) * per],
        )?);
    }
    let correct = shard.correct(&all);
    let bytes = f32_le_bytes(&all);
    let outputs_file = ModelResult::outputs_file_for(name, ORT);
    std::fs::write(dir.join(&outputs_file), &bytes)
        .map_err(|e| format_err!("writing {outputs_file}: {e}"))?;

    let mut latency = Vec::new();
    let mut phases = Vec::new();
    // A fixed batch dimension allows that batch only.
    for &b in bench
        .batches
        .iter()
        .filter(|&&b| fixed.is_none_or(|f| f == b))
    {
        let data: Vec<f32> = shard.images.iter().copied().cycle().take(b * per).collect();
        let shape = [b, c, h, w];
        let t = Instant::now();
        run_once(&mut session, &input, &logits, shape, &data)?;
        let first_run_ms = ms(t);
        memory.after_plan_kib = memory.after_plan_kib.max(vm_hwm_kib());
        let t = Instant::now();
        let warm = timed_runs(
            || run_once(&mut session, &input, &logits, shape, &data).map(drop),
            bench.warmup,
            bench.warmup_seconds,
        )?;
        let warmup_ms = ms(t);
        let samples = timed_runs(
            || run_once(&mut session, &input, &logits, shape, &data).map(drop),
            bench.runs.max(1),
            bench.min_seconds,
        )?;
        phases.push(Phases {
            batch: b,
            plan_ms: 0.0,
            first_run_ms,
            warmup_runs: warm.len(),
            warmup_ms,
        });
        latency.extend(Latency::from_samples(b, &samples));
    }
    memory.after_runs_kib = vm_hwm_kib();
    Ok(ModelResult {
        model: name.to_string(),
        engine: ORT.to_string(),
        correct,
        images: n,
        outputs_sha256: sha256_hex(&bytes),
        outputs_file,
        latency,
        load_ms: Some(load_ms),
        phases,
        state_reuse: None,
        memory: measured_memory.then_some(memory),
        profile: None,
    })
}
