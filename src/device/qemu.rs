//! Runs bundles on this host under a user-mode emulator (qemu-user), for targets whose
//! binaries this CPU cannot run. Latency measured this way is not hardware latency.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{DeviceError, RemoteBundle, RunOutput, Transport, check_run_args, local};
use crate::fsutil::find_program;

/// Runs bundles here under a user-mode emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuTransport {
    /// The emulator command, e.g. `["qemu-aarch64-static", "-cpu", "cortex-a72", "-L",
    /// "/usr/aarch64-linux-gnu"]`; the program and its arguments follow it.
    pub emulator: Vec<String>,
    /// Run the bundle where it is instead of copying it to a temporary directory.
    pub in_place: bool,
    /// CPUs to pin the emulator to (`taskset -c`).
    pub cpus: Option<String>,
}

impl QemuTransport {
    /// A transport that copies each bundle into a fresh temporary directory and runs its
    /// programs under `emulator`.
    pub fn new(emulator: Vec<String>) -> Self {
        Self {
            emulator,
            in_place: false,
            cpus: None,
        }
    }

    /// Checks that the emulator program exists (on `PATH`, or at its path).
    pub fn check(&self) -> Result<(), DeviceError> {
        let Some(tool) = self.emulator.first().filter(|t| !t.is_empty()) else {
            return Err(DeviceError::Invalid {
                device: self.describe(),
                message: "empty emulator command".to_string(),
            });
        };
        if find_program(tool).is_some() {
            Ok(())
        } else {
            Err(missing(tool))
        }
    }
}

fn missing(tool: &str) -> DeviceError {
    let hint = if tool.contains("qemu-") {
        "apt-get install qemu-user-static (scripts/setup.sh does)"
    } else {
        "install it, or fix the target's `emulator` command"
    };
    DeviceError::MissingTool {
        tool: tool.to_string(),
        hint: hint.to_string(),
    }
}

impl Transport for QemuTransport {
    /// "qemu (" + the emulator command without its `-L <sysroot>` + ")".
    fn describe(&self) -> String {
        let mut shown = Vec::new();
        let mut words = self.emulator.iter();
        while let Some(w) = words.next() {
            if w == "-L" {
                words.next();
            } else {
                shown.push(w.as_str());
            }
        }
        format!("qemu ({})", shown.join(" "))
    }

    fn is_emulated(&self) -> bool {
        true
    }

    fn upload(&self, bundle: &Path) -> Result<RemoteBundle, DeviceError> {
        self.check()?;
        local::upload(&self.describe(), bundle, self.in_place)
    }

    fn run(
        &self,
        bundle: &RemoteBundle,
        program: &str,
        args: &[String],
        env: &[(String, String)],
        timeout: Duration,
    ) -> Result<RunOutput, DeviceError> {
        let device = self.describe();
        check_run_args(&device, program, args, env)?;
        self.check()?;
        let mut cmd = match &self.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(&self.emulator[0]);
                c
            }
            None => Command::new(&self.emulator[0]),
        };
        cmd.args(&self.emulator[1..])
            .arg(Path::new(&bundle.dir).join(program))
            .args(args);
        let tool = self.emulator[0].clone();
        run_in_bundle_or_missing(&device, bundle, cmd, program, env, timeout, &tool)
    }

    fn download(&self, bundle: &RemoteBundle, file: &str, local: &Path) -> Result<(), DeviceError> {
        local::download(&self.describe(), bundle, file, local)
    }

    fn cleanup(&self, bundle: &RemoteBundle) -> Result<(), DeviceError> {
        local::cleanup(&self.describe(), bundle)
    }

    fn pin(&mut self, cpus: &str) -> Result<(), DeviceError> {
        super::check_cpus(cpus)?;
        self.cpus = Some(cpus.to_string());
        Ok(())
    }
}

fn run_in_bundle_or_missing(
    device: &str,
    bundle: &RemoteBundle,
    cmd: Command,
    program: &str,
    env: &[(String, String)],
    timeout: Duration,
    tool: &str,
) -> Result<RunOutput, DeviceError> {
    local::run_in_bundle(device, bundle, cmd, program, env, timeout, |e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            missing(tool)
        } else {
            DeviceError::Io {
                device: device.to_string(),
                path: tool.to_string(),
                source: e,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const HELLO: &str = r#"
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    const char *v = getenv("DE_TEST");
    FILE *f = fopen("result.json", "w");
    if (!f) return 2;
    fprintf(f, "{\"arg\":\"%s\",\"env\":\"%s\"}", argc > 1 ? argv[1] : "", v ? v : "");
    fclose(f);
    printf("hello from %s\n", sizeof(void *) == 8 ? "64-bit" : "32-bit");
#if defined(__aarch64__)
    printf("aarch64\n");
#endif
    return 0;
}
"#;

    #[test]
    fn runs_aarch64_binary() {
        if find_program("qemu-aarch64-static").is_none()
            || find_program("aarch64-linux-gnu-gcc").is_none()
        {
            crate::testing::missing_tool(
                "qemu-aarch64-static or aarch64-linux-gnu-gcc",
                "apt-get install qemu-user-static gcc-aarch64-linux-gnu (scripts/setup.sh does)",
            );
            return;
        }
        let bundle = tempfile::tempdir().unwrap();
        let src = bundle.path().join("hello.c");
        fs::write(&src, HELLO).unwrap();
        let status = Command::new("aarch64-linux-gnu-gcc")
            .args(["-static", "-O1", "-o"])
            .arg(bundle.path().join("hello"))
            .arg(&src)
            .status()
            .unwrap();
        assert!(status.success(), "cross-compiling failed");

        let t = QemuTransport::new(
            [
                "qemu-aarch64-static",
                "-cpu",
                "cortex-a72",
                "-L",
                "/usr/aarch64-linux-gnu",
            ]
            .map(String::from)
            .to_vec(),
        );
        assert_eq!(t.describe(), "qemu (qemu-aarch64-static -cpu cortex-a72)");
        assert!(t.is_emulated());
        let placed = t.upload(bundle.path()).unwrap();
        let env = vec![("DE_TEST".to_string(), "e v".to_string())];
        let out = t
            .run(
                &placed,
                "hello",
                &["a b".into()],
                &env,
                Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(out.status, Some(0), "{out:?}");
        assert_eq!(out.stdout, "hello from 64-bit\naarch64\n");
        let local = tempfile::tempdir().unwrap();
        let dst = local.path().join("result.json");
        t.download(&placed, "result.json", &dst).unwrap();
        assert_eq!(
            fs::read_to_string(&dst).unwrap(),
            r#"{"arg":"a b","env":"e v"}"#
        );
        t.cleanup(&placed).unwrap();
        assert!(!Path::new(&placed.dir).exists());
    }

    #[test]
    fn missing_emulator_is_reported() {
        let t = QemuTransport::new(vec!["qemu-nosucharch-static".to_string()]);
        let bundle = tempfile::tempdir().unwrap();
        let err = t.upload(bundle.path()).unwrap_err();
        assert!(matches!(err, DeviceError::MissingTool { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "qemu-nosucharch-static not found: apt-get install qemu-user-static (scripts/setup.sh does)"
        );
        let placed = RemoteBundle {
            dir: bundle.path().display().to_string(),
            owned: false,
        };
        let err = t
            .run(&placed, "x", &[], &[], Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(err, DeviceError::MissingTool { .. }), "{err:?}");
        let err = QemuTransport::new(Vec::new()).check().unwrap_err();
        assert!(matches!(err, DeviceError::Invalid { .. }), "{err:?}");
    }
}
