//! Constants computed by shape-only ops: a per-channel operand written as
//! `Reshape(Constant, Constant)` (Paddle2ONNX's biases), or through Unsqueeze, Squeeze,
//! Identity or Cast of one constant, is folded into the group as that constant: its values
//! are cut where the channels are, and the Reshape targets on the way follow the channel count.

use super::analyze::Builder;
use super::cuts::{Count, CutKind, Operand};
use super::layout::Layout;

/// Ops a folded constant may pass through.
const SHAPE_ONLY: &[&str] = &["Reshape", "Unsqueeze", "Squeeze", "Identity", "Cast"];

/// A Reshape on a chain: the node reading its target constant and at which input (the Reshape
/// itself, or an Identity before it), the target, and the Reshape's output shape.
struct Reshape {
    reader: usize,
    input: usize,
    target: Vec<i64>,
    out: Vec<i64>,
}

/// A chain of shape-only ops over one constant, each link read by the next alone.
pub(super) struct Chain {
    /// The constant at its start (index into the model's tensors).
    source: usize,
    /// When other nodes read that constant too: the chain's first input (node, input), which
    /// gets its own copy.
    reader: Option<(usize, usize)>,
    /// The shape of the chain's result.
    pub dims: Vec<i64>,
    reshapes: Vec<Reshape>,
    /// The tensors the chain makes, in order.
    outputs: Vec<String>,
}

/// Whether `name` is computed from one constant by shape-only ops (foldable or not: see
/// [`chain`]).
pub(super) fn is_computed_constant(b: &Builder, name: &str) -> bool {
    b.const_index(name).is_none() && chain(b, name).is_some()
}

/// The chain that makes `name`: `None` when it is not made by shape-only ops from a constant,
/// `Some(Err(why))` when it is but cannot be folded (a link after the constant read by other
/// nodes too, a shape that is computed). The constant itself may be shared (TorchScript reads
/// an equal initializer of another layer through an `Identity`): the chain reads a copy.
pub(super) fn chain(b: &Builder, name: &str) -> Option<Result<Chain, String>> {
    if let Some(source) = b.const_index(name) {
        return Some(Ok(Chain {
            source,
            reader: None,
            dims: b.model.tensors()[source].dims.clone(),
            reshapes: Vec::new(),
            outputs: Vec::new(),
        }));
    }
    let at = b.producer_of(name)?;
    let node = &b.model.graphs()[0].nodes[at];
    if !SHAPE_ONLY.contains(&node.op_type.as_str()) {
        return None;
    }
    let input = node.inputs.first()?;
    let mut chain = match chain(b, input)? {
        Ok(chain) => chain,
        Err(why) => return Some(Err(why)),
    };
    if b.uses_of(input) != 1 {
        if b.const_index(input).is_none() {
            return Some(Err(format!("`{input}` is read by other nodes too")));
        }
        chain.reader = Some((at, 0));
    }
    let label = node.label(at);
    let dims = &chain.dims;
    let out = match node.op_type.as_str() {
        "Reshape" => {
            let Some((reader, input, target)) = shape_constant(b, at) else {
                return Some(Err(format!("`{label}` reshapes to a computed shape")));
            };
            let Some(out) = reshaped(dims, &target) else {
                return Some(Err(format!("`{label}` reshapes {dims:?} to {target:?}")));
            };
            chain.reshapes.push(Reshape {
                reader,
                input,
                target,
                out: out.clone(),
            });
            out
        }
        "Unsqueeze" | "Squeeze" => {
            let axes = match node.inputs.get(1).filter(|n| !n.is_empty()) {
                Some(name) => b.const_ints(name),
                None => node.int_lists.get("axes").cloned(),
            };
            let out = if node.op_type == "Unsqueeze" {
                axes.and_then(|axes| unsqueezed(dims, &axes))
            } else {
                squeezed(dims, axes.as_deref())
            };
            let Some(out) = out else {
                return Some(Err(format!("`{label}` has axes that do not fit {dims:?}")));
            };
            out
        }
        _ => dims.clone(),
    };
    chain.dims = out;
    chain.outputs.push(name.to_string());
    Some(Ok(chain))
}

/// Folds `chain`, a per-channel operand of `x`'s channels, into `x`'s groups: the cut of its
/// source constant (returned), the Reshape targets on the way recounted.
pub(super) fn fold(b: &mut Builder, x: &Layout, chain: Chain) -> Result<usize, String> {
    let channels = x.total() as i64;
    let source = &b.model.tensors()[chain.source];
    let Some(axis) = single_axis(&source.dims, channels) else {
        return Err(format!(
            "constant `{}` of shape {:?} is not one value per channel",
            source.name, source.dims
        ));
    };
    for reshape in &chain.reshapes {
        let Some(pos) = single_axis(&reshape.out, channels) else {
            return Err(format!(
                "a Reshape on the way to shape {:?} is not one value per channel",
                reshape.out
            ));
        };
        let counts = reshape
            .target
            .iter()
            .enumerate()
            .map(|(i, &v)| match i == pos && v == channels {
                true => Count::Kept(x.owners(1)),
                false => Count::Fixed(v),
            })
            .collect();
        b.recount_input(reshape.reader, reshape.input, counts)
            .ok_or("a Reshape target on the way is not a constant")?;
    }
    let operand = Operand {
        tensor: chain.source,
        reader: chain.reader,
    };
    let cut = b.cut_operand(operand, axis, x.owners(1), CutKind::Param);
    // The chain's tensors follow the channel count: their recorded shapes go stale.
    for name in chain.outputs {
        b.layouts.insert(name, x.clone());
    }
    Ok(cut)
}

/// The target of Reshape `at`: (the node reading the constant, its input, the values), the
/// constant given directly or through an Identity read by this Reshape alone.
fn shape_constant(b: &Builder, at: usize) -> Option<(usize, usize, Vec<i64>)> {
    let name = b.model.graphs()[0].nodes[at].inputs.get(1)?;
    if b.const_index(name).is_some() {
        return Some((at, 1, b.const_ints(name)?));
    }
    let identity = b.producer_of(name)?;
    let node = &b.model.graphs()[0].nodes[identity];
    let source = node.inputs.first()?;
    (node.op_type == "Identity" && b.uses_of(name) == 1 && b.const_index(source).is_some())
        .then_some(())?;
    Some((identity, 0, b.const_ints(source)?))
}

/// The output shape of reshaping `dims` to `target` (0 copies a dimension, -1 is inferred).
fn reshaped(dims: &[i64], target: &[i64]) -> Option<Vec<i64>> {
    let elements: i64 = dims.iter().product();
    let mut out: Vec<i64> = target
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v == 0 {
                dims.get(i).copied()
            } else {
                Some(v)
            }
        })
        .collect::<Option<_>>()?;
    let known: i64 = out.iter().filter(|&&v| v != -1).product();
    match out.iter().filter(|&&v| v == -1).count() {
        0 => (known == elements).then_some(out),
        1 if known > 0 && elements % known == 0 => {
            for v in out.iter_mut().filter(|v| **v == -1) {
                *v = elements / known;
            }
            Some(out)
        }
        _ => None,
    }
}

/// `dims` with ones inserted at `axes` (of the output).
fn unsqueezed(dims: &[i64], axes: &[i64]) -> Option<Vec<i64>> {
    let rank = (dims.len() + axes.len()) as i64;
    let mut axes: Vec<i64> = axes
        .iter()
        .map(|&a| if a < 0 { a + rank } else { a })
        .collect();
    axes.sort_unstable();
    let mut out = dims.to_vec();
    for a in axes {
        if a < 0 || a > out.len() as i64 {
            return None;
        }
        out.insert(a as usize, 1);
    }
    Some(out)
}

/// `dims` without the ones at `axes` (every one when not given).
fn squeezed(dims: &[i64], axes: Option<&[i64]>) -> Option<Vec<i64>> {
    let rank = dims.len() as i64;
    let drop: Vec<usize> = match axes {
        Some(axes) => axes
            .iter()
            .map(|&a| usize::try_from(if a < 0 { a + rank } else { a }).ok())
            .collect::<Option<_>>()?,
        None => (0..dims.len()).filter(|&i| dims[i] == 1).collect(),
    };
    if drop.iter().any(|&a| dims.get(a) != Some(&1)) {
        return None;
    }
    Some(
        (0..dims.len())
            .filter(|i| !drop.contains(i))
            .map(|i| dims[i])
            .collect(),
    )
}

/// The one axis of `dims` of size `channels` when every other is 1.
fn single_axis(dims: &[i64], channels: i64) -> Option<usize> {
    let axis = dims.iter().position(|&d| d == channels)?;
    dims.iter()
        .enumerate()
        .all(|(i, &d)| i == axis || d == 1)
        .then_some(axis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_reshape_unsqueeze_and_squeeze() {
        assert_eq!(reshaped(&[8], &[1, -1, 1, 1]), Some(vec![1, 8, 1, 1]));
        assert_eq!(reshaped(&[1, 8], &[0, 8, 1]), Some(vec![1, 8, 1]));
        assert_eq!(reshaped(&[8], &[3, -1]), None);
        assert_eq!(unsqueezed(&[8], &[0, -1, -2]), Some(vec![1, 8, 1, 1]));
        assert_eq!(squeezed(&[1, 8, 1], Some(&[-1])), Some(vec![1, 8]));
        assert_eq!(squeezed(&[1, 8, 1], None), Some(vec![8]));
        assert_eq!(squeezed(&[1, 8], Some(&[1])), None);
        assert_eq!(single_axis(&[1, 8, 1, 1], 8), Some(1));
        assert_eq!(single_axis(&[2, 8], 8), None);
    }
}
