//! The JSON and binary formats shared by the host (`distill-edge`) and the on-device runner.
//! The host includes this file as a module, so both sides compare results field by field.

use serde::{Deserialize, Serialize};

/// Version of the manifest and result schemas.
pub const FORMAT: u32 = 1;
/// File name of the manifest inside a bundle.
pub const MANIFEST: &str = "manifest.json";
/// Images per inference call when running the shard, on host and device alike (the same
/// batch gives the same kernels, so outputs can be compared bit for bit).
pub const SHARD_BATCH: usize = 16;
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
}

/// What the host measured on the same shard with tract, to compare with the device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostReference {
    /// Model name (`fp32`, `int8`).
    pub model: String,
    /// Correct top-1 predictions on the shard.
    pub correct: usize,
    /// Images in the shard.
    pub images: usize,
    /// Hex SHA-256 of the logits as little-endian f32, row-major.
    pub outputs_sha256: String,
    /// The logits file shipped for tolerance comparison (`reference-<model>.bin`).
    pub outputs_file: String,
}

/// How the runner benchmarks latency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
}

/// Latency percentiles, milliseconds per run (nearest-rank on sorted samples).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Images per run.
    pub batch: usize,
    /// Timed runs.
    pub runs: usize,
    /// Fastest run.
    pub min_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest run.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    /// Percentiles of `samples` (ms); `None` when empty.
    pub fn from_samples(batch: usize, samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let rank = |q: f64| s[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Self {
            batch,
            runs: n,
            min_ms: s[0],
            p50_ms: rank(0.5),
            p90_ms: rank(0.9),
            p99_ms: rank(0.99),
            max_ms: s[n - 1],
            mean_ms: s.iter().sum::<f64>() / n as f64,
        })
    }
}

/// The runner's result for one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelResult {
    /// `fp32` or `int8`.
    pub model: String,
    /// Correct top-1 predictions on the shard.
    pub correct: usize,
    /// Images in the shard.
    pub images: usize,
    /// Hex SHA-256 of the logits (little-endian f32, row-major).
    pub outputs_sha256: String,
    /// File (in the bundle dir) holding those logits, for tolerance comparison on the host.
    pub outputs_file: String,
    /// Latency per batch size.
    pub latency: Vec<Latency>,
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
}

/// A decoded test shard: normalised images and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Shard {
    /// `[c, h, w]`.
    pub shape: [usize; 3],
    /// Classes.
    pub classes: usize,
    /// Labels, one per image.
    pub labels: Vec<u16>,
    /// `[n, c, h, w]` normalised f32.
    pub images: Vec<f32>,
}

impl Shard {
    /// Encodes: magic, u32 LE n, c, h, w, classes, n u16 LE labels, n*c*h*w f32 LE.
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.labels.len();
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
        let expected = n
            .checked_mul(2)
            .and_then(|l| n.checked_mul(per)?.checked_mul(4)?.checked_add(l))
            .and_then(|v| v.checked_add(28))
            .ok_or("bad sizes")?;
        if bytes.len() != expected {
            return Err(format!(
                "shard of {n} images of {c}x{h}x{w} should be {expected} bytes, found {}",
                bytes.len()
            ));
        }
        let labels: Vec<u16> = bytes[28..28 + 2 * n]
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
        let images = bytes[28 + 2 * n..]
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
