//! Temporary files of writes in progress: created beside their target (so that the final
//! rename is atomic) with the permissions the target should have, and listed so that an
//! interrupted run (Ctrl-C, SIGTERM) can remove them before it exits: a temporary file is
//! deleted when dropped, but a process killed by a signal runs no destructors.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tempfile::NamedTempFile;

use crate::error::{Error, Result};

static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Keeps `path` on the list of files to remove on interruption while it lives.
pub(crate) struct Pending(PathBuf);

impl Pending {
    pub(crate) fn new(path: &Path) -> Pending {
        PENDING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.to_path_buf());
        Pending(path.to_path_buf())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = pending.iter().position(|p| *p == self.0) {
            pending.swap_remove(at);
        }
    }
}

/// Deletes the temporary files of every write still in progress. Call it from a signal handler
/// just before exiting, so that an interrupted run leaves nothing behind.
pub fn remove_unfinished_outputs() {
    let paths = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner()));
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

/// A temporary file in `target`'s directory, listed for removal on interruption while the
/// returned [`Pending`] lives. It gets the permissions of the file it will replace, or those of
/// a newly created file (0666 less the umask) rather than the temporary file's private 0600.
pub(crate) fn temp_beside(target: &Path) -> Result<(NamedTempFile, Pending)> {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".onnx-prune-");
    #[cfg(unix)]
    let permissions = match std::fs::metadata(target) {
        Ok(existing) => existing.permissions(),
        Err(_) => std::os::unix::fs::PermissionsExt::from_mode(0o666),
    };
    #[cfg(unix)]
    builder.permissions(permissions);
    let temp = builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    let pending = Pending::new(temp.path());
    Ok((temp, pending))
}
