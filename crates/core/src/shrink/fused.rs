//! The fused ops of onnxruntime's transformer optimizer (`com.microsoft`): `Attention` (one
//! packed Q|K|V weight, a group of heads made here), `MultiHeadAttention` (Q, K and V from
//! three projections, merged into one group of heads), `GroupQueryAttention` (Q heads in
//! groups of one KV head each: the query projection's group linked to the K/V one, as for
//! unfused grouped-query attention, with its KV cache as the interface's ports), and
//! `BiasGelu`/`FastGelu` (per-channel bias and activation). `num_heads`, `kv_num_heads` and
//! `qkv_hidden_sizes` follow the heads kept. The fused attentions' KV caches (`past` inputs,
//! `present` outputs) are ports of the model's interface ([`super::interface`]).

use num_integer::lcm;

use crate::error::Result;
use crate::model::Node;

use super::analyze::Builder;
use super::cuts::{Count, CutKind, Recount};
use super::layout::{Flat, Head, Layout, Owner};
use super::ops::{consume, own_input, Outputs};

/// Whether the node makes a group of its own (a packed QKV weight).
pub(crate) fn is_producer(node: &Node) -> bool {
    node.domain == "com.microsoft" && node.op_type == "Attention"
}

/// Handles one `com.microsoft` node; `None` for ops this module does not know.
pub(crate) fn apply(
    b: &mut Builder,
    index: usize,
    node: &Node,
    ins: &[Option<Layout>],
) -> Result<Outputs> {
    if node.domain != "com.microsoft" {
        return Ok(None);
    }
    match node.op_type.as_str() {
        "Attention" => attention(b, index, node, ins),
        "MultiHeadAttention" => multi_head(b, index, node, ins),
        "GroupQueryAttention" => group_query(b, index, node, ins),
        "BiasGelu" | "FastGelu" => bias_gelu(b, node, ins),
        _ => Ok(None),
    }
}

/// `owners` once for each of Q, K and V.
fn thrice(owners: Vec<Owner>) -> Vec<Owner> {
    owners.repeat(3)
}

/// The number of heads, when the node gives one that divides `channels`.
fn heads(node: &Node, channels: usize) -> Option<usize> {
    let heads = usize::try_from(*node.ints.get("num_heads")?).ok()?;
    (heads > 0 && channels % heads == 0).then_some(heads)
}

/// Records that `num_heads` (and `qkv_hidden_sizes`, when given) follow the heads of `x`.
fn follow_heads(b: &mut Builder, index: usize, node: &Node, x: &Layout, per: usize) {
    b.recounts.push(Recount::Int {
        node: index,
        attr: "num_heads",
        count: Count::Kept(x.head_owners(per)),
    });
    if node.int_lists.contains_key("qkv_hidden_sizes") {
        b.recounts.push(Recount::Ints {
            node: index,
            attr: "qkv_hidden_sizes",
            counts: vec![Count::Kept(x.owners(1)); 3],
        });
    }
}

/// Sets the heads of `per` channels on every group of `x`.
fn set_block(b: &mut Builder, x: &Layout, per: usize) {
    for g in x.groups().collect::<Vec<_>>() {
        let root = b.find(g);
        b.raw[root].block = lcm(b.raw[root].block, per);
    }
}

/// `Attention(input, weights [K, 3N], bias [3N], mask, ...)`: the weight reads the input's
/// channels and makes N channels of `num_heads` heads, Q, K and V alike.
fn attention(
    b: &mut Builder,
    index: usize,
    node: &Node,
    ins: &[Option<Layout>],
) -> Result<Outputs> {
    let (Ok(Some(w)), Ok(bias)) = (own_input(b, node, 1), own_input(b, node, 2)) else {
        return Ok(None);
    };
    let dims = b.model.tensors()[w].dims.clone();
    let sizes = node.int_lists.get("qkv_hidden_sizes");
    let equal = sizes.is_none_or(|s| s.len() == 3 && s[0] == s[1] && s[1] == s[2]);
    if dims.len() != 2 || dims[1] % 3 != 0 || !equal || ins.iter().skip(1).any(Option::is_some) {
        return Ok(None);
    }
    let (k, n) = (dims[0] as usize, dims[1] as usize / 3);
    let Some(heads) = heads(node, n) else {
        return Ok(None);
    };
    consume(b, (&node.inputs[0], ins[0].as_ref()), w, 0, k)?;
    let group = b.new_group(n);
    let whole = Layout::whole(group, n, Some(3), -1);
    let per = n / heads;
    set_block(b, &whole, per);
    let c = b.cut(w, 1, thrice(whole.owners(1)), CutKind::Producer);
    b.clauses.push(vec![c]);
    if let Some(bias) = bias {
        let c = b.cut(bias, 0, thrice(whole.owners(1)), CutKind::Producer);
        b.clauses.push(vec![c]);
    }
    follow_heads(b, index, node, &whole, per);
    // The cache: `past` (input 4) and `present` (output 1), `[2, B, num_heads, S, D]`.
    Ok(Some(with_cache(b, node, whole, per, (&[4], &[1], 5))))
}

/// The outputs of a fused attention node whose first output is `x` (heads of `per`
/// channels) and whose KV cache is `(past inputs, present outputs, rank)`, the heads on axis
/// -3: the caches are ports of the interface ([`Builder::cache_input`]); a past that is not a
/// graph input, or another output (attention scores), blocks.
fn with_cache(
    b: &mut Builder,
    node: &Node,
    mut x: Layout,
    per: usize,
    (pasts, presents, rank): (&[usize], &[usize], usize),
) -> Vec<Option<Layout>> {
    let mut cache = Layout {
        rank: Some(rank),
        neg: -3,
        head: Some(Head::new(per)),
        flat: Flat::No,
        ..x.clone()
    };
    let given = |i: usize, names: &[String]| names.get(i).is_some_and(|n| !n.is_empty());
    let mut outputs = vec![None; node.outputs.len().saturating_sub(1)];
    for &past in pasts.iter().filter(|&&p| given(p, &node.inputs)) {
        if let Err(why) = b.cache_input(&node.inputs[past], &cache) {
            b.block_here(&x, &why);
            return [vec![Some(x)], outputs].concat();
        }
        // The attention reads the past values too: zero weights no longer give zero outputs.
        b.not_zero(&mut cache);
        b.not_zero(&mut x);
    }
    for (i, out) in outputs.iter_mut().enumerate() {
        match (given(i + 1, &node.outputs), presents.contains(&(i + 1))) {
            (false, _) => {}
            (true, true) => *out = Some(cache.clone()),
            (true, false) => {
                b.block_here(&x, "it also outputs its attention scores by head");
            }
        }
    }
    [vec![Some(x)], outputs].concat()
}

/// `MultiHeadAttention(query, key, value, bias [3N], ...)` over three projections: their
/// groups merge head for head.
fn multi_head(
    b: &mut Builder,
    index: usize,
    node: &Node,
    ins: &[Option<Layout>],
) -> Result<Outputs> {
    let (Some(Some(q)), Some(Some(k)), Some(Some(v))) = (ins.first(), ins.get(1), ins.get(2))
    else {
        return Ok(None);
    };
    let rest_carries = ins.iter().skip(3).any(Option::is_some);
    let Some(heads) = heads(node, q.total()) else {
        return Ok(None);
    };
    if rest_carries || q.neg != -1 || !super::heads::merge(b, q, k) || !super::heads::merge(b, q, v)
    {
        for l in [q, k, v] {
            b.block_here(l, "its query, key and value heads do not line up");
        }
        return Ok(Some(vec![None; node.outputs.len()]));
    }
    let per = q.total() / heads;
    set_block(b, q, per);
    match own_input(b, node, 3) {
        Ok(Some(bias)) if b.model.tensors()[bias].elements == 3 * q.total() as u64 => {
            let c = b.cut(bias, 0, thrice(q.owners(1)), CutKind::Producer);
            b.clauses.push(vec![c]);
        }
        Ok(None) => {}
        _ => {
            b.block_here(q, "its bias is not one packed constant of Q, K and V");
            return Ok(Some(vec![None; node.outputs.len()]));
        }
    }
    b.member(q, CutKind::Param);
    follow_heads(b, index, node, q, per);
    // The caches: `past_key`, `past_value` (inputs 6, 7) and `present_key`, `present_value`
    // (outputs 1, 2), `[B, num_heads, S, D]`.
    Ok(Some(with_cache(
        b,
        node,
        q.clone(),
        per,
        (&[6, 7], &[1, 2], 4),
    )))
}

/// `BiasGelu(x, bias)` and `FastGelu(x, bias?)`: a per-channel bias, then GELU.
fn bias_gelu(b: &mut Builder, node: &Node, ins: &[Option<Layout>]) -> Result<Outputs> {
    let Some(Some(x)) = ins.first() else {
        return Ok(Some(vec![None]));
    };
    if ins.iter().skip(1).any(Option::is_some) || x.neg != -1 {
        return Ok(None);
    }
    match own_input(b, node, 1) {
        Ok(Some(bias)) if b.model.tensors()[bias].elements == x.total() as u64 => {
            let c = b.cut(bias, 0, x.owners(1), CutKind::Param);
            b.clauses.push(vec![c]);
        }
        Ok(None) => {}
        _ => return Ok(None),
    }
    b.member(x, CutKind::Param);
    Ok(Some(vec![Some(x.clone())]))
}

/// `GroupQueryAttention(query, key, value, past_key?, past_value?, seqlens_k,
/// total_sequence_length, cos_cache?, sin_cache?, ...)` over three projections: query head `h`
/// reads KV head `h / (num_heads / kv_num_heads)`, so the query group's unit is the query
/// heads of one KV head, linked to that KV head of the K and V groups (merged). The caches
/// (`past_*` graph inputs, `present_*` outputs, `[B, kv_num_heads, S, D]`) hold the KV heads.
fn group_query(
    b: &mut Builder,
    index: usize,
    node: &Node,
    ins: &[Option<Layout>],
) -> Result<Outputs> {
    let outs = node.outputs.len();
    let (Some(Some(q)), Some(Some(k)), Some(Some(v))) = (ins.first(), ins.get(1), ins.get(2))
    else {
        for l in ins.iter().flatten() {
            b.block_here(
                l,
                "its query, key and value are not three projections (packed QKV)",
            );
        }
        return Ok(Some(vec![None; outs]));
    };
    let count = |attr: &str| {
        let n = usize::try_from(*node.ints.get(attr)?).ok()?;
        (n > 0).then_some(n)
    };
    let fits = |heads: usize, d: usize, l: &Layout| l.total() == heads * d && l.neg == -1;
    let shape = match (count("num_heads"), count("kv_num_heads")) {
        (Some(heads), Some(kv)) if heads % kv == 0 && q.total() % heads == 0 => {
            let d = q.total() / heads;
            (fits(heads, d, q) && fits(kv, d, k) && fits(kv, d, v)).then_some((heads / kv, d))
        }
        _ => None,
    };
    let roots = (b.whole_root(q), b.whole_root(k));
    let carries = ins.iter().skip(3).any(Option::is_some);
    let (Some((repeat, d)), (Some(qr), Some(kr)), false) = (shape, roots, carries) else {
        for l in ins.iter().flatten() {
            b.block_here(l, "its query heads do not line up with its key/value heads");
        }
        return Ok(Some(vec![None; outs]));
    };
    if qr == kr || !super::heads::merge(b, k, v) {
        for l in [q, k, v] {
            b.block_here(l, "its key and value heads do not line up");
        }
        return Ok(Some(vec![None; outs]));
    }
    set_block(b, q, d * repeat);
    set_block(b, k, d);
    b.unit_links.push((qr, kr));
    b.member(q, CutKind::Param);
    b.member(k, CutKind::Param);
    b.recounts.push(Recount::Int {
        node: index,
        attr: "num_heads",
        count: Count::Kept(q.head_owners(d)),
    });
    b.recounts.push(Recount::Int {
        node: index,
        attr: "kv_num_heads",
        count: Count::Kept(k.head_owners(d)),
    });
    // The caches: [B, kv_num_heads, S, D], one head per position. The output is zero where
    // V is, unless a past cache adds values of its own.
    let mut cache = Layout {
        rank: Some(4),
        neg: -3,
        head: Some(Head::new(d)),
        ..v.clone()
    };
    let mut out = Layout {
        nonzero: v.nonzero.clone(),
        ..q.clone()
    };
    for past in [3, 4] {
        let Some(name) = node.inputs.get(past).filter(|n| !n.is_empty()) else {
            continue;
        };
        if let Err(why) = b.cache_input(name, &cache) {
            for l in [q, k] {
                b.block_here(l, &why);
            }
            return Ok(Some(vec![None; outs]));
        }
        b.not_zero(&mut cache);
        b.not_zero(&mut out);
    }
    let mut outputs = vec![Some(out)];
    outputs.extend((1..outs).map(|i| (i < 3).then(|| cache.clone())));
    Ok(Some(outputs))
}
