//! Runs bundles on this host under a user-mode emulator (qemu-user), for targets whose
//! binaries this CPU cannot run. Latency measured this way is not hardware latency. Where the
//! emulated CPU has a description ([`super::guest_cpu`]), each run gets its own sysroot prefix
//! in which `/proc/cpuinfo` and `/sys/devices/system/cpu` describe that CPU instead of this
//! host's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::guest_cpu::{self, CpuDescription, GuestRoot};
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

    /// The emulated CPU's description (the emulator's `-cpu`), where [`guest_cpu::describe`]
    /// has one.
    pub fn cpu_description(&self) -> Option<&'static CpuDescription> {
        let i = self.emulator.iter().position(|a| a == "-cpu")?;
        guest_cpu::describe(self.emulator.get(i + 1)?)
    }

    /// The sysroot the emulator reads the guest's files through: its `-L`, else
    /// `QEMU_LD_PREFIX`.
    fn sysroot(&self) -> Option<PathBuf> {
        match self.emulator.iter().position(|a| a == "-L") {
            Some(i) => self.emulator.get(i + 1).map(PathBuf::from),
            None => std::env::var_os("QEMU_LD_PREFIX")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }

    /// The emulator's arguments after its program, with `-L` pointing at `root` (added when
    /// the emulator had none).
    fn arguments_with_root(&self, root: &Path) -> Vec<std::ffi::OsString> {
        let mut out: Vec<std::ffi::OsString> = Vec::new();
        let mut words = self.emulator[1..].iter();
        let mut replaced = false;
        while let Some(w) = words.next() {
            out.push(w.into());
            if w == "-L" {
                words.next();
                out.push(root.as_os_str().to_owned());
                replaced = true;
            }
        }
        if !replaced {
            out.push("-L".into());
            out.push(root.as_os_str().to_owned());
        }
        out
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
        // Removed when the run is over.
        let root = match self.cpu_description() {
            Some(cpu) => Some(
                GuestRoot::create(self.sysroot().as_deref(), cpu, &guest_cpu::host_cpus())
                    .map_err(|e| DeviceError::Invalid {
                        device: device.clone(),
                        message: format!("the emulated CPU's description: {e}"),
                    })?,
            ),
            None => None,
        };
        match &root {
            Some(root) => cmd.args(self.arguments_with_root(root.path())),
            None => cmd.args(&self.emulator[1..]),
        };
        cmd.arg(Path::new(&bundle.dir).join(program)).args(args);
        let tool = self.emulator[0].clone();
        run_in_bundle_or_missing(&device, bundle, cmd, program, env, timeout, &tool)
    }

    fn cpu_note(&self) -> Option<String> {
        self.cpu_description()
            .map(|cpu| cpu.note(guest_cpu::host_cpus().len()))
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

    /// Cross-compiles the C program `source` for aarch64 into `dir`, once per `(name, flags)`,
    /// or returns false (after [`crate::testing::missing_tool`], which fails under CI) when
    /// qemu-user or the cross compiler is missing.
    fn cross_compile_aarch64(dir: &Path, source: &str, binaries: &[(&str, &[&str])]) -> bool {
        if find_program("qemu-aarch64-static").is_none()
            || find_program("aarch64-linux-gnu-gcc").is_none()
        {
            crate::testing::missing_tool(
                "qemu-aarch64-static or aarch64-linux-gnu-gcc",
                "apt-get install qemu-user-static gcc-aarch64-linux-gnu (scripts/setup.sh does)",
            );
            return false;
        }
        let src = dir.join("program.c");
        fs::write(&src, source).unwrap();
        for (name, flags) in binaries {
            let status = Command::new("aarch64-linux-gnu-gcc")
                .args(*flags)
                .args(["-O1", "-o"])
                .arg(dir.join(name))
                .arg(&src)
                .status()
                .unwrap();
            assert!(status.success(), "cross-compiling {name} failed");
        }
        true
    }

    #[test]
    fn runs_aarch64_binary() {
        let bundle = tempfile::tempdir().unwrap();
        if !cross_compile_aarch64(bundle.path(), HELLO, &[("hello", &["-static"])]) {
            return;
        }
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

    const CPUINFO: &str = r#"
#include <stdio.h>
int main(void) {
    const char *files[] = {"/proc/cpuinfo", "/sys/devices/system/cpu/online",
                           "/sys/devices/system/cpu/cpu0/cache/index2/size"};
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(files[i], "r");
        if (!f) return 2;
        char line[256];
        while (fgets(line, sizeof line, f)) fputs(line, stdout);
        fclose(f);
    }
    return 0;
}
"#;

    /// Under qemu-user the guest reads the emulated CPU's description, not the x86 host's:
    /// through the target's sysroot (`-L`, dynamic binaries) or without one (static).
    #[test]
    fn the_guest_reads_the_emulated_cpus_description() {
        let bundle = tempfile::tempdir().unwrap();
        let binaries: [(&str, &[&str]); 2] = [("dynamic", &[]), ("static", &["-static"])];
        if !cross_compile_aarch64(bundle.path(), CPUINFO, &binaries) {
            return;
        }
        let cpus = guest_cpu::host_cpus();
        let with_sysroot = [
            "qemu-aarch64-static",
            "-cpu",
            "cortex-a72",
            "-L",
            "/usr/aarch64-linux-gnu",
        ];
        for (emulator, binary) in [
            (&with_sysroot[..], "dynamic"),
            (&with_sysroot[..3], "static"),
        ] {
            let t = QemuTransport::new(emulator.iter().map(|s| s.to_string()).collect());
            let note = t.cpu_note().unwrap();
            assert!(note.contains("synthetic Arm Cortex-A72"), "{note}");
            let placed = t.upload(bundle.path()).unwrap();
            let out = t
                .run(&placed, binary, &[], &[], Duration::from_secs(60))
                .unwrap();
            assert_eq!(out.status, Some(0), "{binary}: {out:?}");
            let text = &out.stdout;
            assert_eq!(
                text.matches("CPU part\t: 0xd08\n").count(),
                cpus.len(),
                "{binary}: {text}"
            );
            assert!(!text.contains("vendor_id"), "{binary}: the host's: {text}");
            assert!(
                text.contains(&format!("{}\n1024K\n", guest_cpu::cpu_list(&cpus))),
                "{binary}: {text}"
            );
            t.cleanup(&placed).unwrap();
        }
        // A CPU without a description: the guest reads the host's files, as before.
        let t = QemuTransport::new(
            ["qemu-aarch64-static", "-cpu", "max"]
                .map(String::from)
                .to_vec(),
        );
        assert_eq!(t.cpu_note(), None);
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
