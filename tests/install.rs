//! The installed binary needs no clone: `cargo install` it, then, from an empty directory,
//! train and export a tiny model, build the aarch64 bundle (the runner is
//! cross-compiled from the sources embedded in the binary) and run it under qemu. The bundle
//! is the slim one: NNEF models and a runner with tract-core + tract-nnef only.
//!
//! Slow the first time (the cross build of the runner with fat LTO, about 15 minutes on two
//! cores); later runs reuse the build directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// The build directory of this test run (`<target>/debug/deps/install-…`), so that
/// `cargo install` and the runner's cross build reuse what is already built.
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| distill_edge::testing::source_root().join("target"))
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_installed_binary_builds_and_runs_a_bundle_without_the_clone() {
    if let Some(tool) = common::missing_cross_tool() {
        distill_edge::testing::missing_tool(&tool, "scripts/setup.sh installs it");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("install");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let target = target_dir();
    // The user's cache, as for every other test that builds a bundle: the binary writes the
    // runner's sources to `<cache>/sources/<digest>/`, the same path for every binary that
    // embeds the same sources, so this test and the other qemu tests share one cross build of
    // the runner (a second source path would mean a second cold, fat-LTO build).
    let cache = distill_edge::board::embedded::cache_root().expect("HOME or XDG_CACHE_HOME");

    let started = Instant::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["install", "--path"])
        .arg(distill_edge::testing::source_root())
        .args(["--debug", "--features", "ort", "--locked", "--root"])
        .arg(&root)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("spawn cargo install");
    check("cargo install", &out);
    eprintln!(
        "install: cargo install {:.0}s",
        started.elapsed().as_secs_f64()
    );
    let bin = root.join("bin").join("distill-edge");
    assert!(bin.is_file(), "{} missing", bin.display());

    // Nothing of the clone: an empty working directory, no source override.
    let run = |args: &[&str]| {
        let mut cmd = Command::new(&bin);
        cmd.current_dir(&work)
            .args(args)
            .env("CARGO_TARGET_DIR", &target);
        let out = cmd.output().expect("spawn the installed distill-edge");
        check(&format!("distill-edge {}", args.join(" ")), &out);
        out
    };
    std::fs::write(
        work.join("tiny.toml"),
        "name = \"tiny\"\nseed = 1\nmodel = \"cnn32-small\"\n\n[data]\nkind = \"synthetic\"\n\
         train = 300\ntest = 100\n\n[train]\nbatch-size = 32\nschedule = [{ epochs = 1, lr = 2e-3 }]\n",
    )
    .unwrap();
    let t = Instant::now();
    run(&[
        "-q",
        "--threads",
        "1",
        "train",
        "--config",
        "tiny.toml",
        "--out",
        "run",
    ]);
    run(&["-q", "export", "run", "-o", "model.onnx"]);
    eprintln!(
        "install: train and export {:.0}s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    run(&[
        "-q",
        "build",
        "--target",
        "aarch64",
        "--model",
        "model.onnx",
        "--config",
        "run/config.toml",
        "--out",
        "dist/aarch64",
        "--runs",
        "3",
        "--shard-size",
        "64",
    ]);
    eprintln!(
        "install: build --target aarch64 {:.0}s",
        t.elapsed().as_secs_f64()
    );
    let bundle = work.join("dist/aarch64");
    for f in ["manifest.json", "distill-edge-runner"] {
        assert!(bundle.join(f).is_file(), "{f} missing from the bundle");
    }
    // The slim runner: the models ship as tract NNEF, checked against the ONNX model on the
    // host, and the runner has only the NNEF engine (no tract-onnx).
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest.get("onnx_fallback").is_none(), "{manifest}");
    for m in manifest["models"].as_array().unwrap() {
        assert_eq!(m["format"], "nnef", "{manifest}");
        assert!(m["file"].as_str().unwrap().ends_with(".nnef.tar"), "{m}");
        let check = &m["nnef_check"];
        assert_eq!(check["images"], 64, "{m}");
        assert!(check["max_abs_diff"].as_f64().unwrap() <= 1e-4, "{m}");
    }
    let version = Command::new("qemu-aarch64-static")
        .args(["-L", "/usr/aarch64-linux-gnu"])
        .arg(bundle.join("distill-edge-runner"))
        .arg("--version")
        .output()
        .expect("spawn the runner under qemu");
    check("distill-edge-runner --version under qemu", &version);
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.contains("(engines: nnef)"), "{version}");
    let sources = cache.join("sources");
    assert!(
        std::fs::read_dir(&sources).unwrap().any(|e| e
            .unwrap()
            .path()
            .join("runner/Cargo.toml")
            .is_file()),
        "the runner's sources were not written to {}",
        sources.display()
    );

    let t = Instant::now();
    run(&["bench", "--target", "aarch64", "--bundle", "dist/aarch64"]);
    eprintln!(
        "install: bench under qemu {:.0}s; total {:.0}s",
        t.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
