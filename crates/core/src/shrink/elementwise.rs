//! Element-wise ops: PRelu and Clip (per-channel pass-through with constant operands), and
//! the coupling ops (Add, Mul, Where, ...) that merge their inputs' groups and cut their
//! per-channel constant operands.

use num_integer::gcd;

use crate::error::Result;
use crate::model::Node;

use super::analyze::Builder;
use super::cuts::CutKind;
use super::fold;
use super::layout::{Flat, Layout};
use super::ops::{unary, Outputs};

/// How a constant operand broadcasts against a layout.
enum Broadcast {
    /// One value per channel: the cut made.
    PerChannel(usize),
    /// The same for every channel.
    Across,
    /// Not understood (another size on the channel axis, a flattened axis, a chain of ops
    /// that cannot be folded).
    Bad(String),
}

/// How the constant `name`, input `input` of the current node (an initializer or a `Constant`,
/// or computed from one by shape-only ops, see [`fold`]), broadcasts against `x`; a
/// per-channel one is cut.
fn broadcast(b: &mut Builder, x: &Layout, (name, input): (&str, usize)) -> Broadcast {
    let chain = match fold::chain(b, name) {
        Some(Ok(chain)) => chain,
        Some(Err(why)) => return Broadcast::Bad(why),
        None => return Broadcast::Bad(format!("`{name}` is not a constant")),
    };
    let dims = &chain.dims;
    if dims.iter().product::<i64>() == 1 {
        return Broadcast::Across;
    }
    let k = dims.len() as i64;
    let per_channel_bad = || {
        Broadcast::Bad(format!(
            "constant `{name}` of shape {dims:?} does not broadcast per channel"
        ))
    };
    if x.flat != Flat::No || x.rank.is_some_and(|r| k > r as i64) {
        return per_channel_bad();
    }
    let at = k + x.neg;
    if at < 0 || dims[at as usize] == 1 {
        return Broadcast::Across;
    }
    if dims[at as usize] != x.total() as i64 {
        return per_channel_bad();
    }
    // A constant other nodes read too is sliced in a copy of this input's own.
    if let Some(operand) = b.operand(name, (b.here.0, input)) {
        let cut = b.cut_operand(operand, at as usize, x.owners(1), CutKind::Param);
        return Broadcast::PerChannel(cut);
    }
    match fold::fold(b, x, chain) {
        Ok(cut) => Broadcast::PerChannel(cut),
        Err(why) => Broadcast::Bad(why),
    }
}

pub(super) fn prelu(b: &mut Builder, node: &Node, ins: &[Option<Layout>]) -> Result<Outputs> {
    let Some(Some(x)) = unary(ins) else {
        return Ok(unary(ins).map(|x| vec![x]));
    };
    if let Broadcast::Bad(why) = broadcast(b, &x, (&node.inputs[1], 1)) {
        b.block_here(&x, &why);
        return Ok(Some(vec![None]));
    }
    b.member(&x, CutKind::Param);
    Ok(Some(vec![Some(x)]))
}

pub(super) fn clip(b: &mut Builder, node: &Node, ins: &[Option<Layout>]) -> Result<Outputs> {
    let Some(Some(mut x)) = unary(ins) else {
        return Ok(unary(ins).map(|x| vec![x]));
    };
    let bound = |i: usize, attr: &str| -> Option<Option<f32>> {
        match node.inputs.get(i).filter(|n| !n.is_empty()) {
            Some(name) => b
                .const_floats(name)
                .and_then(|v| v.first().copied())
                .map(Some),
            None => Some(node.floats.get(attr).copied()),
        }
    };
    let (Some(lo), Some(hi)) = (bound(1, "min"), bound(2, "max")) else {
        return Ok(None);
    };
    if lo.is_some_and(|v| v > 0.0) || hi.is_some_and(|v| v < 0.0) {
        b.not_zero(&mut x);
    }
    b.member(&x, CutKind::Param);
    Ok(Some(vec![Some(x)]))
}

/// Merges `a` and `o` channel for channel; false when they do not line up.
fn merge(b: &mut Builder, a: &Layout, o: &Layout) -> bool {
    a.flat == o.flat && a.neg == o.neg && merge_segments(b, a, o, false)
}

/// Merges the segments of `a` and `o` pairwise (same total, same segment lengths); false when
/// they do not line up. With `parts`, two ranges of one group go together by making the
/// distance between them a period of the group (the Q, K and V parts of a fused projection);
/// without, they do not line up.
pub(super) fn merge_segments(b: &mut Builder, a: &Layout, o: &Layout, parts: bool) -> bool {
    if a.total() != o.total() || a.segs.len() != o.segs.len() {
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
                if ra == ro && at_a == at_o {
                    continue;
                }
                if ra == ro && parts {
                    let raw = &mut b.raw[ra];
                    raw.period = gcd(gcd(raw.period, at_a.abs_diff(at_o)), raw.size);
                // One side must be a whole group: it becomes that range of the other.
                } else if ra != ro && at_a == 0 && sa.len == b.raw[ra].size {
                    b.embed(ra, ro, at_o);
                } else if ra != ro && at_o == 0 && so.len == b.raw[ro].size {
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

pub(super) fn elementwise(b: &mut Builder, node: &Node, ins: &[Option<Layout>]) -> Result<Outputs> {
    let op = node.op_type.as_str();
    let mut layouts = Vec::new();
    let mut consts = Vec::new();
    for (i, name) in node
        .inputs
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.is_empty())
    {
        match &ins[i] {
            Some(l) => layouts.push((i, l.clone())),
            None if b.is_const(name) || fold::is_computed_constant(b, name) => {
                consts.push((i, name.clone()))
            }
            None => {
                let why = format!("it mixes the channels with {}", b.no_channels(name));
                for l in ins.iter().flatten() {
                    b.block_here(l, &why);
                }
                return Ok(Some(vec![None]));
            }
        }
    }
    let Some((first_at, mut first)) = layouts.first().cloned() else {
        return Ok(Some(vec![None]));
    };
    if op == "Where" && first_at == 0 {
        return Ok(None);
    }
    for (_, other) in &layouts[1..] {
        if !merge(b, &first, other) {
            for (_, l) in &layouts {
                b.block_here(l, "its inputs' channels do not line up");
            }
            return Ok(Some(vec![None]));
        }
    }
    let additive = matches!(op, "Add" | "Sub" | "Sum" | "Max" | "Min" | "Where");
    // 0 times anything is 0: a product is zero when one factor is; a sum when all terms are.
    first.nonzero = if op == "Mul" && layouts.iter().any(|(_, l)| l.nonzero.is_none()) {
        None
    } else {
        layouts.iter().find_map(|(_, l)| l.nonzero.clone())
    };
    for (i, name) in consts {
        let numerator = op == "Div" && i == 0;
        match broadcast(b, &first, (&name, i)) {
            Broadcast::Bad(why) => {
                b.block_here(&first, &why);
                return Ok(Some(vec![None]));
            }
            Broadcast::PerChannel(cut) if additive => b.clauses.push(vec![cut]),
            Broadcast::PerChannel(_) if numerator => b.not_zero(&mut first),
            Broadcast::PerChannel(_) => {}
            Broadcast::Across => {
                let zero = b
                    .const_floats(&name)
                    .is_some_and(|v| v.iter().all(|&x| x == 0.0));
                if (additive || numerator) && !zero {
                    b.not_zero(&mut first);
                }
            }
        }
    }
    if op == "Div" && layouts.iter().any(|(i, _)| *i == 1) {
        b.not_zero(&mut first); // 0 / 0
    }
    b.member(&first, CutKind::Param);
    Ok(Some(vec![Some(first)]))
}
