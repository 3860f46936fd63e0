//! Devices that run a bundle: this host, a user-mode emulator here, or a board over ssh.
//!
//! A bundle is a local directory (runner binary, model, test shard, manifest). A
//! [`Transport`] uploads it, runs a program from it with arguments and environment under a
//! wall-clock limit, downloads a result file and removes what it uploaded. `--device` values
//! parse into a [`DeviceSpec`], which builds the matching transport.
//!
//! Only std is used to drive processes: children get null stdin, one reader thread per output
//! pipe (so large outputs never deadlock) and are polled with `try_wait` until they exit or
//! their limit passes, when they are killed.

pub mod baseline;
pub mod bench;
pub mod fleet;
pub mod guest_cpu;
pub mod local;
pub mod qemu;
pub mod ssh;
#[cfg(test)]
pub(crate) mod testsshd;

use std::fmt;
use std::io::{self, Read};
use std::path::{Component, Path};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A bundle placed on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBundle {
    /// Path of the bundle directory on the device.
    pub dir: String,
    /// Whether upload created the directory, so that cleanup removes it.
    pub owned: bool,
}

/// What a program run on a device produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Exit status; `None` when the process was killed by a signal.
    pub status: Option<i32>,
    /// Standard output (lossy UTF-8; at most [`STDOUT_CAP`] bytes, the start kept).
    pub stdout: String,
    /// Standard error (lossy UTF-8; at most [`STDERR_CAP`] bytes, the end kept).
    pub stderr: String,
    /// Wall-clock seconds from start to exit, as seen from this host (over ssh this
    /// includes connection setup).
    pub seconds: f64,
}

impl RunOutput {
    /// Whether the program exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Returns `self` when the program succeeded, else [`DeviceError::Command`] naming
    /// `device` and `command`, with the last lines of stderr.
    pub fn require_success(self, device: &str, command: &str) -> Result<Self, DeviceError> {
        if self.success() {
            Ok(self)
        } else {
            Err(DeviceError::Command {
                device: device.to_string(),
                command: command.to_string(),
                status: self.status,
                stderr: last_lines(&self.stderr, STDERR_LINES),
            })
        }
    }
}

/// Most bytes of stdout kept by [`Transport::run`]; the rest is read and dropped.
pub const STDOUT_CAP: usize = 64 << 20;
/// Most bytes of stderr kept by [`Transport::run`] (the last ones).
pub const STDERR_CAP: usize = 1 << 20;
/// Lines of stderr quoted in [`DeviceError::Command`].
const STDERR_LINES: usize = 4;

/// Errors of device transports. Every message is one line and names the device (or the tool,
/// or the `--device` value).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The device could not be reached or refused us (ssh exit status 255).
    #[error("{device}: unreachable: {message}")]
    Unreachable {
        /// The device, as [`Transport::describe`] says.
        device: String,
        /// What ssh said, e.g. "Connection refused".
        message: String,
    },
    /// An operation ran past its wall-clock limit and was killed.
    #[error("{device}: timed out after {seconds:.1} s while {what}")]
    Timeout {
        /// The device.
        device: String,
        /// What was being done, e.g. "running ./runner".
        what: String,
        /// The limit, seconds.
        seconds: f64,
    },
    /// A command exited unsuccessfully.
    #[error("{device}: `{command}` failed ({}): {stderr}", status_text(*.status))]
    Command {
        /// The device.
        device: String,
        /// The command, for humans.
        command: String,
        /// Its exit status; `None` when killed by a signal.
        status: Option<i32>,
        /// The last lines of its stderr, joined into one line.
        stderr: String,
    },
    /// A local file operation failed.
    #[error("{device}: {path}: {source}")]
    Io {
        /// The device.
        device: String,
        /// The file or directory.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A program the transport needs is not installed.
    #[error("{tool} not found: {hint}")]
    MissingTool {
        /// Program name.
        tool: String,
        /// How to install it.
        hint: String,
    },
    /// A `--device` value that does not parse.
    #[error("invalid device `{url}`: {message}")]
    InvalidUrl {
        /// The value as given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// A bad argument: program path, environment variable name, file name.
    #[error("{device}: {message}")]
    Invalid {
        /// The device.
        device: String,
        /// What is wrong.
        message: String,
    },
}

fn status_text(status: Option<i32>) -> String {
    match status {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_string(),
    }
}

/// Moves a bundle to a device, runs a program from it and brings results back.
pub trait Transport {
    /// Human name, e.g. "qemu (qemu-aarch64-static -cpu cortex-a72)" or "ssh://pi@board:22".
    fn describe(&self) -> String;
    /// Whether latency measured there is real hardware latency (false for qemu).
    fn is_emulated(&self) -> bool;
    /// When the program is shown a CPU description that is not the machine's own (qemu with
    /// a described `-cpu`: [`guest_cpu`]), what results say about it.
    fn cpu_note(&self) -> Option<String> {
        None
    }
    /// Copies the local bundle directory to the device.
    fn upload(&self, bundle: &Path) -> Result<RemoteBundle, DeviceError>;
    /// Runs `program` (a path relative to the bundle dir) with `args` in the bundle dir, with
    /// extra `env`, killing it after `timeout` ([`DeviceError::Timeout`]). A non-zero exit
    /// status is not an error here: it is in [`RunOutput::status`]
    /// (see [`RunOutput::require_success`]).
    fn run(
        &self,
        bundle: &RemoteBundle,
        program: &str,
        args: &[String],
        env: &[(String, String)],
        timeout: Duration,
    ) -> Result<RunOutput, DeviceError>;
    /// Copies `file` (relative to the bundle dir) back to `local`, creating its parent
    /// directory.
    fn download(&self, bundle: &RemoteBundle, file: &str, local: &Path) -> Result<(), DeviceError>;
    /// Removes what upload created (nothing when the bundle is not `owned`).
    fn cleanup(&self, bundle: &RemoteBundle) -> Result<(), DeviceError>;

    /// Pins every later [`Transport::run`] to the CPUs `cpus` (a `taskset -c` list such as
    /// `2,3` or `0-3`; `taskset` from util-linux on the machine that runs the program).
    fn pin(&mut self, cpus: &str) -> Result<(), DeviceError> {
        Err(DeviceError::InvalidUrl {
            url: self.describe(),
            message: format!("--cpus {cpus}: this device cannot pin the runner"),
        })
    }
}

/// A parsed `--device` value: `local`, `qemu`, or `ssh://[user@]host[:port][/remote/dir]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// Run on this host.
    Local,
    /// Run on this host under the target's user-mode emulator.
    Qemu,
    /// Run on a board reached with the system ssh.
    Ssh(ssh::SshHost),
}

impl DeviceSpec {
    /// Builds the transport. `emulator` is the target's emulator command (e.g.
    /// `["qemu-aarch64-static", "-cpu", "cortex-a72", "-L", "/usr/aarch64-linux-gnu"]`), needed
    /// for [`DeviceSpec::Qemu`] only.
    pub fn transport(
        &self,
        emulator: Option<&[String]>,
    ) -> Result<Box<dyn Transport>, DeviceError> {
        Ok(match self {
            Self::Local => Box::new(local::LocalTransport::new()),
            Self::Qemu => match emulator {
                Some(e) if !e.is_empty() => Box::new(qemu::QemuTransport::new(e.to_vec())),
                _ => {
                    return Err(DeviceError::Invalid {
                        device: "qemu".to_string(),
                        message: "the target has no emulator to run its binaries here".to_string(),
                    });
                }
            },
            Self::Ssh(target) => Box::new(ssh::SshTransport::new(target.clone())),
        })
    }
}

/// How ssh devices are reached: `--connect-timeout` and `--ssh-option`.
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Extra `-o` options for ssh/scp.
    pub options: Vec<String>,
}

/// The transport a `--device` value names for `target` (default: this host for a host
/// target, the target's emulator otherwise).
pub fn open(
    target: &crate::board::TargetSpec,
    device: Option<&str>,
    ssh: &SshSettings,
) -> Result<Box<dyn Transport>, DeviceError> {
    let spec: DeviceSpec = match device {
        Some(d) => d.parse()?,
        None if target.is_host() => DeviceSpec::Local,
        None => DeviceSpec::Qemu,
    };
    Ok(match spec {
        DeviceSpec::Local if !target.is_host() => {
            return Err(DeviceError::InvalidUrl {
                url: "local".to_string(),
                message: format!(
                    "{} binaries do not run on this {} host; use --device qemu or ssh://…",
                    target.triple,
                    crate::board::host_triple()
                ),
            });
        }
        DeviceSpec::Ssh(host) => {
            let mut s = ssh::SshTransport::new(host);
            s.connect_timeout = ssh.connect_timeout;
            s.options = ssh.options.clone();
            Box::new(s)
        }
        other => other.transport(Some(&target.emulator))?,
    })
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(Self::Local),
            "qemu" => Ok(Self::Qemu),
            _ if s.starts_with("ssh://") => ssh::SshHost::parse(s).map(Self::Ssh),
            _ => {
                let message = match s.split_once("://") {
                    Some((scheme, _)) => {
                        format!("unknown scheme `{scheme}://` (only ssh:// is supported)")
                    }
                    None if s.is_empty() => "empty device".to_string(),
                    None => "expected `local`, `qemu` or `ssh://[user@]host[:port][/remote/dir]`"
                        .to_string(),
                };
                Err(DeviceError::InvalidUrl {
                    url: s.to_string(),
                    message,
                })
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("local"),
            Self::Qemu => f.write_str("qemu"),
            Self::Ssh(t) => t.fmt(f),
        }
    }
}

/// Checks the arguments of [`Transport::run`] before anything is started.
pub(crate) fn check_run_args(
    device: &str,
    program: &str,
    args: &[String],
    env: &[(String, String)],
) -> Result<(), DeviceError> {
    let invalid = |message: String| {
        Err(DeviceError::Invalid {
            device: device.to_string(),
            message,
        })
    };
    if program.is_empty() {
        return invalid("empty program name".to_string());
    }
    if Path::new(program).is_absolute() {
        return invalid(format!(
            "program `{program}` must be a path relative to the bundle directory"
        ));
    }
    if program.contains('\0') || args.iter().any(|a| a.contains('\0')) {
        return invalid(format!(
            "`{program}`: NUL byte in the program or its arguments"
        ));
    }
    for (key, value) in env {
        if !is_env_name(key) {
            return invalid(format!(
                "bad environment variable name `{key}` (expected [A-Za-z_][A-Za-z0-9_]*)"
            ));
        }
        if value.contains('\0') {
            return invalid(format!("environment variable {key}: NUL byte in the value"));
        }
    }
    Ok(())
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks a file name given to [`Transport::download`]: relative, without `..`.
pub(crate) fn check_bundle_file(device: &str, file: &str) -> Result<(), DeviceError> {
    let path = Path::new(file);
    let ok = !file.is_empty()
        && !file.contains('\0')
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(())
    } else {
        Err(DeviceError::Invalid {
            device: device.to_string(),
            message: format!("`{file}` must be a relative path inside the bundle (no `..`)"),
        })
    }
}

/// Refuses to delete anything that cannot be a bundle directory, whatever `owned` says.
pub(crate) fn check_removable(device: &str, dir: &str) -> Result<(), DeviceError> {
    let path = Path::new(dir);
    let normal = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    let ok = path.is_absolute()
        && normal >= 2
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(DeviceError::Invalid {
            device: device.to_string(),
            message: format!("refusing to remove `{dir}`: not a bundle directory"),
        })
    }
}

/// The last `n` non-empty lines of `text`, trimmed and joined into one line.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = lines[lines.len().saturating_sub(n)..].join(" | ");
    const MAX: usize = 600;
    if joined.len() <= MAX {
        return joined;
    }
    let mut start = joined.len() - MAX;
    while !joined.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &joined[start..])
}

/// A finished (or killed) child process.
#[derive(Debug)]
pub(crate) struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// Captured stdout (the first [`STDOUT_CAP`] bytes).
    pub stdout: Vec<u8>,
    /// Captured stderr (the last [`STDERR_CAP`] bytes).
    pub stderr: Vec<u8>,
    /// Time from spawn to exit.
    pub elapsed: Duration,
    /// Whether it ran past its limit and was killed.
    pub timed_out: bool,
}

impl Finished {
    /// Stdout as lossy UTF-8.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as lossy UTF-8.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// How often a running child is polled.
const POLL: Duration = Duration::from_millis(2);
/// How long readers may keep reading after the child exited: a grandchild that inherited the
/// pipes can hold them open indefinitely, and we must not wait for it.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// The same after a kill: the output is not used then.
const DRAIN_GRACE_KILLED: Duration = Duration::from_millis(300);
/// Retries of a spawn that fails with ETXTBSY: another thread of this process may be forking
/// while it still holds a just-written executable open for writing.
const TEXT_BUSY_RETRIES: u32 = 20;
const ETXTBSY: i32 = 26;

/// Runs `cmd` with null stdin and captured stdout/stderr, killing it once `limit` has passed.
/// Errors are spawn errors only.
pub(crate) fn run_limited(cmd: &mut Command, limit: Duration) -> io::Result<Finished> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_retrying(cmd)?;
    let start = Instant::now();
    let stdout = child
        .stdout
        .take()
        .map(|pipe| Reader::start(pipe, STDOUT_CAP, false));
    let stderr = child
        .stderr
        .take()
        .map(|pipe| Reader::start(pipe, STDERR_CAP, true));
    let (status, timed_out) = wait_limited(&mut child, start, limit)?;
    let elapsed = start.elapsed();
    let grace = if timed_out {
        DRAIN_GRACE_KILLED
    } else {
        DRAIN_GRACE
    };
    let drain_deadline = Instant::now() + grace;
    let stdout = stdout.map(|r| r.finish(drain_deadline)).unwrap_or_default();
    let stderr = stderr.map(|r| r.finish(drain_deadline)).unwrap_or_default();
    Ok(Finished {
        status,
        stdout,
        stderr,
        elapsed,
        timed_out,
    })
}

fn spawn_retrying(cmd: &mut Command) -> io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && tries < TEXT_BUSY_RETRIES => {
                tries += 1;
                thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn wait_limited(
    child: &mut Child,
    start: Instant,
    limit: Duration,
) -> io::Result<(ExitStatus, bool)> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, false));
        }
        let elapsed = start.elapsed();
        if elapsed >= limit {
            // kill fails only if the child is already reaped, which try_wait rules out
            let _ = child.kill();
            return Ok((child.wait()?, true));
        }
        thread::sleep(POLL.min(limit - elapsed));
    }
}

/// A thread draining one pipe into a shared buffer.
struct Reader {
    buf: Arc<Mutex<Vec<u8>>>,
    cap: usize,
    handle: JoinHandle<()>,
}

impl Reader {
    fn start(mut pipe: impl Read + Send + 'static, cap: usize, keep_tail: bool) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&buf);
        let handle = thread::spawn(move || {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = match pipe.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                };
                let mut out = shared.lock().unwrap_or_else(PoisonError::into_inner);
                if keep_tail {
                    out.extend_from_slice(&chunk[..n]);
                    // drop in large steps so the copy is amortised
                    if out.len() > 2 * cap {
                        let excess = out.len() - cap;
                        out.drain(..excess);
                    }
                } else if out.len() < cap {
                    let take = n.min(cap - out.len());
                    out.extend_from_slice(&chunk[..take]);
                }
            }
        });
        Self { buf, cap, handle }
    }

    /// Waits for the reader to reach end of file, at most until `deadline`, and returns what
    /// it read; a reader still blocked then is left behind (it ends with the pipe's writers).
    fn finish(self, deadline: Instant) -> Vec<u8> {
        while !self.handle.is_finished() && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        if self.handle.is_finished() {
            let _ = self.handle.join();
        }
        let mut out = std::mem::take(&mut *self.buf.lock().unwrap_or_else(PoisonError::into_inner));
        if out.len() > self.cap {
            let excess = out.len() - self.cap;
            out.drain(..excess);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_simple_specs() {
        assert_eq!("local".parse::<DeviceSpec>().unwrap(), DeviceSpec::Local);
        assert_eq!("qemu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Qemu);
        let DeviceSpec::Ssh(t) = "ssh://pi@board:2222/home/pi/bench"
            .parse::<DeviceSpec>()
            .unwrap()
        else {
            panic!("not ssh")
        };
        assert_eq!(t.user.as_deref(), Some("pi"));
        assert_eq!(t.host, "board");
        assert_eq!(t.port, 2222);
        assert_eq!(t.remote_dir.as_deref(), Some("/home/pi/bench"));
    }

    #[test]
    fn rejects_bad_specs_with_messages() {
        let cases = [
            ("", "empty device"),
            ("ssh://", "missing host"),
            ("ssh://pi@", "missing host"),
            ("ssh://pi@:22", "missing host"),
            ("ssh://board:abc", "bad port `abc`"),
            ("ssh://board:0", "bad port `0`"),
            ("ssh://board:70000", "bad port `70000`"),
            ("ssh://board:", "empty port"),
            ("http://board", "unknown scheme `http://`"),
            ("board", "expected `local`, `qemu` or `ssh://"),
            ("Local", "expected `local`"),
        ];
        for (input, want) in cases {
            let err = input.parse::<DeviceSpec>().unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, DeviceError::InvalidUrl { .. }),
                "{input}: {err:?}"
            );
            assert!(msg.contains(want), "{input}: `{msg}` lacks `{want}`");
            assert!(msg.contains(&format!("`{input}`")), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn spec_builds_transports() {
        let emulator = vec![
            "qemu-aarch64-static".to_string(),
            "-cpu".into(),
            "max".into(),
        ];
        let t = DeviceSpec::Local.transport(None).unwrap();
        assert!(!t.is_emulated());
        let t = DeviceSpec::Qemu.transport(Some(&emulator)).unwrap();
        assert!(t.is_emulated());
        assert_eq!(t.describe(), "qemu (qemu-aarch64-static -cpu max)");
        assert!(DeviceSpec::Qemu.transport(None).is_err());
        let spec: DeviceSpec = "ssh://pi@board".parse().unwrap();
        assert_eq!(
            spec.transport(None).unwrap().describe(),
            "ssh://pi@board:22"
        );
        assert_eq!(spec.to_string(), "ssh://pi@board:22");
    }

    #[test]
    fn checks_run_arguments() {
        let env = |k: &str| vec![(k.to_string(), "v".to_string())];
        assert!(check_run_args("d", "runner", &[], &env("RUST_LOG")).is_ok());
        assert!(check_run_args("d", "bin/runner", &[], &env("_x1")).is_ok());
        for (program, key) in [
            ("", "A"),
            ("/bin/sh", "A"),
            ("r", "A=B"),
            ("r", "1A"),
            ("r", ""),
        ] {
            let err = check_run_args("dev", program, &[], &env(key)).unwrap_err();
            assert!(matches!(err, DeviceError::Invalid { .. }), "{err:?}");
            assert!(err.to_string().starts_with("dev: "), "{err}");
        }
        assert!(check_bundle_file("d", "result.json").is_ok());
        assert!(check_bundle_file("d", "out/result.json").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x"] {
            assert!(check_bundle_file("d", bad).is_err(), "{bad}");
        }
        assert!(check_removable("d", "/tmp/distill-edge-1").is_ok());
        for bad in ["/", "/tmp", "tmp/x", "/tmp/../etc", ""] {
            assert!(check_removable("d", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_messages_are_one_line() {
        let err = DeviceError::Command {
            device: "ssh://pi@board:22".into(),
            command: "mkdir -p /x".into(),
            status: Some(1),
            stderr: last_lines("a\n\nmkdir: cannot create\n  second  \n", 2),
        };
        assert_eq!(
            err.to_string(),
            "ssh://pi@board:22: `mkdir -p /x` failed (exit status 1): mkdir: cannot create | second"
        );
        let err = DeviceError::Timeout {
            device: "local".into(),
            what: "running ./runner".into(),
            seconds: 2.0,
        };
        assert_eq!(
            err.to_string(),
            "local: timed out after 2.0 s while running ./runner"
        );
        assert!(last_lines(&"é".repeat(1000), 1).chars().count() <= 601);
    }
}

/// Checks a `--cpus` list: CPU numbers and ranges separated by commas (`2,3`, `0-3`).
pub fn check_cpus(cpus: &str) -> Result<(), DeviceError> {
    let ok = !cpus.is_empty()
        && cpus.split(',').all(|part| {
            let mut ends = part.splitn(2, '-');
            ends.all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
    if ok {
        Ok(())
    } else {
        Err(DeviceError::InvalidUrl {
            url: cpus.to_string(),
            message: "--cpus: expected CPU numbers or ranges separated by commas, e.g. 2,3 or 0-3"
                .into(),
        })
    }
}

#[cfg(test)]
mod cpus_tests {
    #[test]
    fn cpu_lists_are_checked() {
        for ok in ["0", "2,3", "0-3", "0-1,4"] {
            assert!(super::check_cpus(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "2;3", "1,,2", "-1", "1 2"] {
            assert!(super::check_cpus(bad).is_err(), "{bad}");
        }
    }
}
