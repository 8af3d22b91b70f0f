//! Writing one whole file atomically: a temporary file beside it, synced, then renamed.

use std::path::Path;

use crate::error::{Error, Result};
use crate::write::unfinished::temp_beside;

/// Writes `contents` to `path` atomically: a temporary file beside it, synced, then renamed.
/// A symlink's target is replaced (the link stays); anything but a regular file is refused.
pub fn write_file_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    let path = &crate::write::paths::real_output_path(path, "output")?;
    let (mut temp, _pending) = temp_beside(path)?;
    temp.write_all(contents).map_err(|e| Error::io(path, e))?;
    temp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    temp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}
