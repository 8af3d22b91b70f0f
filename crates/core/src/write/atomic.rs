//! Writing one whole file atomically: locked, written and synced to a temporary file beside
//! it, then renamed.

use std::path::Path;

use crate::error::Result;
use crate::write::outputs::Outputs;

/// Writes `contents` to `path` atomically: a temporary file beside it, synced, then renamed.
/// A symlink's target is replaced (the link stays); anything but a regular file is refused.
pub fn write_file_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let mut outputs = Outputs::scratch();
    outputs.stage_file("output", path, contents)?;
    outputs.commit()?;
    Ok(())
}
