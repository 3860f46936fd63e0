//! The JSON and binary formats shared by the host (`distill-edge`) and the on-device runner
//! (`distill-edge-runner`): bundle manifest, runner result, test shard, latency statistics and
//! the SHA-256 hex digest. Both sides depend on this crate, so they compare results field by
//! field.

use serde::{Deserialize, Serialize};

/// Version of the manifest and result schemas.
pub const FORMAT: u32 = 1;
/// File name of the manifest inside a bundle.
pub const MANIFEST: &str = "manifest.json";
/// Images per inference call when running the shard, on host and device alike (the same
/// batch gives the same kernels, so outputs can be compared bit for bit).
pub const SHARD_BATCH: usize = 16;
/// File name of the runner binary inside a bundle (listed in the manifest like every file).
pub const RUNNER: &str = "distill-edge-runner";
/// Magic of a test shard file.
pub const SHARD_MAGIC: &[u8; 8] = b"DESHARD1";

/// One file of a bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the bundle directory.
    pub path: String,
    /// Hex SHA-256 of the contents.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// A model shipped in the bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// `fp32` or `int8`.
    pub name: String,
    /// File in the bundle.
    pub file: String,
    /// What `file` holds, which decides how the runner loads it (absent: ONNX).
    #[serde(default)]
    pub format: ModelFormat,
    /// For an NNEF file: the host's check that it computes what its ONNX source computes on
    /// the bundle's shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nnef_check: Option<NnefCheck>,
}

/// The format of a bundled model file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFormat {
    /// An ONNX file: the runner needs its `onnx` feature (tract-onnx, tract-hir).
    #[default]
    Onnx,
    /// A tract NNEF archive (uncompressed tar, batch dimension the symbol [`BATCH_SYMBOL`]),
    /// written on the host from the ONNX model: the runner needs only tract-core and
    /// tract-nnef (its `nnef` feature).
    Nnef,
}

impl ModelFormat {
    /// The name of the format (and of the runner feature that loads it).
    pub fn name(self) -> &'static str {
        match self {
            ModelFormat::Onnx => "onnx",
            ModelFormat::Nnef => "nnef",
        }
    }
}

/// The symbol of the batch dimension in a bundled NNEF model's input (`[N, C, H, W]`); the
/// runner sets it to each batch size before optimising.
pub const BATCH_SYMBOL: &str = "N";

/// The host's comparison of an NNEF model with the ONNX model it was converted from: both
/// run with tract on the bundle's shard, in batches of [`SHARD_BATCH`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NnefCheck {
    /// Hex SHA-256 of the ONNX file converted.
    pub source_sha256: String,
    /// Images of the shard compared.
    pub images: usize,
    /// The NNEF model's logits are bit for bit the ONNX model's.
    pub bit_identical: bool,
    /// Largest |NNEF - ONNX| over the logits.
    pub max_abs_diff: f32,
    /// The tolerance the comparison had to meet, in words (`atol …, rtol …`).
    pub tolerance: String,
}

/// What the host measured on the same shard with tract, to compare with the device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostReference {
    /// Model name (`fp32`, `int8`).
    pub model: String,
    /// Correct top-1 predictions on the shard (`None`: unlabelled shard).
    pub correct: Option<usize>,
    /// Images in the shard.
    pub images: usize,
    /// Hex SHA-256 of the logits as little-endian f32, row-major.
    pub outputs_sha256: String,
    /// The logits file shipped for tolerance comparison (`reference-<model>.bin`).
    pub outputs_file: String,
}

/// How the runner benchmarks latency.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchSettings {
    /// Batch sizes.
    pub batches: Vec<usize>,
    /// Untimed runs per batch size.
    pub warmup: usize,
    /// Timed runs per batch size (at least).
    pub runs: usize,
    /// Keep timing until this many seconds passed (0 = just `runs`).
    pub min_seconds: f64,
    /// Threads for tract's matrix kernels (1 = single-threaded).
    pub threads: usize,
    /// Warm-up lasts at least this many seconds as well as `warmup` runs.
    #[serde(default)]
    pub warmup_seconds: f64,
    /// Also time the batch-1 plan with a fresh tract state per run (the cost of not reusing
    /// one) and profile the batch-1 plan per node.
    #[serde(default)]
    pub profile: bool,
}

/// `manifest.json`: what the bundle holds and what the host expects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// Target name (e.g. `aarch64`).
    pub target: String,
    /// Rust target triple of the runner.
    pub triple: String,
    /// distill-edge version that wrote the bundle.
    pub distill_edge_version: String,
    /// Every file except the manifest, with its digest.
    pub files: Vec<FileEntry>,
    /// Models to run.
    pub models: Vec<ModelEntry>,
    /// Test shard file.
    pub shard: String,
    /// Host tract results on the shard.
    pub host: Vec<HostReference>,
    /// Latency benchmark settings.
    pub bench: BenchSettings,
    /// Index of the graph output that holds the logits (`[batch, classes]`).
    #[serde(default)]
    pub logits_output: usize,
    /// What the shard holds, in words (a labelled test split, or seeded random inputs).
    #[serde(default)]
    pub inputs: String,
    /// Why the bundle ships ONNX models (and a runner with tract-onnx) instead of NNEF: the
    /// first model NNEF could not express, and why. Absent when the models are NNEF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx_fallback: Option<String>,
}

impl Manifest {
    /// The entry of `path` in [`Manifest::files`].
    pub fn entry(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Every file the bundle needs: the runner, the shard, each model and each host reference
    /// file. Each must be listed in [`Manifest::files`] with its digest.
    pub fn required_files(&self) -> Vec<&str> {
        let mut out = vec![RUNNER, self.shard.as_str()];
        out.extend(self.models.iter().map(|m| m.file.as_str()));
        out.extend(self.host.iter().map(|h| h.outputs_file.as_str()));
        out
    }

    /// Checks that every required file (see [`Manifest::required_files`]) is a plain relative
    /// path listed in [`Manifest::files`]; the error names the first that is not.
    pub fn check_listed(&self) -> Result<(), String> {
        for path in self.required_files() {
            let plain = !path.is_empty()
                && std::path::Path::new(path)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !plain {
                return Err(format!("{path:?}: not a plain file name inside the bundle"));
            }
            if self.entry(path).is_none() {
                return Err(format!(
                    "{path}: not listed in the manifest's files with a digest; refusing to use it (the manifest was edited or the bundle is incomplete)"
                ));
            }
        }
        Ok(())
    }
}

/// Summary of latency samples, all in milliseconds: the one statistics type of host and device.
///
/// Percentiles use the nearest-rank definition on the ascending sorted samples `s[0..n]`:
/// the `p`-th percentile is `s[max(1, ceil(p * n / 100)) - 1]`, so every reported value is one
/// of the measured samples (no interpolation). `min_ms` and `max_ms` are the 0th and 100th
/// percentiles, `mean_ms` the arithmetic mean.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    /// Number of samples summarised (finite samples only, see [`LatencyStats::from_samples`]).
    pub runs: usize,
    /// Smallest sample.
    pub min_ms: f64,
    /// Median by nearest rank.
    pub p50_ms: f64,
    /// 90th percentile by nearest rank.
    pub p90_ms: f64,
    /// 99th percentile by nearest rank.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// 95th percentile by nearest rank.
    #[serde(default)]
    pub p95_ms: f64,
    /// Sample standard deviation (0 for one sample).
    #[serde(default)]
    pub std_ms: f64,
    /// The percentiles the run count cannot support (fewer than [`TAIL_SAMPLES`] samples
    /// above them: p90 below 100 runs, p95 below 200, p99 below 1000): read them as rough.
    #[serde(default)]
    pub unsupported: Vec<String>,
}

/// Samples a percentile needs above it to be reported as supported (see
/// [`LatencyStats::unsupported`]): p99 needs 1000 runs.
pub const TAIL_SAMPLES: usize = 10;

impl LatencyStats {
    /// Summarises `samples_ms` (in any order). Non-finite samples (NaN, ±infinity) are ignored,
    /// so they can neither poison the mean nor shift the percentiles; returns `None` when no
    /// finite sample remains (including for an empty slice).
    pub fn from_samples(samples_ms: &[f64]) -> Option<Self> {
        let mut s: Vec<f64> = samples_ms
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let rank = |q: f64| s[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        let mean = s.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            s.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let unsupported = [("p90", 90usize), ("p95", 95), ("p99", 99)]
            .into_iter()
            .filter(|(_, p)| n * (100 - p) < TAIL_SAMPLES * 100)
            .map(|(name, _)| name.to_string())
            .collect();
        Some(Self {
            runs: n,
            min_ms: s[0],
            p50_ms: rank(0.5),
            p90_ms: rank(0.9),
            p99_ms: rank(0.99),
            max_ms: s[n - 1],
            mean_ms: mean,
            p95_ms: rank(0.95),
            std_ms: var.sqrt(),
            unsupported,
        })
    }
}

/// The runner's latency record for one batch size: the batch and its [`LatencyStats`]
/// (flattened, so the JSON reads `{"batch": 1, "runs": …, "min_ms": …, …}`). Field access
/// reaches the statistics directly (`latency.p50_ms`) through `Deref`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Images per run.
    pub batch: usize,
    /// Milliseconds per run.
    #[serde(flatten)]
    pub stats: LatencyStats,
}

impl Latency {
    /// Statistics of `samples` (ms per run of `batch` images); `None` when no finite sample.
    pub fn from_samples(batch: usize, samples: &[f64]) -> Option<Self> {
        LatencyStats::from_samples(samples).map(|stats| Self { batch, stats })
    }
}

impl std::ops::Deref for Latency {
    type Target = LatencyStats;

    fn deref(&self) -> &LatencyStats {
        &self.stats
    }
}

impl From<&Latency> for LatencyStats {
    fn from(l: &Latency) -> Self {
        l.stats.clone()
    }
}

/// The phases before the steady state, for one batch size (all in milliseconds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Images per run.
    pub batch: usize,
    /// Optimising the loaded model into a runnable plan for this batch.
    pub plan_ms: f64,
    /// The first inference on the new plan (allocations, packing, caches).
    pub first_run_ms: f64,
    /// Untimed warm-up runs made (at least the setting's runs and seconds).
    pub warmup_runs: usize,
    /// Their total time.
    pub warmup_ms: f64,
}

/// Batch-1 latency with one tract state reused across runs and with a fresh state per run,
/// measured one after the other on the same plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateReuse {
    /// Images per run (1).
    pub batch: usize,
    /// One state for every run (what the steady state uses).
    pub reused: LatencyStats,
    /// A fresh state per run (what `plan.run()` does).
    pub fresh: LatencyStats,
}

/// Peak resident memory (`VmHWM` of `/proc/self/status`, KiB) at three points of one model's
/// run. Under qemu user emulation it is the emulator's process (translation caches included).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// After parsing the model.
    pub after_load_kib: Option<u64>,
    /// After the plans were optimised.
    pub after_plan_kib: Option<u64>,
    /// After every timed run.
    pub after_runs_kib: Option<u64>,
}

/// One node of tract's optimised plan in a per-node profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpTime {
    /// Node id in the optimised plan.
    pub node: usize,
    /// Node name (from the ONNX graph, as tract kept it).
    pub name: String,
    /// tract's operator.
    pub op: String,
    /// Mean time per run, milliseconds.
    pub ms: f64,
    /// Share of the profiled run time (0..1).
    pub share: f64,
    /// Multiply-accumulates per run, where tract's cost model knows them.
    pub macs: Option<u64>,
}

/// tract's per-node timing of the optimised batch-1 plan, slowest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Images per run.
    pub batch: usize,
    /// Profiled runs (after the warm-up).
    pub runs: usize,
    /// Sum of the nodes' mean times, milliseconds.
    pub total_ms: f64,
    /// Every node that ran, slowest first.
    pub ops: Vec<OpTime>,
}

/// Where a result was measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// CPU model from `/proc/cpuinfo` (`model name`, else the ARM implementer/part).
    pub cpu_model: Option<String>,
    /// Logical CPUs listed in `/proc/cpuinfo`.
    pub cores: Option<usize>,
    /// The CPU kind tract detected (aarch64: Cortex-A53/A55/A72..., Generic).
    pub tract_cpu_kind: String,
    /// The kernel family tract uses (its ISA nickname: neon, fp16, fma, ...).
    pub kernel_family: String,
    /// cpufreq governor of cpu0.
    pub governor: Option<String>,
    /// Current frequency of cpu0, kHz.
    pub frequency_khz: Option<u64>,
    /// Thermal zone 0, degrees Celsius.
    pub temperature_c: Option<f64>,
    /// Kernel version (`/proc/sys/kernel/osrelease`).
    pub kernel: Option<String>,
    /// Threads of tract's matrix kernels.
    pub threads: usize,
    /// CPUs the runner may run on (`Cpus_allowed_list` of `/proc/self/status`).
    pub affinity: Option<String>,
    /// SHA-256 of the runner binary that ran (`/proc/self/exe`).
    pub runner_sha256: Option<String>,
}

/// The runner's result for one model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelResult {
    /// `fp32` or `int8`.
    pub model: String,
    /// Correct top-1 predictions on the shard (`None`: unlabelled shard).
    pub correct: Option<usize>,
    /// Images in the shard.
    pub images: usize,
    /// Hex SHA-256 of the logits (little-endian f32, row-major).
    pub outputs_sha256: String,
    /// File (in the bundle dir) holding those logits, for tolerance comparison on the host.
    pub outputs_file: String,
    /// Latency per batch size.
    pub latency: Vec<Latency>,
    /// Parsing the model, milliseconds.
    #[serde(default)]
    pub load_ms: Option<f64>,
    /// Plan, first run and warm-up per batch size.
    #[serde(default)]
    pub phases: Vec<Phases>,
    /// Reused against fresh tract state at batch 1 (with `profile`).
    #[serde(default)]
    pub state_reuse: Option<StateReuse>,
    /// Peak resident memory.
    #[serde(default)]
    pub memory: Option<Memory>,
    /// Per-node profile (with `profile`).
    #[serde(default)]
    pub profile: Option<Profile>,
}

/// The runner's JSON document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunnerResult {
    /// [`FORMAT`].
    pub format: u32,
    /// Runner version.
    pub runner_version: String,
    /// `std::env::consts::ARCH` of the runner.
    pub arch: String,
    /// Every file matched the manifest's digest.
    pub verified: bool,
    /// Threads used.
    pub threads: usize,
    /// Per model.
    pub models: Vec<ModelResult>,
    /// Hex SHA-256 of the `manifest.json` bytes the runner read, for the host to compare with
    /// the manifest it wrote. Absent in results of runners older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// Where it ran.
    #[serde(default)]
    pub environment: Option<Environment>,
}

/// A decoded test shard: normalised images and, for a labelled shard, their labels.
///
/// An unlabelled shard (`classes == 0`, `labels` empty) holds seeded random inputs: it gives
/// latency, memory, profile and output parity, never an accuracy.
#[derive(Clone, Debug, PartialEq)]
pub struct Shard {
    /// `[c, h, w]`.
    pub shape: [usize; 3],
    /// Classes (0: unlabelled).
    pub classes: usize,
    /// Labels, one per image (empty when unlabelled).
    pub labels: Vec<u16>,
    /// `[n, c, h, w]` normalised f32.
    pub images: Vec<f32>,
}

impl Shard {
    /// Images in the shard.
    pub fn len(&self) -> usize {
        let per: usize = self.shape.iter().product();
        self.images.len().checked_div(per).unwrap_or(0)
    }

    /// No image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the shard has labels (and so gives an accuracy).
    pub fn is_labelled(&self) -> bool {
        self.classes > 0
    }

    /// Correct top-1 predictions of `logits` (`[n, classes]`, row-major); `None` for an
    /// unlabelled shard or logits of another width.
    pub fn correct(&self, logits: &[f32]) -> Option<usize> {
        if !self.is_labelled() || logits.len() != self.labels.len() * self.classes {
            return None;
        }
        Some(
            logits
                .chunks_exact(self.classes)
                .zip(&self.labels)
                .filter(|(row, l)| argmax(row) == **l as usize)
                .count(),
        )
    }

    /// Encodes: magic, u32 LE n, c, h, w, classes, n u16 LE labels (none when `classes` is
    /// 0), n*c*h*w f32 LE.
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.len();
        let mut out = Vec::with_capacity(28 + 2 * n + 4 * self.images.len());
        out.extend_from_slice(SHARD_MAGIC);
        for v in [n, self.shape[0], self.shape[1], self.shape[2], self.classes] {
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        for l in &self.labels {
            out.extend_from_slice(&l.to_le_bytes());
        }
        for v in &self.images {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Decodes, checking magic, sizes and labels.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 28 || &bytes[..8] != SHARD_MAGIC {
            return Err("not a distill-edge test shard (bad magic)".into());
        }
        let word = |i: usize| {
            u32::from_le_bytes(bytes[8 + 4 * i..12 + 4 * i].try_into().unwrap()) as usize
        };
        let (n, c, h, w, classes) = (word(0), word(1), word(2), word(3), word(4));
        let per = c
            .checked_mul(h)
            .and_then(|v| v.checked_mul(w))
            .ok_or("bad shape")?;
        let label_bytes = if classes == 0 { 0 } else { 2 };
        let expected = n
            .checked_mul(label_bytes)
            .and_then(|l| n.checked_mul(per)?.checked_mul(4)?.checked_add(l))
            .and_then(|v| v.checked_add(28))
            .ok_or("bad sizes")?;
        if bytes.len() != expected {
            return Err(format!(
                "shard of {n} images of {c}x{h}x{w} should be {expected} bytes, found {}",
                bytes.len()
            ));
        }
        let labels: Vec<u16> = bytes[28..28 + label_bytes * n]
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        if let Some((i, l)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l as usize >= classes)
        {
            return Err(format!(
                "label {l} of image {i} is not below {classes} classes"
            ));
        }
        let images = bytes[28 + label_bytes * n..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Self {
            shape: [c, h, w],
            classes,
            labels,
            images,
        })
    }
}

/// Index of the largest value (the first on ties; NaN never wins): top-1 on both sides.
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

/// Hex SHA-256 of bytes: the digest of manifest entries and of outputs, on both sides.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Little-endian bytes of f32 values (the digest and outputs file format).
pub fn f32_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_json_is_flat_and_in_field_order() {
        let l = Latency::from_samples(8, &[2.0, 1.0, 4.0, 3.0]).unwrap();
        let text = serde_json::to_string(&l).unwrap();
        assert_eq!(
            text,
            r#"{"batch":8,"runs":4,"min_ms":1.0,"p50_ms":2.0,"p90_ms":4.0,"p99_ms":4.0,"max_ms":4.0,"mean_ms":2.5,"p95_ms":4.0,"std_ms":1.2909944487358056,"unsupported":["p90","p95","p99"]}"#
        );
        let back: Latency = serde_json::from_str(&text).unwrap();
        assert_eq!(back, l);
        assert_eq!(back.p50_ms, 2.0);
        assert_eq!(LatencyStats::from(&back), l.stats);
    }

    #[test]
    fn non_finite_samples_are_ignored() {
        assert_eq!(Latency::from_samples(1, &[]), None);
        assert_eq!(Latency::from_samples(1, &[f64::NAN]), None);
        let s = LatencyStats::from_samples(&[f64::INFINITY, 3.0]).unwrap();
        assert_eq!((s.runs, s.mean_ms), (1, 3.0));
    }

    fn manifest() -> Manifest {
        let entry = |p: &str| FileEntry {
            path: p.into(),
            sha256: "00".into(),
            bytes: 0,
        };
        Manifest {
            format: FORMAT,
            target: "x".into(),
            triple: "x".into(),
            distill_edge_version: "0".into(),
            files: ["distill-edge-runner", "shard.bin", "m.onnx", "r.bin"]
                .into_iter()
                .map(entry)
                .collect(),
            models: vec![ModelEntry {
                name: "fp32".into(),
                file: "m.onnx".into(),
                format: ModelFormat::Onnx,
                nnef_check: None,
            }],
            shard: "shard.bin".into(),
            host: vec![HostReference {
                model: "fp32".into(),
                correct: Some(0),
                images: 0,
                outputs_sha256: String::new(),
                outputs_file: "r.bin".into(),
            }],
            bench: BenchSettings {
                batches: vec![1],
                warmup: 0,
                runs: 1,
                min_seconds: 0.0,
                threads: 1,
                warmup_seconds: 0.0,
                profile: false,
            },
            logits_output: 0,
            inputs: String::new(),
            onnx_fallback: None,
        }
    }

    #[test]
    fn a_manifest_without_formats_reads_as_onnx() {
        let mut v = serde_json::to_value(manifest()).unwrap();
        let entry = &mut v["models"][0];
        entry.as_object_mut().unwrap().remove("format");
        assert!(entry.get("nnef_check").is_none());
        let back: Manifest = serde_json::from_value(v).unwrap();
        assert_eq!(back.models[0].format, ModelFormat::Onnx);
        assert_eq!(back.onnx_fallback, None);
    }

    #[test]
    fn a_manifest_missing_a_needed_file_is_refused() {
        assert_eq!(manifest().check_listed(), Ok(()));
        for gone in ["distill-edge-runner", "shard.bin", "m.onnx", "r.bin"] {
            let mut m = manifest();
            m.files.retain(|f| f.path != gone);
            let err = m.check_listed().unwrap_err();
            assert!(err.starts_with(gone) && err.contains("not listed"), "{err}");
        }
        let mut m = manifest();
        m.files.clear();
        assert!(m.check_listed().is_err());
        let mut m = manifest();
        m.models[0].file = "../m.onnx".into();
        m.files.push(FileEntry {
            path: "../m.onnx".into(),
            sha256: "00".into(),
            bytes: 0,
        });
        assert!(m.check_listed().unwrap_err().contains("not a plain file"));
    }

    #[test]
    fn an_old_runner_result_without_the_manifest_digest_parses() {
        let r: RunnerResult = serde_json::from_str(
            r#"{"format":1,"runner_version":"0","arch":"x","verified":true,"threads":1,"models":[]}"#,
        )
        .unwrap();
        assert_eq!(r.manifest_sha256, None);
    }

    #[test]
    fn sha256_hex_of_empty_input() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn shard_round_trips_and_rejects_bad_labels() {
        let shard = Shard {
            shape: [1, 2, 2],
            classes: 3,
            labels: vec![0, 2],
            images: (0..8).map(|v| v as f32).collect(),
        };
        assert_eq!(Shard::from_bytes(&shard.to_bytes()).unwrap(), shard);
        let mut bad = shard.clone();
        bad.labels[1] = 3;
        assert!(Shard::from_bytes(&bad.to_bytes()).is_err());
        assert!(Shard::from_bytes(b"nope").is_err());
    }

    #[test]
    fn an_unlabelled_shard_round_trips_and_gives_no_accuracy() {
        let shard = Shard {
            shape: [1, 2, 2],
            classes: 0,
            labels: vec![],
            images: (0..12).map(|v| v as f32).collect(),
        };
        let bytes = shard.to_bytes();
        assert_eq!(bytes.len(), 28 + 4 * 12);
        let back = Shard::from_bytes(&bytes).unwrap();
        assert_eq!(back, shard);
        assert_eq!((back.len(), back.is_labelled()), (3, false));
        assert_eq!(back.correct(&[0.0; 6]), None);
        let labelled = Shard {
            classes: 2,
            labels: vec![1, 0, 1],
            ..shard
        };
        assert_eq!(labelled.correct(&[0.0, 1.0, 1.0, 0.0, 2.0, 1.0]), Some(2));
    }

    #[test]
    fn percentiles_the_run_count_cannot_support_are_marked() {
        let s = |n: usize| {
            let v: Vec<f64> = (1..=n).map(|i| i as f64).collect();
            LatencyStats::from_samples(&v).unwrap().unsupported
        };
        assert_eq!(s(99), ["p90", "p95", "p99"]);
        assert_eq!(s(100), ["p95", "p99"]);
        assert_eq!(s(200), ["p99"]);
        assert_eq!(s(999), ["p99"]);
        assert!(s(1000).is_empty());
        let one = LatencyStats::from_samples(&[2.0]).unwrap();
        assert_eq!(one.std_ms, 0.0);
    }
}
