//! `distill-edge-runner`: the on-device binary. Verifies a bundle against its manifest (it loads
//! no file the manifest does not list with a digest, and reports the manifest's own SHA-256), runs
//! every model on the bundled test shard with tract (top-1, outputs digest) and benchmarks
//! latency, then prints one JSON document (the `distill-edge-schema` crate, shared with the host).
//!
//! Usage: `distill-edge-runner [BUNDLE_DIR] [--output FILE] [--runs N] [--warmup N]
//!         [--seconds S] [--threads N] [--batches 1,8] [--no-verify]`

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use tract_onnx::prelude::*;

type Plan = std::sync::Arc<TypedRunnableModel>;

use distill_edge_schema::{
    BenchSettings, FORMAT, FileEntry, Latency, MANIFEST, Manifest, ModelResult, RunnerResult,
    SHARD_BATCH, Shard, f32_le_bytes, sha256_hex,
};

const USAGE: &str = "usage: distill-edge-runner [BUNDLE_DIR] [--output FILE] [--runs N] [--warmup N] [--seconds S] [--threads N] [--batches 1,8] [--no-verify]";

#[derive(Default)]
struct Args {
    dir: PathBuf,
    output: Option<PathBuf>,
    runs: Option<usize>,
    warmup: Option<usize>,
    seconds: Option<f64>,
    threads: Option<usize>,
    batches: Option<Vec<usize>>,
    verify: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        dir: PathBuf::from("."),
        verify: true,
        ..Args::default()
    };
    let value = |it: &mut dyn Iterator<Item = String>, name: &str| {
        it.next()
            .ok_or_else(|| format!("{name} needs a value; {USAGE}"))
    };
    let number = |v: String, name: &str| {
        v.parse::<usize>()
            .map_err(|_| format!("{name} {v}: expected a non-negative integer"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--output" => a.output = Some(value(&mut it, "--output")?.into()),
            "--runs" => a.runs = Some(number(value(&mut it, "--runs")?, "--runs")?),
            "--warmup" => a.warmup = Some(number(value(&mut it, "--warmup")?, "--warmup")?),
            "--threads" => {
                a.threads = Some(number(value(&mut it, "--threads")?, "--threads")?.max(1))
            }
            "--seconds" => {
                let v = value(&mut it, "--seconds")?;
                a.seconds = Some(
                    v.parse()
                        .map_err(|_| format!("--seconds {v}: expected a number"))?,
                );
            }
            "--batches" => {
                let v = value(&mut it, "--batches")?;
                a.batches = Some(
                    v.split(',')
                        .map(|b| number(b.to_string(), "--batches").map(|n| n.max(1)))
                        .collect::<Result<_, _>>()?,
                );
            }
            "--no-verify" => a.verify = false,
            "-h" | "--help" => return Err(USAGE.into()),
            "--version" => {
                println!("distill-edge-runner {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other if other.starts_with('-') => {
                return Err(format!("unknown option {other}; {USAGE}"));
            }
            other => a.dir = other.into(),
        }
    }
    Ok(a)
}

/// Reads the listed file `entry` of the bundle; with `check`, refuses it unless its size and
/// SHA-256 match the manifest.
fn checked_read(dir: &Path, entry: &FileEntry, check: bool) -> Result<Vec<u8>, String> {
    let path = dir.join(&entry.path);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if check {
        let digest = sha256_hex(&bytes);
        if bytes.len() as u64 != entry.bytes || digest != entry.sha256 {
            return Err(format!(
                "{}: does not match the manifest (sha256 {}…, expected {}…; {} bytes, expected {}): the bundle was modified or is incomplete",
                entry.path,
                &digest[..12],
                entry.sha256.get(..12).unwrap_or(&entry.sha256),
                bytes.len(),
                entry.bytes
            ));
        }
    }
    Ok(bytes)
}

/// The bytes of `path`, which must be listed in the manifest's files (checked against its
/// digest when `check`): the runner loads nothing the manifest does not vouch for.
fn listed_read(
    dir: &Path,
    manifest: &Manifest,
    path: &str,
    check: bool,
) -> Result<Vec<u8>, String> {
    let entry = manifest.entry(path).ok_or_else(|| {
        format!("{path}: not listed in the manifest's files with a digest; refusing to load it")
    })?;
    checked_read(dir, entry, check)
}

/// Checks every file of the manifest that the runner does not read itself later (those are
/// checked as they are loaded): present, same size, same SHA-256.
fn verify(dir: &Path, manifest: &Manifest) -> Result<(), String> {
    let loaded: Vec<&str> = std::iter::once(manifest.shard.as_str())
        .chain(manifest.models.iter().map(|m| m.file.as_str()))
        .collect();
    for f in manifest
        .files
        .iter()
        .filter(|f| !loaded.contains(&f.path.as_str()))
    {
        checked_read(dir, f, true)?;
    }
    Ok(())
}

fn plan(model: &InferenceModel, batch: usize, shape: [usize; 3]) -> TractResult<Plan> {
    model
        .clone()
        .with_input_fact(0, f32::fact([batch, shape[0], shape[1], shape[2]]).into())?
        .into_optimized()?
        .into_runnable()
}

fn logits(out: &TValue) -> TractResult<Vec<f32>> {
    Ok(out.to_plain_array_view::<f32>()?.iter().copied().collect())
}

fn run_model(
    dir: &Path,
    name: &str,
    onnx: &[u8],
    shard: &Shard,
    bench: &BenchSettings,
) -> TractResult<ModelResult> {
    let model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_read(&mut &onnx[..])
        .map_err(|e| tract_onnx::tract_core::internal::format_err!("loading: {e:#}"))?;
    let per: usize = shard.shape.iter().product();
    let n = shard.labels.len();
    let mut all = Vec::new();
    let mut plans: std::collections::HashMap<usize, Plan> = Default::default();
    for start in (0..n).step_by(SHARD_BATCH) {
        let b = SHARD_BATCH.min(n - start);
        if let std::collections::hash_map::Entry::Vacant(e) = plans.entry(b) {
            e.insert(plan(&model, b, shard.shape)?);
        }
        let input = Tensor::from_shape(
            &[b, shard.shape[0], shard.shape[1], shard.shape[2]],
            &shard.images[start * per..(start + b) * per],
        )?;
        let out = plans[&b].run(tvec!(input.into()))?;
        all.extend(logits(&out[0])?);
    }
    let classes = shard.classes;
    let correct = all
        .chunks_exact(classes)
        .zip(&shard.labels)
        .filter(|(row, l)| {
            let best = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv { (i, v) } else { (bi, bv) }
                })
                .0;
            best == **l as usize
        })
        .count();
    let bytes = f32_le_bytes(&all);
    let outputs_file = format!("outputs-{name}.bin");
    std::fs::write(dir.join(&outputs_file), &bytes).map_err(|e| {
        tract_onnx::tract_core::internal::format_err!("writing {outputs_file}: {e}")
    })?;

    let mut latency = Vec::new();
    for &b in &bench.batches {
        let p = plan(&model, b, shard.shape)?;
        let data: Vec<f32> = shard.images.iter().copied().cycle().take(b * per).collect();
        let input: TValue =
            Tensor::from_shape(&[b, shard.shape[0], shard.shape[1], shard.shape[2]], &data)?.into();
        for _ in 0..bench.warmup {
            p.run(tvec!(input.clone()))?;
        }
        let mut samples = Vec::new();
        let started = Instant::now();
        while samples.len() < bench.runs.max(1)
            || started.elapsed().as_secs_f64() < bench.min_seconds
        {
            let t = Instant::now();
            p.run(tvec!(input.clone()))?;
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
        latency.extend(Latency::from_samples(b, &samples));
    }
    Ok(ModelResult {
        model: name.to_string(),
        correct,
        images: n,
        outputs_sha256: sha256_hex(&bytes),
        outputs_file,
        latency,
    })
}

fn run(args: &Args) -> Result<RunnerResult, String> {
    let manifest_path = args.dir.join(MANIFEST);
    let text =
        std::fs::read(&manifest_path).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let manifest_sha256 = sha256_hex(&text);
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: not a bundle manifest: {e}", manifest_path.display()))?;
    if manifest.format != FORMAT {
        return Err(format!(
            "{}: manifest format {} is not supported by this runner (expected {FORMAT})",
            manifest_path.display(),
            manifest.format
        ));
    }
    // Every file the bundle needs (this runner, the shard, the models, the host's references)
    // must be listed with a digest, --no-verify or not.
    manifest
        .check_listed()
        .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    if args.verify {
        verify(&args.dir, &manifest)?;
    }
    let shard = Shard::from_bytes(&listed_read(
        &args.dir,
        &manifest,
        &manifest.shard,
        args.verify,
    )?)
    .map_err(|e| format!("{}: {e}", manifest.shard))?;
    let mut bench = manifest.bench.clone();
    if let Some(r) = args.runs {
        bench.runs = r;
    }
    if let Some(w) = args.warmup {
        bench.warmup = w;
    }
    if let Some(s) = args.seconds {
        bench.min_seconds = s;
    }
    if let Some(t) = args.threads {
        bench.threads = t;
    }
    if let Some(b) = &args.batches {
        bench.batches = b.clone();
    }
    if bench.threads > 1 {
        tract_linalg::multithread::set_default_executor(
            tract_linalg::multithread::Executor::multithread(bench.threads),
        );
    }
    let mut models = Vec::new();
    for m in &manifest.models {
        let onnx = listed_read(&args.dir, &manifest, &m.file, args.verify)?;
        models.push(
            run_model(&args.dir, &m.name, &onnx, &shard, &bench)
                .map_err(|e| format!("{}: {e:#}", m.file))?,
        );
    }
    Ok(RunnerResult {
        format: FORMAT,
        runner_version: env!("CARGO_PKG_VERSION").to_string(),
        arch: std::env::consts::ARCH.to_string(),
        verified: args.verify,
        threads: bench.threads.max(1),
        models,
        manifest_sha256: Some(manifest_sha256),
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match run(&args) {
        Ok(result) => {
            let text = serde_json::to_string_pretty(&result).expect("result serialises");
            let out = args
                .output
                .clone()
                .unwrap_or_else(|| args.dir.join("result.json"));
            if let Err(e) = std::fs::write(&out, format!("{text}\n")) {
                eprintln!("error: {}: {e}", out.display());
                return ExitCode::from(1);
            }
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
