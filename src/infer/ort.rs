//! ONNX Runtime engine (cargo feature `ort`), loaded at run time from the library that
//! `ORT_DYLIB_PATH` names (scripts/setup.sh installs the PyPI `onnxruntime` wheel and prints
//! the path). A missing or too old library is an error, never a panic.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use super::{Batch, Engine, InferError, Outputs};

/// The environment variable naming `libonnxruntime.so`.
pub const DYLIB_VAR: &str = "ORT_DYLIB_PATH";

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

fn environment() -> Result<&'static ort::environment::Environment, InferError> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = std::env::var_os(DYLIB_VAR).ok_or_else(|| {
                format!(
                    "ONNX Runtime is not available: set {DYLIB_VAR} to libonnxruntime.so (>= 1.31); scripts/setup.sh installs it"
                )
            })?;
            let path = std::path::PathBuf::from(path);
            if !path.is_file() {
                return Err(format!(
                    "{DYLIB_VAR}={}: no such file (expected libonnxruntime.so >= 1.31; scripts/setup.sh installs it)",
                    path.display()
                ));
            }
            // A library that fails to load makes ort panic in some versions: keep it an error.
            std::panic::catch_unwind(|| {
                ort::init_from(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| b.with_name("distill-edge").build().map_err(|e| e.to_string()))
            })
            .unwrap_or_else(|_| Err("loading the library panicked".into()))
            .map_err(|e| format!("{DYLIB_VAR}={}: cannot use ONNX Runtime: {e}", path.display()))
        })
        .as_ref()
        .map_err(|e| InferError::Unavailable(e.clone()))
}

/// Whether ONNX Runtime can be loaded in this process (and why not).
pub fn available() -> Result<(), InferError> {
    environment().map(|_| ())
}

/// A model loaded in ONNX Runtime.
pub struct OrtEngine {
    path: String,
    session: Mutex<Session>,
    input: String,
    outputs: Vec<String>,
    logits: Option<usize>,
}

impl OrtEngine {
    /// Loads an ONNX file with `threads` intra-op threads and all graph optimisations. A model
    /// that makes the engine panic is an error, not a crash.
    pub fn load(path: &Path, threads: usize) -> Result<Self, InferError> {
        super::guard(&path.display().to_string(), true, || {
            Self::load_unguarded(path, threads)
        })
    }

    fn load_unguarded(path: &Path, threads: usize) -> Result<Self, InferError> {
        let env = environment()?;
        let label = path.display().to_string();
        let load = |message: String| InferError::Load {
            path: label.clone(),
            message,
        };
        let session = Session::builder(env)
            .map_err(|e| load(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| load(e.to_string()))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| load(e.to_string()))?
            .commit_from_file(path)
            .map_err(|e| load(e.to_string()))?;
        let input = session
            .inputs()
            .first()
            .map(|o| o.name().to_string())
            .ok_or_else(|| load("the model has no input".into()))?;
        let outputs = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        Ok(Self {
            path: label,
            session: Mutex::new(session),
            input,
            outputs,
            logits: None,
        })
    }
}

impl OrtEngine {
    /// Picks output `index` as the logits (see [`super::ModelIo::logits`]).
    pub fn with_logits(mut self, index: Option<usize>) -> Self {
        self.logits = index;
        self
    }
}

impl Engine for OrtEngine {
    fn name(&self) -> &'static str {
        "onnxruntime"
    }

    fn run(&self, batch: Batch<'_>) -> Result<Outputs, InferError> {
        super::guard(&self.path, false, || self.run_unguarded(batch))
    }
}

impl OrtEngine {
    fn run_unguarded(&self, batch: Batch<'_>) -> Result<Outputs, InferError> {
        let run_err = |e: ort::Error| InferError::Run {
            path: self.path.clone(),
            message: e.to_string(),
        };
        let tensor = TensorRef::from_array_view((batch.shape, batch.data)).map_err(run_err)?;
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(run_err)?;
        let mut raw = Vec::with_capacity(self.outputs.len());
        for name in &self.outputs {
            let (shape, data) = outputs[name.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(run_err)?;
            raw.push((
                shape.iter().map(|&d| d.max(0) as usize).collect(),
                data.to_vec(),
            ));
        }
        super::tract::outputs_from(&self.outputs, raw, &self.path, self.logits)
    }
}
