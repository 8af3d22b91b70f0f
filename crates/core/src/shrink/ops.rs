//! The ops that carry channels, by family: producers (Conv, ConvTranspose, Gemm, MatMul with a
//! constant weight), per-channel pass-through (normalisation, activations, pooling),
//! coupling (element-wise ops merging their inputs' groups, in [`super::elementwise`]). Index
//! maps are in [`super::index_maps`]. An op missing here blocks every group that reaches it.

use crate::error::Result;
use crate::model::Node;
use num_integer::gcd;

use super::analyze::Builder;
use super::cuts::{Count, CutKind, Operand, Recount};
use super::layout::{Flat, Layout, Owner};
use super::{elementwise, index_maps};

/// The outputs' layouts of a node this module understands (`None` entries: no group), or
/// `None` when it does not understand the node.
pub(crate) type Outputs = Option<Vec<Option<Layout>>>;

/// Element-wise ops that map 0 to 0.
pub(crate) const KEEP_ZERO: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Celu",
    "Tanh",
    "HardSwish",
    "Softsign",
    "Gelu",
    "Erf",
    "Mish",
    "Abs",
    "Neg",
    "Sign",
    "Sin",
    "Atan",
    "Asinh",
    "Sqrt",
    "Floor",
    "Ceil",
    "Round",
    "ThresholdedRelu",
    "Shrink",
    "Identity",
    "Dropout",
    "Cast",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "LpPool",
    "GlobalLpPool",
];

/// Element-wise ops that do not map 0 to 0 (a channel through them is constant, not dead).
pub(crate) const NOT_ZERO: &[&str] = &["Sigmoid", "HardSigmoid", "Softplus", "Exp", "Cos"];

/// Whether the node makes channels from a constant weight (and so starts a group even when
/// nothing of a group reaches it).
pub(crate) fn is_producer(node: &Node) -> bool {
    matches!(
        node.op_type.as_str(),
        "Conv" | "ConvTranspose" | "Gemm" | "MatMul"
    ) || super::fused::is_producer(node)
}

/// Handles one node; see [`Outputs`].
pub(crate) fn apply(
    b: &mut Builder,
    index: usize,
    node: &Node,
    ins: &[Option<Layout>],
) -> Result<Outputs> {
    let op = node.op_type.as_str();
    match op {
        "Conv" | "ConvTranspose" => conv(b, index, node, ins),
        "Gemm" => gemm(b, node, ins),
        "MatMul" => matmul(b, node, ins),
        "BatchNormalization" | "InstanceNormalization" => norm(b, node, ins),
        // A run-time shape follows whatever the channels become.
        "Shape" | "Size" => Ok(Some(vec![None])),
        "PRelu" => elementwise::prelu(b, node, ins),
        "Pow" => pow(b, node, ins),
        "Clip" => elementwise::clip(b, node, ins),
        "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" | "Sum" | "Where" => {
            elementwise::elementwise(b, node, ins)
        }
        _ if KEEP_ZERO.contains(&op) || NOT_ZERO.contains(&op) => {
            let mut out = unary(ins);
            if let (Some(Some(x)), true) = (&mut out, NOT_ZERO.contains(&op)) {
                b.not_zero(x);
            }
            if let Some(Some(x)) = &out {
                b.member(x, CutKind::Param);
            }
            Ok(out.map(|x| vec![x]))
        }
        _ => index_maps::apply(b, index, node, ins),
    }
}

/// `x ^ e` with one constant exponent (GELU's tanh form cubes): per channel; 0 stays 0 for
/// a positive exponent.
fn pow(b: &mut Builder, node: &Node, ins: &[Option<Layout>]) -> Result<Outputs> {
    let exponent = node.inputs.get(1).and_then(|e| b.const_floats(e));
    let (Some(Some(mut x)), Some([e])) = (unary(ins), exponent.as_deref()) else {
        return Ok(None);
    };
    if *e <= 0.0 {
        b.not_zero(&mut x);
    }
    b.member(&x, CutKind::Param);
    Ok(Some(vec![Some(x)]))
}

/// The layout of a one-input op's first output: its input's. `None` when another input
/// carries channels.
pub(crate) fn unary(ins: &[Option<Layout>]) -> Option<Option<Layout>> {
    if ins.iter().skip(1).any(Option::is_some) {
        return None;
    }
    Some(ins.first().cloned().flatten())
}

/// The tensor index of the constant input `i`, when only this node uses it; `Err(())` when the
/// input is given but is not such a constant; `Ok(None)` when it is not given.
pub(crate) fn own_input(
    b: &Builder,
    node: &Node,
    i: usize,
) -> std::result::Result<Option<usize>, ()> {
    match node.inputs.get(i).filter(|n| !n.is_empty()) {
        None => Ok(None),
        Some(name) => b.own_const_index(name).map(Some).ok_or(()),
    }
}

/// The constant input `i` as an operand a cut can slice (one other nodes read too is sliced
/// in this input's own copy); `Err(())` when the input is given but is not a constant;
/// `Ok(None)` when it is not given.
pub(crate) fn operand_input(
    b: &Builder,
    node: &Node,
    i: usize,
) -> std::result::Result<Option<Operand>, ()> {
    match node.inputs.get(i).filter(|n| !n.is_empty()) {
        None => Ok(None),
        Some(name) => b.operand(name, (b.here.0, i)).map(Some).ok_or(()),
    }
}

/// Records that `x` is read by a weight's reduction axis `axis` of length `k`.
pub(crate) fn consume(
    b: &mut Builder,
    (input, x): (&str, Option<&Layout>),
    w: usize,
    axis: usize,
    k: usize,
) -> Result<()> {
    let Some(x) = x else { return Ok(()) };
    let total = x.total();
    if x.neg != -1 {
        b.block_here(x, "its channels are not on the axis it reduces over");
        return Ok(());
    }
    let cols = match x.flat {
        Flat::No => 1,
        Flat::Cols(s) => s,
        Flat::Unknown if total > 0 && k % total == 0 => k / total,
        Flat::Unknown => {
            return Err(b.inconsistent(format!(
                "{total} flattened channels do not divide the weight's {k} inputs"
            )))
        }
    };
    if total * cols != k {
        return Err(b.inconsistent(format!(
            "the input has {total} channels but the weight reads {k}"
        )));
    }
    b.member(x, CutKind::Consumer);
    b.read_by_consumer(x);
    b.cut(w, axis, x.owners(cols), CutKind::Consumer);
    b.reads(input, -1);
    Ok(())
}

/// A new group of `size` channels made on `axis` of weight `w` (and `bias` axis 0); its
/// producer clauses.
fn produce(
    b: &mut Builder,
    w: usize,
    axis: usize,
    owners: Vec<Owner>,
    bias: Option<Operand>,
    whole: &Layout,
) {
    let c = b.cut(w, axis, owners, CutKind::Producer);
    b.clauses.push(vec![c]);
    if let Some(bias) = bias {
        let c = b.cut_operand(bias, 0, whole.owners(1), CutKind::Producer);
        b.clauses.push(vec![c]);
    }
}

fn conv(b: &mut Builder, index: usize, node: &Node, ins: &[Option<Layout>]) -> Result<Outputs> {
    let Ok(Some(w)) = own_input(b, node, 1) else {
        return Ok(None);
    };
    // A computed bias still lets the Conv read its input's channels; only its own output
    // channels are blocked. A shared one is sliced in a copy of the Conv's own.
    let (bias, bias_blocks) = match operand_input(b, node, 2) {
        Ok(bias) => (bias, None),
        Err(()) => {
            let name = &node.inputs[2];
            let why = format!("its bias `{name}` is computed, not a constant");
            (None, Some(why))
        }
    };
    let tensors = b.model.tensors();
    let dims: Vec<usize> = tensors[w].dims.iter().map(|&d| d.max(0) as usize).collect();
    if !tensors[w].dtype.is_float() || dims.len() < 3 || ins.iter().skip(1).any(Option::is_some) {
        return Ok(None);
    }
    let g = node.ints.get("group").copied().unwrap_or(1).max(1) as usize;
    let transpose = node.op_type == "ConvTranspose";
    let (cin, m) = if transpose {
        (dims[0], dims[1] * g)
    } else {
        (dims[1] * g, dims[0])
    };
    let rank = dims.len();
    let neg = 1 - rank as i64;
    let x = ins.first().cloned().flatten();
    if let Some(x) = &x {
        if x.total() != cin {
            return Err(b.inconsistent(format!(
                "the input has {} channels but the weight {:?} with group {g} takes {cin}",
                x.total(),
                dims
            )));
        }
        if x.flat != Flat::No || x.neg != neg {
            b.block_here(x, "its input's channels are not on axis 1");
            return Ok(Some(vec![None]));
        }
    }
    if let Some(bias) = bias {
        if tensors[bias.tensor].elements != m as u64 {
            return Err(b.inconsistent(format!(
                "the bias has {} values for {m} channels",
                tensors[bias.tensor].elements
            )));
        }
    }
    if !transpose && g > 1 && g == cin && m == cin {
        // Depthwise: each channel passes through on its own; `group` follows the count.
        let Some(x) = x else {
            return Ok(Some(vec![None]));
        };
        if let Some(why) = bias_blocks {
            b.block_here(&x, &why);
            return Ok(Some(vec![None]));
        }
        b.member(&x, CutKind::Param);
        let owners = x.owners(1);
        b.cut(w, 0, owners.clone(), CutKind::Param);
        if let Some(bias) = bias {
            let c = b.cut_operand(bias, 0, owners.clone(), CutKind::Param);
            b.clauses.push(vec![c]);
        }
        b.recounts.push(Recount::Int {
            node: index,
            attr: "group",
            count: Count::Kept(owners),
        });
        return Ok(Some(vec![Some(x)]));
    }
    if let Some(x) = &x {
        if g == 1 {
            b.member(x, CutKind::Consumer);
            b.read_by_consumer(x);
            b.cut(
                w,
                if transpose { 0 } else { 1 },
                x.owners(1),
                CutKind::Consumer,
            );
            b.reads(&node.inputs[0], 1);
        } else {
            match b.whole_root(x) {
                Some(group) => {
                    let per = cin / g;
                    b.raw[group].period = gcd(b.raw[group].period, per);
                    b.member(x, CutKind::Consumer);
                    b.read_by_consumer(x);
                    let owners = if transpose {
                        x.owners(1)
                    } else {
                        (0..per).map(|j| Some((group, j))).collect()
                    };
                    b.cut(w, if transpose { 0 } else { 1 }, owners, CutKind::Consumer);
                    b.reads(&node.inputs[0], 1);
                }
                None => b.block_here(
                    x,
                    "a grouped convolution needs one whole group as its input",
                ),
            }
        }
    }
    let group = b.new_group(m);
    b.raw[group].period = m / g;
    let whole = Layout::whole(group, m, Some(rank), neg);
    let (axis, owners) = if transpose {
        (1, (0..m / g).map(|j| Some((group, j))).collect())
    } else {
        (0, whole.owners(1))
    };
    produce(b, w, axis, owners, bias, &whole);
    if let Some(why) = bias_blocks {
        b.block_here(&whole, &why);
    }
    Ok(Some(vec![Some(whole)]))
}

fn gemm(b: &mut Builder, node: &Node, ins: &[Option<Layout>]) -> Result<Outputs> {
    let Ok(Some(w)) = own_input(b, node, 1) else {
        return Ok(None);
    };
    let tensors = b.model.tensors();
    let dims: Vec<usize> = tensors[w].dims.iter().map(|&d| d.max(0) as usize).collect();
    if node.ints.get("transA").copied().unwrap_or(0) != 0
        || dims.len() != 2
        || !tensors[w].dtype.is_float()
        || ins.iter().skip(1).any(Option::is_some)
    {
        return Ok(None);
    }
    let t = node.ints.get("transB").copied().unwrap_or(0) != 0;
    let (k, n, in_axis, out_axis) = if t {
        (dims[1], dims[0], 1, 0)
    } else {
        (dims[0], dims[1], 0, 1)
    };
    consume(b, (&node.inputs[0], ins[0].as_ref()), w, in_axis, k)?;
    let group = b.new_group(n);
    let mut whole = Layout::whole(group, n, Some(2), -1);
    let c = node.inputs.get(2).filter(|s| !s.is_empty());
    let bias = match c {
        None => None,
        Some(name) => match (
            b.operand(name, (b.here.0, 2)),
            b.model
                .tensors()
                .iter()
                .find(|t| t.graph == 0 && &t.name == name),
        ) {
            (Some(c), _)
                if tensors[c.tensor].elements == n as u64
                    && tensors[c.tensor].dims.last() == Some(&(n as i64)) =>
            {
                Some(c)
            }
            (_, Some(t)) if t.elements == 1 => {
                let beta = node.floats.get("beta").copied().unwrap_or(1.0);
                if beta != 0.0
                    && b.const_floats(name)
                        .is_none_or(|v| v.iter().any(|&x| x != 0.0))
                {
                    b.not_zero(&mut whole);
                }
                None
            }
            _ => {
                b.block_here(&whole, "its bias C is not one value per output");
                None
            }
        },
    };
    let owners = whole.owners(1);
    produce(b, w, out_axis, owners, None, &whole);
    if let Some(bias) = bias {
        let axis = tensors[bias.tensor].dims.len() - 1;
        let c = b.cut_operand(bias, axis, whole.owners(1), CutKind::Producer);
        b.clauses.push(vec![c]);
    }
    Ok(Some(vec![Some(whole)]))
}

fn matmul(b: &mut Builder, node: &Node, ins: &[Option<Layout>]) -> Result<Outputs> {
    let Ok(Some(w)) = own_input(b, node, 1) else {
        return Ok(None);
    };
    let t = &b.model.tensors()[w];
    if t.dims.len() != 2 || !t.dtype.is_float() || ins.get(1).is_some_and(Option::is_some) {
        return Ok(None);
    }
    let (k, n) = (t.dims[0] as usize, t.dims[1] as usize);
    let x = ins[0].as_ref();
    consume(b, (&node.inputs[0], x), w, 0, k)?;
    let group = b.new_group(n);
    let whole = Layout::whole(
        group,
        n,
        x.and_then(|x| x.rank)
            .filter(|_| x.is_some_and(|x| x.flat == Flat::No))
            .or(x.map(|_| 2)),
        -1,
    );
    produce(b, w, 1, whole.owners(1), None, &whole);
    Ok(Some(vec![Some(whole)]))
}

/// BatchNormalization (scale, B, mean, var) and InstanceNormalization (scale, B).
fn norm(b: &mut Builder, node: &Node, ins: &[Option<Layout>]) -> Result<Outputs> {
    let Some(Some(x)) = unary(ins) else {
        return Ok(unary(ins).map(|x| vec![x]));
    };
    if node.outputs.iter().skip(1).any(|o| !o.is_empty()) {
        return Ok(None);
    }
    if x.axis() != Some(1) || x.flat != Flat::No {
        b.block_here(&x, "its input's channels are not on axis 1");
        return Ok(Some(vec![None]));
    }
    let params = if node.op_type == "BatchNormalization" {
        4
    } else {
        2
    };
    let mut cuts = Vec::new();
    for i in 1..=params {
        let Ok(Some(t)) = operand_input(b, node, i) else {
            return Ok(None);
        };
        let elements = b.model.tensors()[t.tensor].elements;
        if elements != x.total() as u64 {
            return Err(b.inconsistent(format!(
                "input {i} has {elements} values for {} channels",
                x.total()
            )));
        }
        cuts.push(b.cut_operand(t, 0, x.owners(1), CutKind::Param));
    }
    b.member(&x, CutKind::Param);
    // y = scale * (x - mean) / sqrt(var + eps) + B: 0 maps to 0 when B is 0 and mean or scale is.
    b.clauses.push(vec![cuts[1]]);
    if params == 4 {
        b.clauses.push(vec![cuts[2], cuts[0]]);
    }
    Ok(Some(vec![Some(x)]))
}
