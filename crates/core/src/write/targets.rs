//! Where a saved model's files go. The model goes where `-o` says (a symlink's target
//! replaced, never the link), or over the input with `--in-place`. Its external data files are
//! new files under names that no file has yet, so that the model is the only file the commit
//! replaces: the old model and the data it reads stay whole until the new model, pointing at
//! the new data, is renamed into place.
//!
//! A data file keeps its location where that name is free, so that an output of an unchanged
//! model is the input byte for byte. Where the name is taken (the data of the model being
//! replaced, the input's own data beside the output), the output's data is named after the
//! output (`model.onnx.data` of `model.onnx` becomes `pruned.onnx.data`), and where that is
//! taken too, a generation number goes before the extension (`pruned.onnx.1.data`); a second
//! run over the same output goes back to the first name, which the first run's model no longer
//! reads once replaced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::write::paths::real_output_path;
use crate::write::temp::{dir_of, Mode};

/// Where [`crate::save`] writes.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'p> {
    /// A new model file; never the input model or one of its external data files.
    File(&'p Path),
    /// Over the input model (the file a symlink points to); its changed external data files
    /// are written under new names and the old ones removed once the model is in place.
    InPlace,
}

/// The files a save replaces, as real paths (through symlinks): what a run must be allowed to
/// write before it starts.
#[derive(Debug, Clone)]
pub struct OutputFiles {
    /// The model file.
    pub model: PathBuf,
    /// With `--in-place`, the input's external data files (each replaced by a new file, or at
    /// its real path when reached through a link); nothing for a new model, whose data files
    /// are all new.
    pub data: Vec<PathBuf>,
}

impl OutputFiles {
    /// Every path, the model last.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.data
            .iter()
            .map(PathBuf::as_path)
            .chain([self.model.as_path()])
    }
}

/// What happens to one external data file of the input.
#[derive(Debug, Clone)]
pub(crate) enum DataPlan {
    /// Stays as it is, under its location (in place, unchanged).
    Keep,
    /// Written to a new file under the first of `names` (locations relative to the model's
    /// directory `dir`) that does not exist.
    Fresh {
        /// The written model's directory.
        dir: PathBuf,
        /// Locations to try, in order.
        names: Vec<String>,
        /// Its permissions.
        mode: Mode,
    },
    /// Replaced at its real path: in place, a data file reached through a link (a content
    /// store such as the Hugging Face cache), whose name is the link's.
    Replace {
        /// The real path.
        path: PathBuf,
    },
}

/// The real path of the model and of each external data file `model` reads.
pub(crate) struct InputFiles {
    /// The model.
    pub model: PathBuf,
    /// Per location.
    pub data: BTreeMap<String, PathBuf>,
}

impl InputFiles {
    pub(crate) fn of(model: &Model) -> Result<InputFiles> {
        let real = |path: &Path| path.canonicalize().map_err(|e| Error::io(path, e));
        let dir = dir_of(model.path());
        let data = model
            .external_files()
            .keys()
            .map(|location| Ok((location.clone(), real(&dir.join(location))?)))
            .collect::<Result<_>>()?;
        Ok(InputFiles {
            model: real(model.path())?,
            data,
        })
    }
}

/// The files [`crate::save`] replaces for `to`; refuses to write a new file over the input
/// model or its external data.
pub fn output_files(model: &Model, to: Destination) -> Result<OutputFiles> {
    let input = InputFiles::of(model)?;
    match to {
        Destination::InPlace => Ok(OutputFiles {
            model: input.model,
            data: input.data.into_values().collect(),
        }),
        Destination::File(out) => Ok(OutputFiles {
            model: new_model_path(&input, out)?,
            data: Vec::new(),
        }),
    }
}

/// The real path `-o out` writes, refused when it is one of the input's files.
fn new_model_path(input: &InputFiles, out: &Path) -> Result<PathBuf> {
    let target = real_output_path(out, "output")?;
    if target == input.model {
        return Err(Error::Usage(format!(
            "output `{}` is the input model; write to another file, or pass --in-place",
            out.display()
        )));
    }
    if input.data.values().any(|p| *p == target) {
        return Err(Error::Usage(format!(
            "output `{}` is an external data file of the input; write to another file",
            out.display()
        )));
    }
    Ok(target)
}

/// Where the model goes, its permissions, and what happens to each external data file; only
/// locations in `changed` are rewritten in place.
pub(crate) fn plan_data(
    model: &Model,
    to: Destination,
    changed: impl Fn(&str) -> bool,
) -> Result<(PathBuf, Mode, BTreeMap<String, DataPlan>)> {
    let input = InputFiles::of(model)?;
    let input_name = file_name(&input.model);
    let input_dir = dir_of(model.path());
    let mut plans = BTreeMap::new();
    let (target, mode) = match to {
        Destination::InPlace => {
            for (location, real) in &input.data {
                let link = input_dir.join(location);
                let plan = if !changed(location) {
                    DataPlan::Keep
                } else if link.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
                    DataPlan::Replace { path: real.clone() }
                } else {
                    DataPlan::Fresh {
                        dir: input_dir.to_path_buf(),
                        names: generations(&strip_generation(location)),
                        mode: Mode::of_replaced(real, Mode::Masked(0o666)),
                    }
                };
                plans.insert(location.clone(), plan);
            }
            let mode = Mode::of_replaced(&input.model, Mode::Masked(0o666));
            (input.model.clone(), mode)
        }
        Destination::File(out) => {
            let target = new_model_path(&input, out)?;
            let out_dir = dir_of(&target).to_path_buf();
            let out_name = file_name(&target);
            for (location, real) in &input.data {
                let named = data_file_name(location, &input_name, &out_name);
                let mut names = vec![location.clone(), named.clone()];
                names.extend(generations(&strip_generation(&named)));
                names.dedup();
                let derived = std::fs::metadata(real)
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
                    .unwrap_or(0o666);
                plans.insert(
                    location.clone(),
                    DataPlan::Fresh {
                        dir: out_dir.clone(),
                        names,
                        mode: Mode::Masked(derived),
                    },
                );
            }
            let mode = Mode::of_replaced(&target, Mode::Masked(0o666));
            (target, mode)
        }
    };
    Ok((target, mode, plans))
}

/// The file name of a real path.
fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a real file path")
        .to_string_lossy()
        .into_owned()
}

/// A location split into its directory part (with its trailing `/`, or empty) and file name.
fn split_location(location: &str) -> (&str, &str) {
    match location.rfind(['/', '\\']) {
        Some(at) => location.split_at(at + 1),
        None => ("", location),
    }
}

/// The name of the output's copy of the data file at `location` (relative to the model): the
/// input model's name at its start replaced by the output's (`model.onnx.data` of
/// `model.onnx` becomes `pruned.onnx.data`), else the output's name prefixed
/// (`pruned.onnx.weights.bin`); directories flattened.
fn data_file_name(location: &str, input_name: &str, out_name: &str) -> String {
    let flat = location.replace(['/', '\\'], "_");
    match flat.strip_prefix(input_name) {
        Some(rest) if !rest.is_empty() => format!("{out_name}{rest}"),
        _ => format!("{out_name}.{flat}"),
    }
}

/// Whether `part` is a generation number.
fn is_generation(part: &str) -> bool {
    !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())
}

/// `location` without a generation number in its file name (`model.onnx.1.data` ->
/// `model.onnx.data`, `w/weights.2` -> `w/weights`).
fn strip_generation(location: &str) -> String {
    let (sub, name) = split_location(location);
    format!("{sub}{}", strip_name(name))
}

/// A file name without its generation number.
fn strip_name(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let n = parts.len();
    let without = |at: usize| {
        let mut kept = parts.clone();
        kept.remove(at);
        kept.join(".")
    };
    if n >= 2 && is_generation(parts[n - 1]) && !parts[..n - 1].concat().is_empty() {
        return without(n - 1);
    }
    if n >= 3 && is_generation(parts[n - 2]) {
        return without(n - 2);
    }
    name.to_string()
}

/// `location`, then its generations: `model.onnx.data`, `model.onnx.1.data`,
/// `model.onnx.2.data`, ... (a name without an extension: `weights`, `weights.1`, ...).
fn generations(location: &str) -> Vec<String> {
    let (sub, name) = split_location(location);
    let (stem, ext) = match name.rfind('.') {
        Some(at) if at > 0 => name.split_at(at),
        _ => (name, ""),
    };
    std::iter::once(location.to_string())
        .chain((1..MAX_GENERATION).map(|g| format!("{sub}{stem}.{g}{ext}")))
        .collect()
}

/// Generations tried before giving up (each a file that exists already).
const MAX_GENERATION: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_alternate_with_the_plain_name() {
        for name in [
            "model.onnx.data",
            "weights",
            "w.bin",
            ".hidden",
            "w.d/noext",
        ] {
            let next = &generations(name)[1];
            assert_ne!(next, name);
            assert_eq!(strip_generation(next), name, "{next}");
        }
        assert_eq!(generations("model.onnx.data")[1], "model.onnx.1.data");
        assert_eq!(generations("weights")[2], "weights.2");
        assert_eq!(strip_generation("model.onnx.data"), "model.onnx.data");
    }

    #[test]
    fn data_files_of_a_new_output_are_named_after_it() {
        assert_eq!(
            data_file_name("model.onnx.data", "model.onnx", "out.onnx"),
            "out.onnx.data"
        );
        assert_eq!(
            data_file_name("w/a.bin", "model.onnx", "out.onnx"),
            "out.onnx.w_a.bin"
        );
        assert_eq!(split_location("w/a.bin"), ("w/", "a.bin"));
    }
}
