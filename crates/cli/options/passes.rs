//! `shrink --drop-layers` and `--vocab`/`--vocab-from` flags to validated requests: the
//! structural passes that run before the channel pass.

use std::path::Path;

use anyhow::{bail, Context, Result};
use onnx_prune_core::shrink::vocab::{self, VocabRequest};
use onnx_prune_core::Model;

use crate::args::{DropLayersArg, ShrinkArgs, SparsityArg};
use crate::files::Files;

/// The vocabulary request: the input whose table it is (when named) and the ids.
pub struct VocabFlags {
    /// The integer input named by `INPUT=FILE` or `DATA.npz:INPUT`, if any.
    pub input: Option<String>,
    /// The ids to keep.
    pub request: VocabRequest,
}

/// What `--drop-layers` and `--vocab` ask for, validated.
pub struct Passes {
    /// `--drop-layers N` (`auto` is a search of its own, not a pass).
    pub drop_layers: Option<usize>,
    /// `--vocab`/`--vocab-from` with `--keep-token` and `--unknown-token`.
    pub vocab: Option<VocabFlags>,
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
        if let Some(drop) = args.drop_layers {
            if drop == DropLayersArg::Count(0) {
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
        if args.drop_layers == Some(DropLayersArg::Auto) && args.sparsity.is_some() {
            bail!(
                "--drop-layers auto searches layers alone: drop --sparsity, or give \
                 --drop-layers N with it"
            );
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
            drop_layers: match args.drop_layers {
                Some(DropLayersArg::Count(n)) => Some(n),
                _ => None,
            },
            vocab,
        })
    }

    /// Whether no pass was asked for.
    pub fn is_empty(&self) -> bool {
        self.drop_layers.is_none() && self.vocab.is_none()
    }
}
