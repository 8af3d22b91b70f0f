//! Finding the channel dependency groups of the main graph: one walk over the nodes in order
//! (ONNX graphs are topologically sorted) that gives every activation tensor a channel
//! [`Layout`], creates a group at each producer, merges groups at coupling ops, records every
//! weight axis that carries a group's channels ([`Cut`]), and blocks every group that reaches
//! something it does not understand. The op handlers live in [`super::ops`].

use num_integer::gcd;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::{Error, Result};
use crate::model::{Model, Node, Source, Tensor};

use super::cuts::{Count, Cut, CutKind, Operand, Recount};
use super::interface::{Interface, Port};
use super::layout::{Layout, Owner};
use super::{Analysis, Group};

/// Per raw group id: union-find parent, size and facts.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawGroup {
    parent: usize,
    /// Channel `c` of this group is channel `c + offset` of its parent.
    offset: usize,
    pub size: usize,
    /// Channels `c` and `c + period` are removed together (grouped convolutions).
    pub period: usize,
    /// Channels go in runs of `block` within a period (attention heads).
    pub block: usize,
    pub blocked: Vec<String>,
    pub not_zero: Vec<String>,
    pub producers: BTreeSet<String>,
    pub consumers: BTreeSet<String>,
    pub members: BTreeSet<String>,
    pub first_node: usize,
}

/// The state of the walk.
pub(crate) struct Builder<'m> {
    pub model: &'m Model,
    /// Constant tensors of the main graph by name.
    pub(crate) consts: HashMap<&'m str, usize>,
    /// How many node inputs (any graph) name each tensor.
    uses: HashMap<&'m str, usize>,
    /// The main graph's node making each tensor.
    producers: HashMap<&'m str, usize>,
    pub layouts: HashMap<String, Layout>,
    pub raw: Vec<RawGroup>,
    pub cuts: Vec<Cut>,
    /// Dead-channel conditions: a channel maps 0 to 0 on its way when, in every clause, one
    /// of the cuts is zero for it.
    pub clauses: Vec<Vec<usize>>,
    pub recounts: Vec<Recount>,
    /// The node being handled: (index, label, op).
    pub here: (usize, String, String),
    /// Why the current node blocked, the first time it did.
    blocked_here: Option<String>,
    /// The upstream cause the current node's block names, if it names one.
    blamed: Option<String>,
    /// Activations that carry no channel layout because a node upstream blocked: where and
    /// why (`` `label` (op), blocked because ... ``), and whether that node made them.
    lost: HashMap<String, (String, bool)>,
    /// Head counts in Reshape targets, by (node, input, element), and the heads each counts.
    pub head_counts: HashMap<(usize, usize, usize), Layout>,
    /// Groups whose units go together though their channels differ (grouped-query attention:
    /// a query group's unit is a KV head's query heads, the KV group's unit that KV head).
    pub unit_links: Vec<(usize, usize)>,
    /// Graph inputs and outputs that hold heads (KV caches), with their layouts.
    pub(crate) ports: Vec<(Port, Layout)>,
}

impl<'m> Builder<'m> {
    fn new(model: &'m Model) -> Builder<'m> {
        let consts = model
            .tensors()
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.graph == 0
                    && t.sparse.is_none()
                    && matches!(t.source, Source::Initializer | Source::Constant(_))
            })
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for graph in model.graphs() {
            for node in &graph.nodes {
                for input in node.inputs.iter().filter(|i| !i.is_empty()) {
                    *uses.entry(input.as_str()).or_default() += 1;
                }
            }
        }
        let producers = model.graphs()[0]
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
            .collect();
        Builder {
            model,
            consts,
            uses,
            producers,
            layouts: HashMap::new(),
            raw: Vec::new(),
            cuts: Vec::new(),
            clauses: Vec::new(),
            recounts: Vec::new(),
            here: (0, String::new(), String::new()),
            blocked_here: None,
            blamed: None,
            lost: HashMap::new(),
            head_counts: HashMap::new(),
            unit_links: Vec::new(),
            ports: Vec::new(),
        }
    }

    /// The root of a raw group, and where the group's channel 0 sits in it.
    pub fn find_off(&self, mut g: usize) -> (usize, usize) {
        let mut offset = 0;
        while self.raw[g].parent != g {
            offset += self.raw[g].offset;
            g = self.raw[g].parent;
        }
        (g, offset)
    }

    /// The root of a raw group.
    pub fn find(&self, g: usize) -> usize {
        self.find_off(g).0
    }

    /// The root group that `layout` is the whole of, if it is.
    pub fn whole_root(&self, layout: &Layout) -> Option<usize> {
        match layout.segs.as_slice() {
            [seg] => {
                let (root, offset) = self.find_off(seg.group?);
                (seg.start + offset == 0 && seg.len == self.raw[root].size).then_some(root)
            }
            _ => None,
        }
    }

    /// A new group of `size` channels made by the current node.
    pub fn new_group(&mut self, size: usize) -> usize {
        let id = self.raw.len();
        self.raw.push(RawGroup {
            parent: id,
            size,
            period: size,
            block: 1,
            first_node: self.here.0,
            ..RawGroup::default()
        });
        self.raw[id].producers.insert(self.here.1.clone());
        id
    }

    /// Makes root group `child` channels `offset..offset + size` of root group `parent`.
    pub fn embed(&mut self, child: usize, parent: usize, offset: usize) {
        if child == parent {
            return;
        }
        let moved = std::mem::take(&mut self.raw[child]);
        let root = &mut self.raw[parent];
        if moved.period != moved.size {
            root.period = gcd(gcd(root.period, moved.period), root.size);
        }
        root.block = num_integer::lcm(root.block, moved.block.max(1));
        root.first_node = root.first_node.min(moved.first_node);
        root.blocked.extend(moved.blocked);
        root.not_zero.extend(moved.not_zero);
        root.producers.extend(moved.producers);
        root.consumers.extend(moved.consumers);
        root.members.extend(moved.members);
        self.raw[child] = RawGroup {
            parent,
            offset,
            size: moved.size,
            ..RawGroup::default()
        };
    }

    /// Blocks every group of `layout`, saying why.
    pub fn block(&mut self, layout: &Layout, why: &str) {
        for g in layout.groups().collect::<Vec<_>>() {
            let root = self.find(g);
            if !self.raw[root].blocked.iter().any(|b| b == why) {
                self.raw[root].blocked.push(why.to_string());
            }
        }
    }

    /// Blocks the groups of `layout` at the current node.
    pub fn block_here(&mut self, layout: &Layout, what: &str) {
        self.blocked_here.get_or_insert_with(|| what.to_string());
        let why = format!("{} ({}): {what}", self.here.1, self.here.2);
        self.block(layout, &why);
    }

    /// Why `name`, read where channels are expected, carries none: the node upstream that
    /// blocked and its reason, or that it is in no channel group.
    pub fn no_channels(&mut self, name: &str) -> String {
        let Some((origin, made_here)) = self.lost.get(name) else {
            return format!("`{name}`, which is in no channel group");
        };
        self.blamed.get_or_insert_with(|| origin.clone());
        match made_here {
            true => format!("`{name}`, which comes from {origin}"),
            false => format!("`{name}`, which depends on {origin}"),
        }
    }

    /// Whether `name` lost its channels to a node upstream that blocked.
    pub fn is_lost(&self, name: &str) -> bool {
        self.lost.contains_key(name)
    }

    /// The current node as `label (op)`.
    pub fn why_here(&self) -> String {
        format!("{} ({})", self.here.1, self.here.2)
    }

    /// Marks `layout` as possibly nonzero from the current node on, unless it already is.
    pub fn not_zero(&self, layout: &mut Layout) {
        layout.nonzero.get_or_insert_with(|| self.why_here());
    }

    /// At a consumer: when `layout` may be nonzero for zero producers, its groups' channels
    /// cannot be found dead from their producers.
    pub fn read_by_consumer(&mut self, layout: &Layout) {
        let Some(why) = layout.nonzero.clone() else {
            return;
        };
        for g in layout.groups().collect::<Vec<_>>() {
            let root = self.find(g);
            self.raw[root].not_zero.push(why.clone());
        }
    }

    /// Records the current node as a member of the groups of `layout`, in `role`.
    pub fn member(&mut self, layout: &Layout, kind: CutKind) {
        let label = self.here.1.clone();
        for g in layout.groups().collect::<Vec<_>>() {
            let root = self.find(g);
            let set = match kind {
                CutKind::Producer => &mut self.raw[root].producers,
                CutKind::Consumer => &mut self.raw[root].consumers,
                CutKind::Param => &mut self.raw[root].members,
            };
            set.insert(label.clone());
        }
    }

    /// Records a cut; returns its index.
    pub fn cut(&mut self, tensor: usize, axis: usize, owners: Vec<Owner>, kind: CutKind) -> usize {
        let operand = Operand {
            tensor,
            reader: None,
        };
        self.cut_operand(operand, axis, owners, kind)
    }

    /// Records a cut of a constant operand (a shared one is sliced in its reader's copy);
    /// returns its index.
    pub fn cut_operand(
        &mut self,
        operand: Operand,
        axis: usize,
        owners: Vec<Owner>,
        kind: CutKind,
    ) -> usize {
        self.cuts.push(Cut {
            tensor: operand.tensor,
            axis,
            owners,
            kind,
            reads: None,
            reader: operand.reader,
        });
        self.cuts.len() - 1
    }

    /// The constant `name` read by input `input` of node `node` as an operand a cut can
    /// slice: the tensor itself when only that input reads it, else that input's copy.
    /// `None` when `name` is not a constant of the main graph.
    pub fn operand(&self, name: &str, (node, input): (usize, usize)) -> Option<Operand> {
        let tensor = *self.consts.get(name)?;
        let reader = (self.uses_of(name) != 1).then_some((node, input));
        Some(Operand { tensor, reader })
    }

    /// Records that the last cut reads activation `name` on `axis`.
    pub fn reads(&mut self, name: &str, axis: i64) {
        if let Some(cut) = self.cuts.last_mut() {
            cut.reads = Some((name.to_string(), axis));
        }
    }

    /// The constant tensor `name` of the main graph, when only one node input uses it.
    pub fn own_const(&self, name: &str) -> Option<&'m Tensor> {
        let index = *self.consts.get(name)?;
        (self.uses.get(name) == Some(&1)).then(|| &self.model.tensors()[index])
    }

    /// How many node inputs (any graph) read `name`.
    pub fn uses_of(&self, name: &str) -> usize {
        self.uses.get(name).copied().unwrap_or(0)
    }

    /// The main graph's node that makes `name`.
    pub fn producer_of(&self, name: &str) -> Option<usize> {
        self.producers.get(name).copied()
    }

    /// Index of the constant tensor `name` of the main graph.
    pub fn const_index(&self, name: &str) -> Option<usize> {
        self.consts.get(name).copied()
    }

    /// Index of the constant tensor `name`, when only one node input uses it.
    pub fn own_const_index(&self, name: &str) -> Option<usize> {
        self.own_const(name)?;
        self.consts.get(name).copied()
    }

    /// Records that the constant integer input `input` of `node` follows the channels as
    /// `counts`: the tensor is rewritten when only this node reads it, else the node gets its
    /// own copy. `None` when that input is not a constant of the main graph.
    pub fn recount_input(&mut self, node: usize, input: usize, counts: Vec<Count>) -> Option<()> {
        let name = self.model.graphs()[0].nodes[node].inputs.get(input)?;
        let tensor = *self.consts.get(name.as_str())?;
        self.recounts.push(match self.own_const_index(name) {
            Some(_) => Recount::Tensor { tensor, counts },
            None => Recount::Input {
                node,
                input,
                tensor,
                counts,
            },
        });
        Some(())
    }

    /// Whether `name` is a constant of the main graph.
    pub fn is_const(&self, name: &str) -> bool {
        self.consts.contains_key(name)
    }

    /// An error naming the current node: the graph contradicts itself.
    pub fn inconsistent(&self, what: impl std::fmt::Display) -> Error {
        Error::Usage(format!(
            "node `{}` ({}): inconsistent shapes: {what}",
            self.here.1, self.here.2
        ))
    }

    fn finish(mut self, outputs: &[String], interface: Interface) -> Analysis {
        // Groups that reach a graph output or a subgraph are blocked, but for heads on an
        // output's axis (a KV cache), which change the interface.
        for name in outputs {
            if let Some(layout) = self.layouts.get(name).cloned() {
                if !self.output_port(name, &layout) {
                    self.block(&layout, &format!("graph output `{name}`"));
                }
            }
        }
        self.settle_ports(interface);
        let inner: BTreeSet<&str> = self.model.graphs()[1..]
            .iter()
            .flat_map(|g| g.nodes.iter().flat_map(|n| n.inputs.iter()))
            .map(String::as_str)
            .collect();
        let mut seen: Vec<(String, Layout)> = self
            .layouts
            .iter()
            .filter(|(name, _)| inner.contains(name.as_str()))
            .map(|(n, l)| (n.clone(), l.clone()))
            .collect();
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, layout) in seen {
            self.block(&layout, &format!("`{name}` is used inside a subgraph"));
        }
        // Roots in order of their first producer; roots linked by their units are one group.
        let class = self.link_units();
        let mut roots: Vec<usize> = (0..self.raw.len())
            .filter(|&g| self.find(g) == g && class[&g] == g)
            .collect();
        roots.sort_by_key(|&g| (self.raw[g].first_node, g));
        let index: BTreeMap<usize, usize> = class
            .iter()
            .map(|(&root, rep)| (root, roots.iter().position(|r| r == rep).expect("a root")))
            .collect();
        let resolve = |owners: &mut Vec<Owner>, b: &mut Builder| {
            for owner in owners.iter_mut() {
                if let Some((g, c)) = *owner {
                    let (root, offset) = b.find_off(g);
                    let raw = &b.raw[root];
                    *owner = Some((index[&root], (c + offset) % raw.period / raw.block));
                }
            }
        };
        let mut cuts = std::mem::take(&mut self.cuts);
        for cut in &mut cuts {
            resolve(&mut cut.owners, &mut self);
        }
        let mut recounts = std::mem::take(&mut self.recounts);
        for recount in &mut recounts {
            let counts = match recount {
                Recount::Int { count, .. } => std::slice::from_mut(count),
                Recount::Ints { counts, .. }
                | Recount::Tensor { counts, .. }
                | Recount::Input { counts, .. }
                | Recount::NodeCopy { counts, .. }
                | Recount::SplitSizes { counts, .. } => counts,
            };
            for count in counts {
                if let Count::Kept(owners) = count {
                    resolve(owners, &mut self);
                }
            }
        }
        let mut ports: Vec<Port> = std::mem::take(&mut self.ports)
            .into_iter()
            .map(|(port, _)| port)
            .collect();
        for port in &mut ports {
            resolve(&mut port.owners, &mut self);
        }
        let mut activations: Vec<(String, Vec<usize>)> = Vec::new();
        let layouts = std::mem::take(&mut self.layouts);
        for (name, layout) in layouts {
            let groups = layout
                .groups()
                .map(|g| index[&self.find(g)])
                .collect::<BTreeSet<_>>();
            activations.push((name, groups.into_iter().collect()));
        }
        activations.sort();
        let groups = roots
            .iter()
            .enumerate()
            .map(|(id, &g)| {
                let raw = &self.raw[g];
                Group {
                    id,
                    channels: raw.size,
                    period: raw.period,
                    block: raw.block,
                    producers: raw.producers.iter().cloned().collect(),
                    consumers: raw.consumers.iter().cloned().collect(),
                    members: raw.members.iter().cloned().collect(),
                    blocked: raw.blocked.clone(),
                    not_zero: raw.not_zero.first().cloned(),
                }
            })
            .collect();
        Analysis {
            groups,
            cuts,
            clauses: self.clauses,
            recounts,
            activations,
            ports,
        }
    }
}

/// The dependency groups of `model`'s main graph (`interface`: whether heads may change the
/// shapes of graph inputs and outputs).
pub(crate) fn analyze(model: &Model, outputs: &[String], interface: Interface) -> Result<Analysis> {
    let mut b = Builder::new(model);
    let graph = &model.graphs()[0];
    for (index, node) in graph.nodes.iter().enumerate() {
        b.here = (index, node.label(index), node.op_type.clone());
        handle(&mut b, index, node)?;
    }
    Ok(b.finish(outputs, interface))
}

/// Dispatches one node: ops the tool understands, or blocking.
fn handle(b: &mut Builder, index: usize, node: &Node) -> Result<()> {
    b.blocked_here = None;
    b.blamed = None;
    let inputs: Vec<Option<Layout>> = node
        .inputs
        .iter()
        .map(|name| b.layouts.get(name).cloned())
        .collect();
    if inputs.iter().all(Option::is_none) && !super::ops::is_producer(node) {
        // Nothing of any group reaches this node; what a blocked node upstream lost, it loses.
        if let Some((origin, _)) = node.inputs.iter().find_map(|i| b.lost.get(i)).cloned() {
            for output in node.outputs.iter().filter(|o| !o.is_empty()) {
                b.lost.insert(output.clone(), (origin.clone(), false));
            }
        }
        return Ok(());
    }
    let foreign = !node.domain.is_empty() && node.domain != "ai.onnx";
    let outputs = if !node.subgraphs.is_empty() {
        None
    } else if foreign {
        super::fused::apply(b, index, node, &inputs)?
    } else if super::heads::reads_heads(&inputs) {
        super::heads::apply(b, index, node, &inputs)?
    } else {
        super::ops::apply(b, index, node, &inputs)?
    };
    let outputs = match outputs {
        Some(outputs) => outputs,
        None => {
            for layout in inputs.into_iter().flatten() {
                b.block_here(&layout, "an op this tool does not pass channels through");
            }
            Vec::new()
        }
    };
    // Outputs without channels name the first node that blocked on the way: this one, unless
    // it blocked because of one upstream.
    let upstream = node.inputs.iter().find_map(|i| b.lost.get(i));
    let origin = match (&b.blamed, &b.blocked_here, upstream) {
        (Some(origin), _, _) => Some((origin.clone(), false)),
        (None, Some(why), _) => Some((
            format!("`{}` ({}), blocked because {why}", b.here.1, b.here.2),
            true,
        )),
        (None, None, Some((origin, _))) => Some((origin.clone(), false)),
        (None, None, None) => None,
    };
    let mut outputs = outputs.into_iter();
    for name in &node.outputs {
        let layout = outputs.next().flatten();
        if name.is_empty() {
            continue;
        }
        match (layout, &origin) {
            (Some(layout), _) => {
                b.layouts.insert(name.clone(), layout);
            }
            (None, Some(origin)) => {
                b.lost.insert(name.clone(), origin.clone());
            }
            (None, None) => {}
        }
    }
    Ok(())
}
