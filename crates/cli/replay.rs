//! `onnx-prune replay`: a training mask schedule onto the exported model.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use onnx_prune_core::{
    discover, plan, plan_zeroings, read_masks, resolve, save, select, unpruned, Manifest, Model,
    Plan, PruneConfig, RewriteReport, Selection,
};

use crate::args::ReplayArgs;
use crate::table::table;
use crate::{check, prune};

fn read_map(path: &std::path::Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_slice(&text)
        .with_context(|| format!("{}: not a JSON object of key to weight id", path.display()))
}

pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    let check_options = args
        .check
        .then(|| check::options(&args.check_flags))
        .transpose()?;
    let manifest = Manifest::load(&args.schedule)?;
    let model = Model::load(&args.model)?;
    let weights = discover(&model);
    let plan: Plan = if let Some(schedule) = &manifest.sparsity_schedule {
        let Some(step) = args.step else {
            bail!(
                "{}: a sparsity schedule needs --step N",
                args.schedule.display()
            );
        };
        let sparsity = schedule.sparsity_at(step);
        println!("step {step}: target sparsity {sparsity:.6} by magnitude, per weight");
        let selected = select(&model, &weights, &Selection::default())?;
        let config = PruneConfig {
            sparsity,
            ..PruneConfig::default()
        };
        plan(&model, &selected, &config)?
    } else {
        let step = manifest.step(args.step)?;
        let masks = read_masks(&manifest.dir.join(&step.file))?;
        let map = args
            .map
            .as_deref()
            .map(read_map)
            .transpose()?
            .unwrap_or_default();
        let resolved = resolve(&model, &weights, &masks, &map, manifest.layout)?;
        if args.explain {
            let rows = resolved
                .iter()
                .map(|(r, _)| {
                    let how = if r.transposed {
                        format!("{}, transposed", r.rule)
                    } else {
                        r.rule.clone()
                    };
                    vec![r.key.clone(), r.id.clone(), how]
                })
                .collect();
            println!(
                "{}\n",
                table(&["mask key", "weight", "resolved by"], rows, &[])
            );
        }
        let position = manifest
            .steps
            .iter()
            .position(|s| s.step == step.step)
            .expect("step of the manifest");
        if position > 0 {
            let earlier = &manifest.steps[position - 1];
            let previous = read_masks(&manifest.dir.join(&earlier.file))?;
            for (key, count) in unpruned(&previous, &masks) {
                let msg = format!(
                    "step {} keeps {count} elements of `{key}` that step {} pruned",
                    step.step, earlier.step
                );
                if args.strict {
                    bail!("{msg} (--strict)");
                }
                eprintln!("warning: {msg}");
            }
        }
        let by_tensor: BTreeMap<usize, &onnx_prune_core::Weight> =
            weights.iter().map(|w| (w.tensor, w)).collect();
        let zeroings = resolved
            .into_iter()
            .map(|(r, z)| (by_tensor[&r.tensor], z))
            .collect();
        plan_zeroings(&model, zeroings)?
    };
    let saved = save(
        &model,
        &plan.edits,
        &args.output.output,
        args.output.storage.into(),
    )?;
    let report = RewriteReport::new(&model, plan.outcomes, Some(&saved))?;
    let checked = match &check_options {
        Some(options) => Some(check::run_check(&args.model, &args.output.output, options)?),
        None => None,
    };
    prune::finish(&report, checked.as_ref(), args.output.report.as_deref())
}
