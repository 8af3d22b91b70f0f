//! Reshapes and Expands of head axes: a projection's `[.., H·D]` split into `[.., H, D]`, merged
//! back, folded into the batch axis and out again (the dynamo exporter's `Kᵀ`), viewed, and
//! repeated for grouped-query attention (`Expand` then Reshape of `[B, Hkv, r, S, D]`). Targets
//! are read through [`super::shape_expr`]; a constant head count in them is recounted.

use num_integer::lcm;

use super::analyze::Builder;
use super::cuts::{Count, Recount};
use super::heads::{head_axis, merge};
use super::layout::{Flat, Head, Layout, Owner};
use super::shape_expr::{elements, Place, Sym};
use crate::model::Node;

/// A Reshape of a channel layout whose channel axis is last (`[.., C]`): to `[.., H, D]` (heads
/// of `D` channels) or to other leading axes with the channel axis kept last (`[B·S, C]`).
/// `None` when the target is neither.
pub(crate) fn reshape_channels(
    b: &mut Builder,
    index: usize,
    x: &Layout,
) -> Option<std::result::Result<Layout, String>> {
    if x.head.is_some() || x.flat != Flat::No || x.neg != -1 {
        return None;
    }
    let target = elements(b, index, 1)?;
    let total = x.total() as i64;
    let minus_ones = target.iter().filter(|s| s.value() == Some(-1)).count();
    // The channel axis stays last: `[.., C]`, C given or read from the input's shape.
    let last_axis = x.rank.map(|r| r - 1);
    let kept = match target.last()? {
        Sym::Const(v, place) if *v == total => {
            recount(b, *place, x.owners(1))?;
            true
        }
        Sym::Dim(t, a) => *t == b.model.graphs()[0].nodes[index].inputs[0] && Some(*a) == last_axis,
        _ => false,
    };
    if kept && target.len() >= 2 {
        return Some(Ok(Layout {
            rank: Some(target.len()),
            ..x.clone()
        }));
    }
    // Heads: the last two axes of the target (H, D) partition each row of H·D channels,
    // whatever the axes before them are.
    let rank = target.len() - 1;
    if rank < 2 {
        return None;
    }
    let (h, d) = (&target[rank - 1], target[rank].value()?);
    if d <= 0 || total % d != 0 || minus_ones > 1 {
        return None;
    }
    let heads = total / d;
    if h.value() != Some(heads) && h.value() != Some(-1) {
        return None;
    }
    let per = d as usize;
    for seg in &x.segs {
        let Some(g) = seg.group else { continue };
        let (root, offset) = b.find_off(g);
        if (seg.start + offset) % per != 0 || seg.len % per != 0 {
            return Some(Err(format!(
                "its heads of {per} channels cut across channel groups"
            )));
        }
        b.raw[root].block = lcm(b.raw[root].block, per);
    }
    let out = Layout {
        rank: Some(rank + 1),
        neg: -2,
        head: Some(Head::new(per)),
        ..x.clone()
    };
    if let Sym::Const(_, place) = h {
        if h.value() == Some(heads) && !count_place(b, *place, &out) {
            return Some(Err(
                "its head count is shared with heads that do not line up".into(),
            ));
        }
    }
    Some(Ok(out))
}

/// The owner of each position of the head axis of `x` (a repeated head once per repeat).
pub(super) fn position_owners(x: &Layout) -> Vec<Owner> {
    let head = x.head.unwrap_or(Head::new(1));
    x.head_owners(head.per)
        .into_iter()
        .flat_map(|o| std::iter::repeat_n(o, head.repeat))
        .collect()
}

/// The number of positions of the head axis of `x`.
pub(super) fn positions(x: &Layout) -> usize {
    position_owners(x).len()
}

/// Records that the constant at `place` counts the kept positions among `owners`.
fn recount(b: &mut Builder, place: Place, owners: Vec<Owner>) -> Option<()> {
    let name = &b.model.graphs()[0].nodes[place.node].inputs[place.input];
    let values = b.const_ints(name)?;
    let counts = values
        .iter()
        .enumerate()
        .map(|(i, &v)| match i == place.index {
            true => Count::Kept(owners.clone()),
            false => Count::Fixed(v),
        })
        .collect();
    b.recount_input(place.node, place.input, counts)
}

/// Records that the head count at `place` follows the heads of `heads`; a place read for
/// other heads too merges them (one count, the same heads kept), unless the current node
/// reads it through a shared shape computation it can have a copy of. False when they cannot
/// merge.
fn count_place(b: &mut Builder, place: Place, heads: &Layout) -> bool {
    let key = (place.node, place.input, place.index);
    if let Some(first) = b.head_counts.get(&key).cloned() {
        let roots = |l: &Layout, b: &Builder| -> Vec<usize> {
            let mut roots: Vec<usize> = l.groups().map(|g| b.find(g)).collect();
            roots.sort_unstable();
            roots.dedup();
            roots
        };
        let (theirs, ours) = (roots(&first, b), roots(heads, b));
        if ours.iter().all(|r| !theirs.contains(r)) && copy_shape(b, place, heads).is_some() {
            return true;
        }
        return merge(b, &first, heads);
    }
    b.head_counts.insert(key, heads.clone());
    recount(b, place, position_owners(heads)).is_some()
}

/// When the current node reads its shape (input 1) straight from node `place.node`, which
/// other nodes read too, records that it reads a copy of that node whose head count follows
/// `heads`: each layer's `repeat_kv` gets its own count, so its heads stay its own.
fn copy_shape(b: &mut Builder, place: Place, heads: &Layout) -> Option<()> {
    let graph = &b.model.graphs()[0];
    let reader = b.here.0;
    let shape = graph.nodes[reader].inputs.get(1)?;
    if place.node == reader || b.producer_of(shape) != Some(place.node) {
        return None;
    }
    let name = &graph.nodes[place.node].inputs[place.input];
    let tensor = b.const_index(name)?;
    let owners = position_owners(heads);
    let counts = b
        .const_ints(name)?
        .iter()
        .enumerate()
        .map(|(i, &v)| match i == place.index {
            true => Count::Kept(owners.clone()),
            false => Count::Fixed(v),
        })
        .collect();
    b.recounts.push(Recount::NodeCopy {
        reader: (reader, 1),
        node: place.node,
        at: place.input,
        tensor,
        counts,
    });
    Some(())
}

/// Back to channels (`[.., H, D]` → `[.., H·D]`), into the batch (`[B, H, S, D]` →
/// `[B·H, S, D]`) and out of it again.
pub(super) fn reshape(
    b: &mut Builder,
    index: usize,
    node: &Node,
    x: &Layout,
) -> std::result::Result<Layout, String> {
    let head = x.head.expect("a head layout");
    let target = elements(b, index, 1).ok_or("its target shape cannot be followed")?;
    let rank = x.rank.ok_or("the rank of its head input is unknown")?;
    let axis = head_axis(x)?;
    let minus_ones = target.iter().filter(|s| s.value() == Some(-1)).count();
    let total = x.total() as i64;
    let named = |s: &Sym, t: &str, a: usize| matches!(s, Sym::Dim(n, i) if n == t && *i == a);
    let input = node.inputs[0].as_str();
    if let (Some(r), false) = (head.expanded, head.folded) {
        // The repeats become heads: `[B, H, r, S, D]` → `[B, H·r, S, D]`.
        if target.len() + 1 != rank || axis + 2 >= rank {
            return Err(format!("it reshapes repeated heads to {}", show(&target)));
        }
        let out = Layout {
            rank: Some(rank - 1),
            neg: axis as i64 - (rank - 1) as i64,
            head: Some(Head {
                repeat: head.repeat * r,
                expanded: None,
                ..head
            }),
            ..x.clone()
        };
        let fits = match &target[axis] {
            Sym::Const(v, place) => *v as usize == positions(&out) && count_place(b, *place, &out),
            Sym::Unknown | Sym::Dim(..) => true,
        };
        return match fits {
            true => Ok(out),
            false => Err(format!("it reshapes repeated heads to {}", show(&target))),
        };
    }
    if head.expanded.is_some() {
        return Err("it reshapes repeated heads".into());
    }
    if !head.folded && axis + 2 == rank && target.len() < rank {
        // Merge: the head axis and the last one become the channel axis (`[.., H·D]`, or
        // `[B·S, H·D]` before a Gemm).
        let last = target.last().ok_or("it reshapes the heads to a scalar")?;
        match last {
            Sym::Const(v, place) if *v == total => {
                recount(b, *place, x.owners(1)).ok_or("its target shape is not constant")?;
            }
            Sym::Const(-1, _) if minus_ones == 1 && target.len() + 1 == rank => {}
            _ => return Err(format!("it reshapes the heads to {}", show(&target))),
        }
        return Ok(Layout {
            rank: Some(target.len()),
            neg: -1,
            head: None,
            ..x.clone()
        });
    }
    if !head.folded
        && axis == 1
        && target.len() + 1 == rank
        && target[0].value() == Some(-1)
        && (1..target.len()).all(|i| named(&target[i], input, i + 1))
    {
        return Ok(Layout {
            rank: Some(rank - 1),
            neg: 1 - rank as i64,
            head: Some(Head {
                folded: true,
                ..head
            }),
            ..x.clone()
        });
    }
    if target.len() == rank && !head.folded {
        // The same axes (a view): the head axis keeps its place and count.
        let heads = positions(x) as i64;
        let kept = match &target[axis] {
            Sym::Const(-1, _) => minus_ones == 1,
            Sym::Const(v, place) if *v == heads => count_place(b, *place, x),
            Sym::Dim(t, a) => *a == axis && b.layouts.get(t).is_some_and(|l| l.head == x.head),
            _ => false,
        };
        if kept {
            return Ok(x.clone());
        }
    }
    if head.folded && axis == 0 && target.len() == rank + 1 {
        if let (Sym::Dim(t, 0), Sym::Dim(u, 1)) = (&target[0], &target[1]) {
            let unfolded = b
                .layouts
                .get(t)
                .cloned()
                .filter(|l| t == u && l.axis() == Some(1) && l.head.is_some_and(|h| !h.folded));
            if let Some(unfolded) = unfolded {
                if merge(b, &unfolded, x) {
                    return Ok(Layout {
                        rank: Some(rank + 1),
                        neg: -(rank as i64),
                        head: Some(Head {
                            folded: false,
                            ..head
                        }),
                        ..x.clone()
                    });
                }
            }
        }
    }
    Err(format!("it reshapes the heads to {}", show(&target)))
}

/// A target shape for messages: constants, and `?` for run-time dimensions.
fn show(target: &[Sym]) -> String {
    let parts: Vec<String> = target
        .iter()
        .map(|s| s.value().map_or("?".to_string(), |v| v.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// `Expand` of `[B, H, 1, S, D]` to `[B, H, r, S, D]` (grouped-query attention's
/// `repeat_kv`): each head repeated `r` times on the axis after the head axis.
pub(super) fn expand(
    b: &mut Builder,
    index: usize,
    x: &Layout,
) -> std::result::Result<Layout, String> {
    let head = x.head.expect("a head layout");
    let target = elements(b, index, 1).ok_or("its shape cannot be followed")?;
    let rank = x.rank.ok_or("the rank of its head input is unknown")?;
    let axis = head_axis(x)?;
    if target.len() != rank || head.folded || head.expanded.is_some() {
        return Err(format!("it expands the heads to {}", show(&target)));
    }
    let count_fits = match &target[axis] {
        Sym::Const(1 | -1, _) | Sym::Dim(..) | Sym::Unknown => true,
        Sym::Const(v, place) => *v as usize == positions(x) && count_place(b, *place, x),
    };
    let repeat = target.get(axis + 1).and_then(Sym::value).filter(|&r| r > 1);
    match (count_fits, repeat) {
        (false, _) => Err(format!("it expands the heads to {}", show(&target))),
        (true, None) => Ok(x.clone()),
        (true, Some(r)) => Ok(Layout {
            head: Some(Head {
                expanded: Some(r as usize),
                ..head
            }),
            ..x.clone()
        }),
    }
}
