//! Graph inputs and outputs whose head axis holds a group's heads: a KV cache (`past_*` inputs
//! concatenated with the new keys and values, `present_*` outputs). Removing such heads changes
//! the model's interface: the caller feeds and reads caches with fewer heads. The walk records
//! each one as a [`Port`]; with [`Interface::Keep`] (the default) their groups are blocked,
//! naming them and the flag that opens them; with [`Interface::MayChange`] the writer rewrites
//! the head axis of their declared shapes ([`patch_ports`]) and the report lists them.

use std::collections::BTreeSet;

use onnx_splice::{fields, LenField, Patch, Splice};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::proto::value_info as v;

use super::analyze::Builder;
use super::encode::varint_field;
use super::head_shapes::position_owners;
use super::layout::{Layout, Owner};
use super::wire::{GraphWire, ValueWire};
use super::Analysis;

/// Whether groups may change the shapes of the model's inputs and outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interface {
    /// Groups whose heads reach a graph input or output are blocked (the default).
    #[default]
    Keep,
    /// They open, and the head axis of those inputs and outputs gets the kept count
    /// (`shrink --allow-interface-change`).
    MayChange,
}

/// A graph input or output that holds a group's heads on one axis.
#[derive(Debug, Clone)]
pub(crate) struct Port {
    /// The input's or output's name.
    pub name: String,
    /// Whether it is a graph output.
    pub output: bool,
    /// The head axis.
    pub axis: usize,
    /// The owner of each position of the axis (after the walk: group index, unit).
    pub owners: Vec<Owner>,
}

/// A graph input or output whose shape a shrink changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceChange {
    /// The input's or output's name.
    pub name: String,
    /// `input` or `output`.
    pub kind: &'static str,
    /// The axis that changes (its heads).
    pub axis: usize,
    /// Its length before.
    pub before: usize,
    /// And after.
    pub after: usize,
    /// The positions of the axis removed (the caller drops these slices of a cache it feeds).
    pub removed: Vec<usize>,
}

impl Port {
    /// How the port is named in messages.
    fn describe(&self) -> String {
        let kind = if self.output { "output" } else { "input" };
        format!("graph {kind} `{}`", self.name)
    }
}

/// Why a port blocks its group without `--allow-interface-change`.
pub(crate) fn blocked_by(port: &Port) -> String {
    format!(
        "{} holds these heads on axis {} (a KV cache): removing them changes the model's \
         interface {ALLOWING}",
        port.describe(),
        port.axis
    )
}

/// The port a [`blocked_by`] reason names (`graph input `NAME``), if `why` is one.
pub(crate) fn port_of(why: &str) -> Option<&str> {
    let (port, _) = why.split_once(" holds these heads on axis ")?;
    why.ends_with(ALLOWING).then_some(port)
}

/// How [`blocked_by`] ends.
const ALLOWING: &str = "(--allow-interface-change opens it)";

impl Builder<'_> {
    /// Heads of `x` that the current node joins with `name` (a Concat along another axis): when
    /// `name` is a graph input, possibly through single-input Identity/Concat nodes, that
    /// nothing else reads but `Shape` of other axes, it becomes a port holding the same heads.
    pub(crate) fn cache_input(
        &mut self,
        name: &str,
        x: &Layout,
    ) -> std::result::Result<(), String> {
        let head = x.head.ok_or("it joins tensors without heads")?;
        let axis = x.axis().ok_or("the rank of its head input is unknown")?;
        if head.folded || head.expanded.is_some() {
            return Err(format!(
                "it joins heads that are not one axis with `{name}`"
            ));
        }
        let chain = self
            .chain_to_input(name)
            .ok_or_else(|| format!("it joins the heads with `{name}`, which is computed"))?;
        let model = self.model;
        let graph = &model.graphs()[0];
        // Each tensor of the chain is read by the next step (the last by this node) and at most
        // by Shapes of other axes.
        for (i, tensor) in chain.iter().enumerate() {
            let next = match i {
                0 => self.here.0,
                _ => self.producer_of(&chain[i - 1]).expect("a chain node"),
            };
            let readers: Vec<usize> = graph
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.inputs.iter().any(|i| i == tensor))
                .map(|(k, _)| k)
                .collect();
            let main_reads: usize = readers
                .iter()
                .map(|&k| {
                    graph.nodes[k]
                        .inputs
                        .iter()
                        .filter(|i| *i == tensor)
                        .count()
                })
                .sum();
            if main_reads != self.uses_of(tensor) {
                return Err(format!("`{tensor}` is used inside a subgraph"));
            }
            let rank = x.rank.expect("a known rank");
            if let Some(&k) = readers
                .iter()
                .find(|&&k| k != next && !self.reads_other_axes(k, axis, rank))
            {
                let reader = &graph.nodes[k];
                return Err(format!(
                    "`{tensor}` is also read by `{}` ({})",
                    reader.label(k),
                    reader.op_type
                ));
            }
        }
        let input = chain.last().expect("a graph input").clone();
        let owners = position_owners(x);
        let declared = model
            .graph_inputs()
            .into_iter()
            .find(|i| i.name == input)
            .and_then(|i| i.dims.get(axis).copied().flatten());
        if declared.is_some_and(|d| d != owners.len() as u64) {
            return Err(format!(
                "graph input `{input}` declares {} heads on axis {axis}, not {}",
                declared.unwrap_or_default(),
                owners.len()
            ));
        }
        for tensor in &chain {
            let mut layout = x.clone();
            self.not_zero(&mut layout);
            self.layouts.insert(tensor.clone(), layout);
        }
        self.ports.push((
            Port {
                name: input,
                output: false,
                axis,
                owners,
            },
            x.clone(),
        ));
        Ok(())
    }

    /// `name` and the tensors before it up to a graph input (last), when single-input Identity
    /// or Concat nodes are all that lead there from a graph input.
    fn chain_to_input(&self, name: &str) -> Option<Vec<String>> {
        let graph = &self.model.graphs()[0];
        let mut chain = vec![name.to_string()];
        loop {
            let at = chain.last().expect("a name");
            if self.is_const(at) {
                return None;
            }
            let Some(p) = self.producer_of(at) else {
                let inputs = self.model.graph_inputs();
                return inputs.iter().any(|i| &i.name == at).then_some(chain);
            };
            let node = &graph.nodes[p];
            let single = node.inputs.iter().filter(|i| !i.is_empty()).count() == 1;
            if !single || !matches!(node.op_type.as_str(), "Identity" | "Concat") {
                return None;
            }
            chain.push(node.inputs[0].clone());
        }
    }

    /// A graph output whose layout holds heads on one axis becomes a port; false when it
    /// does not (its groups are then blocked as any graph output's).
    pub(crate) fn output_port(&mut self, name: &str, layout: &Layout) -> bool {
        let (Some(head), Some(axis)) = (layout.head, layout.axis()) else {
            return false;
        };
        if head.folded || head.expanded.is_some() {
            return false;
        }
        let port = Port {
            name: name.to_string(),
            output: true,
            axis,
            owners: position_owners(layout),
        };
        self.ports.push((port, layout.clone()));
        true
    }

    /// Without leave to change the interface, blocks every port's groups, naming the port.
    pub(crate) fn settle_ports(&mut self, interface: Interface) {
        if interface == Interface::MayChange {
            return;
        }
        for (port, layout) in self.ports.clone() {
            self.block(&layout, &blocked_by(&port));
        }
    }
}

impl Builder<'_> {
    /// Whether node `k` reads only the lengths of axes other than `axis` of its rank-`rank`
    /// input: a Shape of a range of axes without it, or a whole Shape whose only readers are
    /// Gathers of constant indices without it (the cache's length).
    fn reads_other_axes(&self, k: usize, axis: usize, rank: usize) -> bool {
        let graph = &self.model.graphs()[0];
        let node = &graph.nodes[k];
        if node.op_type != "Shape" {
            return false;
        }
        let at = |v: i64| (if v < 0 { v + rank as i64 } else { v }).clamp(0, rank as i64);
        let start = at(node.ints.get("start").copied().unwrap_or(0));
        let end = at(node.ints.get("end").copied().unwrap_or(rank as i64));
        let axis = axis as i64;
        if !(start..end).contains(&axis) {
            return true;
        }
        let Some(shape) = node.outputs.first() else {
            return false;
        };
        let readers: Vec<&crate::model::Node> = graph
            .nodes
            .iter()
            .filter(|n| n.inputs.iter().any(|i| i == shape))
            .collect();
        // Gather index `i` of the lengths `start..end` is axis `start + i` (`i < 0` from `end`).
        let gathered = |i: i64| if i < 0 { end + i } else { start + i };
        readers.len() == self.uses_of(shape)
            && readers.iter().all(|n| {
                let indices = n.inputs.get(1).and_then(|i| self.const_ints(i));
                n.op_type == "Gather"
                    && n.inputs[0] == *shape
                    && n.ints.get("axis").copied().unwrap_or(0) == 0
                    && indices.is_some_and(|ix| ix.iter().all(|&i| gathered(i) != axis))
            })
    }
}

impl Analysis {
    /// The graph inputs and outputs that hold heads of group `g`, as `--dry-run` names them
    /// (`graph input `NAME` (axis A)`).
    pub(crate) fn ports_of(&self, g: usize) -> Vec<String> {
        self.ports
            .iter()
            .filter(|p| p.owners.iter().flatten().any(|&(group, _)| group == g))
            .map(|p| format!("{} (axis {})", p.describe(), p.axis))
            .collect()
    }

    /// The graph inputs and outputs whose shapes removing `removed` (per group) changes, in
    /// graph order of inputs, then outputs.
    pub fn interface_changes(&self, removed: &[Vec<usize>]) -> Vec<InterfaceChange> {
        let gone: Vec<BTreeSet<usize>> = self
            .groups
            .iter()
            .zip(removed)
            .map(|(g, channels)| channels.iter().map(|&c| g.unit_of(c)).collect())
            .collect();
        let mut changes: Vec<InterfaceChange> = self
            .ports
            .iter()
            .filter_map(|port| {
                let removed: Vec<usize> = (0..port.owners.len())
                    .filter(|&p| port.owners[p].is_some_and(|(g, u)| gone[g].contains(&u)))
                    .collect();
                (!removed.is_empty()).then(|| InterfaceChange {
                    name: port.name.clone(),
                    kind: if port.output { "output" } else { "input" },
                    axis: port.axis,
                    before: port.owners.len(),
                    after: port.owners.len() - removed.len(),
                    removed,
                })
            })
            .collect();
        changes.dedup();
        changes
    }
}

/// Gives the head axis of each changed input's and output's declared shape its new length;
/// the other dimensions (symbolic ones included) keep their bytes.
pub(crate) fn patch_ports(
    model: &Model,
    wire: &GraphWire,
    changes: &[InterfaceChange],
    splice: &mut Splice,
) -> Result<()> {
    for change in changes {
        let declared = match change.kind {
            "input" => &wire.inputs,
            _ => &wire.outputs,
        };
        for value in declared.iter().filter(|w| w.name == change.name) {
            patch_dim(model, wire, value, change, splice)?;
        }
    }
    Ok(())
}

/// The only field numbered `number` of the message field `outer`, as a [`LenField`].
fn only(bytes: &[u8], outer: &LenField, number: u32) -> Option<(LenField, std::ops::Range<usize>)> {
    let range = outer.payload_start..outer.payload_end;
    let field = fields(&bytes[range.clone()], range.start)
        .filter_map(|f| f.ok())
        .filter(|f| f.number == number)
        .last()?;
    Some((LenField::of(&field)?, field.payload()?))
}

fn patch_dim(
    model: &Model,
    wire: &GraphWire,
    value: &ValueWire,
    change: &InterfaceChange,
    splice: &mut Splice,
) -> Result<()> {
    let bytes = model.bytes();
    let bad = || {
        Error::invalid(
            model.path(),
            format!(
                "the declared shape of graph {} `{}`",
                change.kind, change.name
            ),
        )
    };
    let top = fields(&bytes[value.span.clone()], value.span.start)
        .filter_map(|f| f.ok())
        .next()
        .ok_or_else(bad)?;
    let info = LenField::of(&top).ok_or_else(bad)?;
    let Some((ty, _)) = only(bytes, &info, v::TYPE) else {
        return Ok(());
    };
    let Some((tensor, _)) = only(bytes, &ty, v::TENSOR_TYPE) else {
        return Ok(());
    };
    let Some((shape, range)) = only(bytes, &tensor, v::SHAPE) else {
        return Ok(());
    };
    let Some(dim) = fields(&bytes[range.clone()], range.start)
        .filter_map(|f| f.ok())
        .filter(|f| f.number == v::DIM)
        .nth(change.axis)
    else {
        return Ok(());
    };
    let dim_field = LenField::of(&dim).ok_or_else(bad)?;
    let mut patch = Vec::new();
    varint_field(v::DIM_VALUE, change.after as u64, &mut patch);
    splice.replace(
        dim_field.payload_start..dim_field.payload_end,
        Patch::Bytes(patch),
        vec![wire.graph, info, ty, tensor, shape, dim_field],
    );
    Ok(())
}
