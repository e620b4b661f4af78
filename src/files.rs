//! Writing and reading the files hecc produces, safely.
//!
//! Contract:
//! - [`write_atomic`] and [`write_private`] replace a file in one step: the bytes go to an
//!   unnamed temporary file in the target's directory (Linux `O_TMPFILE`), are flushed to disk,
//!   linked under a temporary name and renamed over the target, and the directory is flushed.
//!   A reader sees the old file or the new one, never a part; a process killed at any point
//!   leaves no stray file behind (the unnamed file vanishes with the process). Where the file
//!   system has no unnamed files, a named temporary file is used and removed on every error
//!   path; temporary files left by killed processes are removed by the next write to the same
//!   target.
//! - Secret files are created with mode 0600 in directories created with mode 0700, and
//!   [`check_private`] refuses a secret file that other users can read or write, as ssh does.
//! - [`check_output`] validates an output path before any work starts (it must not be a
//!   directory, a device or, with [`check_output_distinct`], one of the command's inputs).

use miette::{miette, Result};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The whole file at `path`; an error naming the file otherwise.
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| miette!("cannot read {}: {e}", path.display()))
}

/// Marker in the names of the named temporary files.
const TMP_MARK: &str = ".hecc-tmp.";

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| miette!("{}: not a file name", path.display()))
}

/// Checks, before any work, that `path` can be written: it is not a directory and its
/// directory exists and is writable.
pub fn check_output(path: &Path) -> Result<()> {
    file_name(path)?;
    if path.is_dir() {
        return Err(miette!(
            "{}: is a directory; give a file name to write to",
            path.display()
        ));
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            return Err(miette!(
                "{}: exists and is not a regular file (a device, pipe or socket); refusing to \
                 replace it",
                path.display()
            ));
        }
    }
    let dir = parent_dir(path);
    let meta = std::fs::metadata(dir).map_err(|e| {
        miette!(
            "cannot write {}: directory {} does not exist or cannot be read ({e})",
            path.display(),
            dir.display()
        )
    })?;
    if !meta.is_dir() {
        return Err(miette!(
            "cannot write {}: {} is not a directory",
            path.display(),
            dir.display()
        ));
    }
    if rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_err() {
        return Err(miette!(
            "cannot write {}: directory {} is not writable",
            path.display(),
            dir.display()
        ));
    }
    Ok(())
}

/// [`check_output`], and also refuses an output path that names one of the command's own
/// `inputs` (the same file under any name): the write would replace an input the user meant to
/// keep, such as a key or the ciphertexts a result answers.
pub fn check_output_distinct(path: &Path, inputs: &[&Path]) -> Result<()> {
    check_output(path)?;
    let Ok(out) = std::fs::metadata(path) else {
        return Ok(());
    };
    for input in inputs {
        let same =
            std::fs::metadata(input).is_ok_and(|m| m.dev() == out.dev() && m.ino() == out.ino());
        if same {
            return Err(miette!(
                help = "give the output another name",
                "{}: is also an input of this command ({}); refusing to overwrite it",
                path.display(),
                input.display()
            ));
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically and durably (mode 0644 before the umask).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with_mode(path, bytes, 0o644)
}

/// Writes a secret file atomically and durably, readable and writable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with_mode(path, bytes, 0o600)
}

/// Creates `dir` (and its parents) if needed; a directory created here is private (0700).
pub fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| miette!("cannot create {}: {e}", dir.display()))
}

/// Refuses a secret file that users other than its owner can read or write (unless
/// `allow_shared`), naming the file, its mode and the fix.
pub fn check_private(path: &Path, allow_shared: bool) -> Result<()> {
    let meta =
        std::fs::metadata(path).map_err(|e| miette!("cannot read {}: {e}", path.display()))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 && !allow_shared {
        return Err(miette!(
            help = format!(
                "run `chmod 600 {}`, or pass --allow-shared-key to use it anyway",
                path.display()
            ),
            "{}: secret key is accessible by other users (mode {mode:03o}); refusing to use it",
            path.display()
        ));
    }
    Ok(())
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_streamed(path, mode, &mut |w| w.write_all(bytes))
}

/// [`write_atomic`] with the content written by `fill` in pieces (through a buffer), for files
/// too large to build in memory first. `fill` may be called twice (a file system without unnamed
/// temporary files), so it must write the same bytes each time.
pub fn write_atomic_with(path: &Path, fill: &mut Fill<'_>) -> Result<()> {
    write_streamed(path, 0o644, fill)
}

/// Writes a file's content to the writer it is given.
pub type Fill<'a> = dyn FnMut(&mut dyn Write) -> std::io::Result<()> + 'a;

fn write_streamed(path: &Path, mode: u32, fill: &mut Fill<'_>) -> Result<()> {
    check_output(path)?;
    let dir = parent_dir(path);
    let name = file_name(path)?;
    remove_stale_temporaries(dir, &name);
    match write_unnamed(dir, path, &name, fill, mode) {
        Ok(()) => {}
        // No unnamed files on this file system: a named temporary file instead.
        Err(Unnamed::Unsupported) => write_named(dir, path, &name, fill, mode)?,
        Err(Unnamed::Failed(e)) => return Err(e),
    }
    sync_dir(dir);
    Ok(())
}

/// Fills `file` through a buffer and flushes it to disk.
fn fill_file(file: File, fill: &mut Fill<'_>) -> std::io::Result<File> {
    let mut w = std::io::BufWriter::with_capacity(1 << 22, file);
    fill(&mut w)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(file)
}

enum Unnamed {
    Unsupported,
    Failed(miette::Report),
}

fn temp_name(dir: &Path, name: &str) -> PathBuf {
    use rand_core::RngCore;
    let tag = rand_core::OsRng.next_u32();
    dir.join(format!(".{name}{TMP_MARK}{}.{tag:08x}", std::process::id()))
}

fn write_unnamed(
    dir: &Path,
    path: &Path,
    name: &str,
    fill: &mut Fill<'_>,
    mode: u32,
) -> Result<(), Unnamed> {
    use rustix::fs::{AtFlags, Mode, OFlags, CWD};
    let fd = match rustix::fs::openat(
        CWD,
        dir,
        OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    ) {
        Ok(fd) => fd,
        Err(_) => return Err(Unnamed::Unsupported),
    };
    let fail = |e: std::io::Error| Unnamed::Failed(miette!("cannot write {}: {e}", path.display()));
    let file = fill_file(File::from(fd), fill).map_err(fail)?;
    // Give the file a (temporary) name, then move it over the target in one step.
    let tmp = temp_name(dir, name);
    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
    if rustix::fs::linkat(CWD, proc_path.as_str(), CWD, &tmp, AtFlags::SYMLINK_FOLLOW).is_err() {
        return Err(Unnamed::Unsupported);
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Unnamed::Failed(miette!("cannot move {} into place: {e}", path.display()))
    })
}

fn write_named(dir: &Path, path: &Path, name: &str, fill: &mut Fill<'_>, mode: u32) -> Result<()> {
    let tmp = temp_name(dir, name);
    let result = (|| -> std::io::Result<()> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        fill_file(f, fill)?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        miette!("cannot write {}: {e}", path.display())
    })
}

/// Flushes a directory's entries (the rename) to disk; best effort.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Removes temporary files for target `name` in `dir` left by processes that no longer run.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}{TMP_MARK}");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = f.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The permission bits of `path` (for tests and diagnostics).
pub fn mode_of(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hecc-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writes_replace_the_file_and_leave_nothing_else() {
        let d = tmpdir("replace");
        let p = d.join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "only the target remains");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn private_files_are_owner_only_and_shared_ones_are_refused() {
        let d = tmpdir("private");
        let keys = d.join("keys");
        create_private_dir(&keys).unwrap();
        assert_eq!(mode_of(&keys), Some(0o700));
        let p = keys.join("secret.key");
        write_private(&p, b"secret").unwrap();
        assert_eq!(mode_of(&p), Some(0o600));
        check_private(&p, false).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_private(&p, false).unwrap_err().to_string();
        assert!(e.contains("mode 644"), "{e}");
        check_private(&p, true).unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let d = tmpdir("stale");
        // A pid that cannot be running (above the kernel's maximum).
        let stale = d.join(format!(".a.bin{TMP_MARK}4294967295.0"));
        std::fs::write(&stale, b"partial").unwrap();
        write_atomic(&d.join("a.bin"), b"x").unwrap();
        assert!(!stale.exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_output_paths_are_refused_before_work() {
        let d = tmpdir("check");
        assert!(check_output(&d)
            .unwrap_err()
            .to_string()
            .contains("directory"));
        let missing = d.join("no/such/dir/out.bin");
        assert!(check_output(&missing)
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        check_output(&d.join("ok.bin")).unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }
}
