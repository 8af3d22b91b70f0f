//! A text form of what a rewrite changed in a main graph, for snapshots: nodes removed and
//! added, node inputs that read another value, initializers removed, added or reshaped, and
//! `value_info` entries dropped or reshaped. Unchanged parts are not listed.

use std::collections::BTreeMap;
use std::fmt::Write;

use onnx_protobuf::{GraphProto, ModelProto, ValueInfoProto};
use protobuf::Message;

fn graph(bytes: &[u8]) -> GraphProto {
    ModelProto::parse_from_bytes(bytes)
        .expect("a valid model")
        .graph
        .unwrap()
}

/// A node as the diff sees it: key (name, or op and index), op, inputs, outputs.
type NodeRow = (String, String, Vec<String>, Vec<String>);

fn node_key(index: usize, name: &str, op: &str) -> String {
    if name.is_empty() {
        format!("{op}_{index}")
    } else {
        name.to_string()
    }
}

fn dims(info: &ValueInfoProto) -> Vec<String> {
    info.type_
        .tensor_type()
        .shape
        .dim
        .iter()
        .map(|d| {
            if d.has_dim_value() {
                d.dim_value().to_string()
            } else {
                d.dim_param().to_string()
            }
        })
        .collect()
}

/// What changed from the model `before` to the model `after` (both as bytes).
pub fn graph_diff(before: &[u8], after: &[u8]) -> String {
    let (a, b) = (graph(before), graph(after));
    let mut out = String::new();
    let nodes = |g: &GraphProto| -> Vec<NodeRow> {
        g.node
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    node_key(i, &n.name, &n.op_type),
                    n.op_type.clone(),
                    n.input.clone(),
                    n.output.clone(),
                )
            })
            .collect()
    };
    let (na, nb) = (nodes(&a), nodes(&b));
    let after_by_name: BTreeMap<&str, &NodeRow> = nb.iter().map(|n| (n.0.as_str(), n)).collect();
    let before_names: BTreeMap<&str, ()> = na.iter().map(|n| (n.0.as_str(), ())).collect();
    let removed: Vec<&NodeRow> = na
        .iter()
        .filter(|n| !after_by_name.contains_key(n.0.as_str()))
        .collect();
    let _ = writeln!(out, "nodes: {} -> {}", na.len(), nb.len());
    let _ = writeln!(out, "removed {} nodes:", removed.len());
    for n in removed {
        let _ = writeln!(out, "  - {} ({})", n.0, n.1);
    }
    for n in nb
        .iter()
        .filter(|n| !before_names.contains_key(n.0.as_str()))
    {
        let _ = writeln!(
            out,
            "added {} ({}): {} -> {}",
            n.0,
            n.1,
            n.2.join(", "),
            n.3.join(", ")
        );
    }
    for n in &na {
        if let Some(m) = after_by_name.get(n.0.as_str()) {
            for (i, (x, y)) in n.2.iter().zip(&m.2).enumerate() {
                if x != y {
                    let _ = writeln!(out, "rewired {} input {i}: {x} -> {y}", n.0);
                }
            }
        }
    }
    let inits = |g: &GraphProto| -> BTreeMap<String, Vec<i64>> {
        g.initializer
            .iter()
            .map(|t| (t.name.clone(), t.dims.clone()))
            .collect()
    };
    let (ia, ib) = (inits(&a), inits(&b));
    for (name, d) in &ia {
        match ib.get(name) {
            None => {
                let _ = writeln!(out, "initializer removed: {name} {d:?}");
            }
            Some(e) if e != d => {
                let _ = writeln!(out, "initializer reshaped: {name} {d:?} -> {e:?}");
            }
            _ => {}
        }
    }
    for (name, d) in ib.iter().filter(|(n, _)| !ia.contains_key(*n)) {
        let _ = writeln!(out, "initializer added: {name} {d:?}");
    }
    let infos = |g: &GraphProto| -> BTreeMap<String, Vec<String>> {
        g.value_info
            .iter()
            .map(|v| (v.name.clone(), dims(v)))
            .collect()
    };
    let (va, vb) = (infos(&a), infos(&b));
    let dropped = va.keys().filter(|k| !vb.contains_key(*k)).count();
    if dropped > 0 {
        let _ = writeln!(out, "value_info dropped: {dropped} of {}", va.len());
    }
    for (name, d) in &va {
        if let Some(e) = vb.get(name).filter(|e| *e != d) {
            let _ = writeln!(out, "value_info reshaped: {name} {d:?} -> {e:?}");
        }
    }
    out
}

/// What [`graph_diff`] leaves out: graph inputs and outputs whose declared shape changed, and
/// integer attributes of nodes (matched by name) whose values changed.
pub fn interface_diff(before: &[u8], after: &[u8]) -> String {
    let (a, b) = (graph(before), graph(after));
    let mut out = String::new();
    let declared = |g: &GraphProto| -> Vec<(&'static str, String, Vec<String>)> {
        let inputs = g.input.iter().map(|v| ("input", v));
        let outputs = g.output.iter().map(|v| ("output", v));
        inputs
            .chain(outputs)
            .map(|(kind, v)| (kind, v.name.clone(), dims(v)))
            .collect()
    };
    let after_declared = declared(&b);
    for (kind, name, old) in declared(&a) {
        if let Some((_, _, new)) = after_declared
            .iter()
            .find(|(k, n, _)| *k == kind && *n == name)
        {
            if *new != old {
                let _ = writeln!(out, "graph {kind} {name}: {old:?} -> {new:?}");
            }
        }
    }
    for node in &a.node {
        let Some(other) = b.node.iter().find(|n| n.name == node.name) else {
            continue;
        };
        for attr in &node.attribute {
            let Some(new) = other.attribute.iter().find(|x| x.name == attr.name) else {
                continue;
            };
            if (new.i, &new.ints) != (attr.i, &attr.ints) {
                let _ = writeln!(
                    out,
                    "attribute {}.{}: {} {:?} -> {} {:?}",
                    node.name, attr.name, attr.i, attr.ints, new.i, new.ints
                );
            }
        }
    }
    out
}
