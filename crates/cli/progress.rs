//! A spinner naming the current phase of long work, or a bar counting its steps, on a terminal
//! only: the CLI's [`onnx_prune_tune::Progress`].

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows what is being done; hidden when stderr is not a terminal (pipelines, CI).
pub struct Bar(ProgressBar);

impl Bar {
    /// Starts a spinner.
    pub fn start() -> Bar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(120));
        Bar(bar)
    }

    /// Prints a warning on stderr without garbling the spinner.
    pub fn warn(&self, message: &str) {
        self.0.suspend(|| eprintln!("warning: {message}"));
    }
}

impl onnx_prune_tune::Progress for Bar {
    fn phase(&self, what: &'static str) {
        self.0.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"),
        );
        self.0.set_message(what);
    }

    fn steps(&self, what: &'static str, total: u64) {
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.set_style(
            ProgressStyle::with_template("{spinner} {msg} {pos}/{len} [{bar:20}] eta {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        self.0.set_message(what);
    }

    fn step(&self) {
        self.0.inc(1);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
