//! What a command reads and writes, checked before any work: every output a regular file or a
//! new one that the user may write, none of them an input or another output (through
//! symlinks), every input of a later check readable; then every output locked for the run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use onnx_prune_core::write::{
    check_outputs, check_writable, output_files, NamedOutput, Outputs, Target,
};
use onnx_prune_core::{Destination, Model};
use onnx_prune_verify::{CheckOptions, InputSource};

/// The files a command reads and the outputs it will write, each with the flag that named it.
#[derive(Default)]
pub struct Files {
    reads: Vec<PathBuf>,
    /// Outputs: the flag, the path, and whether it is a file of its own to lock (not the data
    /// file of a model, which the model's lock covers).
    writes: Vec<(&'static str, PathBuf, bool)>,
    /// Inputs that `--in-place` replaces on purpose.
    replaced: Vec<PathBuf>,
}

impl Files {
    /// A file the command reads.
    pub fn read(&mut self, path: &Path) -> &mut Self {
        self.reads.push(path.to_path_buf());
        self
    }

    /// The model file and its external data files, as read.
    pub fn read_model(&mut self, model: &Model) -> &mut Self {
        let dir = model.path().parent().unwrap_or(Path::new(""));
        self.reads.push(model.path().to_path_buf());
        for location in model.external_files().keys() {
            self.reads.push(dir.join(location));
        }
        self
    }

    /// The files a check with `options` reads.
    pub fn read_check_inputs(&mut self, options: &CheckOptions) -> &mut Self {
        for source in &options.inputs {
            self.read(source_path(source));
        }
        if let Some(labels) = &options.labels {
            self.read(Path::new(labels_file(labels)));
        }
        self
    }

    /// An output named by `flag`.
    pub fn write(&mut self, flag: &'static str, path: &Path) -> &mut Self {
        self.writes.push((flag, path.to_path_buf(), true));
        self
    }

    /// Every file [`onnx_prune_core::save`] writes for `model` to `to`, named by `flag`. With
    /// [`Destination::InPlace`] those are the input's own files, replaced on purpose.
    pub fn write_model(
        &mut self,
        flag: &'static str,
        model: &Model,
        to: Destination,
    ) -> Result<&mut Self> {
        let files = output_files(model, to)?;
        for path in files.paths() {
            if matches!(to, Destination::InPlace) {
                self.replaced.push(path.to_path_buf());
            }
            let own = path == files.model;
            self.writes.push((flag, path.to_path_buf(), own));
        }
        Ok(self)
    }

    /// Refuses outputs that are not regular files, that name an input or another output
    /// (except the input files `--in-place` replaces) or that the user may not write; then
    /// locks every output for the run.
    pub fn check(&self) -> Result<Outputs> {
        let reads: Vec<&Path> = self
            .reads
            .iter()
            .filter(|read| {
                read.canonicalize()
                    .map_or(true, |real| !self.replaced.contains(&real))
            })
            .map(PathBuf::as_path)
            .collect();
        let outputs: Vec<NamedOutput> = self
            .writes
            .iter()
            .map(|(flag, path, _)| NamedOutput { flag, path })
            .collect();
        let real = check_outputs(&reads, &outputs)?;
        let mut targets = Vec::new();
        for ((flag, path, own), real) in self.writes.iter().zip(real) {
            check_writable(flag, path, &real)?;
            if *own {
                targets.push(Target {
                    flag: flag.to_string(),
                    path: real,
                });
            }
        }
        Ok(Outputs::lock(&targets, &self.reads)?)
    }
}

/// The file or directory an input source reads.
pub fn source_path(source: &InputSource) -> &Path {
    match source {
        InputSource::Npz(path) | InputSource::TestData(path) => path,
        InputSource::Npy { path, .. } => path,
    }
}

/// The file part of a `--labels` spec (`FILE.npy` or `FILE.npz:KEY`).
fn labels_file(spec: &str) -> &str {
    match spec.rsplit_once(':') {
        Some((file, _)) if file.ends_with(".npz") => file,
        _ => spec,
    }
}

/// Reads what a later check will need, so that a bad `--inputs` or `--labels` fails before the
/// model is written rather than after.
pub fn preflight_check(options: &CheckOptions) -> Result<()> {
    for source in &options.inputs {
        let path = source_path(source);
        let readable = if path.is_dir() {
            std::fs::read_dir(path).map(|_| ())
        } else {
            std::fs::File::open(path).map(|_| ())
        };
        readable.with_context(|| format!("--inputs `{}`: cannot read", path.display()))?;
    }
    if let Some(labels) = &options.labels {
        onnx_prune_verify::read_labels(labels).context("--labels")?;
    }
    Ok(())
}
