//! Bundles: the directory shipped to a board (runner, models, test shard, host reference
//! outputs, manifest with SHA-256 of every file). The models ship as tract NNEF when every one
//! converts and computes its ONNX model's outputs on the shard ([`prepare_models`]), so the
//! runner needs no ONNX parser; otherwise they ship as ONNX with the reason in the manifest. Written to a temporary sibling directory and
//! swapped in only when complete, so a failed build keeps the previous bundle. The SHA-256 of
//! the manifest itself is recorded beside the bundle directory (never uploaded, see
//! [`manifest_digest_path`]), so that `bench` can tell an edited manifest from the one built.

use std::path::{Path, PathBuf};

use super::TargetSpec;
use crate::data::Dataset;
use crate::data::prep::{Normalization, fill_batch};
use crate::fsutil::{sha256_file, sha256_hex};
use crate::infer::Batch;
use crate::infer::tract::TractEngine;
use distill_edge_schema::{
    BenchSettings, FORMAT, FileEntry, HostReference, MANIFEST, Manifest, ModelEntry, ModelFormat,
    NnefCheck, RUNNER, SHARD_BATCH, Shard, f32_le_bytes,
};

/// Errors writing a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// File system failure.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Copying a file into the bundle failed (disk full, unreadable source...).
    #[error("copying {} to {}: {source}", from.display(), to.display())]
    Copy {
        /// The file copied.
        from: PathBuf,
        /// Where it was going.
        to: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// tract could not run a model on the shard.
    #[error(transparent)]
    Infer(#[from] crate::infer::InferError),
    /// Inputs that do not fit together.
    #[error("{0}")]
    Invalid(String),
}

/// Copies `from` to `to`; an error names both files.
fn copy(from: &Path, to: &Path) -> Result<(), BundleError> {
    std::fs::copy(from, to)
        .map(drop)
        .map_err(|source| BundleError::Copy {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source,
        })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The first `n` test images (normalised) and labels as a shard.
pub fn make_shard(test: &Dataset, norm: &Normalization, n: usize) -> Shard {
    let picks: Vec<usize> = (0..n.min(test.len())).collect();
    let mut images = Vec::new();
    fill_batch(test, &picks, norm, None, &mut images);
    Shard {
        shape: [test.shape.channels, test.shape.height, test.shape.width],
        classes: test.classes.len(),
        labels: picks.iter().map(|&i| test.labels[i]).collect(),
        images,
    }
}

/// A shard of prepared, unlabelled inputs (`[n, c, h, w]`): seeded random inputs.
pub fn unlabelled_shard(shape: [usize; 3], images: Vec<f32>) -> Shard {
    Shard {
        shape,
        classes: 0,
        labels: Vec::new(),
        images,
    }
}

/// Logits of `engine` on the shard, in batches of [`SHARD_BATCH`] as the runner does
/// (output `logits_output`).
pub fn shard_logits(engine: &TractEngine, shard: &Shard) -> Result<Vec<f32>, BundleError> {
    shard_logits_of(engine, shard, 0)
}

fn shard_logits_of(
    engine: &TractEngine,
    shard: &Shard,
    logits_output: usize,
) -> Result<Vec<f32>, BundleError> {
    let per: usize = shard.shape.iter().product();
    let n = shard.len();
    let mut all = Vec::new();
    for start in (0..n).step_by(SHARD_BATCH) {
        let b = SHARD_BATCH.min(n - start);
        let raw = engine.run_raw(Batch {
            data: &shard.images[start * per..(start + b) * per],
            shape: [b, shard.shape[0], shard.shape[1], shard.shape[2]],
        })?;
        all.extend(
            raw.into_iter()
                .nth(logits_output)
                .map(|(_, v)| v)
                .unwrap_or_default(),
        );
    }
    Ok(all)
}

/// Correct top-1 predictions of `logits` on the shard (`None`: unlabelled shard).
pub fn correct(logits: &[f32], shard: &Shard) -> Option<usize> {
    shard.correct(logits)
}

/// What a bundle of a model distill-edge did not write needs besides [`BundleInputs`].
#[derive(Clone, Debug, Default)]
pub struct ModelFeed {
    /// Input size and logits output for tract on the host.
    pub io: crate::infer::ModelIo,
    /// Index of the logits output (for the runner).
    pub logits_output: usize,
    /// What the shard holds, in words.
    pub inputs: String,
}

/// One model of a bundle, run on the host and converted (see [`prepare_models`]).
pub struct PreparedModel {
    /// `fp32` or `int8`.
    pub name: String,
    /// The ONNX file.
    pub source: PathBuf,
    /// The ONNX model's logits on the shard with tract (the host reference).
    pub logits: Vec<f32>,
    /// The NNEF archive and its check against `logits`, or why there is none.
    pub nnef: Result<(Vec<u8>, NnefCheck), String>,
}

/// A bundle's models, ready to be written: the format they ship in decides the runner's
/// engine ([`PreparedModels::format`]).
pub struct PreparedModels {
    /// In bundle order.
    pub models: Vec<PreparedModel>,
}

impl PreparedModels {
    /// [`ModelFormat::Nnef`] when every model has a checked NNEF form, else
    /// [`ModelFormat::Onnx`]: one runner engine per bundle.
    pub fn format(&self) -> ModelFormat {
        if self.onnx_fallback().is_none() {
            ModelFormat::Nnef
        } else {
            ModelFormat::Onnx
        }
    }

    /// Why the bundle falls back to ONNX: the first model without a checked NNEF form.
    pub fn onnx_fallback(&self) -> Option<String> {
        self.models
            .iter()
            .find_map(|m| m.nnef.as_ref().err().map(|e| format!("{}: {e}", m.name)))
    }
}

/// Loads each `(name, ONNX file)` with tract, checks that it takes the shard's images, runs it
/// on the shard (the host reference, output `feed.logits_output`) and converts it to NNEF,
/// checking that the NNEF model gives the same logits ([`crate::infer::nnef::convert_checked`]).
/// A model that does not load or does not fit the shard is an error; one that NNEF cannot
/// express only sends the bundle back to ONNX.
pub fn prepare_models(
    models: &[(String, PathBuf)],
    shard: &Shard,
    feed: &ModelFeed,
) -> Result<PreparedModels, BundleError> {
    let mut out = Vec::new();
    for (name, src) in models {
        let engine = TractEngine::load_with(src, &feed.io)?;
        let [c, h, w] = engine.input_shape();
        if [c, h, w] != shard.shape {
            return Err(BundleError::Invalid(format!(
                "{}: the model expects {c}x{h}x{w} inputs, the shard holds {:?}",
                src.display(),
                shard.shape
            )));
        }
        let logits = shard_logits_of(&engine, shard, feed.logits_output)?;
        let source_sha256 = sha256_file(src).map_err(io(src))?;
        let label = src.display().to_string();
        let nnef = crate::infer::nnef::convert_checked(
            &engine,
            &label,
            &source_sha256,
            shard,
            feed.logits_output,
            &logits,
        )
        .map_err(|e| e.to_string());
        out.push(PreparedModel {
            name: name.clone(),
            source: src.clone(),
            logits,
            nnef,
        });
    }
    Ok(PreparedModels { models: out })
}

/// What goes into a bundle.
pub struct BundleInputs<'a> {
    /// Board class.
    pub target: &'a TargetSpec,
    /// Cross-built runner binary, with the engine of `models.format()`.
    pub runner: &'a Path,
    /// The models (`fp32` and optionally `int8`), run and converted by [`prepare_models`].
    pub models: &'a PreparedModels,
    /// Test shard.
    pub shard: &'a Shard,
    /// Latency settings for the runner.
    pub bench: BenchSettings,
}

/// Where the SHA-256 of `bundle`'s manifest is recorded: `<bundle>.manifest.sha256` beside
/// the bundle directory, outside what is uploaded to a device.
pub fn manifest_digest_path(bundle: &Path) -> PathBuf {
    let mut name = bundle
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "bundle".into());
    name.push(".manifest.sha256");
    bundle.with_file_name(name)
}

/// Writes the bundle into `dir` (replacing an earlier one only once complete), then records
/// the SHA-256 of its manifest at [`manifest_digest_path`].
pub fn write_bundle(dir: &Path, inputs: &BundleInputs<'_>) -> Result<Manifest, BundleError> {
    let feed = ModelFeed {
        inputs: format!("{} labelled test images", inputs.shard.len()),
        ..ModelFeed::default()
    };
    write_bundle_with(dir, inputs, &feed)
}

/// [`write_bundle`] for a model fed as `feed` says.
pub fn write_bundle_with(
    dir: &Path,
    inputs: &BundleInputs<'_>,
    feed: &ModelFeed,
) -> Result<Manifest, BundleError> {
    let name = dir
        .file_name()
        .ok_or_else(|| BundleError::Invalid(format!("{}: not a directory name", dir.display())))?
        .to_string_lossy()
        .into_owned();
    let parent = dir.parent().unwrap_or(Path::new("."));
    // Removed on drop: a failed fill leaves nothing behind.
    let tmp = crate::fsutil::sibling_temp_dir(dir).map_err(io(parent))?;
    let manifest = fill(tmp.path(), inputs, feed)?;
    let manifest_path = tmp.path().join(MANIFEST);
    let digest = sha256_file(&manifest_path).map_err(io(&manifest_path))?;
    let old = parent.join(format!(
        ".{name}.old-{}-{}",
        std::process::id(),
        crate::fsutil::unique_suffix()
    ));
    crate::fsutil::replace_dir(&tmp.keep(), dir, &old).map_err(io(dir))?;
    // Recorded after the swap: should this write fail, the bundle and the record disagree and
    // `bench` refuses the bundle (loudly) until it is rebuilt.
    let record = manifest_digest_path(dir);
    crate::fsutil::write_atomic(&record, format!("{digest}\n").as_bytes()).map_err(io(&record))?;
    Ok(manifest)
}

fn fill(tmp: &Path, inputs: &BundleInputs<'_>, feed: &ModelFeed) -> Result<Manifest, BundleError> {
    let mut files = Vec::new();
    let mut add = |file: &str| -> Result<(), BundleError> {
        let p = tmp.join(file);
        files.push(FileEntry {
            path: file.to_string(),
            sha256: sha256_file(&p).map_err(io(&p))?,
            bytes: std::fs::metadata(&p).map_err(io(&p))?.len(),
        });
        Ok(())
    };
    let runner = tmp.join(RUNNER);
    copy(inputs.runner, &runner)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&runner, std::fs::Permissions::from_mode(0o755))
            .map_err(io(&runner))?;
    }
    add(RUNNER)?;
    let shard_file = "shard.bin";
    let shard_path = tmp.join(shard_file);
    std::fs::write(&shard_path, inputs.shard.to_bytes()).map_err(io(&shard_path))?;
    add(shard_file)?;
    let mut models = Vec::new();
    let mut host = Vec::new();
    let format = inputs.models.format();
    for m in &inputs.models.models {
        let name = &m.name;
        let (file, nnef_check) = match (&m.nnef, format) {
            (Ok((bytes, check)), ModelFormat::Nnef) => {
                let file = format!("student-{name}.nnef.tar");
                let path = tmp.join(&file);
                std::fs::write(&path, bytes).map_err(io(&path))?;
                (file, Some(check.clone()))
            }
            _ => {
                let file = format!("student-{name}.onnx");
                copy(&m.source, &tmp.join(&file))?;
                // The file shipped is the file run on the host.
                let shipped = sha256_file(&tmp.join(&file)).map_err(io(&m.source))?;
                let source = sha256_file(&m.source).map_err(io(&m.source))?;
                if shipped != source {
                    return Err(BundleError::Invalid(format!(
                        "{}: changed while the bundle was written",
                        m.source.display()
                    )));
                }
                (file, None)
            }
        };
        add(&file)?;
        let logits = &m.logits;
        let bytes = f32_le_bytes(logits);
        let reference = format!("reference-{name}.bin");
        let reference_path = tmp.join(&reference);
        std::fs::write(&reference_path, &bytes).map_err(io(&reference_path))?;
        add(&reference)?;
        host.push(HostReference {
            model: name.clone(),
            correct: correct(logits, inputs.shard),
            images: inputs.shard.len(),
            outputs_sha256: sha256_hex(&bytes),
            outputs_file: reference,
        });
        models.push(ModelEntry {
            name: name.clone(),
            file,
            format,
            nnef_check,
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        target: inputs.target.name.clone(),
        triple: inputs.target.triple.clone(),
        distill_edge_version: env!("CARGO_PKG_VERSION").into(),
        files,
        models,
        shard: shard_file.into(),
        host,
        bench: inputs.bench.clone(),
        logits_output: feed.logits_output,
        inputs: feed.inputs.clone(),
        onnx_fallback: inputs.models.onnx_fallback(),
    };
    // Every file the runner and the host need is listed with its digest.
    manifest.check_listed().map_err(BundleError::Invalid)?;
    let manifest_path = tmp.join(MANIFEST);
    crate::fsutil::write_json_atomic(&manifest_path, &manifest).map_err(io(&manifest_path))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{self, fixtures::tiny_cnn};

    fn tiny_shard() -> Shard {
        unlabelled_shard(
            [1, 4, 4],
            (0..5 * 16).map(|i| (i % 9) as f32 / 4.0 - 1.0).collect(),
        )
    }

    /// Models tract-core's NNEF expresses ship as NNEF (the slim runner); one model it cannot
    /// express sends the whole bundle to ONNX and the tract-onnx runner, with the reason.
    #[test]
    fn the_bundle_format_is_nnef_unless_a_model_needs_onnx() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.onnx");
        std::fs::write(&plain, proto::encode(&tiny_cnn())).unwrap();
        let mut lrn = tiny_cnn();
        lrn.graph.as_mut().unwrap().node[1] = proto::make_node(
            "LRN",
            &["conv_out"],
            &["relu_out"],
            "node_lrn",
            vec![proto::make_attr_int("size", 1)],
        );
        let with_lrn = dir.path().join("lrn.onnx");
        std::fs::write(&with_lrn, proto::encode(&lrn)).unwrap();
        let shard = tiny_shard();
        let feed = ModelFeed::default();

        let nnef = prepare_models(&[("fp32".into(), plain.clone())], &shard, &feed).unwrap();
        assert_eq!(nnef.format(), ModelFormat::Nnef);
        assert_eq!(nnef.onnx_fallback(), None);
        let check = &nnef.models[0].nnef.as_ref().unwrap().1;
        assert_eq!(check.images, 5);
        assert_eq!(check.source_sha256, sha256_file(&plain).unwrap());

        let mixed = prepare_models(
            &[("fp32".into(), plain), ("int8".into(), with_lrn)],
            &shard,
            &feed,
        )
        .unwrap();
        assert_eq!(mixed.format(), ModelFormat::Onnx);
        let why = mixed.onnx_fallback().unwrap();
        assert!(why.starts_with("int8: "), "{why}");
        assert!(why.contains("node_lrn"), "{why}");
        // Both models still have their host reference outputs.
        assert!(mixed.models.iter().all(|m| m.logits.len() == 5 * 3));

        // What the manifest records, per choice.
        let target = TargetSpec::resolve("x86_64").unwrap();
        let runner = dir.path().join("runner-binary");
        std::fs::write(&runner, b"not run here").unwrap();
        let write = |name: &str, models: &PreparedModels| {
            write_bundle(
                &dir.path().join(name),
                &BundleInputs {
                    target: &target,
                    runner: &runner,
                    models,
                    shard: &shard,
                    bench: BenchSettings::default(),
                },
            )
            .unwrap()
        };
        let m = write("nnef", &nnef);
        assert_eq!(m.models[0].file, "student-fp32.nnef.tar");
        assert_eq!(m.models[0].format, ModelFormat::Nnef);
        assert!(m.models[0].nnef_check.is_some());
        assert!(m.entry("student-fp32.nnef.tar").is_some());
        assert_eq!(m.onnx_fallback, None);
        let m = write("onnx", &mixed);
        assert_eq!(
            m.models.iter().map(|e| e.file.as_str()).collect::<Vec<_>>(),
            ["student-fp32.onnx", "student-int8.onnx"]
        );
        assert!(
            m.models
                .iter()
                .all(|e| e.format == ModelFormat::Onnx && e.nnef_check.is_none())
        );
        assert!(m.onnx_fallback.unwrap().contains("node_lrn"));
        // The host references are the ONNX model's logits either way.
        assert_eq!(
            m.host[0].outputs_sha256,
            sha256_hex(&f32_le_bytes(&mixed.models[0].logits))
        );
    }

    /// A full disk while the bundle is written used to be reported against the file being
    /// copied; the error must name where it was going.
    #[test]
    fn disk_full_during_a_bundle_write_names_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("student.onnx");
        std::fs::write(&src, vec![7u8; 4096]).unwrap();
        // /dev/full accepts opening for writing and fails every write with ENOSPC.
        let full = Path::new("/dev/full");
        if !full.exists() {
            crate::testing::missing_tool("/dev/full", "a Linux system with /dev/full");
            return;
        }
        let msg = copy(&src, full).unwrap_err().to_string();
        assert!(msg.contains("/dev/full"), "{msg}");
        assert!(msg.contains("student.onnx"), "{msg}");
        assert!(msg.contains("to /dev/full"), "{msg}");
    }
}
