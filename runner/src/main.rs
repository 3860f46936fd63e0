//! `distill-edge-runner`: the on-device binary. Verifies a bundle against its manifest (it loads
//! no file the manifest does not list with a digest, and reports the manifest's own SHA-256), runs
//! every model on the bundled test shard with tract (top-1, outputs digest) and benchmarks
//! latency, then prints one JSON document (the `distill-edge-schema` crate, shared with the host).
//! How a model file becomes a tract plan depends on its format (`engine.rs`: NNEF with the
//! `nnef` feature, ONNX with the `onnx` feature); everything else is here.
//!
//! Usage: `distill-edge-runner [BUNDLE_DIR] [--output FILE] [--runs N] [--warmup N]
//!         [--seconds S] [--warmup-seconds S] [--threads N] [--batches 1,8] [--profile] [--no-verify]`

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use tract_core::prelude::*;

mod engine;
#[cfg(feature = "nnef")]
mod engine_nnef;
#[cfg(feature = "onnx")]
mod engine_onnx;

use engine::{Plan, TractModel};

use distill_edge_schema::{
    BenchSettings, Environment, FORMAT, FileEntry, Latency, LatencyStats, MANIFEST, Manifest,
    Memory, ModelFormat, ModelResult, OpTime, Phases, Profile, RunnerResult, SHARD_BATCH, Shard,
    StateReuse, f32_le_bytes, sha256_hex,
};
use tract_core::internal::{Cost, format_err};
use tract_core::plan::SimpleState;

const USAGE: &str = "usage: distill-edge-runner [BUNDLE_DIR] [--output FILE] [--runs N] [--warmup N] [--seconds S] [--warmup-seconds S] [--threads N] [--batches 1,8] [--profile] [--no-verify]";

#[derive(Default)]
struct Args {
    dir: PathBuf,
    output: Option<PathBuf>,
    runs: Option<usize>,
    warmup: Option<usize>,
    seconds: Option<f64>,
    warmup_seconds: Option<f64>,
    profile: bool,
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
            "--warmup-seconds" => {
                let v = value(&mut it, "--warmup-seconds")?;
                a.warmup_seconds = Some(
                    v.parse()
                        .map_err(|_| format!("--warmup-seconds {v}: expected a number"))?,
                );
            }
            "--profile" => a.profile = true,
            "--no-verify" => a.verify = false,
            "-h" | "--help" => return Err(USAGE.into()),
            "--version" => {
                println!(
                    "distill-edge-runner {} (engines: {})",
                    env!("CARGO_PKG_VERSION"),
                    engine::engines().join(", ")
                );
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

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// `VmHWM` (peak resident set) of this process, KiB.
fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The logits output of a run as a flat vector.
fn logits(outputs: &TVec<TValue>, index: usize) -> TractResult<Vec<f32>> {
    let out = outputs
        .get(index)
        .ok_or_else(|| format_err!("the model has no output #{index} (the logits output)"))?;
    Ok(out.to_plain_array_view::<f32>()?.iter().copied().collect())
}

/// Runs `state` until both `runs` runs and `seconds` seconds are done; the time of each run, ms.
fn timed_runs(
    mut run: impl FnMut() -> TractResult<()>,
    runs: usize,
    seconds: f64,
) -> TractResult<Vec<f64>> {
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.len() < runs || started.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        run()?;
        samples.push(ms(t));
    }
    Ok(samples)
}

/// Per-node times of `plan` over `runs` runs of `input` (tract's profiling hook: every node's
/// evaluation timed on its own).
fn profile(plan: &Plan, input: &TValue, runs: usize) -> TractResult<Profile> {
    let nodes = plan.model().nodes().len();
    let mut spent = vec![0f64; nodes];
    let mut ran = vec![false; nodes];
    let mut state = SimpleState::new(plan)?;
    let runs = runs.max(1);
    for _ in 0..runs {
        state.run_plan_with_eval(tvec!(input.clone()), |session, op_state, node, inputs| {
            let t = Instant::now();
            let out = tract_core::plan::eval(session, op_state, node, inputs);
            spent[node.id] += ms(t);
            ran[node.id] = true;
            out
        })?;
    }
    let model = plan.model();
    let total: f64 = spent.iter().sum::<f64>() / runs as f64;
    let mut ops: Vec<OpTime> = (0..nodes)
        .filter(|&i| ran[i])
        .map(|i| {
            let node = model.node(i);
            let macs = model
                .node_input_facts(i)
                .and_then(|facts| node.op.cost(&facts))
                .ok()
                .and_then(|costs| {
                    costs
                        .iter()
                        .filter(|(c, _)| matches!(c, Cost::FMA(_)))
                        .map(|(_, n)| n.to_i64().ok())
                        .sum::<Option<i64>>()
                })
                .filter(|m| *m > 0)
                .map(|m| m as u64);
            let mean = spent[i] / runs as f64;
            OpTime {
                node: i,
                name: node.name.clone(),
                op: node.op.name().to_string(),
                ms: mean,
                share: if total > 0.0 { mean / total } else { 0.0 },
                macs,
            }
        })
        .collect();
    ops.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(Profile {
        batch: 1,
        runs,
        total_ms: total,
        ops,
    })
}

fn run_model(
    dir: &Path,
    name: &str,
    format: ModelFormat,
    bytes: &[u8],
    shard: &Shard,
    bench: &BenchSettings,
    logits_output: usize,
) -> TractResult<ModelResult> {
    let t = Instant::now();
    let model = TractModel::load(format, bytes)?;
    let load_ms = ms(t);
    let mut memory = Memory {
        after_load_kib: vm_hwm_kib(),
        ..Memory::default()
    };
    let per: usize = shard.shape.iter().product();
    let n = shard.len();
    let mut all = Vec::new();
    let mut plans: std::collections::HashMap<usize, Plan> = Default::default();
    for start in (0..n).step_by(SHARD_BATCH) {
        let b = SHARD_BATCH.min(n - start);
        if let std::collections::hash_map::Entry::Vacant(e) = plans.entry(b) {
            e.insert(model.plan(b, shard.shape)?);
        }
        let input = Tensor::from_shape(
            &[b, shard.shape[0], shard.shape[1], shard.shape[2]],
            &shard.images[start * per..(start + b) * per],
        )?;
        let out = plans[&b].run(tvec!(input.into()))?;
        all.extend(logits(&out, logits_output)?);
    }
    drop(plans);
    let correct = shard.correct(&all);
    let bytes = f32_le_bytes(&all);
    let outputs_file = format!("outputs-{name}.bin");
    std::fs::write(dir.join(&outputs_file), &bytes)
        .map_err(|e| format_err!("writing {outputs_file}: {e}"))?;

    let mut latency = Vec::new();
    let mut phases = Vec::new();
    let mut state_reuse = None;
    let mut profiled = None;
    for &b in &bench.batches {
        let t = Instant::now();
        let p = model.plan(b, shard.shape)?;
        let plan_ms = ms(t);
        memory.after_plan_kib = memory.after_plan_kib.max(vm_hwm_kib());
        let data: Vec<f32> = shard.images.iter().copied().cycle().take(b * per).collect();
        let input: TValue =
            Tensor::from_shape(&[b, shard.shape[0], shard.shape[1], shard.shape[2]], &data)?.into();
        // One state for every run of this plan: what an application keeps between frames.
        let mut state = SimpleState::new(&p)?;
        let t = Instant::now();
        state.run(tvec!(input.clone()))?;
        let first_run_ms = ms(t);
        let t = Instant::now();
        let warm = timed_runs(
            || state.run(tvec!(input.clone())).map(drop),
            bench.warmup,
            bench.warmup_seconds,
        )?;
        let warmup_ms = ms(t);
        let samples = timed_runs(
            || state.run(tvec!(input.clone())).map(drop),
            bench.runs.max(1),
            bench.min_seconds,
        )?;
        phases.push(Phases {
            batch: b,
            plan_ms,
            first_run_ms,
            warmup_runs: warm.len(),
            warmup_ms,
        });
        let reused = Latency::from_samples(b, &samples);
        if bench.profile && b == 1 {
            // A fresh state per run, right after the reused one, on the same plan and input.
            let fresh = timed_runs(
                || p.run(tvec!(input.clone())).map(drop),
                bench.runs.max(1),
                bench.min_seconds,
            )?;
            if let (Some(r), Some(f)) = (&reused, LatencyStats::from_samples(&fresh)) {
                state_reuse = Some(StateReuse {
                    batch: 1,
                    reused: r.stats.clone(),
                    fresh: f,
                });
            }
            profiled = Some(profile(&p, &input, bench.runs)?);
        }
        latency.extend(reused);
    }
    memory.after_runs_kib = vm_hwm_kib();
    Ok(ModelResult {
        model: name.to_string(),
        correct,
        images: n,
        outputs_sha256: sha256_hex(&bytes),
        outputs_file,
        latency,
        load_ms: Some(load_ms),
        phases,
        state_reuse,
        memory: Some(memory),
        profile: profiled,
    })
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The CPU kind tract's aarch64 kernels were chosen for.
#[cfg(target_arch = "aarch64")]
fn tract_cpu_kind() -> String {
    format!("{:?}", tract_linalg::arm64::Kind::choose())
}

/// The CPU kind tract's aarch64 kernels were chosen for (none on other architectures).
#[cfg(not(target_arch = "aarch64"))]
fn tract_cpu_kind() -> String {
    "n/a (not aarch64)".to_string()
}

/// Where this run happens: CPU, frequency, temperature, kernel, affinity, this binary's digest.
fn environment(threads: usize) -> Environment {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let cpu_model = field("model name").or_else(|| {
        field("CPU part").map(|part| {
            format!(
                "ARM implementer {} part {part}",
                field("CPU implementer").unwrap_or_default()
            )
        })
    });
    let cores = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    Environment {
        cpu_model,
        cores: (cores > 0).then_some(cores),
        tract_cpu_kind: tract_cpu_kind(),
        kernel_family: tract_linalg::isa::native().nickname().to_string(),
        governor: read_trimmed("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        frequency_khz: read_trimmed("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
            .and_then(|v| v.parse().ok()),
        temperature_c: read_trimmed("/sys/class/thermal/thermal_zone0/temp")
            .and_then(|v| v.parse::<f64>().ok())
            .map(|m| m / 1000.0),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        threads,
        affinity: status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string()),
        runner_sha256: std::fs::read("/proc/self/exe").ok().map(|b| sha256_hex(&b)),
    }
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
    if let Some(s) = args.warmup_seconds {
        bench.warmup_seconds = s;
    }
    bench.profile |= args.profile;
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
        let bytes = listed_read(&args.dir, &manifest, &m.file, args.verify)?;
        models.push(
            run_model(
                &args.dir,
                &m.name,
                m.format,
                &bytes,
                &shard,
                &bench,
                manifest.logits_output,
            )
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
        environment: Some(environment(bench.threads.max(1))),
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
