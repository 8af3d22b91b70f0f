//! Whole layers: find the residual stream of a transformer, rank its layers by block influence
//! on calibration data, and drop the least influential (ShortGPT, Men et al. 2024).
//!
//! Passes, in order:
//! 1. [`find()`]: the residual blocks of the main stream and the layers they form. A block is
//!    an `Add(x, f(x))` whose branch holds a weighted MatMul/Gemm/Conv: pre-norm
//!    `x + f(norm(x))`, or post-norm `norm(x + f(x))` when a chain of per-value ops reads all
//!    of the Add and hands on one value. A layer is an attention block (a Softmax in its
//!    branch) with the blocks after it up to the next one.
//! 2. Influence, measured outside this crate (the verify crate runs the model through tract):
//!    for each layer, `BI = 1 - E[cos(x_in, x_out)]` over every token of the calibration
//!    data, from the values [`Stream::influence_values`] names; it comes back as plain numbers.
//! 3. [`least_influential`]: which layers go.
//! 4. [`drop_layers`]: the [`GraphEdit`](super::GraphEdit) removing any set of layers, written
//!    by [`GraphEdit::save`](super::GraphEdit::save).
//!
//! Design note: [`drop_layers`] takes any set of layers, so that a budget search can try sets
//! other than the N least influential. Influence is measured once, on the whole model, as
//! ShortGPT does, not again after each removal.

mod drop;
mod find;

use serde::Serialize;

pub use drop::drop_layers;
pub use find::{find, Block, Layer, Stream};

impl Stream {
    /// The (input, output) value pairs whose block influence ranks the layers: every layer's,
    /// then every block's (for the report).
    pub fn influence_values(&self) -> Vec<(String, String)> {
        let layers = self
            .layers
            .iter()
            .map(|l| (l.input.clone(), l.output.clone()));
        let blocks = self
            .blocks
            .iter()
            .map(|b| (b.input.clone(), b.output.clone()));
        layers.chain(blocks).collect()
    }
}

/// The `count` layers of lowest influence, in stream order (ties go to the earlier layer).
pub fn least_influential(influence: &[f64], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..influence.len()).collect();
    order.sort_by(|&a, &b| influence[a].total_cmp(&influence[b]).then(a.cmp(&b)));
    let mut chosen: Vec<usize> = order.into_iter().take(count).collect();
    chosen.sort_unstable();
    chosen
}

/// One layer in the report.
#[derive(Debug, Clone, Serialize)]
pub struct LayerOutcome {
    /// Index in the stream.
    pub index: usize,
    /// The residual Add node of each of its blocks.
    pub blocks: Vec<String>,
    /// Its block influence `1 - E[cos(x_in, x_out)]` on the calibration data.
    pub influence: f64,
    /// Each block's influence, in the order of `blocks`.
    pub block_influence: Vec<f64>,
    /// Whether it was dropped.
    pub removed: bool,
}

/// The `layers` part of the `shrink --report` JSON.
#[derive(Debug, Clone, Serialize)]
pub struct LayersReport {
    /// How layers were ranked: `block-influence`.
    pub method: &'static str,
    /// Layers in the stream before.
    pub layers_before: usize,
    /// And after.
    pub layers_after: usize,
    /// Indices of the dropped layers.
    pub removed: Vec<usize>,
    /// Every layer.
    pub layers: Vec<LayerOutcome>,
    /// What stays of dropped layers, and why (see [`drop_layers`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl LayersReport {
    /// The report of dropping `removed` from `stream`, with `influence` as
    /// [`Stream::influence_values`] ordered them (layers, then blocks).
    pub fn new(
        stream: &Stream,
        influence: &[f64],
        removed: &[usize],
        notes: Vec<String>,
    ) -> LayersReport {
        let blocks = &influence[stream.layers.len()..];
        LayersReport {
            method: "block-influence",
            layers_before: stream.layers.len(),
            layers_after: stream.layers.len() - removed.len(),
            removed: removed.to_vec(),
            layers: stream
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| LayerOutcome {
                    index: i,
                    blocks: l
                        .blocks
                        .iter()
                        .map(|&b| stream.blocks[b].add.clone())
                        .collect(),
                    influence: influence[i],
                    block_influence: l.blocks.iter().map(|&b| blocks[b]).collect(),
                    removed: removed.contains(&i),
                })
                .collect(),
            notes,
        }
    }
}
