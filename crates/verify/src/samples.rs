//! The samples of a check: read from files or drawn at random, checked against the inputs
//! the model declares, and handed out run by run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::inputs::{random_sample, read_npy, read_npz, read_test_data};
use crate::options::{CheckOptions, InputSource};
use crate::runner::{InputSpec, Shapes};

/// How samples make up model inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Samples stack along the first axis of every input; runs take batches of them.
    Batched,
    /// Each sample is whole model inputs (a test-data set, or random inputs of a model whose
    /// inputs have no free first axis): one run per sample, outputs compared whole.
    Whole,
}

/// An input drawn at random, one sample at a time.
struct RandomInput {
    name: String,
    datum: DatumType,
    /// Index among the model's inputs (it seeds the input's stream).
    index: usize,
    /// Shape of one sample: `[1, ...]` when batched, the whole input otherwise.
    shape: Vec<usize>,
}

/// The samples of a check.
pub struct Samples {
    /// How samples make up model inputs.
    pub layout: Layout,
    /// Number of samples.
    pub count: usize,
    /// Batched: tensors read from files, sample axis first.
    files: BTreeMap<String, Tensor>,
    /// Whole: test-data sets.
    sets: Vec<BTreeMap<String, Tensor>>,
    random: Vec<RandomInput>,
    seed: u64,
}

fn dims_text(dims: &[Option<usize>]) -> String {
    let dims: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".into(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Checks `tensor` (data for input `spec`, sample axis first when `batched`) against the
/// element type and fixed dimensions the model declares; float data of another float type is
/// cast, with a note.
fn fit(spec: &InputSpec, tensor: Tensor, batched: bool, notes: &mut Vec<String>) -> Result<Tensor> {
    let name = &spec.name;
    let tensor = if tensor.datum_type() == spec.datum {
        tensor
    } else if tensor.datum_type().is_float() && spec.datum.is_float() {
        let note = format!(
            "input `{name}`: {:?} data cast to {:?}, the model's type",
            tensor.datum_type(),
            spec.datum
        );
        if !notes.contains(&note) {
            notes.push(note);
        }
        tensor
            .cast_to_dt(spec.datum)
            .map_err(|e| Error::Usage(format!("input `{name}`: {e:#}")))?
            .into_owned()
    } else {
        return Err(Error::Usage(format!(
            "input `{name}` is {:?} in the data but the model wants {:?}",
            tensor.datum_type(),
            spec.datum
        )));
    };
    if spec.dims.is_empty() {
        return Ok(tensor);
    }
    let what = if batched { " (sample axis first)" } else { "" };
    if tensor.rank() != spec.dims.len() {
        return Err(Error::Usage(format!(
            "input `{name}` has shape {:?}{what} in the data but the model wants rank {} {}",
            tensor.shape(),
            spec.dims.len(),
            dims_text(&spec.dims)
        )));
    }
    let skip = usize::from(batched);
    for (axis, (&have, want)) in tensor.shape().iter().zip(&spec.dims).enumerate().skip(skip) {
        if let Some(want) = want {
            if have != *want {
                return Err(Error::Usage(format!(
                    "input `{name}` has {have} at dimension {axis} in the data but the model fixes it at {want} {}",
                    dims_text(&spec.dims)
                )));
            }
        }
    }
    Ok(tensor)
}

/// The full shape of an input drawn at random: `--shape` (checked against the model's fixed
/// dimensions) or the declared one, whose free first axis is taken as 1.
fn random_shape(spec: &InputSpec, given: Option<&Vec<usize>>) -> Result<Vec<usize>> {
    let name = &spec.name;
    match given {
        Some(shape) => {
            if !spec.dims.is_empty() && shape.len() != spec.dims.len() {
                return Err(Error::Usage(format!(
                    "--shape {name}: {} dimensions given, but the model declares {} {}",
                    shape.len(),
                    spec.dims.len(),
                    dims_text(&spec.dims)
                )));
            }
            for (axis, (&have, want)) in shape.iter().zip(&spec.dims).enumerate() {
                if let Some(want) = want {
                    if have != *want {
                        return Err(Error::Usage(format!(
                            "--shape {name}: dimension {axis} is {have}, but the model fixes it at {want} {}",
                            dims_text(&spec.dims)
                        )));
                    }
                }
            }
            Ok(shape.clone())
        }
        None => spec
            .dims
            .iter()
            .enumerate()
            .map(|(axis, d)| match (axis, d) {
                (0, None) => Ok(1),
                (_, Some(d)) => Ok(*d),
                (_, None) => Err(Error::Usage(format!(
                    "input `{name}` has a dynamic dimension {axis} {}: give its shape with --shape {name}=D,D,...",
                    dims_text(&spec.dims)
                ))),
            })
            .collect(),
    }
}

impl Samples {
    /// The samples the options ask for, for a model whose inputs (the fixed ones left out) are
    /// `specs`; `all_inputs` names every input in order, for test data matched by position.
    pub fn load(
        options: &CheckOptions,
        all_inputs: &[String],
        specs: &[InputSpec],
        notes: &mut Vec<String>,
    ) -> Result<Samples> {
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        if let Some(name) = options.shapes.keys().find(|n| !names.contains(n)) {
            return Err(Error::Usage(format!(
                "--shape {name}: the model has no input `{name}` to draw (its inputs: {})",
                names.join(", ")
            )));
        }
        let spec_of = |name: &str| specs.iter().find(|s| s.name == name);
        let directories: Vec<&PathBuf> = options
            .inputs
            .iter()
            .filter_map(|s| match s {
                InputSource::TestData(dir) => Some(dir),
                _ => None,
            })
            .collect();
        if let Some(dir) = directories.first() {
            if options.inputs.len() > 1 || options.random.is_some() {
                return Err(Error::Usage(format!(
                    "`{}` is a test-data directory: give it alone, without other --inputs or --random",
                    dir.display()
                )));
            }
            if let Some(name) = options.shapes.keys().next() {
                return Err(Error::Usage(format!(
                    "--shape {name}: the data of `{}` sets every input's shape; --shape is for --random",
                    dir.display()
                )));
            }
            let sets = read_test_data(dir, all_inputs, &names, &mut |name, t| {
                fit(
                    spec_of(name).expect("read for a model input"),
                    t,
                    false,
                    notes,
                )
            })?;
            return Ok(Samples {
                layout: Layout::Whole,
                count: sets.len(),
                files: BTreeMap::new(),
                sets,
                random: Vec::new(),
                seed: 0,
            });
        }
        let flag = options.inputs_flag.unwrap_or("--inputs");
        let mut files = BTreeMap::new();
        // What each .npz holds, for a message naming the file when an input is missing.
        let mut held: Vec<(PathBuf, Vec<String>)> = Vec::new();
        for source in &options.inputs {
            match source {
                InputSource::Npz(path) if path.extension().is_some_and(|e| e == "npy") => {
                    return Err(Error::Usage(format!(
                        "{flag} {}: a .npy holds one array; say which input it is with \
                         NAME={} (the model's inputs: {})",
                        path.display(),
                        path.display(),
                        names.join(", ")
                    )));
                }
                InputSource::Npz(path) => {
                    let arrays = read_npz(path)?;
                    held.push((path.clone(), arrays.keys().cloned().collect()));
                    files.extend(arrays);
                }
                InputSource::Npy { name, path } => {
                    if !names.contains(name) {
                        return Err(Error::Usage(format!(
                            "{flag} {name}={}: the model has no input `{name}` (its inputs: {})",
                            path.display(),
                            names.join(", ")
                        )));
                    }
                    files.insert(name.clone(), read_npy(name, path)?);
                }
                InputSource::TestData(_) => unreachable!("handled above"),
            }
        }
        files.retain(|name, _| names.contains(name));
        if let Some(name) = options.shapes.keys().find(|n| files.contains_key(*n)) {
            return Err(Error::Usage(format!(
                "--shape {name}: the data given for `{name}` sets its shape; --shape is for --random"
            )));
        }
        let drawn: Vec<(usize, &InputSpec)> = specs
            .iter()
            .enumerate()
            .filter(|(_, s)| !files.contains_key(&s.name))
            .collect();
        let Some((count, seed)) = options.random else {
            if let Some((_, spec)) = drawn.first() {
                return Err(missing_input(flag, &spec.name, &held));
            }
            return Self::from_files(files, specs, notes);
        };
        // Inputs without a free first axis (scalars, fixed shapes) are drawn whole per sample.
        let whole = files.is_empty()
            && drawn
                .iter()
                .any(|(_, s)| s.dims.first().is_none_or(|d| d.is_some()));
        let random = drawn
            .iter()
            .map(|&(index, spec)| {
                let mut shape = random_shape(spec, options.shapes.get(&spec.name))?;
                if !whole {
                    if shape.is_empty() || spec.dims.first().is_some_and(|d| d.is_some()) {
                        return Err(Error::Usage(format!(
                            "input `{}` {} has no free first axis to batch along with the samples from files; fix its value with --fix {}=VALUE",
                            spec.name,
                            dims_text(&spec.dims),
                            spec.name
                        )));
                    }
                    shape[0] = 1;
                }
                Ok(RandomInput {
                    name: spec.name.clone(),
                    datum: spec.datum,
                    index,
                    shape,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if !files.is_empty() {
            let mut samples = Self::from_files(files, specs, notes)?;
            if samples.count != count {
                return Err(Error::Usage(format!(
                    "--random {count} with {} samples from files: draw as many as the files hold",
                    samples.count
                )));
            }
            samples.random = random;
            samples.seed = seed;
            return Ok(samples);
        }
        Ok(Samples {
            layout: if whole {
                Layout::Whole
            } else {
                Layout::Batched
            },
            count,
            files,
            sets: Vec::new(),
            random,
            seed,
        })
    }

    fn from_files(
        files: BTreeMap<String, Tensor>,
        specs: &[InputSpec],
        notes: &mut Vec<String>,
    ) -> Result<Samples> {
        let files = files
            .into_iter()
            .map(|(name, t)| {
                let spec = specs.iter().find(|s| s.name == name).expect("kept above");
                Ok((name, fit(spec, t, true, notes)?))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        let counts: Vec<(String, usize)> = files
            .iter()
            .map(|(n, t)| (n.clone(), t.shape().first().copied().unwrap_or(1)))
            .collect();
        if counts.windows(2).any(|w| w[0].1 != w[1].1) {
            return Err(Error::Usage(format!(
                "inputs hold different numbers of samples on their first axis: {counts:?}"
            )));
        }
        Ok(Samples {
            layout: Layout::Batched,
            count: counts.first().map_or(0, |c| c.1),
            files,
            sets: Vec::new(),
            random: Vec::new(),
            seed: 0,
        })
    }

    /// Element type and shape of every input of a run of `size` samples starting at `first`,
    /// without drawing or copying them.
    pub fn shapes(&self, first: usize, size: usize) -> Shapes {
        let mut shapes: Shapes = BTreeMap::new();
        let batched = |shape: &[usize]| -> Vec<usize> {
            let mut shape = shape.to_vec();
            if let Some(axis) = shape.first_mut() {
                *axis = size;
            }
            shape
        };
        if let Some(set) = self.sets.get(first) {
            for (name, t) in set {
                shapes.insert(name.clone(), (t.datum_type(), t.shape().to_vec()));
            }
        }
        for (name, t) in &self.files {
            shapes.insert(name.clone(), (t.datum_type(), batched(t.shape())));
        }
        for r in &self.random {
            let shape = match self.layout {
                Layout::Whole => r.shape.clone(),
                Layout::Batched => batched(&r.shape),
            };
            shapes.insert(r.name.clone(), (r.datum, shape));
        }
        shapes
    }

    /// The model inputs of the run of samples `first..first + len`, padded to `size` samples
    /// by repeating the last (Batched); sample `first` (Whole).
    pub fn run_inputs(
        &self,
        first: usize,
        len: usize,
        size: usize,
    ) -> Result<BTreeMap<String, Tensor>> {
        let err = |e: TractError| Error::Usage(format!("{e:#}"));
        if self.layout == Layout::Whole {
            let mut inputs = self.sets.get(first).cloned().unwrap_or_default();
            for r in &self.random {
                let t = random_sample(r.datum, &r.shape, self.seed, r.index, first)?;
                inputs.insert(r.name.clone(), t);
            }
            return Ok(inputs);
        }
        let pad = |tensor: Tensor| -> Result<Tensor> {
            if len == size {
                return Ok(tensor);
            }
            let last = tensor.slice(0, len - 1, len).map_err(err)?;
            let mut parts = vec![tensor];
            parts.extend(std::iter::repeat_n(last, size - len));
            Tensor::stack_tensors(0, &parts).map_err(err)
        };
        let mut inputs = BTreeMap::new();
        for (name, t) in &self.files {
            inputs.insert(
                name.clone(),
                pad(t.slice(0, first, first + len).map_err(err)?)?,
            );
        }
        for r in &self.random {
            let parts = (first..first + len)
                .map(|s| random_sample(r.datum, &r.shape, self.seed, r.index, s))
                .collect::<Result<Vec<_>>>()?;
            inputs.insert(
                r.name.clone(),
                pad(Tensor::stack_tensors(0, &parts).map_err(err)?)?,
            );
        }
        Ok(inputs)
    }
}

/// The error for input `name` that no file given with `flag` holds: the files and the arrays
/// each holds, or how to give data when none was.
fn missing_input(flag: &str, name: &str, held: &[(PathBuf, Vec<String>)]) -> Error {
    if held.is_empty() {
        return Error::Usage(format!(
            "no data for input `{name}` (give {flag} or --random)"
        ));
    }
    let files: Vec<String> = held
        .iter()
        .map(|(path, keys)| match keys.is_empty() {
            true => format!("{} holds no array", path.display()),
            false => format!("{} holds {}", path.display(), keys.join(", ")),
        })
        .collect();
    Error::Usage(format!(
        "{flag}: no array named `{name}`, the model's input ({}); name the arrays after the \
         inputs, or give one as {name}=FILE.npy",
        files.join("; ")
    ))
}
