//! The engines a target's runner runs (`engines` in `targets/*.toml`): tract always, and ONNX
//! Runtime when the target lists `"ort"`. The ONNX Runtime library for the board is found here,
//! before anything is built, so that a missing one is one clear line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TargetSpec;

/// An engine of the on-device runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoardEngine {
    /// tract (always: the host's references are tract's).
    Tract,
    /// ONNX Runtime, loaded by the runner from the library the bundle carries.
    Ort,
}

/// `["tract"]`.
pub fn default_engines() -> Vec<BoardEngine> {
    vec![BoardEngine::Tract]
}

/// Why a target's engines cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("target {target}: engines = [\"tract\", \"ort\"]: {message}")]
pub struct EngineError {
    /// The target's name.
    pub target: String,
    /// What is missing, and how to get it.
    pub message: String,
}

/// The variable naming the host's ONNX Runtime library (the `ort` feature of the host engines).
const HOST_LIBRARY_VAR: &str = "ORT_DYLIB_PATH";

/// The environment variable naming the ONNX Runtime library for boards of architecture `arch`
/// (the first part of the triple): `ORT_DYLIB_PATH_AARCH64` for `aarch64`.
pub fn library_var(arch: &str) -> String {
    format!("ORT_DYLIB_PATH_{}", arch.to_uppercase())
}

/// Where scripts/setup.sh unpacks the library for `arch`: `<cache>/ort-<arch>/<version>/`.
fn cached_library(arch: &str) -> Option<PathBuf> {
    let dir = super::embedded::cache_root()?.join(format!("ort-{arch}"));
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("libonnxruntime.so")))
        .filter(|p| p.is_file())
        .collect();
    // The newest version: directory names are versions, compared part by part as numbers.
    let key = |p: &PathBuf| -> Vec<u64> {
        p.parent()
            .and_then(Path::file_name)
            .map(|n| {
                n.to_string_lossy()
                    .split('.')
                    .map(|x| x.parse().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default()
    };
    found.sort_by_key(key);
    found.pop()
}

impl TargetSpec {
    /// Whether the runner also runs ONNX Runtime.
    pub fn wants_ort(&self) -> bool {
        self.engines.contains(&BoardEngine::Ort)
    }

    /// Checks the engines list: tract is always there (the reference every other engine and
    /// the host are compared with).
    pub fn check_engines(&self) -> Result<(), EngineError> {
        if !self.engines.contains(&BoardEngine::Tract) {
            return Err(EngineError {
                target: self.name.clone(),
                message: "\"tract\" must be listed: the runner always runs tract, the engine the host's references come from".into(),
            });
        }
        Ok(())
    }
}

/// The ONNX Runtime library to put into `target`'s bundle (`None`: the target does not list
/// `ort`). Looked up in `ORT_DYLIB_PATH_<ARCH>` (for a target that is this machine, also
/// `ORT_DYLIB_PATH`), then in the cache where scripts/setup.sh puts the aarch64 wheel's
/// library. A static (musl) runner cannot load a shared library: refused.
pub fn ort_library(target: &TargetSpec) -> Result<Option<PathBuf>, EngineError> {
    target.check_engines()?;
    if !target.wants_ort() {
        return Ok(None);
    }
    let fail = |message: String| EngineError {
        target: target.name.clone(),
        message,
    };
    if target.triple.contains("musl") {
        return Err(fail(format!(
            "the {} runner is a static musl binary, which cannot load libonnxruntime.so; use a glibc target such as aarch64",
            target.triple
        )));
    }
    let arch = target.triple.split('-').next().unwrap_or_default();
    let var = library_var(arch);
    let from_env = std::env::var_os(&var)
        .map(|v| (var.clone(), PathBuf::from(v)))
        .or_else(|| {
            target
                .is_host()
                .then(|| std::env::var_os(HOST_LIBRARY_VAR))
                .flatten()
                .map(|v| (HOST_LIBRARY_VAR.to_string(), PathBuf::from(v)))
        });
    match from_env {
        Some((_, path)) if path.is_file() => Ok(Some(path)),
        Some((name, path)) => Err(fail(format!(
            "{name}={}: no such file (expected the {arch} libonnxruntime.so; scripts/setup.sh fetches it)",
            path.display()
        ))),
        None => cached_library(arch).map(Some).ok_or_else(|| {
            fail(format!(
                "no ONNX Runtime library for {arch}: set {var} to the {arch} libonnxruntime.so (scripts/setup.sh fetches the PyPI onnxruntime wheel for aarch64)"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(engines: &str) -> TargetSpec {
        let text = super::super::embedded::target_text("aarch64").unwrap();
        let text = format!("engines = {engines}\n{text}");
        crate::config::parse_toml(&text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn engines_default_to_tract_and_parse() {
        assert_eq!(
            TargetSpec::resolve("aarch64").unwrap().engines,
            vec![BoardEngine::Tract]
        );
        let t = target(r#"["tract", "ort"]"#);
        assert!(t.wants_ort());
        let text = format!(
            "engines = [\"onnx\"]\n{}",
            super::super::embedded::target_text("aarch64").unwrap()
        );
        let e = crate::config::parse_toml::<TargetSpec>(&text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml") && e.contains("onnx"), "{e}");
    }

    #[test]
    fn tract_only_needs_no_library_and_ort_alone_is_refused() {
        assert_eq!(ort_library(&target(r#"["tract"]"#)).unwrap(), None);
        let e = ort_library(&target(r#"["ort"]"#)).unwrap_err().to_string();
        assert!(e.contains("\"tract\" must be listed"), "{e}");
    }

    #[test]
    fn a_musl_target_cannot_carry_onnx_runtime() {
        let mut t = target(r#"["tract", "ort"]"#);
        t.triple = "aarch64-unknown-linux-musl".into();
        let e = ort_library(&t).unwrap_err().to_string();
        assert!(e.contains("musl") && e.contains("cannot load"), "{e}");
    }

    #[test]
    fn a_library_variable_naming_no_file_is_one_clear_line() {
        // A made-up architecture, so that the variable is this test's alone.
        let mut t = target(r#"["tract", "ort"]"#);
        t.triple = "testarch-unknown-linux-gnu".into();
        let var = library_var("testarch");
        let missing = ort_library(&t).unwrap_err().to_string();
        assert!(missing.contains(&var), "{missing}");
        assert!(missing.contains("scripts/setup.sh"), "{missing}");
        assert!(!missing.contains('\n'), "{missing}");
    }
}
