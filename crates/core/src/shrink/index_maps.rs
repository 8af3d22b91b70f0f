//! Ops that move channels to other positions without mixing them: Concat and Split on the
//! channel axis (offsets; Split's sizes follow), Slice (its bounds follow), Flatten and
//! Reshape to `[N, C*H*W]` (each channel becomes `H*W` columns), Squeeze/Unsqueeze of other
//! axes, reductions over other axes, and Resize/Upsample/Pad that leave the channel axis alone.

use crate::error::Result;
use crate::model::Node;

use super::analyze::Builder;
use super::cuts::{Count, CutKind, Recount};
use super::head_shapes;
use super::layout::{Flat, Layout, Seg};
use super::ops::{unary, Outputs};

/// Handles one node of this family; `None` for any other op.
pub(crate) fn apply(
    b: &mut Builder,
    index: usize,
    node: &Node,
    ins: &[Option<Layout>],
) -> Result<Outputs> {
    let op = node.op_type.as_str();
    if op == "Concat" {
        return concat(b, node, ins);
    }
    if !matches!(
        op,
        "Split"
            | "Slice"
            | "Flatten"
            | "Reshape"
            | "Squeeze"
            | "Unsqueeze"
            | "Resize"
            | "Upsample"
            | "Pad"
            | "ReduceMean"
            | "ReduceMax"
            | "ReduceSum"
            | "ReduceL2"
    ) {
        return Ok(None);
    }
    // The data input carries the channels; the others are constants.
    let Some(Some(x)) = unary(ins) else {
        return Ok(unary(ins).map(|x| vec![x]));
    };
    if op == "Reshape" {
        // Targets computed from run-time shapes, as transformers' exporters write them.
        match head_shapes::reshape_channels(b, index, &x) {
            Some(Ok(layout)) => {
                b.member(&layout, CutKind::Param);
                return Ok(Some(vec![Some(layout)]));
            }
            Some(Err(why)) => {
                b.block_here(&x, &why);
                return Ok(Some(vec![None]));
            }
            None => {}
        }
    }
    if node
        .inputs
        .iter()
        .skip(1)
        .any(|n| !n.is_empty() && !b.is_const(n))
    {
        b.block_here(&x, "its shape arguments are computed, not constant");
        return Ok(Some(vec![None; node.outputs.len()]));
    }
    let out = match op {
        "Split" => return split(b, index, node, x),
        "Slice" => slice(b, index, node, x),
        "Flatten" => flatten(node, x),
        "Reshape" => reshape(b, node, x),
        "Squeeze" | "Unsqueeze" => squeeze(b, node, x),
        "Resize" | "Upsample" => resize(b, node, x),
        "ReduceMean" | "ReduceMax" | "ReduceSum" | "ReduceL2" => reduce(b, node, x),
        _ => pad(b, node, x),
    };
    Ok(Some(vec![match out {
        Ok(layout) => {
            b.member(&layout, CutKind::Param);
            Some(layout)
        }
        Err(why) => {
            b.block_here(&x_of(ins), &why);
            None
        }
    }]))
}

fn x_of(ins: &[Option<Layout>]) -> Layout {
    ins[0].clone().expect("checked by the caller")
}

/// Integer values of input `i` or, when absent, of the attribute `attr`.
pub(super) fn ints(b: &Builder, node: &Node, i: usize, attr: &str) -> Option<Vec<i64>> {
    match node.inputs.get(i).filter(|n| !n.is_empty()) {
        Some(name) => b.const_ints(name),
        None => node.int_lists.get(attr).cloned(),
    }
}

/// A possibly negative axis of a rank-`rank` tensor, counted from the start.
fn positive(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a).ok().filter(|&a| a < rank)
}

/// Whether `axis` (as the op gives it) is the layout's channel axis; `None` when unknown.
pub(super) fn is_channel(x: &Layout, axis: i64) -> Option<bool> {
    if axis < 0 {
        return Some(axis == x.neg);
    }
    Some(axis as usize == x.axis()?)
}

fn concat(b: &mut Builder, node: &Node, ins: &[Option<Layout>]) -> Result<Outputs> {
    let axis = node.ints.get("axis").copied().unwrap_or(0);
    let Some(first) = ins.iter().flatten().next().cloned() else {
        return Ok(Some(vec![None]));
    };
    let along = is_channel(&first, axis);
    let mut segs = Vec::new();
    for (i, name) in node.inputs.iter().enumerate() {
        let fail = match (&ins[i], along) {
            (Some(l), Some(true)) if l.flat == first.flat && l.neg == first.neg => {
                segs.extend(l.segs.iter().cloned());
                None
            }
            (None, Some(true)) => {
                let dims = b
                    .model
                    .tensors()
                    .iter()
                    .find(|t| t.graph == 0 && &t.name == name)
                    .map(|t| t.dims.clone());
                match dims.and_then(|d| positive(first.neg, d.len()).map(|a| d[a])) {
                    Some(len) if b.is_const(name) => {
                        segs.push(Seg {
                            group: None,
                            start: 0,
                            len: len.max(0) as usize,
                        });
                        None
                    }
                    _ if b.is_const(name) => Some(format!(
                        "it joins the channels with `{name}`, whose channel count is unknown"
                    )),
                    _ => Some(format!(
                        "it joins the channels with {}",
                        b.no_channels(name)
                    )),
                }
            }
            _ => Some("it joins tensors along an axis that is not their channel axis".to_string()),
        };
        if let Some(why) = fail {
            for l in ins.iter().flatten() {
                b.block_here(l, &why);
            }
            return Ok(Some(vec![None]));
        }
    }
    let nonzero = ins.iter().flatten().find_map(|l| l.nonzero.clone());
    let out = Layout {
        segs,
        nonzero,
        ..first
    };
    b.member(&out, CutKind::Param);
    Ok(Some(vec![Some(out)]))
}

fn split(b: &mut Builder, index: usize, node: &Node, x: Layout) -> Result<Outputs> {
    let outs = node.outputs.len();
    let axis = node.ints.get("axis").copied().unwrap_or(0);
    match is_channel(&x, axis) {
        Some(false) => {
            b.member(&x, CutKind::Param);
            return Ok(Some(vec![Some(x); outs]));
        }
        None => {
            b.block_here(
                &x,
                "its axis cannot be matched to the channel axis (unknown rank)",
            );
            return Ok(Some(vec![None; outs]));
        }
        Some(true) => {}
    }
    let from_input = node.inputs.get(1).filter(|n| !n.is_empty());
    let given = ints(b, node, 1, "split");
    let implicit = given.is_none() && from_input.is_none();
    let sizes = match given {
        Some(sizes) => sizes,
        None if implicit && outs > 0 && x.total() % outs == 0 => {
            vec![(x.total() / outs) as i64; outs]
        }
        None => {
            b.block_here(&x, "its sizes are neither constant nor equal");
            return Ok(Some(vec![None; outs]));
        }
    };
    if sizes.len() != outs {
        return Err(b.inconsistent(format!("{} split sizes for {outs} outputs", sizes.len())));
    }
    if sizes.iter().sum::<i64>() != x.total() as i64 || x.flat != Flat::No {
        return Err(b.inconsistent(format!("split sizes {sizes:?} for {} channels", x.total())));
    }
    let mut at = 0;
    let mut layouts = Vec::new();
    let mut counts = Vec::new();
    for size in sizes {
        let part = x.slice(at, at + size as usize);
        counts.push(Count::Kept(part.owners(1)));
        layouts.push(Some(part));
        at += size as usize;
    }
    if from_input.is_some() {
        // The sizes are a constant: `ints` read them.
        b.recount_input(index, 1, counts).expect("constant sizes");
    } else if implicit {
        b.recounts.push(Recount::SplitSizes {
            node: index,
            counts,
        });
    } else {
        b.recounts.push(Recount::Ints {
            node: index,
            attr: "split",
            counts,
        });
    }
    b.member(&x, CutKind::Param);
    Ok(Some(layouts))
}

fn slice(
    b: &mut Builder,
    index: usize,
    node: &Node,
    x: Layout,
) -> std::result::Result<Layout, String> {
    let opset10 = node.inputs.len() > 1;
    let starts = ints(b, node, 1, "starts").ok_or("its starts are not constant")?;
    let ends = ints(b, node, 2, "ends").ok_or("its ends are not constant")?;
    let axes = ints(b, node, 3, "axes").unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = ints(b, node, 4, "steps").unwrap_or_else(|| vec![1; starts.len()]);
    let Some(at) = axes.iter().position(|&a| is_channel(&x, a) != Some(false)) else {
        return Ok(x);
    };
    if is_channel(&x, axes[at]).is_none() {
        return Err("its axes cannot be matched to the channel axis (unknown rank)".into());
    }
    if steps[at] != 1 || x.flat != Flat::No {
        return Err("it slices the channel axis with a step other than 1".into());
    }
    let total = x.total() as i64;
    let clamp = |v: i64| (if v < 0 { v + total } else { v }).clamp(0, total) as usize;
    let (from, to) = (clamp(starts[at]), clamp(ends[at]).max(clamp(starts[at])));
    let count = |v: i64, bound: usize| {
        if v >= total || (v == 0 && bound == 0) {
            Count::Fixed(v)
        } else {
            Count::Kept(x.slice(0, bound).owners(1))
        }
    };
    let bound_counts = |values: &[i64], bound: usize| -> Vec<Count> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if i == at {
                    count(v, bound)
                } else {
                    Count::Fixed(v)
                }
            })
            .collect()
    };
    for (i, values, bound, attr) in [(1, &starts, from, "starts"), (2, &ends, to, "ends")] {
        let counts = bound_counts(values, bound);
        if opset10 {
            b.recount_input(index, i, counts)
                .ok_or(format!("its {attr} are not constant"))?;
        } else {
            b.recounts.push(Recount::Ints {
                node: index,
                attr,
                counts,
            });
        }
    }
    Ok(x.slice(from, to))
}

fn flatten(node: &Node, x: Layout) -> std::result::Result<Layout, String> {
    let axis = node.ints.get("axis").copied().unwrap_or(1);
    let rank = x.rank.ok_or("the input's rank is unknown")?;
    if positive(axis, rank) != Some(1) || x.axis() != Some(1) || (rank > 2 && x.flat != Flat::No) {
        return Err("it flattens the channel axis with others before it".into());
    }
    let flat = if rank == 2 { x.flat } else { Flat::Unknown };
    Ok(Layout {
        rank: Some(2),
        neg: -1,
        flat,
        ..x
    })
}

fn reshape(b: &mut Builder, node: &Node, x: Layout) -> std::result::Result<Layout, String> {
    let name = &node.inputs[1];
    let target = b
        .const_ints(name)
        .ok_or("its target shape is not constant")?;
    let rank = x.rank.ok_or("the input's rank is unknown")?;
    if target.len() != 2
        || x.axis() != Some(1)
        || rank < 3
        || x.flat != Flat::No
        || target[0] == -1 && target[1] == -1
    {
        return Err(format!(
            "it reshapes the channel axis to {target:?}, not to [N, C*H*W]"
        ));
    }
    let total = x.total();
    let flat = match target[1] {
        -1 if target[0] >= 0 => Flat::Unknown,
        k if k > 0 && total > 0 && k as usize % total == 0 => {
            let cols = k as usize / total;
            let counts = vec![Count::Fixed(target[0]), Count::Kept(x.owners(cols))];
            b.recount_input(b.here.0, 1, counts)
                .ok_or("its target shape is not constant")?;
            Flat::Cols(cols)
        }
        _ => {
            return Err(format!(
                "it reshapes the channel axis to {target:?}, not to [N, C*H*W]"
            ))
        }
    };
    Ok(Layout {
        rank: Some(2),
        neg: -1,
        flat,
        ..x
    })
}

pub(super) fn squeeze(
    b: &mut Builder,
    node: &Node,
    x: Layout,
) -> std::result::Result<Layout, String> {
    let axes = ints(b, node, 1, "axes").ok_or("its axes are not given")?;
    let rank = x.rank.ok_or("the input's rank is unknown")?;
    let pos = x.axis().ok_or("the input's rank is unknown")?;
    if x.flat != Flat::No {
        return Err("its input is flattened".into());
    }
    if node.op_type == "Squeeze" {
        let axes: Vec<usize> = axes
            .iter()
            .map(|&a| positive(a, rank))
            .collect::<Option<_>>()
            .ok_or("bad axes")?;
        if axes.contains(&pos) {
            return Err("it squeezes the channel axis".into());
        }
        let new_rank = rank - axes.len();
        let new_pos = pos - axes.iter().filter(|&&a| a < pos).count();
        Ok(Layout {
            rank: Some(new_rank),
            neg: new_pos as i64 - new_rank as i64,
            ..x
        })
    } else {
        let new_rank = rank + axes.len();
        let mut axes: Vec<usize> = axes
            .iter()
            .map(|&a| positive(a, new_rank))
            .collect::<Option<_>>()
            .ok_or("bad axes")?;
        axes.sort_unstable();
        let mut p = pos;
        for a in axes {
            if a <= p {
                p += 1;
            }
        }
        Ok(Layout {
            rank: Some(new_rank),
            neg: p as i64 - new_rank as i64,
            ..x
        })
    }
}

/// A reduction over other axes than the channel axis (squeeze-excite's spatial mean).
fn reduce(b: &mut Builder, node: &Node, x: Layout) -> std::result::Result<Layout, String> {
    let axes = ints(b, node, 1, "axes").ok_or("it reduces over every axis")?;
    let rank = x.rank.ok_or("the input's rank is unknown")?;
    let pos = x.axis().ok_or("the input's rank is unknown")?;
    let axes: Vec<usize> = axes
        .iter()
        .map(|&a| positive(a, rank))
        .collect::<Option<_>>()
        .ok_or("bad axes")?;
    if axes.contains(&pos) || axes.is_empty() || x.flat != Flat::No {
        return Err("it reduces over the channel axis".into());
    }
    if node.ints.get("keepdims").copied().unwrap_or(1) != 0 {
        return Ok(x);
    }
    let new_rank = rank - axes.len();
    let new_pos = pos - axes.iter().filter(|&&a| a < pos).count();
    Ok(Layout {
        rank: Some(new_rank),
        neg: new_pos as i64 - new_rank as i64,
        ..x
    })
}

fn resize(b: &mut Builder, node: &Node, x: Layout) -> std::result::Result<Layout, String> {
    let pos = x.axis().ok_or("the input's rank is unknown")?;
    if node.int_lists.contains_key("axes") || x.flat != Flat::No {
        return Err("it resizes selected axes".into());
    }
    // Resize: (X, roi, scales, sizes) from opset 11, (X, scales) in opset 10; Upsample (X, scales).
    let scales_at = if node.op_type == "Resize" && node.inputs.len() > 2 {
        2
    } else {
        1
    };
    if let Some(name) = node.inputs.get(3).filter(|n| !n.is_empty()) {
        let sizes = b.const_ints(name).ok_or("its sizes are not constant")?;
        if sizes.get(pos) != Some(&(x.total() as i64)) {
            return Err(format!("its sizes {sizes:?} change the channel axis"));
        }
        let counts = sizes
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if i == pos {
                    Count::Kept(x.owners(1))
                } else {
                    Count::Fixed(v)
                }
            })
            .collect();
        b.recount_input(b.here.0, 3, counts)
            .ok_or("its sizes are not constant")?;
        return Ok(x);
    }
    let scales = match node.inputs.get(scales_at).filter(|n| !n.is_empty()) {
        Some(name) => b.const_floats(name).ok_or("its scales are not constant")?,
        None => node
            .int_lists
            .get("scales")
            .map(|_| Vec::new())
            .ok_or("it has no scales")?,
    };
    if scales.get(pos).is_some_and(|&s| s != 1.0) || scales.is_empty() {
        return Err("it scales the channel axis".into());
    }
    Ok(x)
}

fn pad(b: &mut Builder, node: &Node, mut x: Layout) -> std::result::Result<Layout, String> {
    let pads = ints(b, node, 1, "pads").ok_or("its pads are not constant")?;
    let (rank, pos) = (
        x.rank.ok_or("unknown rank")?,
        x.axis().ok_or("unknown rank")?,
    );
    if node.inputs.get(3).is_some_and(|n| !n.is_empty())
        || pads.len() != 2 * rank
        || x.flat != Flat::No
    {
        return Err("it pads selected axes".into());
    }
    if pads[pos] != 0 || pads[pos + rank] != 0 {
        return Err("it pads the channel axis".into());
    }
    let mode = node.strings.get("mode").map_or("constant", String::as_str);
    let value = match node.inputs.get(2).filter(|n| !n.is_empty()) {
        Some(name) => b
            .const_floats(name)
            .and_then(|v| v.first().copied())
            .unwrap_or(f32::NAN),
        None => node.floats.get("value").copied().unwrap_or(0.0),
    };
    if mode == "constant" && value != 0.0 {
        b.not_zero(&mut x);
    }
    Ok(x)
}
