//! Files of writes in progress, removed when a run is interrupted before its outputs are
//! committed, and the phase of the run's commit that decides what an interruption does.
//!
//! A temporary file is deleted when dropped, but a process that exits from a signal handler
//! runs no destructors: every named file a write creates before its commit is listed here, in
//! a table that a signal handler may read (atomics and `unlink` only, no lock, no allocation).

use std::ffi::CString;
use std::path::Path;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::Mutex;

/// Files registered at once: parallel candidate writes hold a few each.
const SLOTS: usize = 256;

/// Paths (leaked C strings) of files to remove on interruption; null where free.
static PENDING: [AtomicPtr<libc::c_char>; SLOTS] = [const { AtomicPtr::new(null_mut()) }; SLOTS];

/// Keeps a path on the list of files to remove on interruption while it lives.
pub(crate) struct Pending(Option<(usize, *mut libc::c_char)>);

// SAFETY: the pointer is only a key for the slot it was stored in.
unsafe impl Send for Pending {}
unsafe impl Sync for Pending {}

impl Pending {
    /// Lists `path` (a full list leaves it out: it is then removed only when dropped).
    pub(crate) fn new(path: &Path) -> Pending {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            return Pending(None);
        };
        let raw = c.into_raw();
        for (i, slot) in PENDING.iter().enumerate() {
            let free = slot.compare_exchange(null_mut(), raw, Ordering::AcqRel, Ordering::Acquire);
            if free.is_ok() {
                return Pending(Some((i, raw)));
            }
        }
        // SAFETY: `raw` came from `into_raw` above and was stored nowhere.
        drop(unsafe { CString::from_raw(raw) });
        Pending(None)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some((i, raw)) = self.0 else { return };
        // An interruption may have claimed the slot (and is removing the file); then the
        // string stays allocated until the process exits.
        let ours =
            PENDING[i].compare_exchange(raw, null_mut(), Ordering::AcqRel, Ordering::Acquire);
        if ours.is_ok() {
            // SAFETY: `raw` came from `into_raw` and no one else holds it any more.
            drop(unsafe { CString::from_raw(raw) });
        }
    }
}

/// Deletes the files of every write still in progress. Safe to call from a signal handler;
/// call it just before exiting, so that an interrupted run leaves nothing behind.
pub fn remove_unfinished_outputs() {
    for slot in &PENDING {
        let path = slot.swap(null_mut(), Ordering::AcqRel);
        if !path.is_null() {
            // SAFETY: a NUL-terminated path that is never freed once claimed here.
            unsafe { libc::unlink(path) };
        }
    }
}

/// Whether the run's outputs are being put in place (or are): from then on an interruption
/// no longer undoes anything.
static COMMITTING: Mutex<bool> = Mutex::new(false);

/// Whether an interruption came once the commit had begun.
static LATE: AtomicBool = AtomicBool::new(false);

/// What an interruption (Ctrl-C, SIGTERM, SIGHUP) does, by when it comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// Before the commit: the files in progress were removed and nothing was changed. The
    /// commit stays blocked: exit now.
    NothingChanged,
    /// During or after the commit: the outputs are (being) put in place; the run finishes.
    TooLate,
}

/// Handles an interruption of the run: before the commit, removes the files in progress and
/// keeps the commit from starting (the caller exits); after it, notes it (see
/// [`interrupted_too_late`]).
pub fn interrupt() -> Interruption {
    let committing = COMMITTING.lock().unwrap_or_else(|e| e.into_inner());
    if *committing {
        LATE.store(true, Ordering::SeqCst);
        return Interruption::TooLate;
    }
    remove_unfinished_outputs();
    // Held until the process exits: the run can no longer begin its commit.
    std::mem::forget(committing);
    Interruption::NothingChanged
}

/// Whether the run was interrupted once its commit had begun (and finished nevertheless).
pub fn interrupted_too_late() -> bool {
    LATE.load(Ordering::SeqCst)
}

/// Runs `create`, which makes a file and lists it ([`Pending`]), with interruptions held off:
/// an interruption (handled on another thread) waits until the file is listed, and so removes
/// it, instead of falling between its creation and its listing.
pub(crate) fn listed_at_once<T>(create: impl FnOnce() -> T) -> T {
    let _held = COMMITTING.lock().unwrap_or_else(|e| e.into_inner());
    create()
}

/// Marks the beginning of the run's commit; waits for (and never returns after) an
/// interruption being handled.
pub(crate) fn begin_commit() {
    *COMMITTING.lock().unwrap_or_else(|e| e.into_inner()) = true;
}
