//! `shrink --drop-layers` and `--vocab`/`--vocab-from`: flags to validated requests, then the
//! structural edit they make (run before the channel pass), its `--dry-run` listing, its part
//! of the report and of the table.

use std::path::Path;

use anyhow::{bail, Context, Result};
use onnx_prune_core::shrink::layers::{self, LayersReport, Stream};
use onnx_prune_core::shrink::vocab::{self, VocabReport, VocabRequest};
use onnx_prune_core::shrink::{GraphEdit, ShrinkTotals};
use onnx_prune_core::Model;
use onnx_prune_verify::Calibration;

use crate::args::{ShrinkArgs, SparsityArg};
use crate::files::Files;
use crate::table::table;

/// The vocabulary request: the input whose table it is (when named) and the ids.
struct VocabFlags {
    input: Option<String>,
    request: VocabRequest,
}

/// What `--drop-layers` and `--vocab` ask for, validated.
pub struct Passes {
    drop_layers: Option<usize>,
    vocab: Option<VocabFlags>,
}

/// What the passes do to a model.
pub struct Planned {
    /// Their edit, merged.
    pub edit: GraphEdit,
    /// With --drop-layers.
    pub layers: Option<LayersReport>,
    /// With --vocab.
    pub vocab: Option<VocabReport>,
    /// What was found: the residual stream, the embedding tables (--dry-run prints it).
    pub listing: String,
    /// What goes: every layer's influence, the vocabulary's rows.
    pub summary: String,
}

/// `INPUT=FILE` split when INPUT names an input of `model`.
fn named_input<'s>(model: &Model, spec: &'s str) -> (Option<&'s str>, &'s str) {
    match spec.split_once('=') {
        Some((input, file)) if model.graph_inputs().iter().any(|i| i.name == input) => {
            (Some(input), file)
        }
        _ => (None, spec),
    }
}

impl Passes {
    /// Refuses flag combinations of the passes that mean nothing (before any file is read).
    pub fn check_flags(args: &ShrinkArgs) -> Result<()> {
        let auto = args.sparsity == Some(SparsityArg::Auto);
        let asks_vocab = !args.vocab.is_empty() || !args.vocab_from.is_empty();
        if let Some(n) = args.drop_layers {
            if n == 0 {
                bail!("--drop-layers must be at least 1");
            }
            if args.calibration.is_empty() {
                bail!(
                    "--drop-layers needs --calibration: layers are ranked by their block \
                     influence on calibration samples (add --calibration DATA.npz)"
                );
            }
        }
        if auto && (args.drop_layers.is_some() || asks_vocab) {
            bail!("--drop-layers and --vocab do not combine with --sparsity auto yet");
        }
        if !asks_vocab && (!args.keep_token.is_empty() || args.unknown_token.is_some()) {
            bail!(
                "--keep-token and --unknown-token have no effect without --vocab or --vocab-from"
            );
        }
        if asks_vocab && args.unknown_token.is_none() {
            bail!(
                "--vocab/--vocab-from need --unknown-token ID: the id that every id not kept \
                 reads as"
            );
        }
        Ok(())
    }

    /// The passes `args` (checked by [`Passes::check_flags`]) ask for, their id files read
    /// (and listed in `files`).
    pub fn from_args(args: &ShrinkArgs, model: &Model, files: &mut Files) -> Result<Passes> {
        let vocab = if let Some(unknown) = args.unknown_token {
            let mut inputs = Vec::new();
            let mut ids = Vec::new();
            for spec in &args.vocab {
                let (input, file) = named_input(model, spec);
                inputs.extend(input.map(str::to_string));
                files.read(Path::new(file));
                let read = vocab::read_ids(file).with_context(|| format!("--vocab {spec}"))?;
                ids.push((format!("--vocab {spec}"), read));
            }
            for spec in &args.vocab_from {
                let Some((file, key)) = spec.rsplit_once(':').filter(|(f, _)| f.ends_with(".npz"))
                else {
                    bail!("--vocab-from {spec}: give DATA.npz:KEY (the array of token ids)");
                };
                if model.graph_inputs().iter().any(|i| i.name == key) {
                    inputs.push(key.to_string());
                }
                files.read(Path::new(file));
                let read = vocab::read_ids(spec).with_context(|| format!("--vocab-from {spec}"))?;
                ids.push((format!("--vocab-from {spec}"), read));
            }
            inputs.sort();
            inputs.dedup();
            if inputs.len() > 1 {
                bail!(
                    "--vocab/--vocab-from name several inputs ({}): one table per run",
                    inputs.join(", ")
                );
            }
            Some(VocabFlags {
                input: inputs.pop(),
                request: VocabRequest {
                    ids,
                    keep: args.keep_token.clone(),
                    unknown,
                },
            })
        } else {
            None
        };
        Ok(Passes {
            drop_layers: args.drop_layers,
            vocab,
        })
    }

    /// Whether no pass was asked for.
    pub fn is_empty(&self) -> bool {
        self.drop_layers.is_none() && self.vocab.is_none()
    }

    /// The passes' edit of `model`, with `calibration` to rank layers.
    pub fn plan(&self, model: &Model, calibration: Option<&Calibration>) -> Result<Planned> {
        let mut planned = Planned {
            edit: GraphEdit::default(),
            layers: None,
            vocab: None,
            listing: String::new(),
            summary: String::new(),
        };
        if let Some(count) = self.drop_layers {
            let stream = layers::find(model)?;
            planned.listing.push_str(&stream.describe());
            let total = stream.layers.len();
            if total == 0 {
                bail!("--drop-layers: {}", stream.describe().trim_end());
            }
            if count >= total {
                bail!(
                    "--drop-layers {count}: the residual stream has {total} layers, so at most {} can go\n{}",
                    total - 1,
                    stream.describe().trim_end()
                );
            }
            let calibration = calibration.expect("--drop-layers needs --calibration");
            let influence = onnx_prune_verify::block_influence(
                calibration,
                model.bytes(),
                &stream.influence_values(),
            )?;
            let removed = layers::least_influential(&influence[..total], count);
            planned
                .edit
                .merge(layers::drop_layers(model, &stream, &removed)?)?;
            let report = LayersReport::new(&stream, &influence, &removed);
            planned.summary.push_str(&layer_table(&stream, &report));
            planned.summary.push('\n');
            planned.layers = Some(report);
        }
        if let Some(flags) = &self.vocab {
            let found = vocab::embeddings(model)?;
            planned.listing.push_str(&vocab::describe(&found));
            let embedding = vocab::select(&found, flags.input.as_deref())
                .map_err(|e| anyhow::anyhow!("--vocab: {e}"))?;
            let (edit, report) = vocab::keep_rows(model, embedding, &flags.request)?;
            planned.edit.merge(edit)?;
            planned.summary.push_str(&vocab_line(&report));
            planned.vocab = Some(report);
        }
        Ok(planned)
    }
}

/// Every layer's influence and whether it goes.
fn layer_table(stream: &Stream, report: &LayersReport) -> String {
    let rows = report
        .layers
        .iter()
        .map(|l| {
            let first = &stream.blocks[stream.layers[l.index].blocks[0]].add;
            let more = l.blocks.len() - 1;
            vec![
                l.index.to_string(),
                if more > 0 {
                    format!("{first} (+{more})")
                } else {
                    first.clone()
                },
                format!("{:.4}", l.influence),
                if l.removed { "removed" } else { "" }.to_string(),
            ]
        })
        .collect();
    table(&["layer", "blocks", "influence", ""], rows, &[0, 2])
}

/// One line on the vocabulary: rows before and after, or why the table stays whole.
fn vocab_line(report: &VocabReport) -> String {
    if report.left_whole_for.is_empty() {
        format!(
            "vocabulary `{}`: {} -> {} rows (ids not kept read as {})\n",
            report.table, report.rows_before, report.rows_after, report.unknown_token
        )
    } else {
        format!(
            "vocabulary `{}`: left whole ({} rows): also read by {}\n",
            report.table,
            report.rows_before,
            report.left_whole_for.join(", ")
        )
    }
}

/// The totals of the passes then the channel pass: before the first, after the last.
pub fn chained(first: ShrinkTotals, then: Option<ShrinkTotals>) -> ShrinkTotals {
    ShrinkTotals {
        params_before: first.params_before,
        params_after: then.map_or(first.params_after, |t| t.params_after),
    }
}
