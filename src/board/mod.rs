//! Targets (board classes, `targets/*.toml`), the cross build of the runner, and bundles.

pub mod bundle;
pub mod cross;
pub mod embedded;
pub mod engines;

pub use engines::BoardEngine;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, parse_toml};

/// Budgets of a board class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LatencyBudget {
    /// Batch-1 p50 latency (ms) expected on a real board; not checked under emulation.
    pub latency_p50_ms: f64,
    /// Largest top-1 drop (points) of an int8 model against fp32 on the shard.
    #[serde(default = "default_drop")]
    pub max_accuracy_drop: f64,
}

fn default_drop() -> f64 {
    1.0
}

/// What the runner's compiler optimises for (the cargo profile `build` uses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Optimize {
    /// Profile `runner` (opt-level 3): the fastest runner (about 15 MB on aarch64).
    #[default]
    Speed,
    /// Profile `runner-size` (opt-level "z", position-dependent, no unwind tables on glibc):
    /// about 4.9 MB on aarch64, same outputs, 1.5-1.7x the latency on x86_64 (BENCHMARKS).
    Size,
}

impl Optimize {
    /// The cargo profile (and the directory under the target triple).
    pub fn profile(self) -> &'static str {
        match self {
            Optimize::Speed => "runner",
            Optimize::Size => "runner-size",
        }
    }
}

/// One board class: how to build for it and how to run there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TargetSpec {
    /// Short name (the file stem).
    pub name: String,
    /// One line for humans.
    #[serde(default)]
    pub description: String,
    /// Rust target triple.
    pub triple: String,
    /// Linker for the triple (absent: the host's default).
    #[serde(default)]
    pub linker: Option<String>,
    /// C compiler for crates that build C or assembly (tract-linalg).
    #[serde(default)]
    pub cc: Option<String>,
    /// Archiver for the same.
    #[serde(default)]
    pub ar: Option<String>,
    /// Command prefix that runs a target binary here (qemu-user with its sysroot).
    #[serde(default)]
    pub emulator: Vec<String>,
    /// Environment for the runner under emulation (e.g. tract CPU-feature overrides).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Debian packages providing the linker/emulator, for install hints.
    #[serde(default)]
    pub apt: Vec<String>,
    /// Build the runner for speed (default) or size.
    #[serde(default)]
    pub optimize: Optimize,
    /// Engines the runner runs every model with on the board: `["tract"]` (the default) or
    /// `["tract", "ort"]`, which puts the ONNX Runtime library into the bundle
    /// ([`engines::ort_library`]).
    #[serde(default = "engines::default_engines")]
    pub engines: Vec<BoardEngine>,
    /// Budgets.
    pub budget: LatencyBudget,
}

impl TargetSpec {
    /// A target by path to a TOML file, or by name: `targets/<name>.toml` in the current
    /// directory, else the file of that name shipped in this binary.
    pub fn resolve(name_or_path: &str) -> Result<Self, ConfigError> {
        let as_path = Path::new(name_or_path);
        let (path, text) = if name_or_path.ends_with(".toml") || as_path.components().count() > 1 {
            (as_path.to_path_buf(), None)
        } else {
            let local = Path::new("targets").join(format!("{name_or_path}.toml"));
            match embedded::target_text(name_or_path) {
                Some(text) if !local.is_file() => (
                    PathBuf::from(format!("<built-in>/targets/{name_or_path}.toml")),
                    Some(text),
                ),
                _ => (local, None),
            }
        };
        let text = match text {
            Some(t) => t.to_string(),
            None if !path.is_file() => {
                return Err(ConfigError::Invalid {
                    origin: "--target".into(),
                    field: name_or_path.into(),
                    message: format!(
                        "no such target; expected one of {} or a path to a target TOML",
                        Self::available().join(", ")
                    ),
                });
            }
            None => std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
                path: path.clone(),
                source,
            })?,
        };
        parse_toml(&text, &path)
    }

    /// Names of the known targets: those in `targets/` of the current directory and those
    /// shipped in this binary.
    pub fn available() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir("targets")
            .map(|rd| {
                rd.filter_map(|e| {
                    let p = e.ok()?.path();
                    if p.extension()? != "toml" {
                        return None;
                    }
                    Some(p.file_stem()?.to_string_lossy().into_owned())
                })
                .collect()
            })
            .unwrap_or_default();
        names.extend(embedded::TARGETS.iter().map(|(n, _)| n.to_string()));
        names.sort();
        names.dedup();
        names
    }

    /// Whether binaries for this target run natively here.
    pub fn is_host(&self) -> bool {
        self.triple == host_triple()
    }

    /// `apt-get install …` hint for this target's packages.
    pub fn install_hint(&self) -> String {
        if self.apt.is_empty() {
            "scripts/setup.sh installs the cross tools".into()
        } else {
            format!(
                "apt-get install {} (scripts/setup.sh does)",
                self.apt.join(" ")
            )
        }
    }
}

/// The triple this binary was built for.
pub fn host_triple() -> &'static str {
    match (std::env::consts::ARCH, std::env::consts::OS) {
        ("x86_64", "linux") => "x86_64-unknown-linux-gnu",
        ("aarch64", "linux") => "aarch64-unknown-linux-gnu",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_target_parses() {
        let names = TargetSpec::available();
        for want in ["aarch64", "aarch64-musl", "aarch64-ort", "armv7", "x86_64"] {
            assert!(names.iter().any(|n| n == want), "{names:?}");
            let t = TargetSpec::resolve(want).unwrap();
            assert_eq!(t.name, want);
        }
        assert!(TargetSpec::resolve("x86_64").unwrap().is_host());
        assert!(TargetSpec::resolve("aarch64-ort").unwrap().wants_ort());
        assert!(!TargetSpec::resolve("aarch64").unwrap().wants_ort());
        let armv7 = TargetSpec::resolve("armv7").unwrap();
        assert_eq!(
            armv7.env.get("TRACT_CPU_ARM32_NEON").map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn targets_resolve_without_a_checkout() {
        // The tests run in the checkout; the built-in copies are the same files.
        for (name, text) in embedded::TARGETS {
            let parsed: TargetSpec =
                parse_toml(text, Path::new(&format!("<built-in>/targets/{name}.toml"))).unwrap();
            assert_eq!(&parsed.name, name);
            assert_eq!(parsed, TargetSpec::resolve(name).unwrap());
        }
    }

    #[test]
    fn unknown_target_lists_the_known_ones() {
        let e = TargetSpec::resolve("riscv-toaster")
            .unwrap_err()
            .to_string();
        assert!(e.contains("aarch64") && e.contains("riscv-toaster"), "{e}");
    }
}
