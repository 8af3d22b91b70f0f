//! `onnx-prune replay`: a training mask schedule onto the exported model, at one step or all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use onnx_prune_core::prune::{
    plan, plan_zeroings, select, Plan, PruneConfig, RewriteReport, Selection,
};
use onnx_prune_core::replay::{read_masks, resolve, unpruned, Manifest};
use onnx_prune_core::write::Outputs;
use onnx_prune_core::{discover, Destination, Model, Weight};
use onnx_prune_tune::Baseline;
use onnx_prune_verify::CheckOptions;

use crate::args::ReplayArgs;
use crate::files::{preflight_check, Files};
use crate::options::check_options_if;
use crate::outcome::{check_model, finish_rewrite, stage_json};
use crate::render::{bytes, check_failed, percent, print_notes, steps_svg, table};
use crate::stdout;

fn read_map(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_slice(&text)
        .with_context(|| format!("{}: not a JSON object of key to weight id", path.display()))
}

/// Everything a step's replay needs.
struct Replay<'a> {
    args: &'a ReplayArgs,
    manifest: Manifest,
    model: Model,
    weights: Vec<Weight>,
    map: BTreeMap<String, String>,
}

pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    let check_options = check_options_if(args.check, &args.check_flags)?;
    let manifest = Manifest::load(&args.schedule)?;
    let model = Model::load(&args.model)?;
    if let Some(options) = &check_options {
        // Bad check input is refused before the first output is written.
        onnx_prune_verify::validate(&model, options)?;
    }
    let weights = discover(&model);
    let map = args
        .map
        .as_deref()
        .map(read_map)
        .transpose()?
        .unwrap_or_default();
    let replay = Replay {
        args: &args,
        manifest,
        model,
        weights,
        map,
    };
    if args.out_dir.is_some() && !args.all_steps {
        bail!("--out-dir is where --all-steps writes every step; add --all-steps, or use -o OUT");
    }
    let destination = match (&args.out_dir, &args.output) {
        (Some(_), _) => None,
        _ if args.in_place => Some(Destination::InPlace),
        (None, Some(output)) => Some(Destination::File(output)),
        (None, None) => bail!("give -o OUT, --in-place, or --all-steps --out-dir DIR"),
    };
    let mut outputs = replay.check_files(destination, check_options.as_ref())?;
    let Some(destination) = destination else {
        let dir = args.out_dir.as_deref().expect("--out-dir with --all-steps");
        return replay.all_steps(outputs, dir, check_options.as_ref());
    };
    let plan = replay.plan(args.step)?;
    let storage = args.rewrite.storage.into();
    let saved = outputs.stage(&replay.model, &plan.edits, destination, storage)?;
    let report = RewriteReport::new(&replay.model, plan.outcomes, Some(&saved))?;
    let checked = match (&check_options, &args.output) {
        (Some(options), Some(output)) => {
            Some(check_model(&args.model, &outputs.staged(output)?, options)?)
        }
        _ => None,
    };
    let json = args.rewrite.report.as_deref();
    finish_rewrite(outputs, &report, checked.as_ref(), (json, None))
}

impl Replay<'_> {
    /// Checks every file the replay will write against what it reads, before writing any, and
    /// locks them.
    fn check_files(
        &self,
        destination: Option<Destination>,
        check_options: Option<&CheckOptions>,
    ) -> Result<Outputs> {
        let mut files = Files::default();
        files.read_model(&self.model).read(&self.manifest.path);
        for step in &self.manifest.steps {
            files.read(&self.manifest.dir.join(&step.file));
        }
        if let Some(map) = &self.args.map {
            files.read(map);
        }
        if let Some(options) = check_options {
            files.read_check_inputs(options);
            preflight_check(options)?;
        }
        match destination {
            Some(to) => {
                let flag = if self.args.in_place {
                    "--in-place"
                } else {
                    "-o"
                };
                files.write_model(flag, &self.model, to)?;
            }
            None => {
                let dir = self.args.out_dir.as_deref().expect("--out-dir");
                std::fs::create_dir_all(dir)
                    .map_err(|e| onnx_prune_core::Error::write_output("--out-dir", dir, e))?;
                for step in self.steps() {
                    let output = self.step_output(dir, step);
                    files.write_model("--out-dir", &self.model, Destination::File(&output))?;
                }
            }
        }
        if let Some(report) = &self.args.rewrite.report {
            files.write("--report", report);
        }
        if let Some(plot) = &self.args.plot {
            files.write("--plot", plot);
        }
        files.check()
    }

    /// Where `--all-steps` writes `step`: `<model stem>.step<N>.onnx` in `dir`.
    fn step_output(&self, dir: &Path, step: i64) -> PathBuf {
        let stem = self
            .args
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        dir.join(format!("{stem}.step{step}.onnx"))
    }

    /// Every step of the schedule, in order.
    fn steps(&self) -> Vec<i64> {
        match &self.manifest.sparsity_schedule {
            Some(schedule) => schedule.update_steps(),
            None => self.manifest.steps.iter().map(|s| s.step).collect(),
        }
    }

    /// What replaying `step` (default: the last) zeroes.
    fn plan(&self, step: Option<i64>) -> Result<Plan> {
        let (model, weights) = (&self.model, &self.weights);
        if let Some(schedule) = &self.manifest.sparsity_schedule {
            let step = step
                .or_else(|| self.steps().last().copied())
                .context("the sparsity schedule has no step")?;
            let sparsity = schedule.sparsity_at(step);
            let selected = select(model, weights, &Selection::default())?;
            let config = PruneConfig {
                sparsity,
                ..PruneConfig::default()
            };
            return Ok(plan(model, &selected, &config)?);
        }
        let step = self.manifest.step(step)?;
        let masks = read_masks(&self.manifest.dir.join(&step.file))?;
        let resolved = resolve(model, weights, &masks, &self.map, self.manifest.layout)?;
        for key in self.map.keys() {
            if !masks.iter().any(|m| m.key == *key) {
                eprintln!(
                    "warning: --map entry `{key}` names no mask key of step {}'s file `{}`",
                    step.step,
                    step.file.display()
                );
            }
        }
        if self.args.explain {
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
            stdout::print(format!(
                "{}\n",
                table(&["mask key", "weight", "resolved by"], rows, &[])
            ))?;
        }
        let position = self
            .manifest
            .steps
            .iter()
            .position(|s| s.step == step.step)
            .expect("a step of the manifest");
        if position > 0 {
            let earlier = &self.manifest.steps[position - 1];
            let previous = read_masks(&self.manifest.dir.join(&earlier.file))?;
            for (key, count) in unpruned(&previous, &masks) {
                let msg = format!(
                    "step {} keeps {count} elements of `{key}` that step {} pruned",
                    step.step, earlier.step
                );
                if self.args.strict {
                    bail!("{msg} (--strict)");
                }
                eprintln!("warning: {msg}");
            }
        }
        let by_tensor: BTreeMap<usize, &Weight> = weights.iter().map(|w| (w.tensor, w)).collect();
        let zeroings = resolved
            .into_iter()
            .map(|(r, z)| (by_tensor[&r.tensor], z))
            .collect();
        Ok(plan_zeroings(model, zeroings)?)
    }

    /// One model per step in `dir`, and the sparsity / accuracy curve, all prepared before
    /// any is committed.
    fn all_steps(
        &self,
        mut outputs: Outputs,
        dir: &Path,
        check_options: Option<&CheckOptions>,
    ) -> Result<ExitCode> {
        let mut rows = Vec::new();
        let mut json = Vec::new();
        // The curve is for picking a step; the last step is what ships, so its check decides.
        let mut last_passed = None;
        let mut curve: Vec<(i64, f64, f64)> = Vec::new();
        let mut metric = "cosine";
        let baseline = check_options
            .map(|options| Baseline::load(&self.args.model, options))
            .transpose()?;
        if let Some(baseline) = &baseline {
            print_notes(baseline.notes());
        }
        for step in self.steps() {
            let plan = self.plan(Some(step))?;
            let output = self.step_output(dir, step);
            let saved = outputs.stage(
                &self.model,
                &plan.edits,
                Destination::File(&output),
                self.args.rewrite.storage.into(),
            )?;
            let report = RewriteReport::new(&self.model, plan.outcomes, Some(&saved))?;
            let checked = match &baseline {
                Some(baseline) => Some(baseline.compare(&outputs.staged(&output)?)?),
                None => None,
            };
            let trained = self
                .manifest
                .steps
                .iter()
                .find(|s| s.step == step)
                .and_then(|s| s.sparsity);
            let t = &report.totals;
            let first = checked.as_ref().and_then(|c| c.outputs.first());
            if let (Some(checked), Some(first)) = (&checked, first) {
                let (name, value) = match (&checked.accuracy, first.top1_agreement) {
                    (Some(accuracy), _) => ("accuracy", accuracy.candidate),
                    (None, Some(agreement)) => ("top-1 agreement", agreement),
                    (None, None) => ("cosine", first.cosine),
                };
                metric = name;
                curve.push((step, t.sparsity, value));
            }
            rows.push(vec![
                step.to_string(),
                percent(t.zeros_after, t.params),
                trained
                    .map(|s| format!("{:.2}%", 100.0 * s))
                    .unwrap_or_else(|| "-".into()),
                report
                    .output
                    .as_ref()
                    .map(|o| bytes(o.compressed.bytes))
                    .unwrap_or_default(),
                checked
                    .as_ref()
                    .and_then(|c| c.accuracy.as_ref())
                    .map(|a| format!("{:.2}%", 100.0 * a.candidate))
                    .unwrap_or_else(|| "-".into()),
                first
                    .and_then(|o| o.top1_agreement)
                    .map(|a| format!("{:.2}%", 100.0 * a))
                    .unwrap_or_else(|| "-".into()),
                first
                    .map(|o| format!("{:.4}", o.cosine))
                    .unwrap_or_else(|| "-".into()),
                checked
                    .as_ref()
                    .map(|c| if c.passed { "yes" } else { "no" })
                    .unwrap_or("-")
                    .to_string(),
            ]);
            json.push(serde_json::json!({
                "step": step,
                "output": output.file_name().map(|f| f.to_string_lossy().into_owned()),
                "schedule_sparsity": trained,
                "passed": checked.as_ref().map(|c| c.passed),
                "report": report,
                "check": checked,
            }));
            last_passed = checked.as_ref().map(|c| c.passed);
        }
        let header = [
            "step",
            "sparsity",
            "in training",
            "compressed",
            "accuracy",
            "top-1 agree",
            "cosine",
            "passed",
        ];
        if let Some(path) = &self.args.plot {
            outputs.stage_file("--plot", path, steps_svg(metric, &curve)?.as_bytes())?;
        }
        if let Some(path) = &self.args.rewrite.report {
            stage_json(&mut outputs, path, &serde_json::json!({ "steps": json }))?;
        }
        outputs.commit()?;
        stdout::print(table(&header, rows, &[1, 2, 3, 4, 5, 6]))?;
        if last_passed == Some(false) {
            eprintln!("error: the last step failed its check (see the `passed` column)");
            return Ok(check_failed());
        }
        Ok(ExitCode::SUCCESS)
    }
}
