//! Cross-compiling the on-device runner with cargo and the target's linker.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::embedded::{self, MaterialiseError};
use super::{Optimize, TargetSpec};
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
    /// The target's engines cannot be served (e.g. no ONNX Runtime library for the board).
    #[error(transparent)]
    Engine(#[from] super::engines::EngineError),
    /// The runner's sources (embedded in this binary) could not be written out.
    #[error("writing the runner's sources: {0}")]
    Sources(#[from] MaterialiseError),
}

/// Checks that the rustup target, linker and C tools are installed, and the ONNX Runtime
/// library when the target lists the `ort` engine.
pub fn check_toolchain(target: &TargetSpec) -> Result<(), CrossError> {
    super::engines::ort_library(target)?;
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

/// Where the runner with the engine of `format` (and ONNX Runtime when `ort`) is built: the
/// ONNX runner in [`cargo_build_dir`] (where the runner always was), the NNEF runner in its
/// `nnef/` subdirectory, each with ONNX Runtime in `ort/` and `nnef-ort/`. One directory per
/// feature set, because they link different crates: in one, each switch would re-link tract
/// with fat LTO, and two builds could race for one output file.
pub fn runner_build_dir(format: ModelFormat, ort: bool) -> PathBuf {
    match (format, ort) {
        (ModelFormat::Onnx, false) => cargo_build_dir(),
        (ModelFormat::Nnef, false) => cargo_build_dir().join("nnef"),
        (ModelFormat::Onnx, true) => cargo_build_dir().join("ort"),
        (ModelFormat::Nnef, true) => cargo_build_dir().join("nnef-ort"),
    }
}

/// The cargo command that builds the runner for `target` from the sources under `root` (as
/// [`embedded::materialise`] writes them: `runner/` and `schema/`), with profile `runner` or
/// `runner-size` (fat LTO, one codegen unit, panic=abort, stripped), only the engine that
/// loads `format` (cargo feature `nnef`: tract-core and tract-nnef; `onnx`: tract-onnx), and the
/// runner's `ort` feature when the target lists the `ort` engine (without it, no ONNX Runtime
/// code at all).
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
        ])
        .arg(if target.wants_ort() {
            format!("{},ort", format.name())
        } else {
            format.name().to_string()
        })
        .env(
            "CARGO_TARGET_DIR",
            runner_build_dir(format, target.wants_ort()),
        );
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
    if target.optimize == Optimize::Size {
        // Added to the target's own flags from the environment, if any (a `RUSTFLAGS` in the
        // environment overrides both, as cargo documents: the runner is then larger, not wrong).
        let key = format!("CARGO_TARGET_{upper}_RUSTFLAGS");
        let flags = match std::env::var(&key) {
            Ok(own) if !own.trim().is_empty() => format!("{own} {SIZE_RUSTFLAGS}"),
            _ => SIZE_RUSTFLAGS.to_string(),
        };
        cmd.env(key, flags);
    }
    // The runner's build script drops `.eh_frame` at link time when this is "1" (and only
    // then: a value left in the user's environment does not leak into a speed build).
    let drop_unwind_tables = target.optimize == Optimize::Size;
    cmd.env(
        NO_EH_FRAME_SWITCH,
        if drop_unwind_tables { "1" } else { "0" },
    );
    cmd
}

/// The environment switch of the runner's build script (`runner/build.rs`): "1" links the
/// runner without `.eh_frame`, the unwind tables that nothing reads once `panic = "abort"`
/// and [`SIZE_RUSTFLAGS`] leave out their index (−1.0 MB of the aarch64 runner).
pub const NO_EH_FRAME_SWITCH: &str = "DISTILL_EDGE_RUNNER_NO_EH_FRAME";

/// rustc flags of the runner optimised for size, on top of profile `runner-size`
/// (docs/BENCHMARKS.md, "The slim runner"): a position-dependent executable, whose tables need
/// no dynamic relocations, and no `.eh_frame_hdr` (the unwinder's index: with `panic = "abort"`
/// nothing unwinds; a panic still prints its message, without a backtrace). It gives up
/// address-space randomisation of the runner's own code, which a benchmark runner can spare.
pub const SIZE_RUSTFLAGS: &str = "-C relocation-model=static -C link-arg=-Wl,--no-eh-frame-hdr";

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
    Ok(runner_build_dir(format, target.wants_ort())
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
        let rustflags = |t: &TargetSpec| {
            let cmd = cargo_command(t, Path::new("."), ModelFormat::Nnef);
            cmd.get_envs()
                .find(|(k, _)| *k == "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS")
                .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
        };
        let mut t = TargetSpec::resolve("aarch64").unwrap();
        assert_eq!(profile_of(&t), "runner");
        let switch = |t: &TargetSpec| {
            let cmd = cargo_command(t, Path::new("."), ModelFormat::Nnef);
            cmd.get_envs()
                .find(|(k, _)| *k == NO_EH_FRAME_SWITCH)
                .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
        };
        assert_eq!(rustflags(&t), None);
        assert_eq!(switch(&t).as_deref(), Some("0"));
        t.optimize = super::super::Optimize::Size;
        assert_eq!(profile_of(&t), "runner-size");
        assert_eq!(rustflags(&t).as_deref(), Some(SIZE_RUSTFLAGS));
        assert_eq!(switch(&t).as_deref(), Some("1"));
        // The runner's build script reads the same switch.
        let build_rs = embedded::RUNNER_FILES
            .iter()
            .find(|(p, _)| *p == "runner/build.rs")
            .map(|(_, b)| String::from_utf8_lossy(b))
            .unwrap();
        assert!(build_rs.contains(&format!("\"{NO_EH_FRAME_SWITCH}\"")));
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
        // tract only: the runner without the `ort` feature, the binary as it was before
        // engines existed.
        let i = args.iter().position(|a| a == "--features").unwrap();
        assert_eq!(args[i + 1], "nnef");
    }

    #[test]
    fn a_target_with_ort_builds_the_runner_with_its_ort_feature() {
        let mut t = TargetSpec::resolve("aarch64").unwrap();
        t.engines.push(super::super::BoardEngine::Ort);
        for format in [ModelFormat::Nnef, ModelFormat::Onnx] {
            let cmd = cargo_command(&t, Path::new("."), format);
            let args: Vec<String> = cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let i = args.iter().position(|a| a == "--features").unwrap();
            assert_eq!(args[i + 1], format!("{},ort", format.name()));
            // Its own directory: the tract-only runner of the same engine is not re-linked.
            let dir = cmd
                .get_envs()
                .find(|(k, _)| *k == "CARGO_TARGET_DIR")
                .and_then(|(_, v)| v)
                .map(PathBuf::from)
                .unwrap();
            assert_eq!(dir, runner_build_dir(format, true));
            assert_ne!(dir, runner_build_dir(format, false));
        }
        let manifest = embedded::RUNNER_FILES
            .iter()
            .find(|(p, _)| *p == "runner/Cargo.toml")
            .map(|(_, b)| String::from_utf8_lossy(b))
            .unwrap();
        assert!(manifest.contains("ort = [\"dep:ort\"]"), "{manifest}");
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
            assert_eq!(dir, runner_build_dir(format, false));
        }
        assert_ne!(
            runner_build_dir(ModelFormat::Nnef, false),
            runner_build_dir(ModelFormat::Onnx, false)
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
