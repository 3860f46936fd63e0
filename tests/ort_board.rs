//! ONNX Runtime on the board as a second engine: a target with `engines = ["tract", "ort"]`
//! (the shipped `aarch64-ort`) bundles the aarch64 `libonnxruntime.so`, the runner loads it
//! under qemu and runs the same shard, and `bench` compares both engines with the host.

mod common;

use std::path::Path;

use common::*;
use distill_edge::board::TargetSpec;
use distill_edge::onnx::export::{ExportOptions, export_model};
use distill_edge::onnx::proto;

/// A random cnn32-small for the synthetic data's image shape, exported to `dir/name`.
fn write_model(dir: &Path, name: &str) {
    let splits =
        distill_edge::data::load(&distill_edge::data::DataSource::synthetic_default()).unwrap();
    let (net, ckpt) = random_model("cnn32-small", splits.test.shape, 7);
    let model = export_model(
        &net,
        &ckpt,
        &ExportOptions {
            fold_batch_norm: true,
            embedding_output: false,
        },
    )
    .unwrap();
    std::fs::write(dir.join(name), proto::encode(&model)).unwrap();
}

/// Under qemu the runner sees a synthetic Cortex-A72 (`device::guest_cpu`): without it ONNX
/// Runtime's CPU detection found the x86 host's `/proc/cpuinfo` and crashed while loading.
#[test]
fn onnx_runtime_on_aarch64_under_qemu_matches_the_host() {
    if let Some(tool) = common::missing_cross_tool() {
        distill_edge::testing::missing_tool(&tool, "scripts/setup.sh installs it");
        return;
    }
    let target = TargetSpec::resolve("aarch64-ort").unwrap();
    if let Err(e) = distill_edge::board::engines::ort_library(&target) {
        distill_edge::testing::missing_tool(&e.to_string(), "scripts/setup.sh fetches it");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    write_model(p, "model.onnx");
    let built = run_ok_json(
        p,
        &[
            "--json",
            "build",
            "--target",
            "aarch64-ort",
            "--model",
            "model.onnx",
            "--data",
            "synthetic",
            "--out",
            "dist",
            "--shard-size",
            "40",
            "--runs",
            "3",
            "--seconds",
            "0",
            "--warmup",
            "1",
            "--warmup-seconds",
            "0",
            "--batches",
            "1,2",
        ],
    );
    let manifest = &built["manifest"];
    assert_eq!(manifest["ort_library"], "libonnxruntime.so", "{manifest}");
    let lib = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "libonnxruntime.so")
        .unwrap_or_else(|| panic!("the library is not listed: {manifest}"));
    assert!(lib["bytes"].as_u64().unwrap() > 1_000_000, "{lib}");
    // tract runs the NNEF file; ONNX Runtime, which reads no NNEF, the ONNX file beside it.
    let model = &manifest["models"][0];
    assert_eq!(model["format"], "nnef", "{manifest}");
    assert_eq!(model["onnx_file"], "student-fp32.onnx", "{manifest}");
    assert!(p.join("dist/student-fp32.onnx").is_file());

    let v = run_ok_json(
        p,
        &[
            "--json",
            "bench",
            "--target",
            "aarch64-ort",
            "--bundle",
            "dist",
        ],
    );
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["emulated"], true, "{v}");
    // The guest saw the emulated CPU's (synthetic) description, and the result says so.
    let described = v["cpu_description"].as_str().unwrap_or_default();
    assert!(described.contains("synthetic Arm Cortex-A72"), "{v}");
    assert!(
        v["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == described),
        "{v}"
    );
    let env = &v["environment"];
    assert_eq!(env["tract_cpu_kind"], "CortexA72", "{env}");
    assert_eq!(env["cpu_model"], "ARM implementer 0x41 part 0xd08", "{env}");
    let models = v["models"].as_array().unwrap();
    let engines: Vec<&str> = models
        .iter()
        .map(|m| m["device"]["engine"].as_str().unwrap())
        .collect();
    assert_eq!(engines, ["tract", "ort"], "{v}");
    let (tract, ort) = (&models[0], &models[1]);
    // tract on the board is the host's tract, bit for bit.
    assert_eq!(tract["bit_identical"], true, "{tract}");
    // ONNX Runtime's aarch64 kernels: the host's outputs within the fp32 tolerance.
    assert_eq!(ort["parity"]["ok"], true, "{ort}");
    assert!(ort["parity"]["max_abs"].as_f64().unwrap() < 1e-3, "{ort}");
    assert_eq!(ort["host_correct"], tract["host_correct"]);
    assert!(ort["device_correct"].as_u64().is_some(), "{ort}");
    // The same methodology: phases and latency per batch size.
    let d = &ort["device"];
    assert!(d["load_ms"].as_f64().unwrap() > 0.0, "{d}");
    let batches: Vec<u64> = d["latency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["batch"].as_u64().unwrap())
        .collect();
    assert_eq!(batches, [1, 2], "{d}");
    for ph in d["phases"].as_array().unwrap() {
        assert!(ph["first_run_ms"].as_f64().unwrap() > 0.0, "{ph}");
        assert!(ph["warmup_runs"].as_u64().unwrap() >= 1, "{ph}");
    }
    assert_eq!(d["latency"][0]["runs"].as_u64().unwrap(), 3, "{d}");
    let checks: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in ["fp32 outputs vs host", "fp32 ort outputs vs host"] {
        assert!(checks.contains(&want), "{want}: {checks:?}");
    }
}

/// A target asking for ONNX Runtime whose library is missing fails before anything is built,
/// in one line naming the variable and how to get the library.
#[test]
fn a_missing_onnx_runtime_library_is_one_line_before_the_build() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    write_model(p, "model.onnx");
    let out = std::process::Command::new(bin())
        .current_dir(p)
        .args([
            "build",
            "--target",
            "aarch64-ort",
            "--model",
            "model.onnx",
            "--data",
            "synthetic",
            "--out",
            "dist",
        ])
        .env(
            "ORT_DYLIB_PATH_AARCH64",
            p.join("no-such-libonnxruntime.so"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out, p);
    assert!(
        line.contains("ORT_DYLIB_PATH_AARCH64=[TMP]/no-such-libonnxruntime.so: no such file")
            && line.contains("scripts/setup.sh"),
        "{line}"
    );
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    assert!(!p.join("dist").exists());
}
