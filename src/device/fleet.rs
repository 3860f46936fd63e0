//! Several boards in one `bench`: repeated `--device` or a `devices.toml` inventory. Every board
//! runs in its own thread, has its own row and result file; a board that fails (unreachable,
//! runner error) fails its row only.
//!
//! ```toml
//! [[device]]
//! name = "rpi4-desk"                 # row and result-file name
//! url = "ssh://pi@rpi4.local"        # qemu, local or ssh://[user@]host[:port][/dir]
//! target = "aarch64"                 # default: --target
//! tags = ["rpi", "a72"]              # `--tag rpi` selects by tag
//! ssh-options = ["IdentityFile=~/.ssh/board"]
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SshSettings;
use super::bench::{BenchReport, RunnerOverrides, run_bundle};
use crate::board::TargetSpec;

/// Errors reading an inventory.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct InventoryError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// One board of an inventory.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Board {
    /// Row and result-file name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// `qemu`, `local` or `ssh://…`.
    pub url: String,
    /// Target name or file (default: `--target`).
    #[serde(default)]
    pub target: Option<String>,
    /// Tags for `--tag`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Extra ssh `-o` options for this board.
    #[serde(default)]
    pub ssh_options: Vec<String>,
    /// Bundle directory for this board (default: `--bundle`, else `dist/<target>`).
    #[serde(default)]
    pub bundle: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Inventory {
    device: Vec<Board>,
}

/// Reads `devices.toml`, keeping the boards with every tag of `tags` (all when empty).
pub fn read_inventory(path: &Path, tags: &[String]) -> Result<Vec<Board>, InventoryError> {
    let err = |message: String| InventoryError {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let inv: Inventory = toml::from_str(&text).map_err(|e| err(e.message().to_string()))?;
    let mut seen = std::collections::HashSet::new();
    for b in &inv.device {
        crate::config::validate_name(&path.display().to_string(), "device.name", &b.name)
            .map_err(|e| err(e.to_string()))?;
        if !seen.insert(b.name.clone()) {
            return Err(err(format!("device name {:?} appears twice", b.name)));
        }
    }
    let boards: Vec<Board> = inv
        .device
        .into_iter()
        .filter(|b| tags.iter().all(|t| b.tags.contains(t)))
        .collect();
    if boards.is_empty() {
        return Err(err(if tags.is_empty() {
            "no [[device]] listed".to_string()
        } else {
            format!("no device has the tags {tags:?}")
        }));
    }
    Ok(boards)
}

/// Boards from repeated `--device URL` flags, named after their URLs.
pub fn boards_from_urls(urls: &[String]) -> Vec<Board> {
    urls.iter()
        .enumerate()
        .map(|(i, url)| {
            let mut name: String = url
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>()
                .trim_matches('-')
                .to_string();
            if name.is_empty() {
                name = format!("device-{i}");
            }
            Board {
                name: format!("{}-{name}", i + 1),
                url: url.clone(),
                target: None,
                tags: Vec::new(),
                ssh_options: Vec::new(),
                bundle: None,
            }
        })
        .collect()
}

/// One board's row: its result, or why it has none.
#[derive(Clone, Debug, Serialize)]
pub struct BoardRow {
    /// The board.
    pub name: String,
    /// Where it is.
    pub url: String,
    /// Target it ran.
    pub target: String,
    /// The bench result (checks may have failed).
    pub result: Option<BenchReport>,
    /// The error that stopped this board (unreachable, runner failure...).
    pub error: Option<String>,
}

impl BoardRow {
    /// Passed: a result with every check passed.
    pub fn passed(&self) -> bool {
        self.result.as_ref().is_some_and(|r| r.passed)
    }
}

/// How every board runs.
pub struct FleetSettings<'a> {
    /// `--target` (for boards without their own).
    pub default_target: Option<&'a str>,
    /// `--bundle` (else `dist/<target>`).
    pub bundle: Option<&'a Path>,
    /// `--cpus`: pin every board's runner.
    pub cpus: Option<&'a str>,
    /// Runner options.
    pub overrides: RunnerOverrides,
    /// Runner timeout.
    pub timeout: Duration,
    /// ssh settings shared by all boards (each adds its own options).
    pub ssh: SshSettings,
}

/// Runs every board in parallel (one thread each); `finish` gets each report before it is
/// stored (the baseline comparison). Rows come back in the boards' order.
pub fn run_boards(
    boards: &[Board],
    settings: &FleetSettings<'_>,
    finish: &(dyn Fn(&TargetSpec, &mut BenchReport) + Sync),
) -> Vec<BoardRow> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = boards
            .iter()
            .map(|b| scope.spawn(move || run_board(b, settings, finish)))
            .collect();
        handles
            .into_iter()
            .zip(boards)
            .map(|(h, b)| {
                h.join().unwrap_or_else(|_| BoardRow {
                    name: b.name.clone(),
                    url: b.url.clone(),
                    target: b.target.clone().unwrap_or_default(),
                    result: None,
                    error: Some("internal error: the board's thread panicked".into()),
                })
            })
            .collect()
    })
}

fn run_board(
    board: &Board,
    settings: &FleetSettings<'_>,
    finish: &(dyn Fn(&TargetSpec, &mut BenchReport) + Sync),
) -> BoardRow {
    let target_name = board
        .target
        .clone()
        .or(settings.default_target.map(String::from))
        .unwrap_or_default();
    let mut row = BoardRow {
        name: board.name.clone(),
        url: board.url.clone(),
        target: target_name.clone(),
        result: None,
        error: None,
    };
    let outcome = (|| -> anyhow::Result<BenchReport> {
        if target_name.is_empty() {
            anyhow::bail!("no target: give --target or `target` in the inventory");
        }
        let target = TargetSpec::resolve(&target_name)?;
        let bundle = match (&board.bundle, settings.bundle) {
            (Some(b), _) => b.clone(),
            (None, Some(b)) => b.to_path_buf(),
            (None, None) => PathBuf::from("dist").join(&target.name),
        };
        let mut ssh = settings.ssh.clone();
        ssh.options.extend(board.ssh_options.iter().cloned());
        let mut transport = super::open(&target, Some(&board.url), &ssh)?;
        if let Some(cpus) = settings.cpus {
            transport.pin(cpus)?;
        }
        let mut report = run_bundle(
            &target,
            &bundle,
            transport.as_ref(),
            &settings.overrides,
            settings.timeout,
        )?;
        finish(&target, &mut report);
        Ok(report)
    })();
    match outcome {
        Ok(r) => row.result = Some(r),
        Err(e) => row.error = Some(crate::exit::one_line(&e)),
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn inventories_are_validated_and_filtered_by_tag() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("devices.toml");
        std::fs::write(
            &p,
            "[[device]]\nname = \"a\"\nurl = \"qemu\"\ntags = [\"x\", \"y\"]\n\
             [[device]]\nname = \"b\"\nurl = \"local\"\ntarget = \"x86_64\"\ntags = [\"y\"]\n",
        )
        .unwrap();
        assert_eq!(read_inventory(&p, &[]).unwrap().len(), 2);
        let x = read_inventory(&p, &["x".into()]).unwrap();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].name, "a");
        let e = read_inventory(&p, &["z".into()]).unwrap_err().to_string();
        assert!(e.contains("no device has the tags"), "{e}");
        std::fs::write(&p, "[[device]]\nname = \"a\"\nadress = \"qemu\"\n").unwrap();
        let e = read_inventory(&p, &[]).unwrap_err().to_string();
        assert!(e.contains("devices.toml") && e.contains("adress"), "{e}");
        std::fs::write(
            &p,
            "[[device]]\nname = \"a\"\nurl = \"qemu\"\n[[device]]\nname = \"a\"\nurl = \"local\"\n",
        )
        .unwrap();
        assert!(
            read_inventory(&p, &[])
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }

    /// qemu (an aarch64 bundle) and a real sshd on 127.0.0.1 (a bundle for this host) in one
    /// run, plus a third board nobody listens for: two rows pass, the third fails alone.
    #[test]
    fn two_boards_run_in_parallel_and_an_unreachable_third_fails_only_its_row() {
        let aarch64 = TargetSpec::resolve("aarch64").unwrap();
        if let Err(e) = crate::board::cross::check_toolchain(&aarch64) {
            crate::testing::missing_tool(&e.to_string(), "scripts/setup.sh installs it");
            return;
        }
        if crate::fsutil::find_program("qemu-aarch64-static").is_none() {
            crate::testing::missing_tool("qemu-aarch64-static", "scripts/setup.sh installs it");
            return;
        }
        let Some(sshd) = crate::device::testsshd::TestSshd::start() else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let host = TargetSpec::resolve("x86_64").unwrap();
        let host_bundle = crate::device::bench::tests::bundle_for(
            &tmp.path().join("x86"),
            &host,
            &crate::testing::host_runner(),
        );
        let arm_runner =
            crate::board::cross::build_runner(&aarch64, distill_edge_schema::ModelFormat::Nnef)
                .unwrap();
        let arm_bundle =
            crate::device::bench::tests::bundle_for(&tmp.path().join("arm"), &aarch64, &arm_runner);
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let board = |name: &str, url: String, target: &str, bundle: &Path| Board {
            name: name.into(),
            url,
            target: Some(target.into()),
            tags: vec![],
            ssh_options: sshd.transport().options.clone(),
            bundle: Some(bundle.to_path_buf()),
        };
        let boards = [
            board("emulated", "qemu".into(), "aarch64", &arm_bundle),
            board(
                "sshd",
                format!("ssh://{}@127.0.0.1:{}", sshd.user, sshd.port),
                "x86_64",
                &host_bundle,
            ),
            board(
                "gone",
                format!("ssh://{}@127.0.0.1:{closed}", sshd.user),
                "x86_64",
                &host_bundle,
            ),
        ];
        let settings = FleetSettings {
            default_target: None,
            bundle: None,
            cpus: None,
            overrides: RunnerOverrides::default(),
            timeout: Duration::from_secs(300),
            ssh: SshSettings {
                connect_timeout: Duration::from_secs(5),
                options: vec![],
            },
        };
        let rows = run_boards(&boards, &settings, &|_, _| {});
        assert_eq!(rows.len(), 3);
        assert!(rows[0].passed(), "{:?}", rows[0]);
        let emulated = rows[0].result.as_ref().unwrap();
        assert!(emulated.emulated && emulated.arch == "aarch64");
        assert!(rows[1].passed(), "{:?}", rows[1]);
        assert!(!rows[1].result.as_ref().unwrap().emulated);
        assert!(rows[2].result.is_none());
        let e = rows[2].error.as_deref().unwrap();
        assert!(e.contains("127.0.0.1"), "{e}");
    }

    #[test]
    fn boards_from_urls_get_file_names() {
        let b = boards_from_urls(&["qemu".into(), "ssh://pi@10.0.0.2:2222".into()]);
        assert_eq!(b[0].name, "1-qemu");
        assert_eq!(b[1].name, "2-ssh---pi-10-0-0-2-2222");
    }
}
