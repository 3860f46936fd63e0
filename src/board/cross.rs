//! Cross-compiling the on-device runner with cargo and the target's linker.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::TargetSpec;
use super::embedded::{self, MaterialiseError};
use distill_edge_schema::ModelFormat;

/// Why the runner could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CrossError {
    /// A tool is missing: says which and how to install it.
    #[error("{tool} not found: {hint}")]
    MissingTool {
        /// Tool or component.
        tool: String,
        /// How to get it.
        hint: String,
    },
    /// cargo failed.
    #[error("cross build for {triple} failed: {tail}")]
    Build {
        /// Target triple.
        triple: String,
        /// Last lines of cargo's output.
        tail: String,
    },
    /// The runner's sources (embedded in this binary) could not be written out.
    #[error("writing the runner's sources: {0}")]
    Sources(#[from] MaterialiseError),
}

/// Checks that the rustup target, linker and C tools are installed.
pub fn check_toolchain(target: &TargetSpec) -> Result<(), CrossError> {
    if !target.is_host() && crate::fsutil::find_program("rustup").is_some() {
        let out = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .map_err(|e| CrossError::MissingTool {
                tool: "rustup".into(),
                hint: e.to_string(),
            })?;
        let installed = String::from_utf8_lossy(&out.stdout);
        if !installed.lines().any(|l| l.trim() == target.triple) {
            return Err(CrossError::MissingTool {
                tool: format!("rust target {}", target.triple),
                hint: format!(
                    "rustup target add {} (scripts/setup.sh does)",
                    target.triple
                ),
            });
        }
    }
    for tool in [&target.linker, &target.cc, &target.ar]
        .into_iter()
        .flatten()
    {
        if crate::fsutil::find_program(tool).is_none() {
            return Err(CrossError::MissingTool {
                tool: tool.clone(),
                hint: target.install_hint(),
            });
        }
    }
    Ok(())
}

/// Where cross builds go: `CARGO_TARGET_DIR`, else `target/` under the cache
/// (`$XDG_CACHE_HOME/distill-edge` or `~/.cache/distill-edge`), so builds are reused across
/// runs and directories.
pub fn cargo_build_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| embedded::cache_root().map(|c| c.join("target")))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// Where the runner with the engine of `format` is built: the ONNX runner in
/// [`cargo_build_dir`] (where the runner always was), the NNEF runner in its `nnef/`
/// subdirectory. Two directories, because the two engines link different crates: in one, each
/// switch would re-link tract with fat LTO, and two builds could race for one output file.
pub fn runner_build_dir(format: ModelFormat) -> PathBuf {
    match format {
        ModelFormat::Onnx => cargo_build_dir(),
        ModelFormat::Nnef => cargo_build_dir().join("nnef"),
    }
}

/// The cargo command that builds the runner for `target` from the sources under `root` (as
/// [`embedded::materialise`] writes them: `runner/` and `schema/`), with profile `runner` or
/// `runner-size` (fat LTO, one codegen unit, panic=abort, stripped) and only the engine that
/// loads `format` (cargo feature `nnef`: tract-core and tract-nnef; `onnx`: tract-onnx).
pub fn cargo_command(target: &TargetSpec, root: &Path, format: ModelFormat) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root)
        .arg("build")
        .arg("--manifest-path")
        .arg(root.join("runner").join("Cargo.toml"))
        .args([
            "--locked",
            "--profile",
            target.optimize.profile(),
            "--target",
            &target.triple,
            "--no-default-features",
            "--features",
            format.name(),
        ])
        .env("CARGO_TARGET_DIR", runner_build_dir(format));
    let upper = target.triple.to_uppercase().replace('-', "_");
    let lower = target.triple.replace('-', "_");
    if let Some(l) = &target.linker {
        cmd.env(format!("CARGO_TARGET_{upper}_LINKER"), l);
    }
    if let Some(cc) = &target.cc {
        cmd.env(format!("CC_{lower}"), cc);
    }
    if let Some(ar) = &target.ar {
        cmd.env(format!("AR_{lower}"), ar);
    }
    cmd
}

/// Builds the runner for `target` with the engine that loads `format` from the sources
/// embedded in this binary and returns the binary's path.
pub fn build_runner(target: &TargetSpec, format: ModelFormat) -> Result<PathBuf, CrossError> {
    check_toolchain(target)?;
    let root = embedded::materialise()?;
    let out =
        cargo_command(target, &root, format)
            .output()
            .map_err(|e| CrossError::MissingTool {
                tool: "cargo".into(),
                hint: e.to_string(),
            })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(CrossError::Build {
            triple: target.triple.clone(),
            tail: tail.join(" | "),
        });
    }
    Ok(runner_build_dir(format)
        .join(&target.triple)
        .join(target.optimize.profile())
        .join("distill-edge-runner"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_linker_names_the_package_to_install() {
        let mut t = TargetSpec::resolve("aarch64").unwrap();
        t.linker = Some("no-such-linker-gcc".into());
        t.triple = super::super::host_triple().into(); // skip the rustup check
        let e = check_toolchain(&t).unwrap_err().to_string();
        assert!(e.starts_with("no-such-linker-gcc not found"), "{e}");
        assert!(e.contains("apt-get install gcc-aarch64-linux-gnu"), "{e}");
    }

    #[test]
    fn cargo_gets_the_linker_and_c_tools_of_the_triple() {
        let t = TargetSpec::resolve("aarch64-musl").unwrap();
        let cmd = cargo_command(&t, Path::new("."), ModelFormat::Nnef);
        let envs: Vec<(String, String)> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_string_lossy().into(), v?.to_string_lossy().into())))
            .collect();
        let has = |k: &str, v: &str| envs.iter().any(|(a, b)| a == k && b == v);
        assert!(has(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER",
            "aarch64-linux-gnu-gcc"
        ));
        assert!(has(
            "CC_aarch64_unknown_linux_musl",
            "aarch64-linux-gnu-gcc"
        ));
        assert!(has("AR_aarch64_unknown_linux_musl", "aarch64-linux-gnu-ar"));
    }

    #[test]
    fn optimize_size_selects_the_size_profile() {
        let profile_of = |t: &TargetSpec| {
            let cmd = cargo_command(t, Path::new("."), ModelFormat::Nnef);
            let args: Vec<String> = cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let i = args.iter().position(|a| a == "--profile").unwrap();
            args[i + 1].clone()
        };
        let mut t = TargetSpec::resolve("aarch64").unwrap();
        assert_eq!(profile_of(&t), "runner");
        t.optimize = super::super::Optimize::Size;
        assert_eq!(profile_of(&t), "runner-size");
        // The profile exists in the runner's manifest (cargo would refuse an unknown one).
        let manifest = embedded::RUNNER_FILES
            .iter()
            .find(|(p, _)| *p == "runner/Cargo.toml")
            .map(|(_, b)| String::from_utf8_lossy(b))
            .unwrap();
        assert!(manifest.contains("[profile.runner]"));
        assert!(manifest.contains("[profile.runner-size]"));
        let body = target_toml_body("aarch64");
        assert!(
            body.contains("optimize = \"speed\""),
            "targets/aarch64.toml documents it"
        );
        let parsed: TargetSpec =
            toml::from_str(&body.replace("optimize = \"speed\"", "optimize = \"size\"")).unwrap();
        assert_eq!(parsed.optimize, super::super::Optimize::Size);
    }

    fn target_toml_body(name: &str) -> String {
        embedded::target_text(name).unwrap().to_string()
    }

    #[test]
    fn cargo_builds_the_materialised_runner_workspace() {
        let t = TargetSpec::resolve("aarch64").unwrap();
        let root = Path::new("/cache/sources/abc");
        let cmd = cargo_command(&t, root, ModelFormat::Nnef);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[0], "build");
        let i = args.iter().position(|a| a == "--manifest-path").unwrap();
        assert_eq!(args[i + 1], "/cache/sources/abc/runner/Cargo.toml");
        assert!(args.iter().any(|a| a == "--locked"));
        assert!(!args.iter().any(|a| a == "-p"));
        assert_eq!(cmd.get_current_dir(), Some(root));
    }

    /// The engine is chosen per bundle: only its feature, and a build directory of its own.
    #[test]
    fn each_engine_builds_with_only_its_feature_in_its_own_directory() {
        let t = TargetSpec::resolve("aarch64").unwrap();
        let root = Path::new("/src");
        for format in [ModelFormat::Nnef, ModelFormat::Onnx] {
            let cmd = cargo_command(&t, root, format);
            let args: Vec<String> = cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            assert!(
                args.iter().any(|a| a == "--no-default-features"),
                "{args:?}"
            );
            let i = args.iter().position(|a| a == "--features").unwrap();
            assert_eq!(args[i + 1], format.name());
            let dir = cmd
                .get_envs()
                .find(|(k, _)| *k == "CARGO_TARGET_DIR")
                .and_then(|(_, v)| v)
                .map(PathBuf::from)
                .unwrap();
            assert_eq!(dir, runner_build_dir(format));
        }
        assert_ne!(
            runner_build_dir(ModelFormat::Nnef),
            runner_build_dir(ModelFormat::Onnx)
        );
        // The features exist in the runner's manifest, and the NNEF one pulls no ONNX parser.
        let manifest = embedded::RUNNER_FILES
            .iter()
            .find(|(p, _)| *p == "runner/Cargo.toml")
            .map(|(_, b)| String::from_utf8_lossy(b))
            .unwrap();
        assert!(
            manifest.contains("nnef = [\"dep:tract-nnef\"]"),
            "{manifest}"
        );
        assert!(
            manifest.contains("onnx = [\"dep:tract-onnx\"]"),
            "{manifest}"
        );
    }
}
