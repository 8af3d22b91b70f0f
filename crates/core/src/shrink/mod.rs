//! Structural pruning: remove whole channels (Conv filters, Gemm/MatMul neurons) through the
//! graph's channel dependency groups, so that the model gets smaller and faster in every
//! runtime.
//!
//! Passes, in order:
//! 1. [`analyze()`]: one walk over the main graph finds the groups: producers make channels,
//!    per-channel ops pass them through, coupling ops (Add, Mul, ...) merge groups, index maps
//!    (Concat, Split, Slice, Flatten) move them; an op the tool does not understand, a graph
//!    output or a subgraph **blocks** the groups that reach it.
//! 2. [`choose`]: which channels go: dead channels exactly, or the least important by group L2
//!    norm (`--sparsity`).
//! 3. [`refit`] (with calibration data): each consumer's kept weights refitted by least
//!    squares to restore its output, as edits for the writer.
//! 4. [`save_shrunk`]: every member tensor sliced, `group`/Split sizes/Slice
//!    bounds/Reshape targets recounted, stale `value_info` shapes dropped, everything else kept
//!    byte for byte.
//!
//! Two more passes remove other structure, each as a [`GraphEdit`] written from the input's
//! bytes: [`layers`] drops whole transformer layers of the residual stream, [`vocab`] keeps
//! only the embedding rows of the token ids a deployment uses.
//!
//! Design note: a tensor's channel axis is described by a `layout::Layout` (segments of
//! groups' channel ranges) rather than by merging tensors into groups directly, so that Concat
//! and Split keep exact offsets and one weight axis may carry channels of several groups.

mod analyze;
mod choose;
mod consts;
mod copies;
mod cuts;
mod edit;
mod elementwise;
mod encode;
mod external;
mod flow;
mod fold;
mod fused;
mod head_shapes;
mod heads;
mod index_maps;
mod interface;
pub mod layers;
mod layout;
mod links;
mod macs;
mod ops;
mod refit;
mod report;
mod save;
mod shape_expr;
pub mod vocab;
mod wire;

use serde::Serialize;

use crate::error::Result;
use crate::model::Model;

pub use choose::{choose, patterns_match, Importance, Request, ShrinkScope};
pub use edit::GraphEdit;
pub use interface::{Interface, InterfaceChange};
pub use macs::{mac_values, macs};
pub use refit::{refit, RefitOutcome, MAX_REFIT_COLS};
pub use report::{GroupOutcome, ShrinkReport, ShrinkReportTotals};
pub use save::{
    save_shrunk, shrink_bytes, shrink_totals, stage_shrunk, zeroed_bytes, ShrinkTotals, Side,
};

/// A channel dependency group: channels that must be removed together from every member.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// Index in [`Analysis::groups`].
    pub id: usize,
    /// Number of channels.
    pub channels: usize,
    /// Channels `c` and `c + period` go together (grouped convolutions); `channels` otherwise.
    pub period: usize,
    /// Channels go in runs of `block` within a period (an attention head's columns); 1 for
    /// channels that go one by one.
    pub block: usize,
    /// Nodes that make the channels (their weights' out-channel axis).
    pub producers: Vec<String>,
    /// Nodes that read the channels (their weights' reduction axis).
    pub consumers: Vec<String>,
    /// Other nodes the channels pass through (normalisation, activations, Add, Concat, ...).
    pub members: Vec<String>,
    /// Why the group cannot shrink: each blocking node (with its op) or graph output.
    pub blocked: Vec<String>,
    /// The first op on the way that does not map 0 to 0 (its channels can be constant rather
    /// than dead), if any.
    pub not_zero: Option<String>,
}

impl Group {
    /// A short name: the first producer.
    pub fn name(&self) -> &str {
        self.producers.first().map_or("", String::as_str)
    }

    /// Removal units: channels, grouped-convolution periods or attention heads that can go
    /// one by one.
    pub fn units(&self) -> usize {
        self.period / self.block
    }

    /// The removal unit channel `c` belongs to.
    pub fn unit_of(&self, c: usize) -> usize {
        (c % self.period) / self.block
    }

    /// The first graph input or output that blocks the group because it holds the group's
    /// heads (a KV cache, kept without [`Interface::MayChange`]), as `--dry-run` names it.
    pub fn interface_block(&self) -> Option<&str> {
        self.blocked.iter().find_map(|why| interface::port_of(why))
    }

    /// The channels of unit `u`.
    pub fn channels_of(&self, u: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.channels).filter(move |&c| self.unit_of(c) == u)
    }
}

/// The channel groups of a model and where each lives.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Every group, in the order of their first producer.
    pub groups: Vec<Group>,
    pub(crate) cuts: Vec<cuts::Cut>,
    pub(crate) clauses: Vec<Vec<usize>>,
    pub(crate) recounts: Vec<cuts::Recount>,
    /// Activation tensors and the groups their channel axis holds.
    pub(crate) activations: Vec<(String, Vec<usize>)>,
    /// Graph inputs and outputs that hold heads (KV caches).
    pub(crate) ports: Vec<interface::Port>,
}

/// Finds the channel dependency groups of `model`'s main graph, keeping its interface (groups
/// whose heads reach a graph input or output are blocked). A graph whose shapes contradict
/// each other (a weight that does not fit its input) is an error naming the node.
pub fn analyze(model: &Model) -> Result<Analysis> {
    analyze_with(model, Interface::Keep)
}

/// [`analyze()`], with `interface` saying whether heads that reach graph inputs and outputs
/// (KV caches) may go, changing those inputs' and outputs' shapes.
pub fn analyze_with(model: &Model, interface: Interface) -> Result<Analysis> {
    let wire = wire::scan(model)?;
    let outputs: Vec<String> = wire.outputs.iter().map(|o| o.name.clone()).collect();
    analyze::analyze(model, &outputs, interface)
}

impl Analysis {
    /// The groups that can shrink.
    pub fn open(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter().filter(|g| g.blocked.is_empty())
    }

    /// The activations (name, axis) whose channel norms `--calibration` importance needs: the
    /// inputs of the consumers of open groups.
    pub fn activation_taps(&self) -> Vec<(String, i64)> {
        let mut taps: Vec<(String, i64)> = self
            .cuts
            .iter()
            .filter(|c| {
                c.owners
                    .iter()
                    .flatten()
                    .any(|(g, _)| self.groups[*g].blocked.is_empty())
            })
            .filter_map(|c| c.reads.clone())
            .collect();
        taps.sort();
        taps.dedup();
        taps
    }

    /// A text listing of every group: members and channel count, or what blocked it.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for g in &self.groups {
            let state = if g.blocked.is_empty() {
                "open"
            } else {
                "blocked"
            };
            let period = match (g.block, g.period != g.channels) {
                (1, true) => format!(", removed in steps of {} (grouped)", g.channels / g.period),
                (1, false) => String::new(),
                (block, _) => format!(", {} heads of {block}", g.units()),
            };
            let _ = writeln!(
                out,
                "group {} ({state}): {} channels{period}",
                g.id, g.channels
            );
            let _ = writeln!(out, "  producers: {}", g.producers.join(", "));
            if !g.consumers.is_empty() {
                let _ = writeln!(out, "  consumers: {}", g.consumers.join(", "));
            }
            if !g.members.is_empty() {
                let _ = writeln!(out, "  through:   {}", g.members.join(", "));
            }
            if g.blocked.is_empty() {
                let ports = self.ports_of(g.id);
                if !ports.is_empty() {
                    let _ = writeln!(out, "  changes:   {}", ports.join(", "));
                }
            }
            for why in &g.blocked {
                let _ = writeln!(out, "  blocked by {why}");
            }
        }
        out
    }
}
