//! Temporary files of writes in progress, so that an interrupted run (Ctrl-C, SIGTERM) can
//! remove them before it exits: a temporary file is deleted when dropped, but a process killed
//! by a signal runs no destructors.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
