//! Runs bundles on this host: the bundle is copied into a fresh temporary directory (or used
//! where it is) and the program is spawned directly.

use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{
    DeviceError, RemoteBundle, RunOutput, Transport, check_bundle_file, check_removable,
    check_run_args, run_limited,
};

/// Runs bundles on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalTransport {
    /// Run the bundle where it is instead of copying it to a temporary directory; cleanup
    /// then removes nothing.
    pub in_place: bool,
    /// CPUs to pin the program to (`taskset -c`).
    pub cpus: Option<String>,
}

impl LocalTransport {
    /// A transport that copies each bundle into a fresh temporary directory.
    pub fn new() -> Self {
        Self {
            in_place: false,
            cpus: None,
        }
    }

    /// A transport that runs bundles where they are.
    pub fn in_place() -> Self {
        Self {
            in_place: true,
            cpus: None,
        }
    }
}

impl Transport for LocalTransport {
    fn describe(&self) -> String {
        "local".to_string()
    }

    fn is_emulated(&self) -> bool {
        false
    }

    fn upload(&self, bundle: &Path) -> Result<RemoteBundle, DeviceError> {
        upload(&self.describe(), bundle, self.in_place)
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
        let path = Path::new(&bundle.dir).join(program);
        let mut cmd = match &self.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        cmd.args(args);
        run_in_bundle(&device, bundle, cmd, program, env, timeout, |e| {
            DeviceError::Io {
                device: device.clone(),
                path: path.display().to_string(),
                source: e,
            }
        })
    }

    fn download(&self, bundle: &RemoteBundle, file: &str, local: &Path) -> Result<(), DeviceError> {
        download(&self.describe(), bundle, file, local)
    }

    fn cleanup(&self, bundle: &RemoteBundle) -> Result<(), DeviceError> {
        cleanup(&self.describe(), bundle)
    }

    fn pin(&mut self, cpus: &str) -> Result<(), DeviceError> {
        super::check_cpus(cpus)?;
        self.cpus = Some(cpus.to_string());
        Ok(())
    }
}

fn io_error(device: &str, path: &Path, source: io::Error) -> DeviceError {
    DeviceError::Io {
        device: device.to_string(),
        path: path.display().to_string(),
        source,
    }
}

/// Places `bundle` for a transport that runs on this host.
pub(crate) fn upload(
    device: &str,
    bundle: &Path,
    in_place: bool,
) -> Result<RemoteBundle, DeviceError> {
    let meta = fs::metadata(bundle).map_err(|e| io_error(device, bundle, e))?;
    if !meta.is_dir() {
        return Err(DeviceError::Invalid {
            device: device.to_string(),
            message: format!("bundle {} is not a directory", bundle.display()),
        });
    }
    if in_place {
        let dir = std::path::absolute(bundle).map_err(|e| io_error(device, bundle, e))?;
        return Ok(RemoteBundle {
            dir: utf8(device, &dir)?,
            owned: false,
        });
    }
    // removed on every error path (dropped), kept once the copy is complete
    let dir = crate::fsutil::fresh_temp_dir("distill-edge")
        .map_err(|e| io_error(device, &std::env::temp_dir(), e))?;
    let placed = RemoteBundle {
        dir: utf8(device, dir.path())?,
        owned: true,
    };
    copy_tree(device, bundle, dir.path())?;
    dir.keep();
    Ok(placed)
}

fn utf8(device: &str, path: &Path) -> Result<String, DeviceError> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| DeviceError::Invalid {
            device: device.to_string(),
            message: format!("{} is not valid UTF-8", path.display()),
        })
}

/// Copies the contents of `from` into the existing directory `to`, keeping permissions and
/// recreating symbolic links.
fn copy_tree(device: &str, from: &Path, to: &Path) -> Result<(), DeviceError> {
    let entries = fs::read_dir(from).map_err(|e| io_error(device, from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(device, from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry.file_type().map_err(|e| io_error(device, &src, e))?;
        if kind.is_symlink() {
            let target = fs::read_link(&src).map_err(|e| io_error(device, &src, e))?;
            std::os::unix::fs::symlink(&target, &dst).map_err(|e| io_error(device, &dst, e))?;
        } else if kind.is_dir() {
            fs::create_dir(&dst).map_err(|e| io_error(device, &dst, e))?;
            copy_tree(device, &src, &dst)?;
            let perms = fs::metadata(&src)
                .map_err(|e| io_error(device, &src, e))?
                .permissions();
            fs::set_permissions(&dst, perms).map_err(|e| io_error(device, &dst, e))?;
        } else {
            // fs::copy keeps the permission bits, so executables stay executable
            fs::copy(&src, &dst).map_err(|e| io_error(device, &src, e))?;
        }
    }
    Ok(())
}

/// Runs `cmd` (program and arguments already set) in the bundle directory with `env`, killed
/// after `timeout`. `spawn_error` maps a failure to start it.
pub(crate) fn run_in_bundle(
    device: &str,
    bundle: &RemoteBundle,
    mut cmd: Command,
    program: &str,
    env: &[(String, String)],
    timeout: Duration,
    spawn_error: impl FnOnce(io::Error) -> DeviceError,
) -> Result<RunOutput, DeviceError> {
    cmd.current_dir(&bundle.dir);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let finished = run_limited(&mut cmd, timeout).map_err(spawn_error)?;
    if finished.timed_out {
        return Err(DeviceError::Timeout {
            device: device.to_string(),
            what: format!("running {program}"),
            seconds: timeout.as_secs_f64(),
        });
    }
    Ok(RunOutput {
        status: finished.status.code(),
        stdout: finished.stdout_text(),
        stderr: finished.stderr_text(),
        seconds: finished.elapsed.as_secs_f64(),
    })
}

/// Copies a file out of a bundle on this host.
pub(crate) fn download(
    device: &str,
    bundle: &RemoteBundle,
    file: &str,
    local: &Path,
) -> Result<(), DeviceError> {
    check_bundle_file(device, file)?;
    let src = Path::new(&bundle.dir).join(file);
    if let Some(parent) = local.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| io_error(device, parent, e))?;
    }
    fs::copy(&src, local).map_err(|e| io_error(device, &src, e))?;
    Ok(())
}

/// Removes an owned bundle directory on this host.
pub(crate) fn cleanup(device: &str, bundle: &RemoteBundle) -> Result<(), DeviceError> {
    if !bundle.owned {
        return Ok(());
    }
    check_removable(device, &bundle.dir)?;
    match fs::remove_dir_all(&bundle.dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io_error(device, Path::new(&bundle.dir), e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    /// Writes an executable script into `dir`.
    pub(crate) fn write_script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A bundle whose `run.sh` writes its arguments and `$DE_TEST` into `result.json`, and a
    /// data file in a subdirectory.
    pub(crate) fn script_bundle() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_script(
            dir.path(),
            "run.sh",
            r#"printf '{"args":"%s","env":"%s","data":"%s"}' "$*" "$DE_TEST" "$(cat data/x.txt)" > result.json
echo done"#,
        );
        write_script(dir.path(), "fail.sh", "echo partial; echo boom >&2; exit 3");
        write_script(dir.path(), "sleep.sh", "exec sleep 30");
        fs::create_dir(dir.path().join("data")).unwrap();
        fs::write(dir.path().join("data/x.txt"), "payload").unwrap();
        dir
    }

    /// Arguments and environment used with [`script_bundle`], and the result they give.
    pub(crate) fn script_call() -> (Vec<String>, Vec<(String, String)>, String) {
        let args = vec!["a b".to_string(), "it's $HOME".to_string(), String::new()];
        let env = vec![("DE_TEST".to_string(), "x \"y\" $z".to_string())];
        let want = r#"{"args":"a b it's $HOME ","env":"x "y" $z","data":"payload"}"#.to_string();
        (args, env, want)
    }

    #[test]
    fn round_trip() {
        let bundle = script_bundle();
        let t = LocalTransport::new();
        let placed = t.upload(bundle.path()).unwrap();
        assert!(placed.owned);
        assert_ne!(Path::new(&placed.dir), bundle.path());
        let mode = fs::metadata(Path::new(&placed.dir).join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);

        let (args, env, want) = script_call();
        let out = t
            .run(&placed, "run.sh", &args, &env, Duration::from_secs(20))
            .unwrap();
        assert_eq!(out.status, Some(0), "{out:?}");
        assert_eq!(out.stdout, "done\n");
        assert!(out.seconds > 0.0);
        let local = tempfile::tempdir().unwrap();
        let dst = local.path().join("sub/result.json");
        t.download(&placed, "result.json", &dst).unwrap();
        assert_eq!(fs::read_to_string(&dst).unwrap(), want);

        t.cleanup(&placed).unwrap();
        assert!(!Path::new(&placed.dir).exists());
        assert!(bundle.path().join("run.sh").exists());
    }

    #[test]
    fn in_place_leaves_bundle() {
        let bundle = script_bundle();
        let t = LocalTransport::in_place();
        let placed = t.upload(bundle.path()).unwrap();
        assert!(!placed.owned);
        assert_eq!(Path::new(&placed.dir), bundle.path());
        write_script(bundle.path(), "bin/hello", "echo \"hi $1\"");
        let out = t
            .run(
                &placed,
                "bin/hello",
                &["x".into()],
                &[],
                Duration::from_secs(20),
            )
            .unwrap();
        assert_eq!(out.stdout, "hi x\n");
        t.cleanup(&placed).unwrap();
        assert!(bundle.path().join("run.sh").exists());
    }

    #[test]
    fn failure_status_is_reported_with_stderr() {
        let bundle = script_bundle();
        let t = LocalTransport::in_place();
        let placed = t.upload(bundle.path()).unwrap();
        let out = t
            .run(&placed, "fail.sh", &[], &[], Duration::from_secs(20))
            .unwrap();
        assert_eq!(out.status, Some(3));
        assert_eq!(out.stdout, "partial\n");
        assert_eq!(out.stderr, "boom\n");
        let err = out.require_success("local", "fail.sh").unwrap_err();
        assert_eq!(
            err.to_string(),
            "local: `fail.sh` failed (exit status 3): boom"
        );
    }

    #[test]
    fn timeout_kills() {
        let bundle = script_bundle();
        let t = LocalTransport::in_place();
        let placed = t.upload(bundle.path()).unwrap();
        let start = Instant::now();
        let err = t
            .run(&placed, "sleep.sh", &[], &[], Duration::from_secs(1))
            .unwrap_err();
        let took = start.elapsed();
        assert!(matches!(err, DeviceError::Timeout { .. }), "{err:?}");
        assert!(took < Duration::from_millis(2500), "{took:?}");
        assert_eq!(
            err.to_string(),
            "local: timed out after 1.0 s while running sleep.sh"
        );
    }

    #[test]
    fn background_grandchild_does_not_block() {
        let bundle = tempfile::tempdir().unwrap();
        // the grandchild inherits stdout and keeps it open after the script exits
        write_script(bundle.path(), "bg.sh", "sleep 5 & echo started");
        let t = LocalTransport::in_place();
        let placed = t.upload(bundle.path()).unwrap();
        let start = Instant::now();
        let out = t
            .run(&placed, "bg.sh", &[], &[], Duration::from_secs(20))
            .unwrap();
        assert_eq!(out.status, Some(0));
        assert_eq!(out.stdout, "started\n");
        assert!(start.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn large_output_does_not_deadlock() {
        let bundle = tempfile::tempdir().unwrap();
        write_script(
            bundle.path(),
            "big.sh",
            "head -c 1000000 /dev/zero | tr '\\0' e >&2\n\
             head -c 5000000 /dev/zero | tr '\\0' o\n\
             head -c 1000000 /dev/zero | tr '\\0' f >&2",
        );
        let t = LocalTransport::in_place();
        let placed = t.upload(bundle.path()).unwrap();
        let out = t
            .run(&placed, "big.sh", &[], &[], Duration::from_secs(60))
            .unwrap();
        assert_eq!(out.status, Some(0));
        assert_eq!(out.stdout.len(), 5_000_000);
        assert!(out.stdout.bytes().all(|b| b == b'o'));
        // stderr keeps its last STDERR_CAP bytes
        assert_eq!(out.stderr.len(), crate::device::STDERR_CAP);
        assert!(out.stderr.ends_with('f'));
        assert!(out.stderr.starts_with('e'));
    }

    #[test]
    fn bad_input_gives_errors() {
        let bundle = script_bundle();
        let t = LocalTransport::new();
        let missing = bundle.path().join("nope");
        let err = t.upload(&missing).unwrap_err();
        assert!(matches!(err, DeviceError::Io { .. }), "{err:?}");
        let err = t.upload(&bundle.path().join("run.sh")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");

        let placed = t.upload(bundle.path()).unwrap();
        let err = t
            .run(&placed, "nope", &[], &[], Duration::from_secs(5))
            .unwrap_err();
        assert!(matches!(err, DeviceError::Io { .. }), "{err:?}");
        assert!(err.to_string().starts_with("local: "), "{err}");
        let env = vec![("A=B".to_string(), String::new())];
        let err = t
            .run(&placed, "run.sh", &[], &env, Duration::from_secs(5))
            .unwrap_err();
        assert!(matches!(err, DeviceError::Invalid { .. }), "{err:?}");
        let out = tempfile::tempdir().unwrap();
        let err = t
            .download(&placed, "missing.json", &out.path().join("r.json"))
            .unwrap_err();
        assert!(matches!(err, DeviceError::Io { .. }), "{err:?}");
        let err = t
            .download(&placed, "../x", &out.path().join("r.json"))
            .unwrap_err();
        assert!(matches!(err, DeviceError::Invalid { .. }), "{err:?}");
        t.cleanup(&placed).unwrap();
        // a second cleanup finds nothing to remove
        t.cleanup(&placed).unwrap();
    }
}
