//! The teacher-output cache: a frozen teacher's outputs over the training split, computed once.
//!
//! Without augmentation a distillation epoch shows the teacher the same normalised images every
//! epoch, so its logits, embedding and (for InDistill) the pruned-teacher targets of every conv
//! block are the same each time. They are computed once, in eval mode and in batches, streamed
//! to one file, and read back instead of running the teacher.
//!
//! File: `DETCACH1`, u32 LE header length, a JSON header ([`Header`]), then one record of
//! `record_floats` f32 LE per training image in dataset order (logits, embedding, then each
//! block's target, CHW), then the SHA-256 of everything before it. The header's fingerprint
//! covers the teacher file's SHA-256, the training images and labels, the normalisation and the
//! taps (student widths and the kept filters), so a cache of another teacher, split or student
//! is stale; a torn or edited file fails its digest. Either is rebuilt.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::Dataset;
use crate::data::prep::Normalization;
use crate::model::ConvNet;
use crate::model::infer::batch_tensors;
use crate::progress::Reporter;
use crate::prune::PrunedTeacher;

const MAGIC: &[u8; 8] = b"DETCACH1";
/// Images per teacher batch while building.
const BUILD_BATCH: usize = 256;

/// What a cache file says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Hex SHA-256 of everything the outputs depend on (see the module docs).
    pub fingerprint: String,
    /// Images (records).
    pub images: usize,
    /// Logits per record.
    pub classes: usize,
    /// Embedding width.
    pub embedding: usize,
    /// `[c, h, w]` of each block's pruned-teacher target (empty without InDistill taps).
    pub taps: Vec<[usize; 3]>,
}

impl Header {
    fn record_floats(&self) -> usize {
        self.classes + self.embedding + self.taps.iter().map(|t| t[0] * t[1] * t[2]).sum::<usize>()
    }
}

/// Why a cache could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or writing the file failed.
    #[error("teacher cache {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// The teacher could not give its outputs.
    #[error("{0}")]
    Teacher(String),
    /// The file is not a complete cache (torn, edited, other format).
    #[error("teacher cache {path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A loaded cache: every record in memory, once.
pub struct TeacherCache {
    header: Header,
    records: Vec<f32>,
}

/// What a [`ForeignTeacher`] gives for a batch of images.
#[derive(Clone, Debug, Default)]
pub struct ForeignOutputs {
    /// `[n, classes]`.
    pub logits: Vec<f32>,
    /// `[n, dim]`.
    pub embedding: Vec<f32>,
    /// Embedding width.
    pub dim: usize,
    /// The curriculum target of each student block, `[n, c, h, w]` with `[c, h, w]` from
    /// [`ForeignTeacher::tap_shapes`] (empty when the teacher has no InDistill taps).
    pub taps: Vec<Vec<f32>>,
}

/// A teacher distill-edge did not train (an ONNX model run by an inference engine): it gives
/// logits, an embedding and, when it was pruned for a student, InDistill's block targets for
/// dataset images, preprocessing them itself. Implemented outside this module
/// (`infer::teacher`), so training does not depend on the engines.
pub trait ForeignTeacher: Sync {
    /// Everything besides the model file that decides its outputs (preprocessing, which
    /// tensors are read, the taps and their kept filters), for the cache's fingerprint.
    fn identity(&self) -> String;
    /// Classes of the logits.
    fn classes(&self) -> usize;
    /// `[c, h, w]` of each student block's target (empty without InDistill taps).
    fn tap_shapes(&self) -> Vec<[usize; 3]>;
    /// The outputs for the images `picks` of `data`; the error is one line naming the model.
    fn outputs(&self, data: &Dataset, picks: &[usize]) -> Result<ForeignOutputs, String>;
}

/// The teacher a cache is computed with.
#[derive(Clone, Copy)]
pub enum CacheTeacher<'a> {
    /// A burn network (eval mode); it sees the student's normalised inputs.
    Burn(&'a ConvNet),
    /// A foreign model with its own preprocessing.
    Foreign(&'a dyn ForeignTeacher),
}

/// What the cache is computed from.
pub struct CacheSource<'a> {
    /// The teacher.
    pub teacher: CacheTeacher<'a>,
    /// Its pruned view, when the targets of InDistill's curriculum are cached too.
    pub pruned: Option<&'a PrunedTeacher>,
    /// For a foreign teacher: whether its InDistill targets are cached too.
    pub foreign_taps: bool,
    /// Hex SHA-256 of the teacher's checkpoint file.
    pub teacher_digest: &'a str,
    /// The training images, in the order the indices of a batch refer to.
    pub data: &'a Dataset,
    /// The student's input normalisation (the teacher sees the student's inputs).
    pub norm: &'a Normalization,
}

impl CacheSource<'_> {
    /// The fingerprint of the outputs this source gives.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(MAGIC);
        h.update(self.teacher_digest.as_bytes());
        if let CacheTeacher::Foreign(f) = self.teacher {
            h.update(f.identity().as_bytes());
            h.update(if self.foreign_taps {
                b"foreign taps".as_slice()
            } else {
                b"no foreign taps".as_slice()
            });
        }
        let s = self.data.shape;
        for v in [self.data.len(), s.channels, s.height, s.width] {
            h.update((v as u64).to_le_bytes());
        }
        h.update(&self.data.images);
        for l in &self.data.labels {
            h.update(l.to_le_bytes());
        }
        for v in self.norm.mean.iter().chain(&self.norm.std) {
            h.update(v.to_le_bytes());
        }
        match self.pruned {
            None => h.update(b"no taps"),
            Some(p) => {
                for kept in &p.kept {
                    h.update((kept.len() as u64).to_le_bytes());
                    for &k in kept {
                        h.update((k as u64).to_le_bytes());
                    }
                }
            }
        }
        hex::encode(h.finalize())
    }
}

impl TeacherCache {
    /// The cache of `source` in `dir` (file `<fingerprint prefix>.bin`): read when it is there
    /// and intact, otherwise (missing, stale, corrupt) computed and written atomically.
    pub fn open_or_build(
        dir: &Path,
        source: &CacheSource<'_>,
        reporter: &mut Reporter,
    ) -> Result<Self, CacheError> {
        let fingerprint = source.fingerprint();
        let path = dir.join(format!("{}.bin", &fingerprint[..16]));
        if path.exists() {
            match Self::read(&path) {
                Ok(c) if c.header.fingerprint == fingerprint => {
                    reporter.line(format!(
                        "teacher outputs from the cache {} ({} images)",
                        path.display(),
                        c.header.images
                    ));
                    return Ok(c);
                }
                Ok(_) => reporter.line(format!(
                    "{}: made for other inputs; rebuilding it",
                    path.display()
                )),
                Err(e) => reporter.line(format!("{e}; rebuilding it")),
            }
        }
        Self::build(&path, fingerprint, source, reporter)?;
        Self::read(&path)
    }

    /// Runs the teacher over the whole split in batches and streams the records to `path`.
    fn build(
        path: &Path,
        fingerprint: String,
        source: &CacheSource<'_>,
        reporter: &mut Reporter,
    ) -> Result<(), CacheError> {
        let io_err = |source: io::Error| CacheError::Io {
            path: path.to_path_buf(),
            source,
        };
        let data = source.data;
        // A burn teacher runs on the device its weights are on.
        let device = match source.teacher {
            CacheTeacher::Burn(net) => net.devices().into_iter().next(),
            CacheTeacher::Foreign(_) => None,
        }
        .unwrap_or_else(crate::runtime::cpu);
        let n = data.len();
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id(),
            crate::fsutil::unique_suffix()
        ));
        let result = (|| -> Result<(), CacheError> {
            let file = File::create(&tmp).map_err(io_err)?;
            let mut out = HashingWriter {
                inner: BufWriter::new(file),
                hash: Sha256::new(),
            };
            let mut header: Option<Header> = None;
            let mut buffer = Vec::new();
            reporter.start_bar(n.div_ceil(BUILD_BATCH) as u64, "teacher cache");
            let indices: Vec<usize> = (0..n).collect();
            for chunk in indices.chunks(BUILD_BATCH) {
                let b = chunk.len();
                let rows = |t: Vec<f32>, width: usize| -> Vec<Vec<f32>> {
                    t.chunks_exact(width).map(<[f32]>::to_vec).collect()
                };
                let to_vec =
                    |t: Tensor<2>| t.into_data().try_into_vec::<f32>().expect("f32 outputs");
                let (logits, classes, embedding, dim, taps, tap_shapes) = match source.teacher {
                    CacheTeacher::Burn(net) => {
                        let (x, _) =
                            batch_tensors(data, chunk, source.norm, None, &mut buffer, &device);
                        // One pass of the teacher gives the logits, the embedding and the
                        // block outputs that feed the pruned blocks.
                        let f = net.forward_features(x.clone());
                        let taps: Vec<Tensor<4>> = source
                            .pruned
                            .map(|p| p.targets(x, &f.taps))
                            .unwrap_or_default();
                        let tap_shapes: Vec<[usize; 3]> = taps
                            .iter()
                            .map(|t| {
                                let [_, c, h, w] = t.dims();
                                [c, h, w]
                            })
                            .collect();
                        let taps: Vec<Vec<f32>> = taps
                            .into_iter()
                            .map(|t| t.into_data().try_into_vec::<f32>().expect("f32 outputs"))
                            .collect();
                        let [_, classes] = f.logits.dims();
                        let [_, dim] = f.embedding.dims();
                        (
                            to_vec(f.logits),
                            classes,
                            to_vec(f.embedding),
                            dim,
                            taps,
                            tap_shapes,
                        )
                    }
                    CacheTeacher::Foreign(f) => {
                        let o = f.outputs(data, chunk).map_err(CacheError::Teacher)?;
                        let (taps, shapes) = if source.foreign_taps {
                            (o.taps, f.tap_shapes())
                        } else {
                            (Vec::new(), Vec::new())
                        };
                        (o.logits, f.classes(), o.embedding, o.dim, taps, shapes)
                    }
                };
                if logits.len() != b * classes
                    || embedding.len() != b * dim
                    || dim == 0
                    || taps.len() != tap_shapes.len()
                    || taps
                        .iter()
                        .zip(&tap_shapes)
                        .any(|(t, s)| t.len() != b * s[0] * s[1] * s[2])
                {
                    return Err(CacheError::Corrupt {
                        path: path.to_path_buf(),
                        message: format!(
                            "the teacher gave {} logits, {} embedding values and taps of {:?} values for {b} images, expected {b} x {classes}, {b} x {dim} and {b} x {tap_shapes:?}",
                            logits.len(),
                            embedding.len(),
                            taps.iter().map(Vec::len).collect::<Vec<_>>()
                        ),
                    });
                }
                if header.is_none() {
                    let h = Header {
                        fingerprint: fingerprint.clone(),
                        images: n,
                        classes,
                        embedding: dim,
                        taps: tap_shapes.clone(),
                    };
                    let json = serde_json::to_vec(&h).expect("header serialises");
                    out.write_all(MAGIC).map_err(io_err)?;
                    out.write_all(&(json.len() as u32).to_le_bytes())
                        .map_err(io_err)?;
                    out.write_all(&json).map_err(io_err)?;
                    header = Some(h);
                }
                let logits = rows(logits, classes);
                let embedding = rows(embedding, dim);
                let taps: Vec<Vec<Vec<f32>>> = taps
                    .into_iter()
                    .zip(&tap_shapes)
                    .map(|(t, s)| rows(t, s[0] * s[1] * s[2]))
                    .collect();
                let mut bytes = Vec::new();
                for i in 0..b {
                    let parts = [&logits[i], &embedding[i]]
                        .into_iter()
                        .chain(taps.iter().map(|t| &t[i]));
                    for part in parts {
                        if part.iter().any(|v| !v.is_finite()) {
                            return Err(CacheError::Corrupt {
                                path: path.to_path_buf(),
                                message: format!(
                                    "the teacher gives a non-finite output for training image {}",
                                    chunk[i]
                                ),
                            });
                        }
                        for v in part {
                            bytes.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                }
                out.write_all(&bytes).map_err(io_err)?;
                reporter.advance(1, String::new);
            }
            reporter.finish_bar();
            let digest = out.hash.clone().finalize();
            out.inner.write_all(&digest).map_err(io_err)?;
            let file = out.inner.into_inner().map_err(|e| io_err(e.into_error()))?;
            file.sync_all().map_err(io_err)?;
            std::fs::rename(&tmp, path).map_err(io_err)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Reads and verifies a cache file (magic, header, size, digest).
    pub fn read(path: &Path) -> Result<Self, CacheError> {
        let corrupt = |message: String| CacheError::Corrupt {
            path: path.to_path_buf(),
            message,
        };
        let io_err = |source: io::Error| CacheError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut r = HashingReader {
            inner: BufReader::new(file),
            hash: Sha256::new(),
        };
        let mut magic = [0u8; 8];
        let mut n4 = [0u8; 4];
        if r.read_exact(&mut magic).is_err() || &magic != MAGIC || r.read_exact(&mut n4).is_err() {
            return Err(corrupt("not a teacher cache (bad magic)".into()));
        }
        let hlen = u32::from_le_bytes(n4) as u64;
        if 12 + hlen + 32 > len {
            return Err(corrupt("truncated header".into()));
        }
        let mut json = vec![0u8; hlen as usize];
        r.read_exact(&mut json).map_err(io_err)?;
        let header: Header = serde_json::from_slice(&json)
            .map_err(|e| corrupt(format!("unreadable header: {e}")))?;
        let floats = header
            .images
            .checked_mul(header.record_floats())
            .filter(|f| (*f as u64) < len)
            .ok_or_else(|| {
                corrupt(format!(
                    "{} bytes cannot hold the records the header lists",
                    len
                ))
            })?;
        let want = 12 + hlen + 4 * floats as u64 + 32;
        if len != want {
            return Err(corrupt(format!(
                "{len} bytes, expected {want} for {} records of {} floats (torn or edited)",
                header.images,
                header.record_floats()
            )));
        }
        let mut records = vec![0f32; floats];
        let mut buf = vec![0u8; 1 << 16];
        let mut filled = 0;
        while filled < floats {
            let take = (floats - filled).min(buf.len() / 4);
            r.read_exact(&mut buf[..take * 4]).map_err(io_err)?;
            for (dst, src) in records[filled..filled + take]
                .iter_mut()
                .zip(buf[..take * 4].chunks_exact(4))
            {
                *dst = f32::from_le_bytes(src.try_into().expect("4 bytes"));
            }
            filled += take;
        }
        let digest = r.hash.finalize();
        let mut stored = [0u8; 32];
        r.inner.read_exact(&mut stored).map_err(io_err)?;
        if stored[..] != digest[..] {
            return Err(corrupt(
                "contents do not match their SHA-256 (torn or edited)".into(),
            ));
        }
        Ok(TeacherCache { header, records })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Rows `[offset, offset + width)` of the records at `indices`, as a flat vector.
    fn gather(&self, indices: &[usize], offset: usize, width: usize) -> Vec<f32> {
        let r = self.header.record_floats();
        let mut out = Vec::with_capacity(indices.len() * width);
        for &i in indices {
            let start = i * r + offset;
            out.extend_from_slice(&self.records[start..start + width]);
        }
        out
    }

    /// The teacher's logits and embedding for the training images at `indices`, on `device`.
    pub fn outputs(
        &self,
        indices: &[usize],
        device: &burn::tensor::Device,
    ) -> (Tensor<2>, Tensor<2>) {
        let (c, d) = (self.header.classes, self.header.embedding);
        let b = indices.len();
        let logits =
            Tensor::<2>::from_data(TensorData::new(self.gather(indices, 0, c), [b, c]), device);
        let emb =
            Tensor::<2>::from_data(TensorData::new(self.gather(indices, c, d), [b, d]), device);
        (logits, emb)
    }

    /// Whether the curriculum targets are cached.
    pub fn has_taps(&self) -> bool {
        !self.header.taps.is_empty()
    }

    /// The pruned-teacher target of block `k` for the images at `indices`, on `device`.
    pub fn tap(&self, k: usize, indices: &[usize], device: &burn::tensor::Device) -> Tensor<4> {
        let h = &self.header;
        let offset = h.classes
            + h.embedding
            + h.taps[..k]
                .iter()
                .map(|t| t[0] * t[1] * t[2])
                .sum::<usize>();
        let [c, hh, w] = h.taps[k];
        Tensor::<4>::from_data(
            TensorData::new(
                self.gather(indices, offset, c * hh * w),
                [indices.len(), c, hh, w],
            ),
            device,
        )
    }
}

struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R: Read> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}
