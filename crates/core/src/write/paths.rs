//! Output paths, checked before anything is written: a run writes only regular files (new ones,
//! or existing ones it replaces atomically), never one of its inputs, and never one file twice.
//!
//! A symlink named as an output is followed: its target is replaced atomically and the link
//! stays a link, as `--in-place` treats a linked model.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An output named on the command line: the flag that named it and the path given.
#[derive(Debug, Clone, Copy)]
pub struct NamedOutput<'p> {
    /// The flag, e.g. `-o` or `--report`, for messages.
    pub flag: &'p str,
    /// The path as given.
    pub path: &'p Path,
}

/// The real path that writing to `path` replaces or creates: `path` itself (with its directory
/// resolved) when it is a regular file or does not exist yet in an existing directory, the
/// file a symlink points to. Refuses `-`, directories, FIFOs, devices, sockets, a symlink to
/// a missing file and a missing directory, naming `flag`.
pub fn real_output_path(path: &Path, flag: &str) -> Result<PathBuf> {
    let refuse = |why: String| Err(Error::Usage(format!("{flag} `{}`: {why}", path.display())));
    if path.as_os_str() == "-" {
        return refuse("writing to standard output is not supported; name a file".into());
    }
    if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return refuse("ends with `/`, so it names a directory, not a file; name a file".into());
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let file_name = match path.file_name() {
                Some(name) => name,
                None => return refuse("is not a file name".into()),
            };
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            match dir.canonicalize() {
                Ok(dir) if dir.is_dir() => Ok(dir.join(file_name)),
                Ok(_) => refuse(format!("`{}` is not a directory", dir.display())),
                Err(_) => refuse(format!("directory `{}` does not exist", dir.display())),
            }
        }
        Err(e) => Err(Error::io(path, e)),
        Ok(meta) if meta.file_type().is_symlink() => match path.canonicalize() {
            Ok(real) => match kind_of(&real) {
                None => Ok(real),
                Some(kind) => refuse(format!("is a symlink to {kind} `{}`", real.display())),
            },
            Err(_) => refuse("is a symlink to a file that does not exist".into()),
        },
        Ok(_) => match kind_of(path) {
            None => Ok(path.canonicalize().map_err(|e| Error::io(path, e))?),
            Some(kind) => refuse(format!(
                "is {kind}, not a regular file; onnx-prune writes only regular files"
            )),
        },
    }
}

/// Checks that the output `real` (the real path of `path`, named by `flag`) can be written
/// before any work: its directory must take new files (the output is written beside it, then
/// renamed) and, when it exists, the file itself must be writable by the user, as `cp` asks.
/// Root passes both, as it does for `cp`, except on a read-only file system.
pub fn check_writable(flag: &str, path: &Path, real: &Path) -> Result<()> {
    let fail = |why: String, error: std::io::Error| {
        Error::write_output(flag, path, std::io::Error::new(error.kind(), why))
    };
    let dir = match real.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Err(e) = access(dir, libc::W_OK | libc::X_OK) {
        return Err(fail(
            format!("cannot create files in `{}` ({e})", dir.display()),
            e,
        ));
    }
    match access(real, libc::W_OK) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            let mode = std::fs::metadata(real)
                .map(|m| {
                    format!(
                        ", mode {:o}",
                        std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777
                    )
                })
                .unwrap_or_default();
            Err(fail(
                format!("the file is not writable for you ({e}{mode}); make it writable first, as `cp` would need"),
                e,
            ))
        }
        _ => Ok(()),
    }
}

/// Whether the user may access `path` as `how` (`W_OK`, ...), by effective ids.
fn access(path: &Path, how: libc::c_int) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a NUL-terminated path.
    let allowed = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), how, libc::AT_EACCESS) };
    if allowed == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What `path` is when it is not a regular file (`None` when it is one).
fn kind_of(path: &Path) -> Option<&'static str> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(_) => return Some("something unreadable"),
    };
    let kind = meta.file_type();
    if kind.is_file() {
        return None;
    }
    if kind.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return Some("a FIFO");
        }
        if kind.is_char_device() || kind.is_block_device() {
            return Some("a device");
        }
        if kind.is_socket() {
            return Some("a socket");
        }
    }
    Some("not a regular file")
}

/// Checks `outputs` against each other and against `inputs` (compared as real paths, through
/// symlinks) before anything runs, and returns their real paths in order. Inputs that do not
/// exist are skipped here: reading them reports that.
pub fn check_outputs(inputs: &[&Path], outputs: &[NamedOutput]) -> Result<Vec<PathBuf>> {
    let inputs: Vec<(PathBuf, &Path)> = inputs
        .iter()
        .filter_map(|p| p.canonicalize().ok().map(|real| (real, *p)))
        .collect();
    let mut resolved: Vec<PathBuf> = Vec::with_capacity(outputs.len());
    for output in outputs {
        let real = real_output_path(output.path, output.flag)?;
        if let Some((_, input)) = inputs.iter().find(|(p, _)| *p == real) {
            return Err(Error::Usage(format!(
                "{} `{}` would overwrite the input `{}`; name another file",
                output.flag,
                output.path.display(),
                input.display()
            )));
        }
        if let Some(j) = resolved.iter().position(|p| *p == real) {
            return Err(Error::Usage(format!(
                "{} `{}` and {} `{}` name the same file; name two files",
                outputs[j].flag,
                outputs[j].path.display(),
                output.flag,
                output.path.display()
            )));
        }
        resolved.push(real);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named<'p>(flag: &'p str, path: &'p Path) -> NamedOutput<'p> {
        NamedOutput { flag, path }
    }

    #[test]
    fn new_files_and_regular_files_are_accepted_and_symlinks_followed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.onnx");
        std::fs::write(&file, b"x").unwrap();
        let link = dir.path().join("link.onnx");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let real_dir = dir.path().canonicalize().unwrap();
        assert_eq!(
            real_output_path(&dir.path().join("new.json"), "--report").unwrap(),
            real_dir.join("new.json")
        );
        assert_eq!(
            real_output_path(&link, "-o").unwrap(),
            real_dir.join("a.onnx")
        );
    }

    #[test]
    fn fifos_directories_dashes_dangling_links_and_missing_dirs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).unwrap();
        for (path, why) in [
            (fifo.as_path(), "is a FIFO"),
            (dir.path(), "is a directory"),
            (Path::new("-"), "standard output"),
            (Path::new("/dev/null"), "is a device"),
            (dangling.as_path(), "does not exist"),
            (&dir.path().join("missing/r.json"), "does not exist"),
            (&dir.path().join("new.onnx/"), "ends with `/`"),
        ] {
            let error = real_output_path(path, "-o").unwrap_err().to_string();
            assert!(error.contains(why), "{}: {error}", path.display());
        }
    }

    #[test]
    fn an_output_naming_an_input_or_another_output_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, b"x").unwrap();
        let link = dir.path().join("l.onnx");
        std::os::unix::fs::symlink(&model, &link).unwrap();
        let out = dir.path().join("out.onnx");
        let error = check_outputs(&[&model], &[named("-o", &out), named("--report", &link)])
            .unwrap_err()
            .to_string();
        assert!(error.contains("would overwrite the input"), "{error}");
        let error = check_outputs(&[&model], &[named("-o", &out), named("--report", &out)])
            .unwrap_err()
            .to_string();
        assert!(error.contains("name the same file"), "{error}");
        assert_eq!(
            check_outputs(&[&model], &[named("-o", &out)]).unwrap(),
            vec![dir.path().canonicalize().unwrap().join("out.onnx")]
        );
    }
}
