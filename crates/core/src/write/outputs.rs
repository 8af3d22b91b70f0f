//! A run's outputs as one commit: every output (models with their data, reports, plots) is
//! locked before any work, written and synced under temporary or new names, and only then put
//! in place, each by one rename, the model last of its files. Until the commit nothing the user
//! can see has changed: an error, a full disk or an interruption leaves every output path as it
//! was. Once the commit begins it runs to its end.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::write::lock::Lock;
use crate::write::paths::real_output_path;
use crate::write::pause::pause;
use crate::write::stage::{stage_spliced, write_synced, Prepared};
use crate::write::temp::{dir_of, Mode, Temp};
use crate::write::unfinished::begin_commit;
use crate::write::{splice_edits, Destination, Edit, Saved, Storage};

/// What identifies a file's content cheaply: device, inode, size and modification time.
type Stamp = (u64, u64, u64, i64, i64);

/// The stamp of a regular file (`None` for anything else: a directory of samples changes
/// when files are added to it, which does not change what was read).
fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    Some((
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
    ))
}

/// The outputs of a run, locked, prepared, then committed together.
pub struct Outputs {
    /// Locks by output (real path).
    locks: BTreeMap<PathBuf, Lock>,
    /// Inputs, as they were when the run started: one changed since fails the commit.
    inputs: Vec<(PathBuf, Option<Stamp>)>,
    /// Real paths of the inputs, which cleaning never removes.
    input_paths: BTreeSet<PathBuf>,
    /// What the commit puts in place.
    prepared: Vec<Prepared>,
    /// Whether these are the outputs of the run (an interruption before their commit changes
    /// nothing, one after it is too late) rather than scratch files of a search.
    run: bool,
}

/// An output to lock: the flag that named it (for messages) and its real path.
#[derive(Debug, Clone)]
pub struct Target {
    /// `-o`, `--report`, `--in-place`, ...
    pub flag: String,
    /// The file, as a real path (see [`super::real_output_path`]).
    pub path: PathBuf,
}

impl Outputs {
    /// The outputs of a run: locks each of `targets` (failing at once when another run holds
    /// one), removes what a killed run for them left behind, and notes the state of `inputs`,
    /// so that an input changed before the commit fails it.
    pub fn lock(targets: &[Target], inputs: &[PathBuf]) -> Result<Outputs> {
        let mut outputs = Outputs::new(inputs, true);
        for target in targets {
            if !outputs.locks.contains_key(&target.path) {
                let lock = Lock::take(&target.path, &target.flag, &outputs.input_paths)?;
                outputs.locks.insert(target.path.clone(), lock);
            }
        }
        Ok(outputs)
    }

    /// Outputs written on their own (a search's candidates, a library's single save): no
    /// inputs watched, and an interruption is handled as for any other write in progress.
    pub(crate) fn scratch() -> Outputs {
        Outputs::new(&[], false)
    }

    fn new(inputs: &[PathBuf], run: bool) -> Outputs {
        Outputs {
            locks: BTreeMap::new(),
            inputs: inputs.iter().map(|p| (p.clone(), stamp(p))).collect(),
            input_paths: inputs
                .iter()
                .filter_map(|p| p.canonicalize().ok())
                .collect(),
            prepared: Vec::new(),
            run,
        }
    }

    pub(crate) fn is_run(&self) -> bool {
        self.run
    }

    /// The lock of `target`, taken now if it was not named when the outputs were locked.
    pub(crate) fn lock_for(&mut self, target: &Path, flag: &str) -> Result<&mut Lock> {
        if !self.locks.contains_key(target) {
            let lock = Lock::take(target, flag, &self.input_paths)?;
            self.locks.insert(target.to_path_buf(), lock);
        }
        Ok(self.locks.get_mut(target).expect("just locked"))
    }

    pub(crate) fn prepared(&mut self, prepared: Prepared) {
        self.prepared.push(prepared);
    }

    /// Prepares `model` with `edits` applied for `to` (see [`crate::save`]); nothing is in
    /// place before [`Outputs::commit`].
    pub fn stage(
        &mut self,
        model: &Model,
        edits: &[Edit],
        to: Destination,
        storage: Storage,
    ) -> Result<Saved> {
        let splices = splice_edits(model, edits, storage)?;
        let files = stage_spliced(self, model, to, splices.model, splices.external)?;
        Ok(Saved {
            files,
            sparse: splices.moved,
            kept_dense: splices.kept_dense,
        })
    }

    /// Prepares `contents` as the file `path` (named by `flag`), put in place at the commit.
    pub fn stage_file(&mut self, flag: &str, path: &Path, contents: &[u8]) -> Result<()> {
        let target = real_output_path(path, flag)?;
        let mode = Mode::of_replaced(&target, Mode::Masked(0o666));
        let lock = self.lock_for(&target, flag)?;
        let temp = Temp::create(&target, mode, lock)?;
        write_synced(
            &target,
            contents,
            onnx_splice::Splice::default(),
            temp.file(),
        )?;
        self.prepared.push(Prepared {
            file: temp,
            fresh: Vec::new(),
            linked: Vec::new(),
            obsolete: Vec::new(),
        });
        Ok(())
    }

    /// The model prepared for `output` (as given to [`Outputs::stage`]), loaded as it will be
    /// once in place: to check it before the commit.
    pub fn staged(&self, output: &Path) -> Result<Model> {
        let target = real_output_path(output, "output")?;
        let prepared = self
            .prepared
            .iter()
            .rev()
            .find(|p| p.file.target() == target)
            .ok_or_else(|| Error::Usage(format!("`{}` was not prepared", output.display())))?;
        Model::load_from(&prepared.file.read_path(), &target)
    }

    /// Puts every prepared output in place: each data file reached through a link, then each
    /// model (one rename each: the commit point of a model and its data), reports and plots;
    /// syncs their directories, then removes the data files that only the replaced models
    /// read. Fails, changing nothing, when an input changed since the outputs were locked.
    pub fn commit(mut self) -> Result<Vec<PathBuf>> {
        if self.run {
            pause("staged");
        }
        for (path, before) in &self.inputs {
            if stamp(path) != *before {
                return Err(Error::invalid(
                    path,
                    "changed while onnx-prune was reading it (another program wrote it); \
                     nothing was written",
                ));
            }
        }
        if self.run {
            begin_commit();
        }
        let mut done: Vec<PathBuf> = Vec::new();
        let mut obsolete = Vec::new();
        for prepared in std::mem::take(&mut self.prepared) {
            let target = prepared.file.target().to_path_buf();
            let lock = self
                .locks
                .get_mut(&target)
                .expect("every prepared output is locked");
            let result = prepared
                .linked
                .into_iter()
                .try_for_each(|temp| temp.commit(lock))
                .and_then(|()| prepared.file.commit(lock));
            if let Err(e) = result {
                return Err(partly(e, &done));
            }
            for file in prepared.fresh {
                file.keep();
            }
            obsolete.extend(prepared.obsolete);
            done.push(target);
        }
        let dirs: BTreeSet<&Path> = done.iter().map(|p| dir_of(p)).collect();
        for dir in dirs {
            sync_dir(dir).map_err(|e| partly(Error::write(dir, e), &done))?;
        }
        if self.run {
            pause("committed");
        }
        for path in obsolete {
            // Best effort: the commit is done; a file that cannot be removed only takes space.
            let _ = std::fs::remove_file(path);
        }
        Ok(done)
    }
}

/// `error`, saying which outputs were already in place.
fn partly(error: Error, done: &[PathBuf]) -> Error {
    if done.is_empty() {
        return error;
    }
    let list: Vec<String> = done.iter().map(|p| format!("`{}`", p.display())).collect();
    match error {
        Error::Write { what, error } => Error::Write {
            what,
            error: io::Error::new(
                error.kind(),
                format!("{error}; already in place: {}", list.join(", ")),
            ),
        },
        other => other,
    }
}

/// Makes the renames in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
