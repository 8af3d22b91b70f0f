//! Standard output that a closed pipe cannot crash: `onnx-prune inspect --json | head -1` ends
//! quietly, as other command-line tools do, instead of panicking in `println!`.

use std::io::Write;

/// Writes `text` and a newline to standard output.
pub fn print(text: impl std::fmt::Display) -> std::io::Result<()> {
    writeln!(std::io::stdout().lock(), "{text}")
}

/// Whether `error` comes from a reader that closed standard output early.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
