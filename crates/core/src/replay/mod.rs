//! Replaying training masks onto an exported model: resolve each mask key to one weight, orient
//! the mask to the ONNX layout, and turn it into a [`Zeroing`].
//!
//! Resolution, in order: an explicit map; the exact id or tensor name; the key without
//! `_mask`/`_orig` suffixes; the weight whose consumer has the module's bias (`<module>.bias`)
//! as bias input or in a following `Add`; and the only prunable weight of the same or
//! transposed shape.

pub(crate) mod masks;
mod schedule;

pub use masks::{read_masks, Mask};
pub use schedule::{KernelLayout, Manifest, SparsitySchedule, Step, MANIFEST_FORMAT};

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::{Error, Result};
use crate::model::weights::Weight;
use crate::model::Model;
use crate::prune::zeroing::Zeroing;

/// How one mask key was matched to a weight.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Resolution {
    /// The training-side key.
    pub key: String,
    /// The weight id it landed on.
    pub id: String,
    /// Which rule matched.
    pub rule: String,
    /// Whether the mask was transposed (or permuted) to the ONNX layout.
    pub transposed: bool,
    /// Index into [`Model::tensors`].
    #[serde(skip)]
    pub tensor: usize,
}

fn strip_suffixes(key: &str) -> &str {
    let key = key.strip_suffix("_mask").unwrap_or(key);
    key.strip_suffix("_orig").unwrap_or(key)
}

/// The permutation taking the training layout of a mask to the weight's ONNX layout, if the
/// shapes fit.
fn orientation(
    mask: &[usize],
    weight: &Weight,
    dims: &[usize],
    layout: KernelLayout,
) -> Option<Vec<usize>> {
    let identity: Vec<usize> = (0..mask.len()).collect();
    let permuted = |perm: &[usize]| perm.iter().map(|&a| mask[a]).collect::<Vec<_>>() == dims;
    match (mask.len(), layout) {
        (2, _) => {
            // The training layout's input axis: PyTorch [out, in] has it at 1, Keras [in, out] at 0.
            let mask_in_axis = if layout == KernelLayout::Pytorch {
                1
            } else {
                0
            };
            let preferred = match weight.reduction_axis {
                Some(axis) if axis == mask_in_axis => vec![0, 1],
                Some(_) => vec![1, 0],
                None => identity.clone(),
            };
            [preferred, vec![0, 1], vec![1, 0]]
                .into_iter()
                .find(|p| permuted(p))
        }
        (4, KernelLayout::Tensorflow) => [vec![3, 2, 0, 1], identity]
            .into_iter()
            .find(|p| permuted(p)),
        _ => permuted(&identity).then_some(identity),
    }
}

/// Applies `perm` to a row-major mask: output axis `i` is mask axis `perm[i]`.
fn permute(keep: &[bool], shape: &[usize], perm: &[usize]) -> Vec<bool> {
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return keep.to_vec();
    }
    let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
    let mut strides = vec![1usize; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * shape[a + 1];
    }
    let mut out = Vec::with_capacity(keep.len());
    let mut index = vec![0usize; out_shape.len()];
    for _ in 0..keep.len() {
        let source: usize = index.iter().zip(perm).map(|(&i, &a)| i * strides[a]).sum();
        out.push(keep[source]);
        for a in (0..index.len()).rev() {
            index[a] += 1;
            if index[a] < out_shape[a] {
                break;
            }
            index[a] = 0;
        }
    }
    out
}

fn dims(model: &Model, weight: &Weight) -> Vec<usize> {
    model.tensors()[weight.tensor]
        .dims
        .iter()
        .map(|&d| d.max(0) as usize)
        .collect()
}

/// Weights by the bias their consumer takes, directly (`Gemm`/`Conv` input 2 onward) or through
/// an `Add` that follows it: built once, so resolving many masks stays linear in the graph.
fn bias_index(model: &Model, weights: &[Weight]) -> HashMap<String, Vec<usize>> {
    // Per graph: the `Add` nodes that read each value.
    let adds: Vec<HashMap<&str, Vec<usize>>> = model
        .graphs()
        .iter()
        .map(|graph| {
            let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
            for (n, node) in graph
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.op_type == "Add")
            {
                for input in &node.inputs {
                    readers.entry(input.as_str()).or_default().push(n);
                }
            }
            readers
        })
        .collect();
    let mut index: HashMap<String, Vec<usize>> = HashMap::new();
    for (w, weight) in weights.iter().enumerate() {
        let Some(consumer) = &weight.consumer else {
            continue;
        };
        let graph = &model.graphs()[consumer.graph];
        let node = &graph.nodes[consumer.node];
        let direct = node.inputs.iter().skip(2);
        let through_add = node
            .outputs
            .iter()
            .filter_map(|out| adds[consumer.graph].get(out.as_str()))
            .flatten()
            .flat_map(|&add| graph.nodes[add].inputs.iter());
        let mut biases: Vec<&String> = direct.chain(through_add).collect();
        biases.sort();
        biases.dedup();
        for bias in biases {
            index.entry(bias.clone()).or_default().push(w);
        }
    }
    index
}

/// Resolves every mask to one weight and builds its zeroing. `map` (training key -> weight id
/// or tensor name) overrides the other rules.
pub fn resolve(
    model: &Model,
    weights: &[Weight],
    masks: &[Mask],
    map: &BTreeMap<String, String>,
    layout: KernelLayout,
) -> Result<Vec<(Resolution, Zeroing)>> {
    let mut by_name: HashMap<&str, Vec<&Weight>> = HashMap::new();
    for w in weights {
        by_name.entry(w.id.as_str()).or_default().push(w);
        let name = model.tensors()[w.tensor].name.as_str();
        if name != w.id {
            by_name.entry(name).or_default().push(w);
        }
    }
    let find = |name: &str| by_name.get(name).cloned().unwrap_or_default();
    let biases = bias_index(model, weights);
    let mut used = BTreeSet::new();
    let mut out = Vec::new();
    for mask in masks {
        let base = strip_suffixes(&mask.key);
        let module = base.strip_suffix(".weight").unwrap_or(base);
        let fits = |w: &&Weight| orientation(&mask.shape, w, &dims(model, w), layout).is_some();
        if let Some(id) = map.get(&mask.key) {
            if find(id).is_empty() {
                return Err(Error::Usage(format!(
                    "--map sends `{}` to `{id}`, which is not a weight of the model",
                    mask.key
                )));
            }
        }
        // The rules in order; each runs only if those before it found nothing.
        let rule = |r: usize| -> (String, Vec<&Weight>) {
            match r {
                0 => (
                    "--map".into(),
                    map.get(&mask.key).map(|id| find(id)).unwrap_or_default(),
                ),
                1 => ("exact name".into(), find(&mask.key)),
                2 if base != mask.key => (format!("name without suffix (`{base}`)"), find(base)),
                3 => (
                    format!("bias sibling (`{module}.bias`)"),
                    biases
                        .get(&format!("{module}.bias"))
                        .into_iter()
                        .flatten()
                        .map(|&w| &weights[w])
                        .filter(fits)
                        .collect(),
                ),
                4 => (
                    "unique shape".into(),
                    weights
                        .iter()
                        .filter(|w| w.role.prunable())
                        .filter(fits)
                        .filter(|w| !used.contains(&w.tensor))
                        .collect(),
                ),
                _ => (String::new(), Vec::new()),
            }
        };
        let Some((rule, candidates)) = (0..5).map(rule).find(|(_, c)| !c.is_empty()) else {
            let similar: Vec<String> = weights
                .iter()
                .filter(|w| w.role.prunable())
                .map(|w| format!("{} {:?}", w.id, dims(model, w)))
                .collect();
            return Err(Error::Usage(format!(
                "mask `{}` {:?} matches no weight; candidates: {} (use --map to say which)",
                mask.key,
                mask.shape,
                similar.join(", ")
            )));
        };
        if candidates.len() > 1 {
            let ids: Vec<&str> = candidates.iter().map(|w| w.id.as_str()).collect();
            return Err(Error::Usage(format!(
                "mask `{}` is ambiguous by {rule}: {} (use --map to say which)",
                mask.key,
                ids.join(", ")
            )));
        }
        let weight = candidates[0];
        let weight_dims = dims(model, weight);
        let perm = orientation(&mask.shape, weight, &weight_dims, layout).ok_or_else(|| {
            Error::Usage(format!(
                "mask `{}` has shape {:?} but weight `{}` has shape {:?}",
                mask.key, mask.shape, weight.id, weight_dims
            ))
        })?;
        if !used.insert(weight.tensor) {
            return Err(Error::Usage(format!(
                "two masks land on weight `{}` (the second is `{}`)",
                weight.id, mask.key
            )));
        }
        let transposed = perm.iter().enumerate().any(|(i, &p)| i != p);
        out.push((
            Resolution {
                key: mask.key.clone(),
                id: weight.id.clone(),
                rule,
                transposed,
                tensor: weight.tensor,
            },
            Zeroing::Keep(permute(&mask.keep, &mask.shape, &perm)),
        ));
    }
    Ok(out)
}

/// For each key present in both steps, how many elements `later` keeps that `earlier` pruned.
pub fn unpruned(earlier: &[Mask], later: &[Mask]) -> Vec<(String, usize)> {
    let before: BTreeMap<&str, &Mask> = earlier.iter().map(|m| (m.key.as_str(), m)).collect();
    later
        .iter()
        .filter_map(|m| {
            let e = before.get(m.key.as_str())?;
            let count = e
                .keep
                .iter()
                .zip(&m.keep)
                .filter(|(was, now)| !**was && **now)
                .count();
            (count > 0).then(|| (m.key.clone(), count))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permuting_a_keras_conv_kernel_to_onnx_layout() {
        // [kh=1, kw=2, in=1, out=3] -> [out, in, kh, kw]
        let keep = vec![true, false, true, false, true, true];
        let out = permute(&keep, &[1, 2, 1, 3], &[3, 2, 0, 1]);
        // ONNX element [o, 0, 0, w] = Keras element [0, w, 0, o] = keep[w * 3 + o]
        assert_eq!(out, vec![true, false, false, true, true, true]);
    }

    #[test]
    fn transposing_a_matrix() {
        let keep = vec![true, false, false, false, true, true];
        assert_eq!(
            permute(&keep, &[2, 3], &[1, 0]),
            vec![true, false, false, true, false, true]
        );
    }
}
