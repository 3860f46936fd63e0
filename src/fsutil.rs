//! File-system helpers, one definition each.
//!
//! Atomic file writes: every artifact is written to a temporary file in the same directory,
//! fsynced, then renamed over the destination, so a reader (or a killed run) sees either the old
//! file or the new one, never a torn one. tract mmaps models, so a file is never rewritten in
//! place. Also: fresh temporary directories ([`fresh_temp_dir`], [`unique_suffix`]) and the
//! `PATH` lookup of programs ([`find_program`]).

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
    // unique per call: two threads (or processes) writing the same file never share it
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
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

/// Creates a new, empty directory `.<name>.tmp-<unique suffix>` beside `dest` (same parent,
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
    create_unique_dir(parent, &format!(".{name}.tmp-"))
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
