//! A throwaway OpenSSH server on 127.0.0.1 for the ssh transport's tests: its own host key,
//! client key, authorized_keys and config in a temporary directory; killed on drop.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ssh::{SshHost, SshTransport};
use crate::fsutil::find_program;

const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd; killed when dropped.
pub(crate) struct TestSshd {
    dir: tempfile::TempDir,
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// The user the client logs in as (the current one).
    pub user: String,
}

impl TestSshd {
    /// Starts a server, or returns `None` when sshd, ssh-keygen, ssh or scp is not installed
    /// (after [`crate::testing::missing_tool`]: "skipped" here, a panic in CI). Panics when they
    /// are installed but the server does not come up.
    pub fn start() -> Option<Self> {
        Self::start_with(true)
    }

    /// Like [`Self::start`], with or without the SFTP subsystem.
    pub fn start_with(sftp: bool) -> Option<Self> {
        if !Path::new(SSHD).is_file()
            || ["ssh-keygen", "ssh", "scp"]
                .iter()
                .any(|p| find_program(p).is_none())
        {
            crate::testing::missing_tool(
                &format!("{SSHD}, ssh-keygen, ssh or scp"),
                "apt-get install openssh-server openssh-client (scripts/setup.sh does)",
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        keygen(&dir.path().join("host_key"));
        keygen(&dir.path().join("client_key"));
        fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        let user = command_output("id", &["-un"]);
        if command_output("id", &["-u"]) == "0" && !Path::new("/run/sshd").exists() {
            // Debian's sshd needs its privilege-separation directory when started as root
            fs::create_dir_all("/run/sshd").expect("creating /run/sshd");
        }
        // another process may take the port between probing and sshd binding it: retry
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let config = dir.path().join("sshd_config");
            fs::write(&config, config_text(dir.path(), port, sftp)).expect("sshd_config");
            let log = dir.path().join("sshd.log");
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).expect("sshd.log"))
                .spawn()
                .expect("starting sshd");
            if wait_listening(&mut child, port, Duration::from_secs(10)) {
                return Some(Self {
                    dir,
                    child,
                    port,
                    user,
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("sshd did not start: {last_log}");
    }

    /// A transport logging in with the client key, trusting the host key on first use.
    pub fn transport(&self) -> SshTransport {
        let mut t = SshTransport::new(SshHost {
            user: Some(self.user.clone()),
            host: "127.0.0.1".to_string(),
            port: self.port,
            remote_dir: None,
        });
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        t.options = vec![
            format!("IdentityFile={}", path("client_key")),
            format!("UserKnownHostsFile={}", path("known_hosts")),
            "StrictHostKeyChecking=accept-new".to_string(),
            "IdentitiesOnly=yes".to_string(),
        ];
        t
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `port` accepts connections; false when sshd exits or `limit` passes first.
fn wait_listening(child: &mut Child, port: u16, limit: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while start.elapsed() < limit {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn config_text(dir: &Path, port: u16, sftp: bool) -> String {
    let p = |name: &str| dir.join(name).display().to_string();
    format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {}\n\
         AuthorizedKeysFile {}\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         StrictModes no\n\
         PidFile {}\n\
         PermitRootLogin prohibit-password\n\
         LogLevel ERROR\n\
         {}",
        p("host_key"),
        p("authorized_keys"),
        p("sshd.pid"),
        if sftp {
            "Subsystem sftp internal-sftp\n"
        } else {
            ""
        },
    )
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("running ssh-keygen");
    assert!(status.success(), "ssh-keygen failed");
}

fn command_output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
