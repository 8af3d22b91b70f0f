//! Candidates that each change one weight, run only from that weight on: the nodes that do
//! not depend on the weight compute the dense model's values for every such candidate.
//!
//! The reference is run once more with the values crossing into each weight's part (see
//! [`crate::cut`]) as its outputs, and those values are kept for every run of samples. Each
//! weight's part is loaded and optimised once, with the crossing values and the weight as its
//! inputs, and each of the weight's candidates runs there: its outputs stand in for the
//! reference's where the part computes them; the others are the reference's own.
//!
//! A part pays where running dominates: loading it costs about its share of a load of the whole
//! model, and saves the rest of each candidate's runs. A weight's part is loaded only when
//! `f * load < candidates * run * (1 - f)`, `f` being the part's share of the graph's nodes,
//! `load` the time the reference took to load and `run` to run over the samples (both measured
//! here); the others are left to the caller, who runs them in the whole model.
//!
//! Memory stays bounded: weights are taken in groups whose crossing values fit in
//! [`SUFFIX_CACHE_BYTES`] over all runs, and a group's values are dropped once its weights are
//! done (one run of the reference per group). A weight whose part cannot be loaded, whose
//! crossing values alone exceed the bound, or that no output depends on, is left to the
//! caller, as is everything when the reference's outputs are not kept or the samples have
//! several shapes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use onnx_prune_core::{Edit, Model};
use rayon::prelude::*;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::cut::{part, Cut, Graph};
use crate::error::{Error, Result};
use crate::fold::data_type;
use crate::reference::{tract_bytes, Reference};
use crate::report::CheckReport;
use crate::runner::{folded_proto, inside_tract, Runner, Shapes};
use crate::side_by_side::{measure_run, run_error, RunStats};
use crate::swap::{slot_values, slots, weights_as_inputs, Slot};

/// Bytes of crossing values kept at most, over all runs of samples, for one group of weights.
pub const SUFFIX_CACHE_BYTES: usize = 1 << 29;

/// One weight's part of the reference, loaded, with the dense values crossing into it on
/// every run: candidates changing only that weight are compared here
/// ([`Suffix::compare`]).
pub struct Suffix<'a> {
    reference: &'a Reference,
    runner: Runner,
    /// The weight, by tensor index.
    slot: BTreeMap<usize, Slot>,
    cut: &'a Cut,
    /// Per run, the crossing values by name.
    cache: &'a [BTreeMap<String, TValue>],
}

impl Suffix<'_> {
    /// The nodes of the reference's graph that the part runs, and all of them (after tract's
    /// gaps are patched and decided `If`s inlined).
    pub fn nodes(&self) -> (usize, usize) {
        (self.cut.nodes.len(), self.cut.of)
    }

    /// Compares the reference with itself changed by `edits`, run from the weight on; `None`
    /// when an edit changes anything but this weight (the candidate must then be compared
    /// whole).
    pub fn compare(&self, edits: &[Edit]) -> Result<Option<CheckReport>> {
        let Some(weight) = slot_values(&self.slot, edits) else {
            return Ok(None);
        };
        let reference = self.reference;
        let kept = reference.kept.as_ref().expect("parts run on kept outputs");
        let (path, limits) = (reference.path.as_path(), reference.limits());
        let results: Vec<RunStats> = reference
            .runs
            .par_iter()
            .enumerate()
            .map(|(at, &run)| {
                let expected = &kept[at];
                let mut fed = self.cache[at].clone();
                fed.extend(weight.iter().map(|(n, v)| (n.clone(), v.clone())));
                let computed = self
                    .runner
                    .run_with(path, &expected.inputs, &fed)
                    .map_err(|e| run_error(e, path, &expected.inputs, run.0, true))?;
                let mut actual: Vec<&Tensor> = expected.outputs.iter().collect();
                for (&at, value) in self.cut.outputs.iter().zip(&computed) {
                    actual[at] = value;
                }
                measure_run(&actual, expected, &reference.plan, run, limits)
            })
            .collect::<Result<_>>()?;
        Ok(Some(reference.report(&results, limits)))
    }
}

/// What the parts of the selected weights are cut from.
struct Parts {
    proto: pb::ModelProto,
    hint: String,
    slots: BTreeMap<usize, Slot>,
    /// Per selected weight, its part (`None`: left to the caller).
    cuts: Vec<Option<Cut>>,
    /// The reference with every crossing value that is not a graph input as its outputs,
    /// and those values' names and bytes per run.
    tapped: Option<(Runner, Vec<String>, Vec<usize>)>,
    /// How long loading the tapped reference took.
    load: Duration,
}

impl Reference {
    /// Calls `each(w, suffix)` for every weight `w` of `tensors` (indices in
    /// [`Model::tensors`] of the reference's own `model`) whose `candidates` (how many each
    /// weight has) can run from the weight on at a saving, with that weight's [`Suffix`], in
    /// parallel: the results by weight, `None` for a weight left to the caller (see the
    /// [module](self) for which).
    pub fn each_suffix<T, E>(
        &self,
        model: &Model,
        (tensors, candidates): (&[usize], usize),
        each: impl Fn(usize, &Suffix) -> std::result::Result<T, E> + Sync,
    ) -> std::result::Result<Vec<Option<T>>, E>
    where
        T: Send,
        E: From<Error> + Send,
    {
        let mut results: Vec<Option<T>> = tensors.iter().map(|_| None).collect();
        let Some(parts) = self.parts(model, tensors)? else {
            return Ok(results);
        };
        let empty = (Vec::new(), Vec::new());
        let (taps, bytes) = parts
            .tapped
            .as_ref()
            .map_or((&empty.0, &empty.1), |(_, t, b)| (t, b));
        let size: HashMap<&str, usize> = taps
            .iter()
            .map(String::as_str)
            .zip(bytes.iter().map(|b| b * self.runs.len()))
            .collect();
        for group in groups(&parts.cuts, &size) {
            let (cache, run) = self.crossing_values(&parts, &group)?;
            let done = group
                .par_iter()
                .map(|&w| -> std::result::Result<_, E> {
                    let cut = parts.cuts[w].as_ref().expect("grouped weights have parts");
                    let share = cut.nodes.len() as f64 / cut.of.max(1) as f64;
                    let saved = candidates as f64 * run.as_secs_f64() * (1.0 - share);
                    if share * parts.load.as_secs_f64() >= saved {
                        return Ok((w, None));
                    }
                    let Some(runner) = self.load_part(&parts, (tensors[w], cut), &cache) else {
                        return Ok((w, None));
                    };
                    let slot = parts
                        .slots
                        .get_key_value(&tensors[w])
                        .map(|(&t, s)| (t, s.clone()));
                    let suffix = Suffix {
                        reference: self,
                        runner,
                        slot: slot.into_iter().collect(),
                        cut,
                        cache: &cache,
                    };
                    Ok((w, Some(each(w, &suffix)?)))
                })
                .collect::<std::result::Result<Vec<_>, E>>()?;
            for (w, result) in done {
                results[w] = result;
            }
        }
        Ok(results)
    }

    /// The parts of `tensors`, and the reference loaded to compute their crossing values;
    /// `None` when candidates cannot run from their weight on here.
    fn parts(&self, model: &Model, tensors: &[usize]) -> Result<Option<Parts>> {
        if self.kept.is_none() || self.plan.runners.len() != 1 {
            return Ok(None);
        }
        let (path, shapes) = (self.path.as_path(), &self.plan.runners[0].0);
        let bytes = tract_bytes(model)?;
        let folded = inside_tract(|| folded_proto(&bytes, path, (&self.prepared.fixed, shapes)));
        let Ok(Ok((proto, hint))) = folded else {
            return Ok(None);
        };
        let slots = slots(model, tensors)?;
        let cuts: Vec<Option<Cut>> = {
            let Some(graph) = Graph::new(&proto) else {
                return Ok(None);
            };
            tensors
                .iter()
                .map(|t| slots.get(t).and_then(|s| graph.cut(&s.input.name)))
                .collect()
        };
        let mut taps: Vec<String> = Vec::new();
        for name in cuts.iter().flatten().flat_map(|c| &c.crossing) {
            if !shapes.contains_key(name) && !taps.contains(name) {
                taps.push(name.clone());
            }
        }
        let started = Instant::now();
        let tapped = match taps.is_empty() {
            true => None,
            false => match Runner::prepared((&proto, &hint), path, shapes, &taps) {
                Ok(runner) => {
                    let bytes = runner.output_bytes();
                    Some((runner, taps, bytes))
                }
                Err(_) => return Ok(None),
            },
        };
        Ok(Some(Parts {
            proto,
            hint,
            slots,
            cuts,
            tapped,
            load: started.elapsed(),
        }))
    }

    /// The values crossing into the parts of the weights of `group`, per run: the reference
    /// run with them as outputs. Also returns how long the runs took, one after the other.
    fn crossing_values(
        &self,
        parts: &Parts,
        group: &[usize],
    ) -> Result<(Vec<BTreeMap<String, TValue>>, Duration)> {
        let Some((runner, taps, _)) = &parts.tapped else {
            // Every part starts at a graph input: the whole model runs, at no saving.
            return Ok((vec![BTreeMap::new(); self.runs.len()], Duration::ZERO));
        };
        let wanted: BTreeSet<&str> = group
            .iter()
            .filter_map(|&w| parts.cuts[w].as_ref())
            .flat_map(|c| c.crossing.iter().map(String::as_str))
            .collect();
        let kept = self.kept.as_ref().expect("parts run on kept outputs");
        let path = self.path.as_path();
        let runs: Vec<(BTreeMap<String, TValue>, Duration)> = self
            .runs
            .par_iter()
            .zip(kept)
            .map(|(&(first, _), expected)| {
                let started = Instant::now();
                let values = runner
                    .run(path, &expected.inputs)
                    .map_err(|e| run_error(e, path, &expected.inputs, first, true))?;
                let values = taps
                    .iter()
                    .zip(values)
                    .filter(|(name, _)| wanted.contains(name.as_str()))
                    .map(|(name, value)| (name.clone(), value.into_tvalue()))
                    .collect();
                Ok((values, started.elapsed()))
            })
            .collect::<Result<_>>()?;
        let took = runs.iter().map(|(_, d)| *d).sum();
        Ok((runs.into_iter().map(|(v, _)| v).collect(), took))
    }

    /// The part `cut` of weight `tensor` loaded for the crossing values' types and shapes,
    /// or `None` when tract cannot load it.
    fn load_part(
        &self,
        parts: &Parts,
        (tensor, cut): (usize, &Cut),
        cache: &[BTreeMap<String, TValue>],
    ) -> Option<Runner> {
        let input = &parts.slots.get(&tensor)?.input;
        let reference_shapes = &self.plan.runners[0].0;
        let mut shapes = Shapes::new();
        for name in &cut.crossing {
            let fact = match (cache[0].get(name), reference_shapes.get(name)) {
                (Some(value), _) => (value.datum_type(), value.shape().to_vec()),
                (None, Some(fact)) => fact.clone(),
                (None, None) => return None,
            };
            shapes.insert(name.clone(), fact);
        }
        let types: HashMap<String, i32> = shapes
            .iter()
            .filter_map(|(name, (datum, _))| Some((name.clone(), data_type(*datum)? as i32)))
            .collect();
        let mut model = part(&parts.proto, cut, &types);
        weights_as_inputs(&mut model, std::slice::from_ref(input)).ok()?;
        shapes.insert(input.name.clone(), (input.datum, input.shape.clone()));
        Runner::prepared((&model, &parts.hint), &self.path, &shapes, &[]).ok()
    }
}

/// The weights with parts, in order, in groups whose crossing values (bytes over all runs by
/// name in `size`; graph inputs are not counted, being kept already) fit in
/// [`SUFFIX_CACHE_BYTES`]; a weight whose values alone do not is left out.
fn groups(cuts: &[Option<Cut>], size: &HashMap<&str, usize>) -> Vec<Vec<usize>> {
    let bytes = |names: &BTreeSet<&str>| -> usize {
        names
            .iter()
            .map(|n| size.get(n).copied().unwrap_or(0))
            .sum()
    };
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let (mut group, mut names) = (Vec::new(), BTreeSet::new());
    for (w, cut) in cuts.iter().enumerate() {
        let Some(cut) = cut else { continue };
        let own: BTreeSet<&str> = cut.crossing.iter().map(String::as_str).collect();
        if bytes(&own) > SUFFIX_CACHE_BYTES {
            continue;
        }
        let joined: BTreeSet<&str> = names.union(&own).copied().collect();
        if bytes(&joined) > SUFFIX_CACHE_BYTES {
            groups.push(std::mem::take(&mut group));
            names = own;
        } else {
            names = joined;
        }
        group.push(w);
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(crossing: &[&str]) -> Option<Cut> {
        Some(Cut::for_test(crossing))
    }

    /// Weights share a run of the reference while their crossing values fit; one that does
    /// not fit alone is left out.
    #[test]
    fn groups_keep_crossing_values_under_the_bound() {
        let half = SUFFIX_CACHE_BYTES / 2;
        let size = HashMap::from([("a", half), ("b", half), ("c", half), ("huge", 3 * half)]);
        let cuts = vec![
            cut(&["a"]),
            cut(&["a", "b"]),
            None,
            cut(&["huge"]),
            cut(&["c"]),
            cut(&["b"]),
        ];
        assert_eq!(groups(&cuts, &size), vec![vec![0, 1], vec![4, 5]]);
    }
}
