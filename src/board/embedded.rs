//! The sources `distill-edge build` needs at run time, compiled into the binary: the runner's
//! workspace (`runner/`), the schema crate it shares with the host (`schema/`), the target
//! files (`targets/*.toml`) and the default pipeline config. An installed binary therefore
//! builds bundles without its clone: [`materialise`] writes the files out once per version
//! into the cache, and the runner is cross-compiled from there.

use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil::sha256_hex;

/// One embedded file: its path relative to the checkout root and its contents.
pub type EmbeddedFile = (&'static str, &'static [u8]);

/// The runner's workspace and the schema crate: everything its cross build reads.
pub const RUNNER_FILES: &[EmbeddedFile] = &[
    (
        "runner/Cargo.toml",
        include_bytes!("../../runner/Cargo.toml"),
    ),
    (
        "runner/Cargo.lock",
        include_bytes!("../../runner/Cargo.lock"),
    ),
    ("runner/build.rs", include_bytes!("../../runner/build.rs")),
    (
        "runner/src/main.rs",
        include_bytes!("../../runner/src/main.rs"),
    ),
    (
        "runner/src/ort_engine.rs",
        include_bytes!("../../runner/src/ort_engine.rs"),
    ),
    (
        "runner/src/engine.rs",
        include_bytes!("../../runner/src/engine.rs"),
    ),
    (
        "runner/src/engine_nnef.rs",
        include_bytes!("../../runner/src/engine_nnef.rs"),
    ),
    (
        "runner/src/engine_onnx.rs",
        include_bytes!("../../runner/src/engine_onnx.rs"),
    ),
    (
        "schema/Cargo.toml",
        include_bytes!("../../schema/Cargo.toml"),
    ),
    (
        "schema/src/lib.rs",
        include_bytes!("../../schema/src/lib.rs"),
    ),
];

/// The shipped target files, by name (`targets/<name>.toml`).
pub const TARGETS: &[(&str, &str)] = &[
    ("aarch64", include_str!("../../targets/aarch64.toml")),
    (
        "aarch64-musl",
        include_str!("../../targets/aarch64-musl.toml"),
    ),
    (
        "aarch64-ort",
        include_str!("../../targets/aarch64-ort.toml"),
    ),
    ("armv7", include_str!("../../targets/armv7.toml")),
    ("x86_64", include_str!("../../targets/x86_64.toml")),
];

/// Path (relative to the materialised root) of the default pipeline config of `build`.
pub const DEFAULT_PIPELINE: &str = "configs/pipeline/fashion-mnist.toml";

const DEFAULT_PIPELINE_TEXT: &str = include_str!("../../configs/pipeline/fashion-mnist.toml");

/// Why the embedded sources could not be written out.
#[derive(Debug, thiserror::Error)]
pub enum MaterialiseError {
    /// Neither `XDG_CACHE_HOME` nor `HOME` is set.
    #[error("no cache directory: set XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    /// Reading or writing the cache failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MaterialiseError + '_ {
    move |source| MaterialiseError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The embedded text of target `name`, if one ships with this binary.
pub fn target_text(name: &str) -> Option<&'static str> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Every embedded file: runner and schema sources, target files, default pipeline config.
pub fn all_files() -> Vec<(String, &'static [u8])> {
    let mut files: Vec<(String, &'static [u8])> = RUNNER_FILES
        .iter()
        .map(|(p, b)| (p.to_string(), *b))
        .collect();
    files.extend(
        TARGETS
            .iter()
            .map(|(n, t)| (format!("targets/{n}.toml"), t.as_bytes())),
    );
    files.push((DEFAULT_PIPELINE.into(), DEFAULT_PIPELINE_TEXT.as_bytes()));
    files
}

fn digest_of<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut parts = String::new();
    for (path, bytes) in files {
        parts.push_str(path);
        parts.push('\0');
        parts.push_str(&sha256_hex(bytes));
        parts.push('\n');
    }
    sha256_hex(parts.as_bytes())
}

/// Hex SHA-256 of the embedded runner and schema sources (paths, contents, the runner's lock
/// file): a different runner gives a different digest, so bundles built with it are new.
pub fn runner_source_digest() -> String {
    digest_of(RUNNER_FILES.iter().map(|(p, b)| (*p, *b)))
}

/// `distill-edge` under the user's cache: `$XDG_CACHE_HOME/distill-edge`, else
/// `~/.cache/distill-edge`.
pub fn cache_root() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| {
        let p = PathBuf::from(v);
        p.is_absolute().then_some(p)
    };
    std::env::var_os("XDG_CACHE_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".cache"))
        })
        .map(|c| c.join("distill-edge"))
}

/// Writes the embedded files into `<cache>/sources/<digest>/` (`runner/`, `schema/`,
/// `targets/` and `configs/` side by side) and returns that directory. The directory appears
/// whole or not at all (written under a temporary name, then renamed) and is reused while its
/// files match.
pub fn materialise() -> Result<PathBuf, MaterialiseError> {
    materialise_in(
        &cache_root()
            .ok_or(MaterialiseError::NoCacheDir)?
            .join("sources"),
    )
}

/// [`materialise`] under `sources` instead of the cache.
pub fn materialise_in(sources: &Path) -> Result<PathBuf, MaterialiseError> {
    let files = all_files();
    let digest = digest_of(files.iter().map(|(p, b)| (p.as_str(), *b)));
    let dir = sources.join(&digest[..16]);
    if matches(&dir, &files) {
        return Ok(dir);
    }
    std::fs::create_dir_all(sources).map_err(io_err(sources))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let tmp = sources.join(format!(
        ".tmp-{}-{}-{nanos}",
        &digest[..16],
        std::process::id()
    ));
    let written = write_tree(&tmp, &files);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        // Incomplete or edited by hand: move it aside, then drop it.
        let old = sources.join(format!(
            ".old-{}-{}-{nanos}",
            &digest[..16],
            std::process::id()
        ));
        if std::fs::rename(&dir, &old).is_ok() {
            let _ = std::fs::remove_dir_all(&old);
        }
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process materialised the same sources meanwhile.
        Err(_) if matches(&dir, &files) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(MaterialiseError::Io {
                path: dir,
                source: e,
            })
        }
    }
}

fn write_tree(root: &Path, files: &[(String, &[u8])]) -> Result<(), MaterialiseError> {
    for (rel, bytes) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::write(&path, bytes).map_err(io_err(&path))?;
    }
    Ok(())
}

fn matches(dir: &Path, files: &[(String, &[u8])]) -> bool {
    files
        .iter()
        .all(|(rel, bytes)| std::fs::read(dir.join(rel)).is_ok_and(|b| b == *bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files of the checkout under `dir` with extension `ext`, relative to the checkout.
    fn checkout_files(dir: &str, ext: &str) -> Vec<String> {
        let root = crate::testing::source_root();
        let mut out = Vec::new();
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    if p.file_name().is_some_and(|n| n != "target") {
                        stack.push(p);
                    }
                } else if p.extension().is_some_and(|e| e == ext) {
                    out.push(
                        p.strip_prefix(&root)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        out
    }

    #[test]
    fn every_runner_schema_and_target_file_is_embedded_and_current() {
        let embedded: Vec<String> = all_files().into_iter().map(|(p, _)| p).collect();
        let mut wanted = checkout_files("runner", "rs");
        wanted.extend(checkout_files("schema", "rs"));
        wanted.extend(checkout_files("targets", "toml"));
        wanted.extend(
            [
                "runner/Cargo.toml",
                "runner/Cargo.lock",
                "schema/Cargo.toml",
                DEFAULT_PIPELINE,
            ]
            .map(String::from),
        );
        for w in &wanted {
            assert!(
                embedded.contains(w),
                "{w} is not embedded: add it to embedded.rs"
            );
        }
        for (rel, bytes) in all_files() {
            let on_disk = std::fs::read(crate::testing::source_root().join(&rel)).unwrap();
            assert!(on_disk == bytes, "{rel} differs from the embedded copy");
        }
    }

    #[test]
    fn materialise_writes_once_and_repairs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = materialise_in(tmp.path()).unwrap();
        assert!(dir.join("runner/Cargo.toml").is_file());
        assert!(dir.join("schema/src/lib.rs").is_file());
        assert!(dir.join("targets/aarch64.toml").is_file());
        assert!(dir.join(DEFAULT_PIPELINE).is_file());
        let runner = std::fs::read_to_string(dir.join("runner/Cargo.toml")).unwrap();
        assert!(runner.contains("path = \"../schema\""), "{runner}");
        assert!(runner.contains("[profile.runner-size]"));
        // Reused as is.
        assert_eq!(materialise_in(tmp.path()).unwrap(), dir);
        // A damaged copy is replaced, and no temporary directory is left behind.
        std::fs::remove_file(dir.join("runner/src/main.rs")).unwrap();
        assert_eq!(materialise_in(tmp.path()).unwrap(), dir);
        assert!(dir.join("runner/src/main.rs").is_file());
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn the_runner_digest_covers_only_the_runner_and_schema() {
        let d = runner_source_digest();
        assert_eq!(d.len(), 64);
        assert_eq!(d, runner_source_digest());
        assert_ne!(
            d,
            digest_of(
                RUNNER_FILES
                    .iter()
                    .map(|(p, b)| (*p, *b))
                    .chain([("targets/x.toml", &b""[..])])
            )
        );
    }
}
