//! Attention heads as channel groups. A Reshape of `[.., H·D]` to `[.., H, D]` turns a
//! projection's channels into a head axis (each position one head of `D` channels, removed
//! whole); Transposes move that axis, the attention MatMuls (`Q·Kᵀ`, `P·V`) merge the heads of
//! their two inputs, Softmax and the scale and mask pass them through, and the Reshape back to
//! `[.., H·D]` gives the output projection its channels again. Reshape targets are followed
//! through `Shape → Gather → Concat` ([`super::shape_expr`]); their constant head counts are
//! recounted.
//!
//! Any node reading a head axis is handled here: what this module does not know blocks.

use std::collections::HashSet;

use num_integer::{gcd, lcm};

use crate::error::Result;
use crate::model::Node;

use super::analyze::{Builder, Count, CutKind};
use super::layout::{Flat, Head, Layout, Owner};
use super::ops::{Outputs, KEEP_ZERO, NOT_ZERO};
use super::shape_expr::{elements, Place, Sym};

/// Whether any input of the node holds heads.
pub(crate) fn reads_heads(ins: &[Option<Layout>]) -> bool {
    ins.iter().flatten().any(|l| l.head.is_some())
}

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
        head: Some(Head { per, folded: false }),
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
/// other heads too merges them (one count, the same heads kept). False when they cannot merge.
fn count_place(b: &mut Builder, place: Place, heads: &Layout) -> bool {
    let key = (place.node, place.input, place.index);
    if let Some(first) = b.head_counts.get(&key).cloned() {
        return merge(b, &first, heads);
    }
    b.head_counts.insert(key, heads.clone());
    let per = heads.head.map_or(1, |h| h.per);
    recount(b, place, heads.head_owners(per)).is_some()
}

/// Merges `a` and `o` channel for channel (the same heads go from both); false when they do
/// not line up.
pub(crate) fn merge(b: &mut Builder, a: &Layout, o: &Layout) -> bool {
    let per = |l: &Layout| l.head.map(|h| h.per);
    if a.total() != o.total() || per(a) != per(o) || a.segs.len() != o.segs.len() {
        return false;
    }
    for (sa, so) in a.segs.iter().zip(&o.segs) {
        if sa.len != so.len {
            return false;
        }
        match (sa.group, so.group) {
            (None, None) => {}
            (Some(ga), Some(go)) => {
                let ((ra, offa), (ro, offo)) = (b.find_off(ga), b.find_off(go));
                let (at_a, at_o) = (sa.start + offa, so.start + offo);
                if ra == ro {
                    // Parts of one group (a fused QKV projection): the same heads of each part.
                    if at_a != at_o {
                        let raw = &mut b.raw[ra];
                        raw.period = gcd(gcd(raw.period, at_a.abs_diff(at_o)), raw.size);
                    }
                } else if at_a == 0 && sa.len == b.raw[ra].size {
                    b.embed(ra, ro, at_o);
                } else if at_o == 0 && so.len == b.raw[ro].size {
                    b.embed(ro, ra, at_a);
                } else {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// Handles a node that reads a head axis.
pub(crate) fn apply(
    b: &mut Builder,
    index: usize,
    node: &Node,
    ins: &[Option<Layout>],
) -> Result<Outputs> {
    let op = node.op_type.as_str();
    let first = ins.iter().flatten().next().cloned().expect("a head input");
    let out = match op {
        "Shape" | "Size" => return Ok(Some(vec![None])),
        "Reshape" => reshape(b, index, node, &first),
        "Transpose" => transpose(node, &first),
        "MatMul" => attention(b, ins),
        "Softmax" | "LogSoftmax" => softmax(b, node, &first),
        "Add" | "Sub" | "Mul" | "Div" | "Where" | "Max" | "Min" | "Equal" | "And" | "Or" => {
            elementwise(b, node, ins)
        }
        "Slice" | "Split" | "Concat" | "Unsqueeze" | "Squeeze" => along(b, node, ins),
        "IsNaN" | "IsInf" | "Not" => Ok(first),
        _ if KEEP_ZERO.contains(&op) || NOT_ZERO.contains(&op) => {
            let mut x = first;
            if NOT_ZERO.contains(&op) {
                b.not_zero(&mut x);
            }
            Ok(x)
        }
        _ => Err("an op this tool does not pass attention heads through".into()),
    };
    let outs = node.outputs.len();
    match out {
        Ok(layout) => {
            b.member(&layout, CutKind::Param);
            let outputs = if op == "Split" { outs } else { 1 };
            Ok(Some(vec![Some(layout); outputs]))
        }
        Err(why) => {
            for l in ins.iter().flatten() {
                b.block_here(l, &why);
            }
            Ok(Some(vec![None; outs]))
        }
    }
}

/// The head axis counted from the start.
fn head_axis(x: &Layout) -> std::result::Result<usize, String> {
    x.axis()
        .ok_or_else(|| "the rank of its head input is unknown".to_string())
}

/// Back to channels (`[.., H, D]` → `[.., H·D]`), into the batch (`[B, H, S, D]` →
/// `[B·H, S, D]`) and out of it again.
fn reshape(
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
        let heads = total / head.per as i64;
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

fn transpose(node: &Node, x: &Layout) -> std::result::Result<Layout, String> {
    let rank = x.rank.ok_or("the rank of its head input is unknown")?;
    let axis = head_axis(x)?;
    let perm: Vec<usize> = match node.int_lists.get("perm") {
        Some(perm) => perm.iter().map(|&p| p.max(0) as usize).collect(),
        None => (0..rank).rev().collect(),
    };
    let at = perm
        .iter()
        .position(|&p| p == axis)
        .ok_or("its permutation does not match its input's rank")?;
    if x.head.is_some_and(|h| h.folded) && at != 0 {
        return Err("it moves heads folded into the batch axis".into());
    }
    Ok(Layout {
        neg: at as i64 - rank as i64,
        ..x.clone()
    })
}

/// `Q·Kᵀ` and `P·V`: both inputs hold the same heads on the same batch axis; the product
/// holds them too.
fn attention(b: &mut Builder, ins: &[Option<Layout>]) -> std::result::Result<Layout, String> {
    let (Some(Some(a)), Some(Some(o))) = (ins.first(), ins.get(1)) else {
        return Err("it multiplies heads with a tensor that holds none".into());
    };
    if a.neg != o.neg || a.neg > -3 || a.rank != o.rank || a.head != o.head {
        return Err("its inputs do not hold heads on the same batch axis".into());
    }
    if !merge(b, a, o) {
        return Err("its inputs' heads do not line up".into());
    }
    // A product is zero where one factor is.
    let nonzero = a.nonzero.clone().and(o.nonzero.clone());
    Ok(Layout {
        nonzero,
        ..o.clone()
    })
}

fn softmax(b: &mut Builder, node: &Node, x: &Layout) -> std::result::Result<Layout, String> {
    let rank = x.rank.ok_or("the rank of its head input is unknown")? as i64;
    let head = head_axis(x)? as i64;
    let axis = node.ints.get("axis").copied().unwrap_or(-1);
    let axis = if axis < 0 { axis + rank } else { axis };
    // Before opset 13 the axes from `axis` on are flattened into one.
    let opset13 = b
        .model
        .info()
        .opsets
        .iter()
        .any(|(domain, v)| (domain.is_empty() || domain == "ai.onnx") && *v >= 13);
    if axis == head || (!opset13 && axis <= head) {
        return Err("it normalises across heads".into());
    }
    let mut x = x.clone();
    b.not_zero(&mut x);
    Ok(x)
}

/// Element-wise ops: head inputs merge; other inputs must not vary across heads.
fn elementwise(
    b: &mut Builder,
    node: &Node,
    ins: &[Option<Layout>],
) -> std::result::Result<Layout, String> {
    let layouts: Vec<&Layout> = ins.iter().flatten().collect();
    let mut x = layouts[0].clone();
    for other in &layouts[1..] {
        if other.neg != x.neg || other.rank != x.rank || !merge(b, &x, other) {
            return Err("its inputs' heads do not line up".into());
        }
    }
    let heads = x.total() / x.head.map_or(1, |h| h.per);
    let additive = !matches!(node.op_type.as_str(), "Mul" | "Div" | "And");
    for (i, name) in node.inputs.iter().enumerate() {
        if name.is_empty() || ins[i].is_some() {
            continue;
        }
        match b.const_index(name) {
            Some(t) => {
                let dims = &b.model.tensors()[t].dims;
                let at = dims.len() as i64 + x.neg;
                if at >= 0 && dims[at as usize] != 1 {
                    return Err(format!("constant `{name}` varies across heads"));
                }
                let zero = b
                    .const_floats(name)
                    .is_some_and(|v| v.iter().all(|&v| v == 0.0));
                if additive && !zero {
                    b.not_zero(&mut x);
                }
            }
            None if same_for_every_head(b, name, heads) => {
                if additive {
                    b.not_zero(&mut x);
                }
            }
            None => {
                let why = b.no_channels(name);
                return Err(format!("it mixes the heads with {why}"));
            }
        }
    }
    if node.op_type == "Div" && ins.get(1).is_some_and(Option::is_some) {
        b.not_zero(&mut x);
    }
    Ok(x)
}

/// Whether the computed tensor `name` (an attention mask, rotary tables) is the same for
/// every head: it is made only from graph inputs, constants and run-time shapes, and no
/// constant shape on the way (of a Reshape, Expand, Tile or ConstantOfShape) holds the head
/// count, which could give it a head axis of its own.
fn same_for_every_head(b: &Builder, name: &str, heads: usize) -> bool {
    let graph = &b.model.graphs()[0];
    let mut todo = vec![name.to_string()];
    let mut seen = HashSet::new();
    while let Some(name) = todo.pop() {
        if seen.len() > 4096 {
            return false;
        }
        if !seen.insert(name.clone()) || b.is_const(&name) {
            continue;
        }
        if b.layouts.contains_key(&name) || b.is_lost(&name) {
            return false;
        }
        let Some(p) = b.producer_of(&name) else {
            continue; // a graph input
        };
        let producer = &graph.nodes[p];
        let shape_input = match producer.op_type.as_str() {
            "Shape" | "Size" => continue,
            "Reshape" | "Expand" | "Tile" => Some(1),
            "ConstantOfShape" => Some(0),
            _ => None,
        };
        let holds_heads = shape_input
            .and_then(|i| producer.inputs.get(i))
            .and_then(|shape| b.const_ints(shape))
            .is_some_and(|dims| dims.contains(&(heads as i64)));
        if holds_heads || !producer.subgraphs.is_empty() {
            return false;
        }
        todo.extend(producer.inputs.iter().filter(|i| !i.is_empty()).cloned());
    }
    true
}

/// Slice, Split, Concat, Squeeze and Unsqueeze along other axes than the heads (rotary
/// embeddings' halves of a head).
fn along(
    b: &mut Builder,
    node: &Node,
    ins: &[Option<Layout>],
) -> std::result::Result<Layout, String> {
    let x = ins.iter().flatten().next().expect("a head input").clone();
    let rank = x.rank.ok_or("the rank of its head input is unknown")?;
    let axis = head_axis(&x)?;
    let op = node.op_type.as_str();
    let given = |i: usize, attr: &str| match node.inputs.get(i).filter(|n| !n.is_empty()) {
        Some(name) => b.const_ints(name),
        None => node.int_lists.get(attr).cloned(),
    };
    let positive = |a: i64, rank: usize| if a < 0 { a + rank as i64 } else { a };
    match op {
        "Concat" => {
            let at = positive(node.ints.get("axis").copied().unwrap_or(0), rank);
            if at == axis as i64 {
                return Err("it joins tensors along the head axis".into());
            }
            for (i, name) in node.inputs.iter().enumerate() {
                match &ins[i] {
                    Some(other) if other.neg == x.neg && merge(b, &x, other) => {}
                    _ => return Err(format!("it joins the heads with `{name}`")),
                }
            }
            Ok(x)
        }
        "Split" => {
            let at = positive(node.ints.get("axis").copied().unwrap_or(0), rank);
            if at == axis as i64 {
                return Err("it splits the head axis".into());
            }
            Ok(x)
        }
        "Slice" => {
            if ins.iter().skip(1).any(Option::is_some) {
                return Err("its bounds depend on the heads".into());
            }
            let axes = given(3, "axes").ok_or("it slices every axis")?;
            if axes.iter().any(|&a| positive(a, rank) == axis as i64) {
                return Err("it slices the head axis".into());
            }
            Ok(x)
        }
        _ => {
            let axes = given(1, "axes").ok_or("its axes are not constant")?;
            let (new_rank, moved) = if op == "Squeeze" {
                let axes: Vec<i64> = axes.iter().map(|&a| positive(a, rank)).collect();
                if axes.contains(&(axis as i64)) {
                    return Err("it squeezes the head axis".into());
                }
                let before = axes.iter().filter(|&&a| a < axis as i64).count();
                (rank - axes.len(), axis - before)
            } else {
                let new_rank = rank + axes.len();
                let mut axes: Vec<i64> = axes.iter().map(|&a| positive(a, new_rank)).collect();
                axes.sort_unstable();
                let mut at = axis as i64;
                for a in axes {
                    if a <= at {
                        at += 1;
                    }
                }
                (new_rank, at as usize)
            };
            if x.head.is_some_and(|h| h.folded) && moved != 0 {
                return Err("it moves heads folded into the batch axis".into());
            }
            Ok(Layout {
                rank: Some(new_rank),
                neg: moved as i64 - new_rank as i64,
                ..x
            })
        }
    }
}
