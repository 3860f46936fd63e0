//! The CPU a program under qemu-user sees in `/proc/cpuinfo` and `/sys/devices/system/cpu`.
//!
//! qemu-user passes a guest's file opens through to the host, so an aarch64 program reads this
//! x86 host's `/proc/cpuinfo`: tract then finds no ARM `CPU part` (its generic kernels) and
//! ONNX Runtime's CPU detection (pytorch cpuinfo) finds no ARM processor at all and crashes
//! while its library loads. qemu-user resolves every absolute path a guest opens through its
//! sysroot prefix first (`-L DIR`: `util/path.c` `path()`, called by `do_guest_openat`; a
//! file that exists under `DIR` is the one opened, anything else is the host's). So each run
//! gets its own prefix ([`GuestRoot`]): the target's sysroot linked in entry by entry, plus
//! the emulated CPU described as an aarch64 Linux kernel would describe it ([`CpuDescription`]):
//! one `/proc/cpuinfo` record per CPU, `possible`/`present`/`online`, per-CPU topology and
//! caches. The CPU ids are this host's online CPUs, the ones qemu-user's guest may be
//! scheduled on (its affinity mask and CPU count are the host's). Only the CPU is
//! described; every other file (`/proc/self/*`, the kernel version, thermal zones) is still
//! the host's. The description is synthetic and results say so.

use std::fs;
use std::io;
use std::path::Path;

use crate::fsutil::TempDir;

/// One cache of a [`CpuDescription`], as the kernel lists it under
/// `/sys/devices/system/cpu/cpuN/cache/indexK/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cache {
    /// `level`.
    pub level: u8,
    /// `type`: `Data`, `Instruction` or `Unified`.
    pub kind: &'static str,
    /// `size`, KiB.
    pub size_kib: u32,
    /// Shared by every CPU (a cluster's L2) rather than private to one.
    pub shared: bool,
}

/// An ARM CPU as qemu emulates it (its `-cpu` model): the `MIDR_EL1` fields, the hardware
/// capabilities qemu gives the guest (`AT_HWCAP`, as the kernel names them in `Features`) and
/// the caches of qemu's model (`CCSIDR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuDescription {
    /// qemu's `-cpu` name.
    pub qemu_cpu: &'static str,
    /// What it is, in words.
    pub name: &'static str,
    /// `CPU implementer` (0x41: Arm).
    pub implementer: u8,
    /// `CPU architecture`.
    pub architecture: u8,
    /// `CPU variant`.
    pub variant: u8,
    /// `CPU part`.
    pub part: u16,
    /// `CPU revision`.
    pub revision: u8,
    /// `Features`.
    pub features: &'static str,
    /// Per CPU, in `indexK` order.
    pub caches: &'static [Cache],
}

/// qemu 7.2's `cortex-a72`: MIDR 0x410fd083; the guest's `AT_HWCAP` is 0x8fb (fp asimd aes
/// pmull sha1 sha2 crc32 cpuid, read with `getauxval` under `qemu-aarch64-static -cpu
/// cortex-a72`); 32 KiB L1 data, 48 KiB L1 instruction, 1 MiB shared L2.
pub const CORTEX_A72: CpuDescription = CpuDescription {
    qemu_cpu: "cortex-a72",
    name: "Arm Cortex-A72",
    implementer: 0x41,
    architecture: 8,
    variant: 0x0,
    part: 0xd08,
    revision: 3,
    features: "fp asimd aes pmull sha1 sha2 crc32 cpuid",
    caches: &[
        Cache {
            level: 1,
            kind: "Data",
            size_kib: 32,
            shared: false,
        },
        Cache {
            level: 1,
            kind: "Instruction",
            size_kib: 48,
            shared: false,
        },
        Cache {
            level: 2,
            kind: "Unified",
            size_kib: 1024,
            shared: true,
        },
    ],
};

/// The description of qemu's `-cpu` model `cpu`, where one is written (aarch64 only:
/// `/proc/cpuinfo`'s layout differs per architecture). `None`: the guest reads the host's
/// files, as without this module.
pub fn describe(cpu: &str) -> Option<&'static CpuDescription> {
    [&CORTEX_A72].into_iter().find(|d| d.qemu_cpu == cpu)
}

impl CpuDescription {
    /// `/proc/cpuinfo` for the CPUs `ids`, in the aarch64 kernel's layout.
    pub fn cpuinfo(&self, ids: &[usize]) -> String {
        let mut out = String::new();
        for id in ids {
            out.push_str(&format!(
                "processor\t: {id}\nFeatures\t: {}\nCPU implementer\t: {:#04x}\nCPU architecture: {}\nCPU variant\t: {:#x}\nCPU part\t: {:#05x}\nCPU revision\t: {}\n\n",
                self.features, self.implementer, self.architecture, self.variant, self.part, self.revision
            ));
        }
        out
    }

    /// What results say about it: `synthetic Arm Cortex-A72 (qemu -cpu cortex-a72), N CPUs`.
    pub fn note(&self, cpus: usize) -> String {
        format!(
            "the guest's /proc/cpuinfo and /sys/devices/system/cpu are a synthetic {} description (qemu -cpu {}, {cpus} CPUs), not this host's CPU",
            self.name, self.qemu_cpu
        )
    }
}

/// A CPU list as the kernel writes it (`0-3,6`).
pub fn cpu_list(ids: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            ids[i].to_string()
        } else {
            format!("{}-{}", ids[i], ids[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Parses a kernel CPU list (`0-3,6`); `None` when malformed or empty.
pub fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut ids = Vec::new();
    for part in text.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if b < a {
                    return None;
                }
                ids.extend(a..=b);
            }
            None => ids.push(part.parse().ok()?),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    (!ids.is_empty()).then_some(ids)
}

/// This host's online CPUs (`/sys/devices/system/cpu/online`, else 0..available parallelism):
/// the CPUs a qemu-user guest runs on.
pub fn host_cpus() -> Vec<usize> {
    fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|t| parse_cpu_list(&t))
        .unwrap_or_else(|| {
            (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
        })
}

/// A per-run sysroot prefix for qemu-user's `-L`: every entry of the target's sysroot linked
/// in, and `proc/cpuinfo` plus `sys/devices/system/cpu/` describing the emulated CPU. Removed
/// when dropped.
#[derive(Debug)]
pub struct GuestRoot {
    dir: TempDir,
    /// The note results carry ([`CpuDescription::note`]).
    pub note: String,
}

impl GuestRoot {
    /// Writes the prefix for `cpu` on the CPUs `ids`, linking the entries of `sysroot` (the
    /// target's `-L` directory) except `proc` and `sys`.
    pub fn create(sysroot: Option<&Path>, cpu: &CpuDescription, ids: &[usize]) -> io::Result<Self> {
        let dir = crate::fsutil::fresh_temp_dir("distill-edge-qemu-root")?;
        let root = dir.path();
        if let Some(sysroot) = sysroot {
            let entries = fs::read_dir(sysroot)
                .map_err(|e| with_path(e, "reading the qemu sysroot", sysroot))?;
            for entry in entries {
                let entry = entry.map_err(|e| with_path(e, "reading", sysroot))?;
                let name = entry.file_name();
                if name == "proc" || name == "sys" {
                    continue;
                }
                let link = root.join(&name);
                symlink(&entry.path(), &link).map_err(|e| with_path(e, "linking", &link))?;
            }
        }
        let write = |rel: &str, text: String| -> io::Result<()> {
            let path = root.join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| with_path(e, "creating", parent))?;
            }
            fs::write(&path, text).map_err(|e| with_path(e, "writing", &path))
        };
        write("proc/cpuinfo", cpu.cpuinfo(ids))?;
        let all = cpu_list(ids);
        let base = "sys/devices/system/cpu";
        for file in ["possible", "present", "online"] {
            write(&format!("{base}/{file}"), format!("{all}\n"))?;
        }
        for &id in ids {
            let topology = format!("{base}/cpu{id}/topology");
            // One cluster in one package, one thread per core, as on the boards of this class.
            for (file, value) in [
                ("physical_package_id", "0".to_string()),
                ("cluster_id", "0".to_string()),
                ("core_id", id.to_string()),
                ("package_cpus_list", all.clone()),
                ("core_siblings_list", all.clone()),
                ("cluster_cpus_list", all.clone()),
                ("core_cpus_list", id.to_string()),
                ("thread_siblings_list", id.to_string()),
            ] {
                write(&format!("{topology}/{file}"), format!("{value}\n"))?;
            }
            for (k, cache) in cpu.caches.iter().enumerate() {
                let index = format!("{base}/cpu{id}/cache/index{k}");
                let shared = if cache.shared {
                    all.clone()
                } else {
                    id.to_string()
                };
                for (file, value) in [
                    ("level", cache.level.to_string()),
                    ("type", cache.kind.to_string()),
                    ("size", format!("{}K", cache.size_kib)),
                    ("coherency_line_size", "64".to_string()),
                    ("shared_cpu_list", shared),
                ] {
                    write(&format!("{index}/{file}"), format!("{value}\n"))?;
                }
            }
        }
        Ok(Self {
            note: cpu.note(ids.len()),
            dir,
        })
    }

    /// The prefix directory, for `-L`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_: &Path, link: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{}: qemu-user runs only on Unix hosts", link.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_round_trip_in_the_kernel_format() {
        assert_eq!(cpu_list(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(cpu_list(&[0]), "0");
        assert_eq!(parse_cpu_list("0-3,6\n"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("2"), Some(vec![2]));
        for bad in ["", "a", "3-1", "1,,2"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
        assert!(!host_cpus().is_empty());
    }

    /// The cpuinfo lines tract (`CPU part`, `Features`) and pytorch cpuinfo (`processor`,
    /// the MIDR fields) parse, in the kernel's spelling.
    #[test]
    fn the_cortex_a72_reads_like_its_kernel_describes_it() {
        let d = describe("cortex-a72").unwrap();
        let text = d.cpuinfo(&[0, 1]);
        assert_eq!(text.matches("processor\t: ").count(), 2);
        assert!(text.contains("processor\t: 1\n"), "{text}");
        assert!(text.contains("CPU implementer\t: 0x41\n"), "{text}");
        assert!(text.contains("CPU architecture: 8\n"), "{text}");
        assert!(text.contains("CPU variant\t: 0x0\n"), "{text}");
        assert!(text.contains("CPU part\t: 0xd08\n"), "{text}");
        assert!(text.contains("CPU revision\t: 3\n"), "{text}");
        // No half-precision arithmetic on an A72: tract must not pick its fp16 kernels.
        assert!(!text.contains("asimdhp"), "{text}");
        assert_eq!(describe("cortex-a15"), None);
        assert_eq!(describe("max"), None);
    }

    #[test]
    fn the_guest_root_links_the_sysroot_and_describes_the_cpus() {
        let sysroot = tempfile::tempdir().unwrap();
        fs::create_dir(sysroot.path().join("lib")).unwrap();
        fs::write(sysroot.path().join("lib").join("ld.so"), "x").unwrap();
        fs::create_dir(sysroot.path().join("proc")).unwrap();
        let root = GuestRoot::create(Some(sysroot.path()), &CORTEX_A72, &[0, 1, 2]).unwrap();
        let p = root.path().to_path_buf();
        assert_eq!(fs::read_to_string(p.join("lib/ld.so")).unwrap(), "x");
        assert!(fs::symlink_metadata(p.join("lib")).unwrap().is_symlink());
        // The sysroot's own proc is not linked: ours describes the CPU.
        assert!(!fs::symlink_metadata(p.join("proc")).unwrap().is_symlink());
        let cpuinfo = fs::read_to_string(p.join("proc/cpuinfo")).unwrap();
        assert_eq!(cpuinfo.matches("CPU part\t: 0xd08").count(), 3);
        let cpu = p.join("sys/devices/system/cpu");
        for f in ["possible", "present", "online"] {
            assert_eq!(fs::read_to_string(cpu.join(f)).unwrap(), "0-2\n");
        }
        assert_eq!(
            fs::read_to_string(cpu.join("cpu2/topology/thread_siblings_list")).unwrap(),
            "2\n"
        );
        assert_eq!(
            fs::read_to_string(cpu.join("cpu1/cache/index2/shared_cpu_list")).unwrap(),
            "0-2\n"
        );
        assert_eq!(
            fs::read_to_string(cpu.join("cpu1/cache/index0/shared_cpu_list")).unwrap(),
            "1\n"
        );
        assert_eq!(
            fs::read_to_string(cpu.join("cpu0/cache/index2/size")).unwrap(),
            "1024K\n"
        );
        assert!(
            root.note.contains("synthetic Arm Cortex-A72"),
            "{}",
            root.note
        );
        assert!(root.note.contains("3 CPUs"), "{}", root.note);
        drop(root);
        assert!(!p.exists(), "removed when dropped");
        // A sysroot that is not there is one error naming it.
        let err = GuestRoot::create(Some(Path::new("/no/such/sysroot")), &CORTEX_A72, &[0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/such/sysroot"), "{err}");
    }
}
