//! One writer per output at a time: an exclusive lock on a file beside the output,
//! `.<name>.onnx-prune-lock`, taken before any work and removed when the run ends. A second
//! run writing the same output fails at once, saying so.
//!
//! The lock file is also the journal of the run: every file the run creates before its commit
//! under a name (data files under fresh names, named temporary files) and every file it will
//! remove after it is noted there first. A run killed outright (SIGKILL, power loss) leaves
//! its lock file behind; the next run for the same output takes it and removes the noted
//! files that the model now at the output does not read.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::write::temp::dir_of;
use crate::write::unfinished::{listed_at_once, Pending};

/// A held lock on an output.
pub(crate) struct Lock {
    file: File,
    path: PathBuf,
    _pending: Pending,
}

/// The lock file of `target`.
fn lock_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir_of(target).join(format!(".{name}.onnx-prune-lock"))
}

impl Lock {
    /// Locks `target` (a real path, named by `flag` in messages), then removes what a killed
    /// run for it left behind, sparing `inputs` (real paths).
    pub(crate) fn take(target: &Path, flag: &str, inputs: &BTreeSet<PathBuf>) -> Result<Lock> {
        let path = lock_path(target);
        let fail = |e: io::Error| Error::write_output(flag, target, e);
        loop {
            // Listed for removal on interruption as soon as it is ours.
            let (file, pending) = listed_at_once(|| {
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .open(&path)?;
                // SAFETY: a valid descriptor.
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok((file, Pending::new(&path)))
            })
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock => fail(io::Error::other(format!(
                    "another onnx-prune run is writing it (it holds `{}`); wait for it to \
                     finish",
                    path.display()
                ))),
                _ => fail(e),
            })?;
            // The lock file may have been removed by the run that held it before we locked
            // it: then ours is not the file that others open; start again.
            let ours = file.metadata().map_err(fail)?;
            match std::fs::symlink_metadata(&path) {
                Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {}
                _ => continue,
            }
            let mut lock = Lock {
                file,
                _pending: pending,
                path,
            };
            lock.clean(target, inputs).map_err(fail)?;
            return Ok(lock);
        }
    }

    /// Notes `path` as created (or to be removed) by this run, before it is.
    pub(crate) fn note(&mut self, path: &Path) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let mut line = path.as_os_str().as_bytes().to_vec();
        line.push(b'\n');
        self.file.write_all(&line)
    }

    /// Makes the notes durable (before data that a power loss could orphan is synced).
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Removes the files an earlier, killed run noted that the model now at `target` does not
    /// read (and that are not `inputs` of this run), then clears the notes.
    fn clean(&mut self, target: &Path, inputs: &BTreeSet<PathBuf>) -> io::Result<()> {
        let mut notes = Vec::new();
        self.file.read_to_end(&mut notes)?;
        if notes.is_empty() {
            return Ok(());
        }
        let read = read_by(target);
        let noted = notes
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                use std::os::unix::ffi::OsStrExt;
                PathBuf::from(std::ffi::OsStr::from_bytes(line))
            });
        for path in noted {
            let real = path.canonicalize().ok();
            let spared = real
                .as_ref()
                .is_none_or(|r| read.contains(r) || inputs.contains(r) || r == target);
            if !spared {
                std::fs::remove_file(&path)?;
            }
        }
        self.file.set_len(0)?;
        self.file.sync_data()
    }
}

/// Real paths of the files the model at `path` reads: itself and its external data (nothing
/// when it is not a model).
pub(crate) fn read_by(path: &Path) -> BTreeSet<PathBuf> {
    let Ok(model) = Model::load(path) else {
        return BTreeSet::new();
    };
    let dir = dir_of(path);
    model
        .external_files()
        .keys()
        .filter_map(|location| dir.join(location).canonicalize().ok())
        .chain(path.canonicalize().ok())
        .collect()
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Removed while still held, so that no other run locks a file about to go.
        let _ = std::fs::remove_file(&self.path);
    }
}
