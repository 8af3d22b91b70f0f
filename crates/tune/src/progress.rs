//! How long work tells its caller where it is: a small trait the CLI implements with a progress
//! bar, and that other front ends implement as they like (or not at all, with `()`).

/// Receives the phases and steps of long work. Every method may be called from any thread.
pub trait Progress: Sync {
    /// A new phase of unknown length begins.
    fn phase(&self, _what: &'static str) {}
    /// A new phase of `total` steps begins.
    fn steps(&self, _what: &'static str, _total: u64) {}
    /// One step of the current phase is done.
    fn step(&self) {}
}

/// No progress shown.
impl Progress for () {}
