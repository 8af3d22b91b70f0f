//! Attention heads as channel groups. A Reshape of `[.., H·D]` to `[.., H, D]` turns a
//! projection's channels into a head axis (each position one head of `D` channels, removed
//! whole); Transposes move that axis, the attention MatMuls (`Q·Kᵀ`, `P·V`) merge the heads of
//! their two inputs, Softmax and the scale and mask pass them through, and the Reshape back to
//! `[.., H·D]` gives the output projection its channels again (the Reshapes are in
//! [`super::head_shapes`]). Under grouped-query attention K and V reach the MatMuls with each
//! head repeated: the query group's unit becomes the query heads of one KV head, linked to that
//! KV head ([`super::links`]).
//!
//! Any node reading a head axis is handled here: what this module does not know blocks.

use std::collections::HashSet;

use num_integer::lcm;

use crate::error::Result;
use crate::model::Node;

use super::analyze::Builder;
use super::cuts::CutKind;
use super::elementwise::merge_segments;
use super::head_shapes::{expand, positions, reshape};
use super::index_maps::{ints, is_channel, squeeze};
use super::layout::{Head, Layout};
use super::ops::{Outputs, KEEP_ZERO, NOT_ZERO};

/// Whether any input of the node holds heads.
pub(crate) fn reads_heads(ins: &[Option<Layout>]) -> bool {
    ins.iter().flatten().any(|l| l.head.is_some())
}

/// Merges `a` and `o` channel for channel (the same heads go from both, also heads of
/// several parts of one group); false when they do not line up.
pub(crate) fn merge(b: &mut Builder, a: &Layout, o: &Layout) -> bool {
    let per = |l: &Layout| l.head.map(|h| h.per);
    per(a) == per(o) && merge_segments(b, a, o, true)
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
        "Expand" => expand(b, index, &first),
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
pub(super) fn head_axis(x: &Layout) -> std::result::Result<usize, String> {
    x.axis()
        .ok_or_else(|| "the rank of its head input is unknown".to_string())
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
/// holds them too. With grouped-query attention one side repeats its heads: the other side's
/// unit becomes the query heads of one repeated head, linked to that head.
fn attention(b: &mut Builder, ins: &[Option<Layout>]) -> std::result::Result<Layout, String> {
    let (Some(Some(a)), Some(Some(o))) = (ins.first(), ins.get(1)) else {
        return Err("it multiplies heads with a tensor that holds none".into());
    };
    let (ha, ho) = (a.head.expect("heads"), o.head.expect("heads"));
    let same_axis = a.neg == o.neg && a.neg <= -3 && a.rank == o.rank;
    let shape = |h: Head| (h.per, h.folded, h.expanded);
    if !same_axis || shape(ha) != shape(ho) || positions(a) != positions(o) {
        return Err("its inputs do not hold heads on the same batch axis".into());
    }
    // A product is zero where one factor is.
    let nonzero = a.nonzero.clone().and(o.nonzero.clone());
    if ha.repeat == ho.repeat {
        if !merge(b, a, o) {
            return Err("its inputs' heads do not line up".into());
        }
        return Ok(Layout {
            nonzero,
            ..o.clone()
        });
    }
    let (plain, repeated) = if ha.repeat == 1 { (a, o) } else { (o, a) };
    let r = repeated.head.expect("heads").repeat;
    let (Some(p), Some(q)) = (b.whole_root(plain), b.whole_root(repeated)) else {
        return Err("its grouped heads are not whole projections".into());
    };
    if plain.head.expect("heads").repeat != 1 {
        return Err("both inputs repeat their heads".into());
    }
    b.raw[p].block = lcm(b.raw[p].block, ha.per * r);
    b.unit_links.push((p, q));
    Ok(Layout {
        nonzero,
        ..plain.clone()
    })
}

fn softmax(b: &mut Builder, node: &Node, x: &Layout) -> std::result::Result<Layout, String> {
    let rank = x.rank.ok_or("the rank of its head input is unknown")? as i64;
    let head = head_axis(x)? as i64;
    let axis = node.ints.get("axis").copied().unwrap_or(-1);
    let axis = if axis < 0 { axis + rank } else { axis };
    // Before opset 13 the axes from `axis` on are flattened into one.
    let opset13 = b.model.info().default_opset() >= 13;
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
    let heads = positions(&x);
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
    let mut x = ins.iter().flatten().next().expect("a head input").clone();
    let axis = node.ints.get("axis").copied().unwrap_or(0);
    match node.op_type.as_str() {
        "Concat" => {
            if is_channel(&x, axis) != Some(false) {
                return Err("it joins tensors along the head axis".into());
            }
            for (i, name) in node.inputs.iter().enumerate() {
                match &ins[i] {
                    Some(other) if other.neg == x.neg && merge(b, &x, other) => {}
                    Some(_) => return Err(format!("it joins the heads with `{name}`")),
                    // A KV cache: the past keys or values, a graph input.
                    None => {
                        b.cache_input(name, &x)?;
                        b.not_zero(&mut x);
                    }
                }
            }
            Ok(x)
        }
        "Split" => match is_channel(&x, axis) {
            Some(false) => Ok(x),
            _ => Err("it splits the head axis".into()),
        },
        "Slice" => {
            if ins.iter().skip(1).any(Option::is_some) {
                return Err("its bounds depend on the heads".into());
            }
            let axes = ints(b, node, 3, "axes").ok_or("it slices every axis")?;
            if axes.iter().any(|&a| is_channel(&x, a) != Some(false)) {
                return Err("it slices the head axis".into());
            }
            Ok(x)
        }
        _ => {
            let folded = x.head.is_some_and(|h| h.folded);
            let out = squeeze(b, node, x)?;
            if folded && out.axis() != Some(0) {
                return Err("it moves heads folded into the batch axis".into());
            }
            Ok(out)
        }
    }
}
