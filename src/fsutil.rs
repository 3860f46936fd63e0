//! File-system helpers, one definition each.
//!
//! Atomic file writes: every artifact is written to a temporary file in the same directory,
//! fsynced, then renamed over the destination, so a reader (or a killed run) sees either the old
//! file or the new one, never a torn one. tract mmaps models, so a file is never rewritten in
//! place. Also: fresh temporary directories ([`fresh_temp_dir`], [`unique_suffix`]) and the
//! `PATH` lookup of programs ([`find_program`]).
//!
//! One command at a time per run directory: [`DirLock`] is an exclusive advisory lock on
//! `<dir>/.lock`, and [`clean_stale_temps`] removes what killed processes left behind. Every
//! temporary name made here carries its owner's pid (`.<name>.tmp-<pid>-<suffix>`) for that.

use std::collections::hash_map::RandomState;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Writes `bytes` to `path` atomically, creating parent directories.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    // unique per call: two threads (or processes) writing the same file never share it; the
    // pid lets `clean_stale_temps` find the leftovers of a killed process
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        unique_suffix()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Serialises `value` as pretty JSON (with a trailing newline) and writes it atomically.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Puts the complete directory `new` at `dir`, replacing an earlier `dir`: that one is moved
/// to `old` first and deleted only once `new` is in place, so a run killed in between leaves
/// the earlier tree in `old`, never a half-written one at `dir`. A stale `old` is removed first.
pub fn replace_dir(new: &Path, dir: &Path, old: &Path) -> io::Result<()> {
    if old.exists() {
        fs::remove_dir_all(old)?;
    }
    if dir.exists() {
        fs::rename(dir, old)?;
    }
    fs::rename(new, dir)?;
    if old.exists() {
        let _ = fs::remove_dir_all(old);
    }
    Ok(())
}

/// Hex SHA-256 of a byte slice (the runner's definition: bundle digests must agree).
pub use distill_edge_schema::sha256_hex;

/// Hex SHA-256 of a file's contents.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut f = File::open(path)?;
    io::copy(&mut f, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// A random 16-hex-digit suffix for file and directory names (std only: `RandomState` keys
/// are seeded randomly per process; time, pid and a counter make each call differ).
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", h.finish())
}

/// A directory this process created; removed with its contents when dropped, unless
/// [`TempDir::keep`] takes it.
#[derive(Debug)]
pub struct TempDir(Option<PathBuf>);

impl TempDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.0
            .as_deref()
            .expect("a TempDir has its path until dropped or kept")
    }

    /// Keeps the directory (it is no longer removed on drop) and returns its path.
    pub fn keep(mut self) -> PathBuf {
        self.0
            .take()
            .expect("a TempDir has its path until dropped or kept")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Creates a new, empty directory `<system temp dir>/<prefix>-<unique suffix>`. It is created
/// with `create_dir` (which fails on an existing name), so it belongs to the caller.
pub fn fresh_temp_dir(prefix: &str) -> io::Result<TempDir> {
    create_unique_dir(&std::env::temp_dir(), &format!("{prefix}-"))
}

/// Creates `<parent>/<stem><unique suffix>` with `create_dir`, retrying on a name clash.
fn create_unique_dir(parent: &Path, stem: &str) -> io::Result<TempDir> {
    let mut attempt = 0;
    loop {
        let dir = parent.join(format!("{stem}{}", unique_suffix()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(TempDir(Some(dir))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("creating {}: {e}", dir.display()),
                ));
            }
        }
    }
}

/// Creates a new, empty directory `.<name>.tmp-<pid>-<unique suffix>` beside `dest` (same parent,
/// so it can be renamed onto `dest`, e.g. with [`replace_dir`] after [`TempDir::keep`]),
/// creating the parent first. Removed on drop, so a failed fill leaves nothing behind.
pub fn sibling_temp_dir(dest: &Path) -> io::Result<TempDir> {
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_string_lossy()
        .into_owned();
    let parent = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent)?;
    create_unique_dir(parent, &format!(".{name}.tmp-{}-", std::process::id()))
}

/// The lock file [`DirLock`] keeps in a directory (left in place: removing it would let two
/// processes lock two different files of the same name).
pub const LOCK_FILE: &str = ".lock";

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "{} is in use by another distill-edge {holder} (pid {}); wait for it or stop it",
        dir.display(),
        pid.map_or_else(|| "unknown".to_string(), |p| p.to_string())
    )]
    Busy {
        /// The locked directory.
        dir: PathBuf,
        /// What the holder runs (`train`, `build`, ...), as it wrote it in the lock file.
        holder: String,
        /// The holder's pid, when the lock file names it.
        pid: Option<u32>,
    },
    /// The directory or its lock file could not be created or locked.
    #[error("{}: cannot lock: {source}", path.display())]
    Io {
        /// Directory or lock file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// An exclusive advisory lock on a run directory: `<dir>/.lock`, locked with `flock` and
/// holding `<pid> <what>` of its holder. Held until dropped; the operating system releases it
/// when the process dies, so a killed command never leaves a directory locked. The file is
/// opened close-on-exec, so programs the holder starts do not inherit the lock.
///
/// A second command on a locked directory does not wait: [`DirLock::acquire`] refuses at once
/// with [`LockError::Busy`], naming the directory and the holder's pid.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    dir: PathBuf,
}

impl DirLock {
    /// Creates `dir` if needed and locks it for this process; `what` (the command, e.g.
    /// `train`) is recorded for the message another command gets.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self, LockError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LockError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let text = fs::read_to_string(&path).unwrap_or_default();
                let mut words = text.split_whitespace();
                let pid = words.next().and_then(|p| p.parse().ok());
                let holder = words.next().unwrap_or("command").to_string();
                return Err(LockError::Busy {
                    dir: dir.to_path_buf(),
                    holder,
                    pid,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        let record = format!("{} {what}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| (&file).write_all(record.as_bytes()))
            .map_err(io_err(&path))?;
        Ok(Self {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The pid that owns a temporary name made by this crate: `.<name>.tmp-<pid>-<hex suffix>`
/// ([`write_atomic`], [`sibling_temp_dir`]), `.<name>.old-<pid>-<hex suffix>`, `.<name>.tmp-<pid>` and `.<name>.old-<pid>`
/// (bundle directories). `None` for any other name.
pub fn temp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let start = [".tmp-", ".old-"]
        .iter()
        .filter_map(|m| rest.rfind(m).map(|i| i + m.len()))
        .max()?;
    let tail = &rest[start..];
    let (pid, suffix) = match tail.split_once('-') {
        Some((pid, suffix)) => (pid, Some(suffix)),
        None => (tail, None),
    };
    if let Some(s) = suffix
        && (s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` is alive: this process, or `/proc/<pid>` exists. Where there is no
/// `/proc` every process counts as alive (nothing is removed).
pub fn process_alive(pid: u32) -> bool {
    pid == std::process::id()
        || !Path::new("/proc/self").exists()
        || Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes the temporary files and directories in `dir` and its subdirectories (see
/// [`temp_owner`]) whose owning process is dead: what a killed run left behind. A temporary
/// of a live process is never touched; symbolic links are not followed. Returns what was
/// removed. Call it while holding the directory's [`DirLock`].
pub fn clean_stale_temps(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    clean_into(dir, &mut removed)?;
    Ok(removed)
}

fn clean_into(dir: &Path, removed: &mut Vec<PathBuf>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        let name = entry.file_name().to_string_lossy().into_owned();
        match temp_owner(&name) {
            Some(pid) if !process_alive(pid) => {
                let result = if kind.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                match result {
                    Ok(()) => removed.push(path),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("removing {}: {e}", path.display()),
                        ));
                    }
                }
            }
            Some(_) => {}
            None if kind.is_dir() => clean_into(&path, removed)?,
            None => {}
        }
    }
    Ok(())
}

/// Where `program` can be run from: a path with a slash that is an executable file, or the
/// first executable file of that name in `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    fn executable(path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let path = PathBuf::from(program);
        return executable(&path).then_some(path);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.json"]);
    }

    #[test]
    fn sha256_of_abc() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn unique_suffixes_differ() {
        let a = unique_suffix();
        let b = unique_suffix();
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }

    #[test]
    fn fresh_temp_dirs_are_distinct_and_removed_on_drop() {
        let a = fresh_temp_dir("distill-edge-test").unwrap();
        let b = fresh_temp_dir("distill-edge-test").unwrap();
        assert_ne!(a.path(), b.path());
        assert!(a.path().is_dir());
        fs::write(a.path().join("f"), b"x").unwrap();
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
        let kept = b.keep();
        assert!(kept.is_dir());
        fs::remove_dir_all(&kept).unwrap();
    }

    #[test]
    fn sibling_temp_dirs_sit_beside_their_destination() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("sub/bundle");
        let tmp = sibling_temp_dir(&dest).unwrap();
        assert_eq!(tmp.path().parent(), dest.parent());
        let name = tmp
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with(".bundle.tmp-"), "{name}");
        let kept = tmp.keep();
        replace_dir(&kept, &dest, &root.path().join("sub/.bundle.old")).unwrap();
        assert!(dest.is_dir() && !kept.exists());
        assert!(sibling_temp_dir(Path::new("/")).is_err());
    }

    /// A pid no process has: above Linux's largest `pid_max` (2^22).
    const DEAD_PID: u32 = 4_194_305;

    #[test]
    fn temporary_names_carry_their_owner_pid() {
        let me = std::process::id();
        assert_eq!(
            temp_owner(".model.ckpt.tmp-1234-00ff00ff00ff00ff"),
            Some(1234)
        );
        assert_eq!(temp_owner(".bundle.tmp-77"), Some(77));
        assert_eq!(temp_owner(".bundle.old-77"), Some(77));
        for not_temp in [
            "model.ckpt",
            ".lock",
            "x.tmp-12",
            ".x.tmp-",
            ".x.tmp-12-",
            ".x.tmp-12-zz",
            ".x.tmp-abc",
            ".x.tmp-1234567890123456", // the old pid-less suffix
        ] {
            assert_eq!(temp_owner(not_temp), None, "{not_temp}");
        }
        // what this module makes is found again
        let dir = tempfile::tempdir().unwrap();
        let tmp = sibling_temp_dir(&dir.path().join("bundle")).unwrap();
        let name = tmp
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(temp_owner(&name), Some(me), "{name}");
    }

    #[test]
    fn stale_temps_of_dead_processes_are_removed_and_live_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let me = std::process::id();
        let dead_file = r.join(format!(".model.ckpt.tmp-{DEAD_PID}-0123456789abcdef"));
        let dead_dir = r.join(format!("sub/.bundle.tmp-{DEAD_PID}"));
        let live_file = r.join(format!(".metrics.json.tmp-{me}-0123456789abcdef"));
        let keep = [
            r.join("model.ckpt"),
            r.join("sub/bundle/x"),
            r.join(".lock"),
        ];
        fs::create_dir_all(dead_dir.join("inner")).unwrap();
        fs::write(dead_dir.join("inner/f"), b"x").unwrap();
        fs::write(&dead_file, b"x").unwrap();
        fs::write(&live_file, b"x").unwrap();
        for k in &keep {
            fs::create_dir_all(k.parent().unwrap()).unwrap();
            fs::write(k, b"x").unwrap();
        }
        let mut removed = clean_stale_temps(r).unwrap();
        removed.sort();
        assert_eq!(removed, [dead_file.clone(), dead_dir.clone()]);
        assert!(!dead_file.exists() && !dead_dir.exists());
        assert!(live_file.exists());
        for k in &keep {
            assert!(k.exists(), "{}", k.display());
        }
        assert!(clean_stale_temps(&r.join("missing")).unwrap().is_empty());
    }

    #[test]
    fn a_locked_directory_is_refused_until_released() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("runs/x");
        let first = DirLock::acquire(&dir, "train").unwrap();
        assert_eq!(first.dir(), dir);
        let err = DirLock::acquire(&dir, "build").unwrap_err();
        let text = err.to_string();
        assert!(
            text.ends_with(&format!(
                "runs/x is in use by another distill-edge train (pid {}); wait for it or stop it",
                std::process::id()
            )),
            "{text}"
        );
        drop(first);
        let again = DirLock::acquire(&dir, "build").unwrap();
        let record = fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert_eq!(record, format!("{} build\n", std::process::id()));
        drop(again);
    }

    #[test]
    fn finds_programs_on_path_and_by_path() {
        assert!(find_program("sh").is_some_and(|p| p.is_absolute() || p.ends_with("sh")));
        assert_eq!(find_program("/bin/sh"), Some(PathBuf::from("/bin/sh")));
        assert_eq!(find_program("distill-edge-no-such-program"), None);
        assert_eq!(find_program(""), None);
        // a file that is not executable is not a program
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("data");
        fs::write(&f, b"x").unwrap();
        assert_eq!(find_program(f.to_str().unwrap()), None);
    }
}
