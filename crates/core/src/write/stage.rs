//! Preparing a model's files for its commit: the external data files written and synced under
//! new names (see [`super::targets`]), then the model, pointing at them, written and synced to
//! a temporary file that the commit renames into place.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use onnx_splice::{Patch, Splice};

use crate::error::{Error, Result};
use crate::model::{Model, Payload};
use crate::write::lock::{read_by, Lock};
use crate::write::outputs::Outputs;
use crate::write::pause::pause;
use crate::write::targets::{plan_data, DataPlan, InputFiles};
use crate::write::temp::{Mode, Temp};
use crate::write::unfinished::{listed_at_once, Pending};
use crate::write::{Destination, WrittenFile};

/// A data file created under a new name for a model not yet committed: removed when dropped,
/// unless the model was committed.
pub(crate) struct NewFile {
    path: PathBuf,
    pending: Option<Pending>,
}

impl NewFile {
    /// The model reading it is in place: it stays.
    pub(crate) fn keep(mut self) {
        self.pending = None;
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if self.pending.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A model's files, written and synced, waiting for the commit.
pub(crate) struct Prepared {
    /// The model (or report, plot), to be renamed into place: the commit point.
    pub file: Temp,
    /// Data files under new names, read only by the new model.
    pub fresh: Vec<NewFile>,
    /// Data files reached through links (in place), renamed over their real paths just
    /// before the model.
    pub linked: Vec<Temp>,
    /// Files only the replaced model read: removed once the new one is in place.
    pub obsolete: Vec<PathBuf>,
}

/// Writes the model and its external data files with their splices applied for `to`, without
/// putting anything in place: see [`Outputs::commit`].
pub(crate) fn stage_spliced(
    outputs: &mut Outputs,
    model: &Model,
    to: Destination,
    mut model_splice: Splice,
    external: BTreeMap<&str, Splice>,
) -> Result<Vec<WrittenFile>> {
    let (target, mode, plans) = plan_data(model, to, |location| {
        external.get(location).is_some_and(|s| !s.is_empty())
    })?;
    let inputs = InputFiles::of(model)?;
    let run = outputs.is_run();
    let lock = outputs.lock_for(&target, "output")?;
    let mut obsolete: Vec<PathBuf> = match to {
        Destination::InPlace => plans
            .iter()
            .filter(|(_, plan)| matches!(plan, DataPlan::Fresh { .. }))
            .map(|(location, _)| inputs.data[location].clone())
            .collect(),
        Destination::File(_) => read_by(&target)
            .into_iter()
            .filter(|p| *p != target && *p != inputs.model && !inputs.data.values().any(|d| d == p))
            .collect(),
    };
    obsolete.sort();
    for path in &obsolete {
        lock.note(path).map_err(|e| Error::write(&target, e))?;
    }
    if run {
        pause("writing");
    }
    let mut written = Vec::new();
    let mut fresh = Vec::new();
    let mut linked = Vec::new();
    let mut locations: BTreeMap<&str, String> = BTreeMap::new();
    let mut external = external;
    for (location, plan) in &plans {
        let input = &model.external_files()[location];
        let splice = external.remove(location.as_str()).unwrap_or_default();
        match plan {
            DataPlan::Keep => {
                written.push(WrittenFile {
                    path: inputs.data[location].clone(),
                    bytes: input.len() as u64,
                    read_from: inputs.data[location].clone(),
                });
            }
            DataPlan::Fresh { dir, names, mode } => {
                let (file, name, open) = create_fresh(dir, names, *mode, lock, &target)?;
                let bytes = write_synced(&file.path, input, splice, &open)?;
                written.push(WrittenFile {
                    path: file.path.clone(),
                    bytes,
                    read_from: file.path.clone(),
                });
                fresh.push(file);
                locations.insert(location, name);
            }
            DataPlan::Replace { path } => {
                let mode = Mode::of_replaced(path, Mode::Masked(0o666));
                let temp = Temp::create(path, mode, lock)?;
                let bytes = write_synced(path, input, splice, temp.file())?;
                written.push(WrittenFile {
                    path: path.clone(),
                    bytes,
                    read_from: temp.read_path(),
                });
                linked.push(temp);
            }
        }
    }
    rename_locations(model, &locations, &mut model_splice)?;
    let temp = Temp::create(&target, mode, lock)?;
    let bytes = write_synced(&target, model.bytes(), model_splice, temp.file())?;
    written.push(WrittenFile {
        path: target,
        bytes,
        read_from: temp.read_path(),
    });
    outputs.prepared(Prepared {
        file: temp,
        fresh,
        linked,
        obsolete,
    });
    Ok(written)
}

/// Creates the first of `names` (in `dir`) that does not exist, noted in `lock` first.
fn create_fresh(
    dir: &Path,
    names: &[String],
    mode: Mode,
    lock: &mut Lock,
    target: &Path,
) -> Result<(NewFile, String, File)> {
    let bits = mode.bits();
    for name in names {
        let path = dir.join(name);
        if path.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::write(parent, e))?;
        }
        lock.note(&path)
            .and_then(|()| lock.sync())
            .map_err(|e| Error::write(target, e))?;
        let created = listed_at_once(|| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(bits)
                .open(&path)
                .map(|file| (file, Pending::new(&path)))
        });
        match created {
            Ok((file, pending)) => {
                if let Mode::Exact(bits) = mode {
                    use std::os::unix::fs::PermissionsExt;
                    file.set_permissions(std::fs::Permissions::from_mode(bits))
                        .map_err(|e| Error::write(&path, e))?;
                }
                let pending = Some(pending);
                return Ok((NewFile { path, pending }, name.clone(), file));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::write(&path, e)),
        }
    }
    Err(Error::write(
        target,
        std::io::Error::other(format!(
            "every name tried for its external data file exists already ({} ... {})",
            names.first().map_or("", String::as_str),
            names.last().map_or("", String::as_str)
        )),
    ))
}

/// Points the tensors of each external data location in `renamed` at its new name.
fn rename_locations(
    model: &Model,
    renamed: &BTreeMap<&str, String>,
    model_splice: &mut Splice,
) -> Result<()> {
    for tensor in model.tensors() {
        let Payload::External {
            location,
            location_field,
            ..
        } = &tensor.payload
        else {
            continue;
        };
        let Some(named) = renamed.get(location.as_str()) else {
            continue;
        };
        if named == location {
            continue;
        }
        let [entry, value] = location_field
            .ok_or_else(|| Error::tensor(&tensor.name, "external data without a location entry"))?;
        let mut enclosing = tensor.enclosing.clone();
        enclosing.extend([entry, value]);
        model_splice.replace(
            value.payload_start..value.payload_end,
            Patch::Bytes(named.clone().into_bytes()),
            enclosing,
        );
    }
    Ok(())
}

/// Writes `input` with `splice` applied to `file` and syncs it; errors name `target`.
pub(crate) fn write_synced(
    target: &Path,
    input: &[u8],
    splice: Splice,
    file: &File,
) -> Result<u64> {
    // Small buffer: large pieces (copied ranges, tensor batches) go straight to the file.
    let mut writer = BufWriter::with_capacity(64 << 10, Piecewise(file));
    splice.write_to(input, &mut writer).map_err(|e| match e {
        onnx_splice::SpliceError::Io(e) => Error::write(target, e),
        other => Error::Usage(format!("{}: {other}", target.display())),
    })?;
    writer.flush().map_err(|e| Error::write(target, e))?;
    drop(writer);
    file.sync_all().map_err(|e| Error::write(target, e))?;
    Ok(file.metadata().map_err(|e| Error::write(target, e))?.len())
}

/// Bytes handed to the kernel per `write`. Large writes are slow to copy into the page cache:
/// on the development machine, 1 GiB written in 256 KiB pieces took 0.22 to 0.24 s, and 0.24 to
/// 2.45 s in 8 MiB pieces (`dd`, four runs each).
const WRITE_PIECE: usize = 256 << 10;

/// A file that takes at most [`WRITE_PIECE`] bytes per `write`.
struct Piecewise<'f>(&'f File);

impl Write for Piecewise<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut file = self.0;
        file.write(&buf[..buf.len().min(WRITE_PIECE)])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
