//! A spinner naming the current phase of long work, or a bar counting its steps, on a terminal
//! only.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows what is being done; hidden when stderr is not a terminal (pipelines, CI).
pub struct Progress(ProgressBar);

impl Progress {
    /// Starts a spinner.
    pub fn start() -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress(bar)
    }

    /// Names the phase now running.
    pub fn phase(&self, message: &'static str) {
        self.0.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"),
        );
        self.0.set_message(message);
    }

    /// Names a phase of `total` steps, counted by [`Progress::step`] (from any thread).
    pub fn steps(&self, message: &'static str, total: u64) {
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.set_style(
            ProgressStyle::with_template("{spinner} {msg} {pos}/{len} [{bar:20}] eta {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        self.0.set_message(message);
    }

    /// Counts one step of the current phase.
    pub fn step(&self) {
        self.0.inc(1);
    }

    /// Prints a warning on stderr without garbling the spinner.
    pub fn warn(&self, message: &str) {
        self.0.suspend(|| eprintln!("warning: {message}"));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
