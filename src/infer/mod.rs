//! Inference engines behind one trait: tract (pure Rust, the on-device engine) and, with the
//! `ort` cargo feature, ONNX Runtime.

pub mod nnef;
pub mod parity;
pub mod preprocess;
pub mod teacher;
pub mod tract;

#[cfg(feature = "ort")]
pub mod ort;

/// A batch of images, `[batch, channels, height, width]`, row-major f32 (normalised).
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// Values, `shape.iter().product()` of them.
    pub data: &'a [f32],
    /// NCHW shape.
    pub shape: [usize; 4],
}

/// What one forward pass returned.
#[derive(Clone, Debug, PartialEq)]
pub struct Outputs {
    /// `[batch, classes]` row-major.
    pub logits: Vec<f32>,
    /// Classes per row.
    pub classes: usize,
    /// `[batch, dim]` when the model has an `embedding` output.
    pub embedding: Option<Vec<f32>>,
}

/// Errors of an inference engine; messages name the model file.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The model could not be loaded (corrupt, empty, unsupported).
    #[error("{path}: cannot load model: {message}")]
    Load {
        /// Model file.
        path: String,
        /// Engine message.
        message: String,
    },
    /// The input does not fit the model.
    #[error("{path}: input shape {found:?} does not fit the model's input {expected}")]
    Shape {
        /// Model file.
        path: String,
        /// Shape given.
        found: [usize; 4],
        /// Shape the model declares.
        expected: String,
    },
    /// The run itself failed.
    #[error("{path}: inference failed: {message}")]
    Run {
        /// Model file.
        path: String,
        /// Engine message.
        message: String,
    },
    /// The engine's runtime library is not usable.
    #[error("{0}")]
    Unavailable(String),
}

/// Runs `f`, turning a panic inside an inference engine into an error naming the model `path`
/// (`load`: whether the model was being loaded or run). The default panic message is not
/// printed for panics on this thread while `f` runs: the error says it in one line.
pub(crate) fn guard<T>(
    path: &str,
    load: bool,
    f: impl FnOnce() -> Result<T, InferError>,
) -> Result<T, InferError> {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    quiet_panics::install();
    let result = quiet_panics::QUIET.with(|q| {
        let before = q.replace(true);
        // The engine's state is not used again after a panic: the model is dropped.
        let r = catch_unwind(AssertUnwindSafe(f));
        q.set(before);
        r
    });
    result.unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        let message = format!(
            "the engine failed on this model (internal panic: {})",
            what.replace('\n', " ")
        );
        Err(if load {
            InferError::Load {
                path: path.to_string(),
                message,
            }
        } else {
            InferError::Run {
                path: path.to_string(),
                message,
            }
        })
    })
}

/// A panic hook that stays silent for panics [`guard`] catches and otherwise defers to the
/// hook installed before it.
mod quiet_panics {
    use std::cell::Cell;
    use std::sync::Once;

    thread_local! {
        /// Set while [`super::guard`] runs an engine call on this thread.
        pub(super) static QUIET: Cell<bool> = const { Cell::new(false) };
    }

    static INSTALL: Once = Once::new();

    /// Wraps the current panic hook once per process.
    pub(super) fn install() {
        INSTALL.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !QUIET.with(Cell::get) {
                    previous(info);
                }
            }));
        });
    }
}

/// A loaded model that can run batches.
pub trait Engine {
    /// Short engine name, e.g. `tract` or `onnxruntime`.
    fn name(&self) -> &'static str;
    /// Runs one batch.
    fn run(&self, batch: Batch<'_>) -> Result<Outputs, InferError>;

    /// Milliseconds spent loading the model, when the engine measured it.
    fn load_ms(&self) -> Option<f64> {
        None
    }

    /// Makes everything a run of `batch` images needs (tract: the optimised plan and its
    /// state); engines that plan at load time have nothing to do.
    fn prepare(&self, _batch: usize) -> Result<(), InferError> {
        Ok(())
    }
}

/// The engines distill-edge can run a model with on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// tract, pure Rust (also the engine of the on-device runner).
    Tract,
    /// ONNX Runtime (cargo feature `ort`, library loaded at run time).
    Ort,
}

impl EngineKind {
    /// Every kind, tract first (the reference when there is no burn checkpoint).
    pub const ALL: [EngineKind; 2] = [EngineKind::Tract, EngineKind::Ort];

    /// `tract` or `ort`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tract => "tract",
            Self::Ort => "ort",
        }
    }

    /// The engine's full name, e.g. `ONNX Runtime`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Tract => "tract",
            Self::Ort => "ONNX Runtime",
        }
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;

    /// `tract`, `ort` or `onnxruntime`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tract" => Ok(Self::Tract),
            "ort" | "onnxruntime" => Ok(Self::Ort),
            other => Err(format!("unknown engine {other} (expected tract or ort)")),
        }
    }
}

/// Loads `path` in one engine; `threads` for the engines that take a thread count (ONNX
/// Runtime; tract's kernels use the process-wide executor). ONNX Runtime in a build without
/// the `ort` feature, or without a usable library, is [`InferError::Unavailable`].
pub fn load_engine(
    kind: EngineKind,
    path: &std::path::Path,
    threads: usize,
) -> Result<Box<dyn Engine>, InferError> {
    load_engine_with(kind, path, threads, &ModelIo::default())
}

/// How to feed a model and read it, for models that do not say so themselves: the input size
/// (when the model's dimensions are symbolic) and which output holds the logits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelIo {
    /// `[c, h, w]` of one input image.
    pub input: Option<[usize; 3]>,
    /// Index of the graph output holding the logits.
    pub logits: Option<usize>,
}

/// [`load_engine`] with the input size and logits output of `io`.
pub fn load_engine_with(
    kind: EngineKind,
    path: &std::path::Path,
    threads: usize,
    io: &ModelIo,
) -> Result<Box<dyn Engine>, InferError> {
    match kind {
        EngineKind::Tract => Ok(Box::new(tract::TractEngine::load_with(path, io)?)),
        EngineKind::Ort => load_ort(path, threads, io),
    }
}

#[cfg(feature = "ort")]
fn load_ort(
    path: &std::path::Path,
    threads: usize,
    io: &ModelIo,
) -> Result<Box<dyn Engine>, InferError> {
    ort::available()?;
    Ok(Box::new(
        ort::OrtEngine::load(path, threads)?.with_logits(io.logits),
    ))
}

#[cfg(not(feature = "ort"))]
fn load_ort(_: &std::path::Path, _: usize, _: &ModelIo) -> Result<Box<dyn Engine>, InferError> {
    Err(InferError::Unavailable(
        "this build has no ONNX Runtime engine: rebuild with `--features ort`".into(),
    ))
}

/// The engines [`load_engines`] loaded, and the ones it had to leave out.
pub struct LoadedEngines {
    /// In the order asked for.
    pub engines: Vec<Box<dyn Engine>>,
    /// One note per engine left out because it is unavailable here, e.g.
    /// `ONNX Runtime skipped: ...`.
    pub skipped: Vec<String>,
}

/// Loads `path` in each of `kinds`. An engine that is unavailable in this build or on this
/// machine (ONNX Runtime without the feature or the library) is left out with a note; any other
/// failure (a model the engine cannot load) is an error.
pub fn load_engines(
    path: &std::path::Path,
    kinds: &[EngineKind],
    threads: usize,
) -> Result<LoadedEngines, InferError> {
    load_engines_with(path, kinds, threads, &ModelIo::default())
}

/// [`load_engines`] with the input size and logits output of `io`.
pub fn load_engines_with(
    path: &std::path::Path,
    kinds: &[EngineKind],
    threads: usize,
    io: &ModelIo,
) -> Result<LoadedEngines, InferError> {
    let mut loaded = LoadedEngines {
        engines: Vec::new(),
        skipped: Vec::new(),
    };
    for &kind in kinds {
        match load_engine_with(kind, path, threads, io) {
            Ok(e) => loaded.engines.push(e),
            Err(InferError::Unavailable(why)) => loaded
                .skipped
                .push(format!("{} skipped: {why}", kind.label())),
            Err(e) => return Err(e),
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_an_engine_call_becomes_an_error_naming_the_model() {
        let e = guard::<()>("bad.onnx", false, || panic!("index out of bounds: 1000"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("bad.onnx: inference failed:") && e.contains("index out of bounds"),
            "{e}"
        );
        let e = guard::<()>("bad.onnx", true, || panic!("{}", String::from("a\nb")))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("bad.onnx: cannot load model:") && !e.contains('\n'),
            "{e}"
        );
        assert_eq!(guard("ok.onnx", false, || Ok(7)).unwrap(), 7);
    }
}
