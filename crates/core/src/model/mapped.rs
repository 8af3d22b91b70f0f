//! Mapped input files, and what happens when one changes under the mapping: another program
//! truncating (or rewriting, which truncates first) a mapped file makes the next read of a
//! vanished page raise SIGBUS. With [`catch_changed_inputs`], that ends the run with a message
//! naming the file and the files of writes in progress removed, instead of a bare "Bus error".
//!
//! The alternative, reading inputs into memory instead of mapping them, costs a copy of every
//! input: on the 1 GiB benchmark model (bench/run.sh, see the README) it made `prune` take
//! longer for no gain on the common path, so inputs stay mapped and the signal is caught.

use std::ffi::CString;
use std::ops::Deref;
use std::path::Path;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Mappings tracked at once (candidates of a search map a few each).
const SLOTS: usize = 256;

/// A mapped range and the path it shows in messages (a leaked C string; null where free).
struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    path: AtomicPtr<libc::c_char>,
}

static MAPS: [Slot; SLOTS] = [const {
    Slot {
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        path: AtomicPtr::new(null_mut()),
    }
}; SLOTS];

/// A read-only mapping of a file, tracked while it lives.
pub struct Mapped {
    map: memmap2::Mmap,
    slot: Option<(usize, *mut libc::c_char)>,
}

// SAFETY: the pointer is only a key for the slot it was stored in.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Tracks `map`, shown as `path` in messages.
    pub(crate) fn new(map: memmap2::Mmap, path: &Path) -> Mapped {
        use std::os::unix::ffi::OsStrExt;
        let slot = CString::new(path.as_os_str().as_bytes())
            .ok()
            .and_then(|c| {
                let raw = c.into_raw();
                let free = MAPS.iter().position(|slot| {
                    slot.path
                        .compare_exchange(null_mut(), raw, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                });
                match free {
                    Some(i) => {
                        MAPS[i]
                            .start
                            .store(map.as_ptr() as usize, Ordering::Release);
                        MAPS[i].len.store(map.len(), Ordering::Release);
                        Some((i, raw))
                    }
                    None => {
                        // SAFETY: from `into_raw` above, stored nowhere.
                        drop(unsafe { CString::from_raw(raw) });
                        None
                    }
                }
            });
        Mapped { map, slot }
    }
}

impl Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        let Some((i, raw)) = self.slot else { return };
        MAPS[i].len.store(0, Ordering::Release);
        MAPS[i].start.store(0, Ordering::Release);
        let ours =
            MAPS[i]
                .path
                .compare_exchange(raw, null_mut(), Ordering::AcqRel, Ordering::Acquire);
        if ours.is_ok() {
            // SAFETY: from `into_raw`; the slot no longer holds it.
            drop(unsafe { CString::from_raw(raw) });
        }
    }
}

/// The exit code after a changed input.
static EXIT_CODE: AtomicI32 = AtomicI32::new(2);

/// The SIGBUS action before ours, for faults that are not about a mapped input.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Ends the run when a mapped input changes under it (SIGBUS in one of its pages): prints
/// `error: <file>: changed while onnx-prune was reading it ...` on stderr, removes the files
/// of writes in progress, and exits with `exit_code`. Other SIGBUS faults go to the handler
/// that was there before.
pub fn catch_changed_inputs(exit_code: i32) {
    EXIT_CODE.store(exit_code, Ordering::SeqCst);
    // SAFETY: installing a handler that only uses async-signal-safe calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            on_sigbus;
        action.sa_sigaction = handler as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, &action, &mut previous) == 0 {
            let _ = PREVIOUS.set(previous);
        }
    }
}

/// Writes `bytes` to stderr (async-signal-safe).
fn say(bytes: &[u8]) {
    // SAFETY: a valid buffer.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

extern "C" fn on_sigbus(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler.
    let address = unsafe { (*info).si_addr() } as usize;
    for slot in &MAPS {
        let path = slot.path.load(Ordering::Acquire);
        let start = slot.start.load(Ordering::Acquire);
        let len = slot.len.load(Ordering::Acquire);
        if path.is_null() || !(start..start + len).contains(&address) {
            continue;
        }
        say(b"error: ");
        // SAFETY: a NUL-terminated string that lives while its mapping is read.
        say(unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes());
        say(
            b": changed while onnx-prune was reading it (truncated or rewritten by another \
              program); nothing was written\n",
        );
        crate::write::remove_unfinished_outputs();
        // SAFETY: ends the process without running anything else.
        unsafe { libc::_exit(EXIT_CODE.load(Ordering::SeqCst)) };
    }
    // Not a mapped input: the previous action handles the fault when the access repeats.
    // SAFETY: restoring the action that was installed before ours (or the default).
    unsafe {
        match PREVIOUS.get() {
            Some(previous) => libc::sigaction(libc::SIGBUS, previous, null_mut()),
            None => {
                libc::signal(libc::SIGBUS, libc::SIG_DFL);
                0
            }
        };
    }
}
