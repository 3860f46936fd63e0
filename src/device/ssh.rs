//! Runs bundles on a board reached with the system `ssh` and `scp` (the user's agent, keys,
//! `~/.ssh/config` and known_hosts apply; nothing is ever typed: `BatchMode=yes`).
//!
//! The remote login shell must be POSIX-compatible (sh, bash, dash, ash, zsh): commands are
//! sent as one quoted string.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use super::{
    DeviceError, Finished, RemoteBundle, RunOutput, STDERR_LINES, Transport, check_bundle_file,
    check_removable, check_run_args, last_lines, run_limited,
};
use crate::fsutil::unique_suffix;

/// Where a board is: the parsed form of `ssh://[user@]host[:port][/remote/dir]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshHost {
    /// Login name; `None` lets ssh pick (its config, else the local user name).
    pub user: Option<String>,
    /// Host name or address (an IPv6 address without its URL brackets).
    pub host: String,
    /// TCP port (22 unless given).
    pub port: u16,
    /// Directory to upload into. It is created if missing and never removed; without it each
    /// upload gets a fresh `/tmp/distill-edge-<random>` that cleanup removes.
    pub remote_dir: Option<String>,
}

/// Characters that paths handed to scp may hold: with them a path means the same to the
/// remote shell (scp's legacy protocol) and to SFTP (its default since OpenSSH 9.0).
fn is_plain_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._+,@=-".contains(&b))
}

impl SshHost {
    /// Parses `ssh://[user@]host[:port][/remote/dir]`; IPv6 addresses go in brackets.
    pub fn parse(url: &str) -> Result<Self, DeviceError> {
        let bad = |message: &str| DeviceError::InvalidUrl {
            url: url.to_string(),
            message: message.to_string(),
        };
        let rest = url
            .strip_prefix("ssh://")
            .ok_or_else(|| bad("expected ssh://[user@]host[:port][/remote/dir]"))?;
        if let Some(c) = rest
            .chars()
            .find(|c| c.is_whitespace() || "?#".contains(*c))
        {
            return Err(bad(&format!("unexpected {c:?}")));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, hp)) => (Some(user), hp),
            None => (None, authority),
        };
        if let Some(user) = user {
            let ok = !user.is_empty()
                && !user.starts_with('-')
                && user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(bad(&format!(
                    "bad user name `{user}` (letters, digits, `.`, `_`, `-`)"
                )));
            }
        }
        let (host, port) = if let Some(inner) = host_port.strip_prefix('[') {
            let (host, after) = inner
                .split_once(']')
                .ok_or_else(|| bad("missing `]` after the IPv6 address"))?;
            let ok = host.contains(':')
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":.%".contains(&b));
            if !ok {
                return Err(bad(&format!("bad IPv6 address `{host}`")));
            }
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("expected `:port` after `]`"))?,
                ),
            };
            (host, port)
        } else {
            if host_port.matches(':').count() > 1 {
                return Err(bad("IPv6 addresses go in brackets: ssh://[::1]:22"));
            }
            match host_port.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let host_ok = !host.starts_with(['-', '.'])
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_:%".contains(&b));
        if !host_ok {
            return Err(bad(&format!(
                "bad host `{host}` (letters, digits, `.`, `-`, `_`)"
            )));
        }
        let port = match port {
            None => 22,
            Some("") => return Err(bad("empty port after `:`")),
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(bad(&format!("bad port `{p}` (expected 1-65535)"))),
            },
        };
        let dir = path.trim_end_matches('/');
        let remote_dir = if dir.is_empty() {
            None
        } else if is_plain_path(dir) {
            Some(dir.to_string())
        } else {
            return Err(bad(&format!(
                "bad remote directory `{dir}` (letters, digits and `/._+,@=-` only)"
            )));
        };
        Ok(Self {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
            remote_dir,
        })
    }

    /// `user@host` or `host`, as ssh takes it.
    pub fn destination(&self) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}", self.host),
            None => self.host.clone(),
        }
    }

    /// `[user@]host:path` as scp takes it (IPv6 addresses in brackets).
    fn scp_location(&self, path: &str) -> String {
        let host = self.bracketed_host();
        match &self.user {
            Some(user) => format!("{user}@{host}:{path}"),
            None => format!("{host}:{path}"),
        }
    }

    fn bracketed_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl FromStr for SshHost {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `ssh://[user@]host:port[/remote/dir]`, the port always shown.
impl fmt::Display for SshHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ssh://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        write!(f, "{}:{}", self.bracketed_host(), self.port)?;
        if let Some(dir) = &self.remote_dir {
            f.write_str(dir)?;
        }
        Ok(())
    }
}

/// Quotes `s` as one word for a POSIX shell: unchanged when it only holds characters no shell
/// treats specially, else in single quotes, each `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._+,@:-".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs bundles on a board through the system `ssh` and `scp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTransport {
    /// The board.
    pub host: SshHost,
    /// CPUs to pin the runner to on the board (`taskset -c`).
    pub cpus: Option<String>,
    /// ssh's `ConnectTimeout` (TCP connect and banner exchange), also added to every
    /// command's wall-clock limit (default 10 s).
    pub connect_timeout: Duration,
    /// Limit for small commands: `mkdir`, `rm` (default 60 s).
    pub command_timeout: Duration,
    /// Limit for one scp transfer (default 600 s).
    pub transfer_timeout: Duration,
    /// Extra `-o` options for ssh and scp, e.g. `IdentityFile=/path/key`.
    pub options: Vec<String>,
    /// The ssh program (default "ssh").
    pub ssh: String,
    /// The scp program (default "scp").
    pub scp: String,
}

/// Printed to stderr by the remote wrapper before the program starts, so that an exit status
/// of 255 from the program is not mistaken for ssh failing to connect.
const STARTED_MARKER: &str = "distill-edge:remote-started";

/// Lines of ssh's stderr that mean the connection failed, most specific first.
const CONNECTION_PROBLEMS: &[&str] = &[
    "Connection refused",
    "timed out",
    "Permission denied",
    "Host key verification failed",
    "Could not resolve hostname",
    "No route to host",
    "Network is unreachable",
    "Connection reset",
    "Connection closed by",
    "kex_exchange_identification",
];

impl SshTransport {
    /// A transport to `host` with the default timeouts and programs.
    pub fn new(host: SshHost) -> Self {
        Self {
            host,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            transfer_timeout: Duration::from_secs(600),
            options: Vec::new(),
            ssh: "ssh".to_string(),
            scp: "scp".to_string(),
            cpus: None,
        }
    }

    fn common_options(&self) -> Vec<String> {
        // ConnectTimeout takes whole seconds; 0 would mean the system default
        let connect = self.connect_timeout.as_secs_f64().ceil().max(1.0) as u64;
        let mut opts = vec![
            "-o".to_string(),
            "BatchMode=yes".to_string(),
            "-o".to_string(),
            format!("ConnectTimeout={connect}"),
        ];
        for o in &self.options {
            opts.push("-o".to_string());
            opts.push(o.clone());
        }
        // ssh keeps the first value of an option, so this default yields to `options`; it
        // keeps notices like "Permanently added ... to known hosts" out of the program's stderr
        opts.extend(["-o".to_string(), "LogLevel=ERROR".to_string()]);
        opts
    }

    fn ssh_command(&self, remote: &str) -> Command {
        let mut cmd = Command::new(&self.ssh);
        cmd.args(self.common_options())
            .arg("-p")
            .arg(self.host.port.to_string())
            .arg("--")
            .arg(self.host.destination())
            .arg(remote);
        cmd
    }

    fn scp_command(&self, legacy: bool) -> Command {
        let mut cmd = Command::new(&self.scp);
        if legacy {
            cmd.arg("-O");
        }
        cmd.arg("-q")
            .arg("-p")
            .args(self.common_options())
            .arg("-P")
            .arg(self.host.port.to_string());
        if self.ssh != "ssh" {
            cmd.arg("-S").arg(&self.ssh);
        }
        cmd
    }

    /// Runs `cmd` (ssh or scp) under a hard wall-clock limit of connect_timeout + `timeout`.
    fn invoke(
        &self,
        mut cmd: Command,
        tool: &str,
        what: &str,
        timeout: Duration,
    ) -> Result<Finished, DeviceError> {
        let limit = self.connect_timeout.saturating_add(timeout);
        let finished = run_limited(&mut cmd, limit).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                DeviceError::MissingTool {
                    tool: tool.to_string(),
                    hint: "apt-get install openssh-client".to_string(),
                }
            } else {
                DeviceError::Io {
                    device: self.describe(),
                    path: tool.to_string(),
                    source: e,
                }
            }
        })?;
        if finished.timed_out {
            return Err(DeviceError::Timeout {
                device: self.describe(),
                what: what.to_string(),
                seconds: limit.as_secs_f64(),
            });
        }
        Ok(finished)
    }

    fn unreachable(&self, stderr: &str) -> DeviceError {
        let message = connection_problem(stderr)
            .or_else(|| {
                let last = last_lines(stderr, 1);
                (!last.is_empty()).then_some(last)
            })
            .unwrap_or_else(|| "ssh exited with status 255".to_string());
        DeviceError::Unreachable {
            device: self.describe(),
            message,
        }
    }

    /// Runs a shell command on the board; its stdout on success.
    fn exec(&self, remote: &str, what: &str, timeout: Duration) -> Result<String, DeviceError> {
        let ssh = self.ssh.clone();
        let f = self.invoke(self.ssh_command(remote), &ssh, what, timeout)?;
        let stderr = f.stderr_text();
        match f.status.code() {
            Some(0) => Ok(f.stdout_text()),
            Some(255) => Err(self.unreachable(&stderr)),
            status => Err(DeviceError::Command {
                device: self.describe(),
                command: remote.to_string(),
                status,
                stderr: last_lines(&stderr, STDERR_LINES),
            }),
        }
    }

    /// Runs scp with `args` after the common options; `shown` describes it for errors.
    /// OpenSSH 9 scp speaks SFTP by default, which fails on servers without an SFTP
    /// subsystem (dropbear, trimmed sshd configs) with a bare "Connection closed": that is
    /// retried once with the legacy protocol (`-O`).
    fn copy(&self, args: &[OsString], shown: &str, what: &str) -> Result<(), DeviceError> {
        let scp = self.scp.clone();
        let mut legacy = false;
        loop {
            let mut cmd = self.scp_command(legacy);
            cmd.args(args);
            let f = self.invoke(cmd, &scp, what, self.transfer_timeout)?;
            if f.status.success() {
                return Ok(());
            }
            let stderr = f.stderr_text();
            // scp's exit status says little (1, or 255 in SFTP mode); its stderr tells a
            // connection failure apart
            if connection_problem(&stderr).is_some() {
                return Err(self.unreachable(&stderr));
            }
            if !legacy && f.status.code() == Some(255) && stderr.contains("Connection closed") {
                legacy = true;
                continue;
            }
            return Err(DeviceError::Command {
                device: self.describe(),
                command: shown.to_string(),
                status: f.status.code(),
                stderr: last_lines(&stderr, STDERR_LINES),
            });
        }
    }

    fn check_plain(&self, path: &str) -> Result<(), DeviceError> {
        if is_plain_path(path) {
            Ok(())
        } else {
            Err(DeviceError::Invalid {
                device: self.describe(),
                message: format!(
                    "`{path}`: remote paths may only hold letters, digits and `/._+,@=-`"
                ),
            })
        }
    }
}

/// The first stderr line that says the connection failed.
fn connection_problem(stderr: &str) -> Option<String> {
    CONNECTION_PROBLEMS.iter().find_map(|pattern| {
        stderr
            .lines()
            .find(|l| l.contains(pattern))
            .map(|l| l.trim().to_string())
    })
}

/// Whole seconds for the remote `timeout` command (at least 1, at most ~68 years).
fn remote_seconds(timeout: Duration) -> u64 {
    (timeout.as_secs_f64().ceil() as u64).clamp(1, i32::MAX as u64)
}

impl Transport for SshTransport {
    fn describe(&self) -> String {
        SshHost {
            remote_dir: None,
            ..self.host.clone()
        }
        .to_string()
    }

    fn is_emulated(&self) -> bool {
        false
    }

    fn upload(&self, bundle: &Path) -> Result<RemoteBundle, DeviceError> {
        let device = self.describe();
        let io_err = |path: &Path, source| DeviceError::Io {
            device: device.clone(),
            path: path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(bundle).map_err(|e| io_err(bundle, e))?;
        if !meta.is_dir() {
            return Err(DeviceError::Invalid {
                device: device.clone(),
                message: format!("bundle {} is not a directory", bundle.display()),
            });
        }
        let abs = std::path::absolute(bundle).map_err(|e| io_err(bundle, e))?;
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&abs).map_err(|e| io_err(&abs, e))? {
            // absolute paths, so that a local name with a `:` is not taken for a host
            entries.push(entry.map_err(|e| io_err(&abs, e))?.path());
        }
        entries.sort();

        let placed = match &self.host.remote_dir {
            Some(dir) => RemoteBundle {
                dir: dir.clone(),
                owned: false,
            },
            None => RemoteBundle {
                dir: format!("/tmp/distill-edge-{}", unique_suffix()),
                owned: true,
            },
        };
        self.check_plain(&placed.dir)?;
        self.exec(
            &format!("mkdir -p {}", shell_quote(&placed.dir)),
            &format!("creating {}", placed.dir),
            self.command_timeout,
        )?;
        if entries.is_empty() {
            return Ok(placed);
        }
        let to = self.host.scp_location(&format!("{}/", placed.dir));
        let mut args = vec![OsString::from("-r")];
        args.extend(entries.into_iter().map(PathBuf::into_os_string));
        args.push(OsString::from(&to));
        let shown = format!("scp -r {}/* {to}", abs.display());
        if let Err(e) = self.copy(&args, &shown, &format!("uploading {}", abs.display())) {
            if placed.owned {
                let _ = self.cleanup(&placed);
            }
            return Err(e);
        }
        Ok(placed)
    }

    /// Runs through `sh` on the board: `cd <dir> && env K=V ... ./program args`, under the
    /// board's `timeout -s KILL` when it has one, and under a local limit of connect_timeout
    /// + `timeout` in any case.
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
        let mut line = match &self.cpus {
            Some(cpus) => format!("taskset -c {} env", shell_quote(cpus)),
            None => String::from("env"),
        };
        for (k, v) in env {
            line.push(' ');
            line.push_str(&shell_quote(&format!("{k}={v}")));
        }
        line.push(' ');
        line.push_str(&shell_quote(&format!("./{program}")));
        for a in args {
            line.push(' ');
            line.push_str(&shell_quote(a));
        }
        let secs = remote_seconds(timeout);
        // the probe runs `timeout` with the same syntax, so busybox builds without `-s`
        // fall back to running the program without it; the trailing `exit` keeps the shell
        // from exec'ing the last command, so a program killed by a signal reports 128+n
        // instead of making ssh exit 255
        let script = format!(
            "echo {STARTED_MARKER} >&2 && cd {} && if timeout -s KILL 1 true >/dev/null 2>&1; \
             then timeout -s KILL {secs} {line}; else {line}; fi; exit $?",
            shell_quote(&bundle.dir)
        );
        let what = format!("running {program}");
        let ssh = self.ssh.clone();
        let f = self.invoke(self.ssh_command(&script), &ssh, &what, timeout)?;
        let mut stderr = f.stderr_text();
        let started = match stderr.find(&format!("{STARTED_MARKER}\n")) {
            Some(i) => {
                stderr.replace_range(i..i + STARTED_MARKER.len() + 1, "");
                true
            }
            None => false,
        };
        let status = f.status.code();
        if status == Some(255) && !started {
            return Err(self.unreachable(&stderr));
        }
        // 124/137: killed by the board's `timeout`; 255: the connection died with it
        if matches!(status, Some(124 | 137 | 255)) && f.elapsed >= timeout {
            return Err(DeviceError::Timeout {
                device,
                what,
                seconds: timeout.as_secs_f64(),
            });
        }
        Ok(RunOutput {
            status,
            stdout: f.stdout_text(),
            stderr,
            seconds: f.elapsed.as_secs_f64(),
        })
    }

    fn download(&self, bundle: &RemoteBundle, file: &str, local: &Path) -> Result<(), DeviceError> {
        let device = self.describe();
        check_bundle_file(&device, file)?;
        let remote = format!("{}/{file}", bundle.dir);
        self.check_plain(&remote)?;
        let io_err = |path: &Path, source| DeviceError::Io {
            device: device.clone(),
            path: path.display().to_string(),
            source,
        };
        // absolute, so that a local name with a `:` is not taken for a host
        let local = std::path::absolute(local).map_err(|e| io_err(local, e))?;
        if let Some(parent) = local.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
        }
        let from = self.host.scp_location(&remote);
        let args = [OsString::from(&from), local.clone().into_os_string()];
        let shown = format!("scp {from} {}", local.display());
        self.copy(&args, &shown, &format!("downloading {file}"))
    }

    fn cleanup(&self, bundle: &RemoteBundle) -> Result<(), DeviceError> {
        if !bundle.owned {
            return Ok(());
        }
        check_removable(&self.describe(), &bundle.dir)?;
        self.exec(
            &format!("rm -rf -- {}", shell_quote(&bundle.dir)),
            &format!("removing {}", bundle.dir),
            self.command_timeout,
        )
        .map(drop)
    }

    fn pin(&mut self, cpus: &str) -> Result<(), DeviceError> {
        super::check_cpus(cpus)?;
        self.cpus = Some(cpus.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::local::tests::{script_bundle, script_call, write_script};
    use crate::device::testsshd::TestSshd;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    #[test]
    fn parses_targets() {
        let t = SshHost::parse("ssh://board").unwrap();
        assert_eq!(
            t,
            SshHost {
                user: None,
                host: "board".into(),
                port: 22,
                remote_dir: None
            }
        );
        assert_eq!(t.to_string(), "ssh://board:22");
        let t: SshHost = "ssh://pi@10.0.0.7:2222/home/pi/bench/".parse().unwrap();
        assert_eq!(t.user.as_deref(), Some("pi"));
        assert_eq!(t.host, "10.0.0.7");
        assert_eq!(t.port, 2222);
        assert_eq!(t.remote_dir.as_deref(), Some("/home/pi/bench"));
        assert_eq!(t.to_string(), "ssh://pi@10.0.0.7:2222/home/pi/bench");
        assert_eq!(t.destination(), "pi@10.0.0.7");
        assert_eq!(t.scp_location("/x"), "pi@10.0.0.7:/x");
        let t = SshHost::parse("ssh://root@[fe80::1%eth0]:2200/").unwrap();
        assert_eq!(t.host, "fe80::1%eth0");
        assert_eq!(t.port, 2200);
        assert_eq!(t.remote_dir, None);
        assert_eq!(t.destination(), "root@fe80::1%eth0");
        assert_eq!(t.scp_location("/x"), "root@[fe80::1%eth0]:/x");
        assert_eq!(t.to_string(), "ssh://root@[fe80::1%eth0]:2200");
        let t = SshHost::parse("ssh://[::1]").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 22));
    }

    #[test]
    fn rejects_bad_targets() {
        let cases = [
            ("ssh://", "missing host"),
            ("ssh:///dir", "missing host"),
            ("ssh://@board", "bad user name"),
            ("ssh://-oProxyCommand=x@board", "bad user name"),
            ("ssh://-oProxyCommand=x", "bad host"),
            ("ssh://bo ard", "unexpected ' '"),
            ("ssh://board:22x", "bad port `22x`"),
            ("ssh://board:-1", "bad port `-1`"),
            ("ssh://board:99999", "bad port `99999`"),
            ("ssh://::1", "brackets"),
            ("ssh://[::1", "missing `]`"),
            ("ssh://[::1]x", "expected `:port`"),
            ("ssh://[board]", "bad IPv6 address"),
            ("ssh://board/tmp/a b", "unexpected ' '"),
            ("ssh://board/tmp/$HOME", "bad remote directory"),
            ("ssh://board/tmp?x", "unexpected '?'"),
            ("ssh://bo;ard", "bad host"),
        ];
        for (url, want) in cases {
            let msg = SshHost::parse(url).unwrap_err().to_string();
            assert!(msg.contains(want), "{url}: `{msg}` lacks `{want}`");
            assert!(
                msg.starts_with(&format!("invalid device `{url}`: ")),
                "{msg}"
            );
        }
    }

    #[test]
    fn shell_quote_round_trips() {
        let words = [
            "",
            "plain",
            "/tmp/distill-edge-0f/run.sh",
            "a b",
            "  lead and trail  ",
            "it's",
            "''",
            "'",
            "\"double\"",
            "$HOME",
            "${x:-y}",
            "`id`",
            "$(id)",
            "back\\slash",
            "*",
            "?[a]",
            "~",
            "~root",
            "-n",
            "a;b|c&d>e<f",
            "new\nline",
            "tab\there",
            "!bang",
            "#hash",
            "=x",
            "x=y z",
            "ümlaut ✓",
        ];
        let script = format!(
            "printf '%s\\0' {}",
            words
                .iter()
                .map(|w| shell_quote(w))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success());
        let got: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap()
            .split_terminator('\0')
            .collect();
        assert_eq!(got, words);
        assert_eq!(shell_quote("abc/d.e"), "abc/d.e");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn command_lines_carry_the_options() {
        let mut t = SshTransport::new(SshHost::parse("ssh://pi@board:2022").unwrap());
        t.options.push("IdentityFile=/k".into());
        let cmd = t.ssh_command("true");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "IdentityFile=/k",
                "-o",
                "LogLevel=ERROR",
                "-p",
                "2022",
                "--",
                "pi@board",
                "true"
            ]
        );
        let cmd = t.scp_command(false);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(&args[..2], ["-q", "-p"]);
        assert_eq!(&args[args.len() - 2..], ["-P", "2022"]);
        assert_eq!(remote_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(remote_seconds(Duration::ZERO), 1);
        assert_eq!(remote_seconds(Duration::MAX), i32::MAX as u64);
    }

    #[test]
    fn round_trip_through_sshd() {
        let Some(sshd) = TestSshd::start() else {
            return;
        };
        let t = sshd.transport();
        assert_eq!(
            t.describe(),
            format!("ssh://{}@127.0.0.1:{}", sshd.user, sshd.port)
        );
        assert!(!t.is_emulated());
        let bundle = script_bundle();
        let placed = t.upload(bundle.path()).unwrap();
        assert!(placed.owned);
        assert!(placed.dir.starts_with("/tmp/distill-edge-"), "{placed:?}");
        // the server is this host, so the remote directory can be inspected directly
        let remote = Path::new(&placed.dir);
        assert!(remote.join("data/x.txt").is_file());

        let (args, env, want) = script_call();
        let out = t
            .run(&placed, "run.sh", &args, &env, Duration::from_secs(30))
            .unwrap();
        assert_eq!(out.status, Some(0), "{out:?}");
        assert_eq!(out.stdout, "done\n");
        assert_eq!(out.stderr, "");
        let local = tempfile::tempdir().unwrap();
        let dst = local.path().join("out/result.json");
        t.download(&placed, "result.json", &dst).unwrap();
        assert_eq!(std::fs::read_to_string(&dst).unwrap(), want);

        let out = t
            .run(&placed, "fail.sh", &[], &[], Duration::from_secs(30))
            .unwrap();
        assert_eq!(out.status, Some(3));
        assert_eq!(out.stdout, "partial\n");
        assert_eq!(out.stderr, "boom\n");
        let err = out.require_success(&t.describe(), "fail.sh").unwrap_err();
        assert!(
            err.to_string().ends_with("failed (exit status 3): boom"),
            "{err}"
        );

        let err = t
            .download(&placed, "missing.json", &local.path().join("m.json"))
            .unwrap_err();
        assert!(matches!(err, DeviceError::Command { .. }), "{err:?}");

        t.cleanup(&placed).unwrap();
        assert!(!remote.exists());
    }

    #[test]
    fn status_255_from_the_program_is_not_unreachable() {
        let Some(sshd) = TestSshd::start() else {
            return;
        };
        let t = sshd.transport();
        let bundle = tempfile::tempdir().unwrap();
        write_script(bundle.path(), "x.sh", "echo bad >&2; exit 255");
        let placed = t.upload(bundle.path()).unwrap();
        let out = t
            .run(&placed, "x.sh", &[], &[], Duration::from_secs(30))
            .unwrap();
        assert_eq!(out.status, Some(255));
        assert_eq!(out.stderr, "bad\n");
        t.cleanup(&placed).unwrap();
    }

    #[test]
    fn server_without_sftp_gets_legacy_scp() {
        let Some(sshd) = TestSshd::start_with(false) else {
            return;
        };
        let t = sshd.transport();
        let bundle = script_bundle();
        let placed = t.upload(bundle.path()).unwrap();
        assert!(Path::new(&placed.dir).join("data/x.txt").is_file());
        let (args, env, want) = script_call();
        let out = t
            .run(&placed, "run.sh", &args, &env, Duration::from_secs(30))
            .unwrap();
        assert_eq!(out.status, Some(0), "{out:?}");
        let local = tempfile::tempdir().unwrap();
        let dst = local.path().join("result.json");
        t.download(&placed, "result.json", &dst).unwrap();
        assert_eq!(std::fs::read_to_string(&dst).unwrap(), want);
        let err = t
            .download(&placed, "missing.json", &local.path().join("m.json"))
            .unwrap_err();
        assert!(err.to_string().contains("No such file"), "{err}");
        t.cleanup(&placed).unwrap();
        assert!(!Path::new(&placed.dir).exists());
    }

    #[test]
    fn signal_death_is_a_status() {
        let Some(sshd) = TestSshd::start() else {
            return;
        };
        let t = sshd.transport();
        let bundle = tempfile::tempdir().unwrap();
        write_script(bundle.path(), "die.sh", "kill -SEGV $$");
        let placed = t.upload(bundle.path()).unwrap();
        let out = t
            .run(&placed, "die.sh", &[], &[], Duration::from_secs(30))
            .unwrap();
        assert_eq!(out.status, Some(128 + 11), "{out:?}");
        t.cleanup(&placed).unwrap();
    }

    #[test]
    fn given_remote_dir_is_kept() {
        let Some(sshd) = TestSshd::start() else {
            return;
        };
        let remote = tempfile::tempdir().unwrap();
        let dir = remote.path().join("bench");
        let mut t = sshd.transport();
        t.host.remote_dir = Some(dir.to_str().unwrap().to_string());
        let bundle = script_bundle();
        let placed = t.upload(bundle.path()).unwrap();
        assert_eq!(
            placed,
            RemoteBundle {
                dir: dir.to_str().unwrap().into(),
                owned: false
            }
        );
        assert!(dir.join("run.sh").is_file());
        t.cleanup(&placed).unwrap();
        assert!(dir.join("run.sh").is_file());
    }

    #[test]
    fn remote_timeout_kills() {
        let Some(sshd) = TestSshd::start() else {
            return;
        };
        let t = sshd.transport();
        let bundle = script_bundle();
        let placed = t.upload(bundle.path()).unwrap();
        let start = Instant::now();
        let err = t
            .run(&placed, "sleep.sh", &[], &[], Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(err, DeviceError::Timeout { .. }), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(err.to_string().contains("while running sleep.sh"), "{err}");
        t.cleanup(&placed).unwrap();
    }

    fn client_for(port: u16) -> Option<SshTransport> {
        if crate::fsutil::find_program("ssh").is_none() {
            crate::testing::missing_tool(
                "ssh",
                "apt-get install openssh-client (scripts/setup.sh does)",
            );
            return None;
        }
        let home = tempfile::tempdir().unwrap();
        let mut t = SshTransport::new(SshHost {
            user: Some("nobody".into()),
            host: "127.0.0.1".into(),
            port,
            remote_dir: None,
        });
        t.connect_timeout = Duration::from_secs(2);
        t.options = vec![
            format!(
                "UserKnownHostsFile={}",
                home.path().join("known_hosts").display()
            ),
            "StrictHostKeyChecking=accept-new".into(),
            "IdentitiesOnly=yes".into(),
            "IdentityFile=/dev/null".into(),
        ];
        Some(t)
    }

    fn free_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[test]
    fn refused_port_is_unreachable() {
        let Some(t) = client_for(free_port()) else {
            return;
        };
        let bundle = script_bundle();
        let start = Instant::now();
        let err = t.upload(bundle.path()).unwrap_err();
        assert!(matches!(err, DeviceError::Unreachable { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("Connection refused"), "{msg}");
        assert!(msg.starts_with(&t.describe()), "{msg}");
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    /// A server that accepts connections and never says anything.
    struct SilentServer {
        port: u16,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl SilentServer {
        fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let port = listener.local_addr().unwrap().port();
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            let thread = std::thread::spawn(move || {
                let mut held = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    if let Ok((stream, _)) = listener.accept() {
                        held.push(stream);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            Self {
                port,
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for SilentServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    #[test]
    fn silent_server_times_out() {
        let server = SilentServer::start();
        let Some(t) = client_for(server.port) else {
            return;
        };
        let placed = RemoteBundle {
            dir: "/tmp/distill-edge-none".into(),
            owned: true,
        };
        let start = Instant::now();
        let err = t
            .run(&placed, "run.sh", &[], &[], Duration::from_secs(1))
            .unwrap_err();
        let took = start.elapsed();
        assert!(
            matches!(
                err,
                DeviceError::Timeout { .. } | DeviceError::Unreachable { .. }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn hung_ssh_is_killed() {
        // an ssh that never returns stands in for a board that stalls after connecting
        let dir = tempfile::tempdir().unwrap();
        write_script(dir.path(), "ssh", "exec sleep 30");
        let mut t = SshTransport::new(SshHost::parse("ssh://127.0.0.1").unwrap());
        t.ssh = dir.path().join("ssh").display().to_string();
        t.connect_timeout = Duration::from_secs(1);
        t.command_timeout = Duration::from_secs(1);
        let bundle = script_bundle();
        let start = Instant::now();
        let err = t.upload(bundle.path()).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
        assert!(matches!(err, DeviceError::Timeout { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with(
                "ssh://127.0.0.1:22: timed out after 2.0 s while creating /tmp/distill-edge-"
            ),
            "{err}"
        );
    }

    #[test]
    fn missing_ssh_is_reported() {
        let mut t = SshTransport::new(SshHost::parse("ssh://127.0.0.1").unwrap());
        t.ssh = "distill-edge-no-such-ssh".into();
        let bundle = script_bundle();
        let err = t.upload(bundle.path()).unwrap_err();
        assert!(matches!(err, DeviceError::MissingTool { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "distill-edge-no-such-ssh not found: apt-get install openssh-client"
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        let t = SshTransport::new(SshHost::parse("ssh://127.0.0.1").unwrap());
        let placed = RemoteBundle {
            dir: "/tmp/a b".into(),
            owned: true,
        };
        let out = tempfile::tempdir().unwrap();
        let err = t
            .download(&placed, "r.json", &out.path().join("r"))
            .unwrap_err();
        assert!(matches!(err, DeviceError::Invalid { .. }), "{err:?}");
        let placed = RemoteBundle {
            dir: "/".into(),
            owned: true,
        };
        let err = t.cleanup(&placed).unwrap_err();
        assert!(err.to_string().contains("refusing to remove"), "{err}");
        let err = t
            .run(&placed, "/bin/sh", &[], &[], Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(err, DeviceError::Invalid { .. }), "{err:?}");
    }
}
