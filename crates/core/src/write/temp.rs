//! Temporary files in the directory of the file they become (so that putting them in place is
//! one atomic rename), with the permissions that file should have.
//!
//! On Linux a temporary file has no name while it is written (`O_TMPFILE`): a run killed at
//! any moment leaves nothing behind. It gets a name only at the commit, linked in through
//! `/proc/self/fd` and renamed over its target at once. Where that is not possible (another
//! system, a file system without `O_TMPFILE`, no `/proc`), it is a hidden file
//! `.onnx-prune-XXXXXX`, noted in the output's lock file so that the next run for that output
//! removes it if this one was killed.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::write::lock::Lock;
use crate::write::unfinished::{listed_at_once, Pending};

/// Prefix of temporary file names.
pub(crate) const TEMP_PREFIX: &str = ".onnx-prune-";

/// The permissions a new output gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Exactly these bits: those of the file it replaces.
    Exact(u32),
    /// These bits less the umask: a new file (`0o666`), or one derived from an input (the
    /// input's bits, so private weights stay private).
    Masked(u32),
}

impl Mode {
    /// The mode of `path` when it exists (exactly), else `new`.
    pub(crate) fn of_replaced(path: &Path, new: Mode) -> Mode {
        match std::fs::metadata(path) {
            Ok(meta) => Mode::Exact(meta.permissions().mode() & 0o7777),
            Err(_) => new,
        }
    }

    pub(crate) fn bits(self) -> u32 {
        match self {
            Mode::Exact(bits) | Mode::Masked(bits) => bits,
        }
    }

    /// Gives `file` exactly the bits asked for (creation applied the umask).
    fn apply(self, file: &File) -> io::Result<()> {
        match self {
            Mode::Exact(bits) => file.set_permissions(std::fs::Permissions::from_mode(bits)),
            Mode::Masked(_) => Ok(()),
        }
    }
}

/// The directory of `path` (`.` for a bare file name).
pub(crate) fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A temporary file that becomes `target` when committed; removed if dropped before.
pub(crate) struct Temp {
    file: File,
    target: PathBuf,
    /// The temporary name, for a named file (removed on drop), and its entry on the list of
    /// files removed on interruption.
    named: Option<(tempfile::TempPath, Pending)>,
}

impl Temp {
    /// A temporary file for `target`, in its directory, with `mode`; `lock` notes a named one.
    pub(crate) fn create(target: &Path, mode: Mode, lock: &mut Lock) -> Result<Temp> {
        let dir = dir_of(target);
        let fail = |e: io::Error| Error::write(target, e);
        if let Some(file) = unnamed(dir, mode.bits()).map_err(fail)? {
            mode.apply(&file).map_err(fail)?;
            return Ok(Temp {
                file,
                target: target.to_path_buf(),
                named: None,
            });
        }
        let (file, path, pending) = listed_at_once(|| {
            let temp = tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .make_in(dir, |path| {
                    lock.note(path)?;
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .mode(mode.bits())
                        .open(path)
                })?;
            let (file, path) = temp.into_parts();
            let pending = Pending::new(&path);
            Ok::<_, std::io::Error>((file, path, pending))
        })
        .map_err(fail)?;
        mode.apply(&file).map_err(fail)?;
        Ok(Temp {
            file,
            target: target.to_path_buf(),
            named: Some((path, pending)),
        })
    }

    /// The open file, to write to.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The file it becomes.
    pub(crate) fn target(&self) -> &Path {
        &self.target
    }

    /// A path its bytes can be read through until it is committed.
    pub(crate) fn read_path(&self) -> PathBuf {
        match &self.named {
            Some((path, _)) => path.to_path_buf(),
            None => {
                use std::os::fd::AsRawFd;
                PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
            }
        }
    }

    /// Puts the file in place of its target: one atomic rename (an unnamed file is first
    /// linked in under a temporary name, or straight as the target when there is none yet).
    pub(crate) fn commit(self, lock: &mut Lock) -> Result<()> {
        let target = self.target;
        let fail = |e: io::Error| Error::write(&target, e);
        let Some((path, pending)) = self.named else {
            return link_in(&self.file, &target, lock).map_err(fail);
        };
        path.persist(&target).map_err(|e| fail(e.error))?;
        drop(pending);
        Ok(())
    }
}

/// An unnamed file in `dir` (`O_TMPFILE`), or `None` where the system cannot make one or name
/// it later through `/proc/self/fd`.
#[cfg(target_os = "linux")]
fn unnamed(dir: &Path, mode: u32) -> io::Result<Option<File>> {
    if !Path::new("/proc/self/fd").is_dir() {
        return Ok(None);
    }
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(mode)
        .open(dir)
    {
        Ok(file) => Ok(Some(file)),
        // Not supported by this kernel or file system: a named file instead.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn unnamed(_dir: &Path, _mode: u32) -> io::Result<Option<File>> {
    Ok(None)
}

/// Gives the unnamed `file` the name `target`: linked in directly when `target` does not
/// exist, else under a temporary name renamed over it.
#[cfg(target_os = "linux")]
fn link_in(file: &File, target: &Path, lock: &mut Lock) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let source = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let link = |to: &Path| -> io::Result<()> {
        let to = CString::new(to.as_os_str().as_bytes())?;
        // SAFETY: two NUL-terminated paths.
        let done = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                source.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if done == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    match link(target) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let named = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .make_in(dir_of(target), |path| {
            lock.note(path)?;
            link(path)
        })?;
    named.into_temp_path().persist(target).map_err(|e| e.error)
}

#[cfg(not(target_os = "linux"))]
fn link_in(_file: &File, _target: &Path, _lock: &mut Lock) -> io::Result<()> {
    unreachable!("unnamed temporary files are made on Linux only")
}
