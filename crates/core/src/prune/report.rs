//! The report of a rewrite (`prune`, `replay`): per-weight zeros before and after, totals, and
//! the sizes of the input and output files, on disk and compressed.

use crate::error::Result;
use crate::model::{FileBytes, Model};
use crate::prune::size::{compressed_size, CompressedSize};
use crate::prune::WeightOutcome;
use crate::write::Saved;

/// Zero counts over all pruned weights.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutcomeTotals {
    /// Elements of the selected weights.
    pub params: u64,
    /// Zeros before.
    pub zeros_before: u64,
    /// Zeros after.
    pub zeros_after: u64,
    /// `zeros_after / params`.
    pub sparsity: f64,
}

/// Sizes of a set of files (a model and its external data).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileSizes {
    /// Bytes on disk.
    pub bytes: u64,
    /// Bytes once compressed.
    pub compressed: CompressedSize,
}

/// The report of a rewrite.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RewriteReport {
    /// How weights were scored (`prune`: `magnitude`, `wanda` or `sparsegpt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'static str>,
    /// One entry per selected weight.
    pub weights: Vec<WeightOutcome>,
    /// Totals over them.
    pub totals: OutcomeTotals,
    /// The input files.
    pub input: FileSizes,
    /// The output files (absent for a dry run).
    pub output: Option<FileSizes>,
    /// What the run noted about its data (calibration data cast to the model's type).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl RewriteReport {
    /// Builds the report; `saved` is what [`crate::save`] wrote, if anything.
    pub fn new(
        model: &Model,
        mut weights: Vec<WeightOutcome>,
        saved: Option<&Saved>,
    ) -> Result<Self> {
        if let Some(saved) = saved {
            for weight in &mut weights {
                weight.stored_sparse = saved.sparse.contains(&weight.tensor);
                if saved.kept_dense.contains(&weight.tensor) {
                    weight.storage_note = Some(
                        "kept dense: --storage sparse rewrites tensors held in the model file, \
                         and this one is in external data"
                            .into(),
                    );
                }
            }
        }
        let params: u64 = weights.iter().map(|w| w.params).sum();
        let zeros_after: u64 = weights.iter().map(|w| w.zeros_after).sum();
        let totals = OutcomeTotals {
            params,
            zeros_before: weights.iter().map(|w| w.zeros_before).sum(),
            zeros_after,
            sparsity: if params == 0 {
                0.0
            } else {
                zeros_after as f64 / params as f64
            },
        };
        let mut inputs: Vec<&[u8]> = vec![model.bytes()];
        inputs.extend(model.external_files().values().map(|f| &f[..]));
        let input = sizes(&inputs);
        let output = match saved {
            Some(saved) => {
                let maps = saved
                    .files
                    .iter()
                    .map(|f| FileBytes::open(&f.read_from, false))
                    .collect::<Result<Vec<_>>>()?;
                let parts: Vec<&[u8]> = maps.iter().map(|m| &m[..]).collect();
                Some(sizes(&parts))
            }
            None => None,
        };
        Ok(RewriteReport {
            method: None,
            weights,
            totals,
            input,
            output,
            notes: Vec::new(),
        })
    }
}

fn sizes(parts: &[&[u8]]) -> FileSizes {
    FileSizes {
        bytes: parts.iter().map(|p| p.len() as u64).sum(),
        compressed: compressed_size(parts),
    }
}
