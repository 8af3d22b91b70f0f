//! What a shape tensor holds, element by element, when exporters compute it: a constant piece
//! (and where it is stored, so that it can be recounted) or a dimension of another tensor read
//! at run time (`Shape → Gather/Slice → Unsqueeze → Concat`, as both torch exporters write
//! Reshape targets).

use super::analyze::Builder;

/// Where a constant element is stored: element `index` of the constant input `input` of node
/// `node`, which holds `len` elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub node: usize,
    pub input: usize,
    pub index: usize,
    pub len: usize,
}

/// One element of a shape tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sym {
    /// A constant, and where it is stored.
    Const(i64, Place),
    /// Dimension `axis` of `tensor` at run time.
    Dim(String, usize),
    /// Computed some other way.
    Unknown,
}

impl Sym {
    /// The constant value, if this is one.
    pub fn value(&self) -> Option<i64> {
        match self {
            Sym::Const(v, _) => Some(*v),
            _ => None,
        }
    }
}

/// A shape value: a list of elements, or the whole `Shape(tensor)[start..]` of a tensor whose
/// rank is not known yet.
enum Value {
    List(Vec<Sym>),
    ShapeOf(String, i64),
}

impl Value {
    /// The elements, when the length is known.
    fn into_list(self, b: &Builder) -> Option<Vec<Sym>> {
        match self {
            Value::List(list) => Some(list),
            Value::ShapeOf(tensor, start) => shape_list(b, &tensor, start, None),
        }
    }
}

/// The elements of input `input` of main-graph node `node` (a 1-D integer tensor), as far as
/// they can be followed; `None` when its length is not known.
pub(crate) fn elements(b: &Builder, node: usize, input: usize) -> Option<Vec<Sym>> {
    value(b, node, input, 0)?.into_list(b)
}

fn shape_list(b: &Builder, tensor: &str, start: i64, end: Option<i64>) -> Option<Vec<Sym>> {
    let dims = |from: i64, to: i64| {
        (from..to.max(from))
            .map(|a| Sym::Dim(tensor.to_string(), a as usize))
            .collect()
    };
    if let (true, Some(end)) = (start >= 0, end.filter(|&e| e >= 0)) {
        return Some(dims(start, end));
    }
    let rank = b.layouts.get(tensor)?.rank? as i64;
    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank);
    Some(dims(clamp(start), clamp(end.unwrap_or(rank))))
}

fn value(b: &Builder, node: usize, input: usize, depth: usize) -> Option<Value> {
    let graph = &b.model.graphs()[0];
    let name = graph.nodes[node].inputs.get(input)?;
    if depth > 16 {
        return None;
    }
    if let Some(values) = b.const_ints(name) {
        let len = values.len();
        return Some(Value::List(
            values
                .into_iter()
                .enumerate()
                .map(|(index, v)| {
                    let place = Place {
                        node,
                        input,
                        index,
                        len,
                    };
                    Sym::Const(v, place)
                })
                .collect(),
        ));
    }
    let p = b.producer_of(name)?;
    let producer = &graph.nodes[p];
    let list = |i: usize| value(b, p, i, depth + 1)?.into_list(b);
    match producer.op_type.as_str() {
        "Shape" => {
            let start = producer.ints.get("start").copied().unwrap_or(0);
            match producer.ints.get("end") {
                Some(&end) => shape_list(b, &producer.inputs[0], start, Some(end)).map(Value::List),
                None => Some(Value::ShapeOf(producer.inputs[0].clone(), start)),
            }
        }
        "Concat" => {
            let mut all = Vec::new();
            for i in 0..producer.inputs.len() {
                all.extend(list(i)?);
            }
            Some(Value::List(all))
        }
        // A shape list reshaped to one axis is itself.
        "Reshape" => Some(Value::List(list(0)?)),
        "Unsqueeze" | "Squeeze" | "Cast" | "Identity" => match value(b, p, 0, depth + 1)? {
            Value::List(list) if list.len() == 1 => Some(Value::List(list)),
            _ => None,
        },
        "Gather" if producer.ints.get("axis").copied().unwrap_or(0) == 0 => {
            let indices = b.const_ints(producer.inputs.get(1)?)?;
            // A shape of unknown rank still gives its dimensions counted from the start.
            let data = value(b, p, 0, depth + 1)?;
            let start = match &data {
                Value::ShapeOf(tensor, start) => Some((tensor.clone(), *start)),
                Value::List(_) => None,
            };
            let all = data.into_list(b);
            let picked = |i: i64| -> Option<Sym> {
                match (&all, &start) {
                    (Some(all), _) => {
                        let at = if i < 0 { i + all.len() as i64 } else { i };
                        all.get(usize::try_from(at).ok()?).cloned()
                    }
                    (None, Some((tensor, start))) if i >= 0 => {
                        Some(Sym::Dim(tensor.clone(), (start + i) as usize))
                    }
                    _ => None,
                }
            };
            indices
                .iter()
                .map(|&i| picked(i))
                .collect::<Option<Vec<_>>>()
                .map(Value::List)
        }
        // torch's `expand` turns -1 into the input's size: the else branch is the shape.
        "Where" => Some(Value::List(list(2)?)),
        "Mul" | "Add" | "Sub" | "Div" => {
            let len = list(0)?.len().max(list(1)?.len());
            Some(Value::List(vec![Sym::Unknown; len]))
        }
        "Slice" => {
            let all = list(0)?;
            let bound = |i: usize| {
                let name = producer.inputs.get(i).filter(|n| !n.is_empty())?;
                b.const_ints(name)?.first().copied()
            };
            let len = all.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + len } else { v }).clamp(0, len) as usize;
            let (start, end) = (clamp(bound(1)?), clamp(bound(2)?));
            if bound(3).is_some_and(|a| a != 0 && a != -1) || bound(4).is_some_and(|s| s != 1) {
                return None;
            }
            Some(Value::List(all[start..end.max(start)].to_vec()))
        }
        _ => None,
    }
}
