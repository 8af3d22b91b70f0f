//! A spinner naming the current phase of long work, on a terminal only.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows what is being done; hidden when stderr is not a terminal (pipelines, CI).
pub struct Progress(ProgressBar);

impl Progress {
    /// Starts a spinner.
    pub fn start() -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress(bar)
    }

    /// Names the phase now running.
    pub fn phase(&self, message: &'static str) {
        self.0.set_message(message);
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
