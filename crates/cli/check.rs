//! `onnx-prune check`, and the check that `prune --check` and `replay --check` run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use onnx_prune_core::{densified, write_file_atomic, Model};
use onnx_prune_verify::{
    check, CheckOptions, CheckReport, InputSource, Keep, Reference, Tolerances,
};

use crate::args::{CheckArgs, CheckFlags, SampleFlags};
use crate::files::Files;
use crate::progress::Progress;
use crate::stdout;
use crate::table::table;

/// Exit code for a check that ran and failed a tolerance.
pub const EXIT_CHECK_FAILED: u8 = 1;

/// Where `FILE.npz`, `DIR` or `NAME=FILE.npy` says samples come from.
pub fn input_source(spec: &str) -> InputSource {
    match spec.split_once('=') {
        Some((name, file)) => InputSource::Npy {
            name: name.to_string(),
            path: PathBuf::from(file),
        },
        None if Path::new(spec).is_dir() => InputSource::TestData(PathBuf::from(spec)),
        None => InputSource::Npz(PathBuf::from(spec)),
    }
}

/// The check options the flags ask for.
pub fn options(flags: &CheckFlags) -> Result<CheckOptions> {
    let tolerances = Tolerances {
        atol: flags.atol,
        rtol: flags.rtol,
        min_cosine: flags.min_cosine.unwrap_or(CheckFlags::DEFAULT_MIN_COSINE),
        min_agreement: flags.min_agreement,
        max_accuracy_drop: flags
            .max_accuracy_drop
            .unwrap_or(CheckFlags::DEFAULT_MAX_ACCURACY_DROP),
    };
    tolerances.validate()?;
    Ok(CheckOptions {
        tolerances,
        ..sample_options(&flags.samples)?
    })
}

/// The check options of the samples the flags describe, with the default tolerances.
pub fn sample_options(flags: &SampleFlags) -> Result<CheckOptions> {
    let inputs = flags.inputs.iter().map(|spec| input_source(spec)).collect();
    let shapes = flags
        .shapes
        .iter()
        .map(|spec| {
            let (name, dims) = spec
                .split_once('=')
                .with_context(|| format!("--shape `{spec}` is not NAME=D,D,..."))?;
            let dims = dims
                .split(',')
                .map(|d| d.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("--shape `{spec}`: dimensions must be numbers"))?;
            Ok((name.to_string(), dims))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    let fixes = flags
        .fixes
        .iter()
        .map(|spec| {
            let (name, value) = spec
                .split_once('=')
                .with_context(|| format!("--fix `{spec}` is not NAME=VALUE"))?;
            Ok((name.to_string(), value.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    if flags.inputs.is_empty() && flags.random.is_none() {
        anyhow::bail!("a check needs inputs: give --inputs FILE or --random N");
    }
    if flags.batch_size == Some(0) {
        anyhow::bail!("--batch-size 0: a run takes at least one sample");
    }
    Ok(CheckOptions {
        inputs,
        random: flags.random.map(|n| (n, flags.seed)),
        shapes,
        labels: flags.labels.clone(),
        batch_size: flags.batch_size,
        fixes,
        tolerances: Tolerances::default(),
    })
}

/// The check options when `check` (`--check`) is set; without it, check flags would be silently
/// ignored, so giving any is an error naming them.
pub fn options_if(check: bool, flags: &CheckFlags) -> Result<Option<CheckOptions>> {
    if check {
        return options(flags).map(Some);
    }
    let given = flags.given();
    if !given.is_empty() {
        anyhow::bail!(
            "{} only take effect with --check; add --check or drop them",
            given.join(", ")
        );
    }
    Ok(None)
}

/// A model's bytes as tract reads them: tract reads only dense initializers, so a model with
/// sparse tensors is handed over densified; any other is handed its mapped bytes as they are,
/// without a copy.
fn tract_bytes(model: &Model) -> Result<std::borrow::Cow<'_, [u8]>> {
    Ok(match densified(model)? {
        Some(dense) => std::borrow::Cow::Owned(dense),
        None => std::borrow::Cow::Borrowed(model.bytes()),
    })
}

/// Runs the check of `candidate` against `reference`.
pub fn run_check(
    reference: &Path,
    candidate: &Path,
    options: &CheckOptions,
) -> Result<CheckReport> {
    let (a, b) = (Model::load(reference)?, Model::load(candidate)?);
    let report = check((&a, &tract_bytes(&a)?), (&b, &tract_bytes(&b)?), options)?;
    print_notes(&report.notes);
    Ok(report)
}

/// A reference checked against many candidates (sensitivity curves, the `--sparsity auto`
/// search, `replay --all-steps`): loaded into tract and run once, its outputs kept.
pub struct Baseline {
    reference: Reference,
}

impl Baseline {
    /// Loads the model at `reference` and runs it on the samples `options` describe.
    pub fn load(reference: &Path, options: &CheckOptions) -> Result<Baseline> {
        let model = Model::load(reference)?;
        let reference = Reference::load((&model, &tract_bytes(&model)?), options, Keep::Outputs)?;
        print_notes(reference.notes());
        Ok(Baseline { reference })
    }

    /// Checks the model at `candidate` against the reference.
    pub fn check(&self, candidate: &Path) -> Result<CheckReport> {
        let model = Model::load(candidate)?;
        Ok(self.reference.compare((&model, &tract_bytes(&model)?))?)
    }
}

pub fn run(args: CheckArgs) -> Result<ExitCode> {
    let options = options(&args.flags)?;
    if let Some(report) = &args.report {
        let mut files = Files::default();
        files
            .read_model(&Model::load(&args.reference)?)
            .read_model(&Model::load(&args.candidate)?)
            .read_check_inputs(&options)
            .write("--report", report);
        files.check()?;
    }
    let progress = Progress::start();
    progress.phase("running both models through tract");
    let report = run_check(&args.reference, &args.candidate, &options)?;
    drop(progress);
    if let Some(path) = &args.report {
        write_file_atomic(path, &serde_json::to_vec_pretty(&report)?)?;
    }
    stdout::print(render(&report))?;
    Ok(exit_code(&report))
}

/// Says on stderr what was done to the data to fit the models.
fn print_notes(notes: &[String]) {
    for note in notes {
        eprintln!("note: {note}");
    }
}

/// 0 when the check passed, 1 when it failed.
pub fn exit_code(report: &CheckReport) -> ExitCode {
    if report.passed {
        ExitCode::SUCCESS
    } else {
        exit_code_failed()
    }
}

/// The exit code of a check that ran and failed its tolerance.
pub fn exit_code_failed() -> ExitCode {
    ExitCode::from(EXIT_CHECK_FAILED)
}

fn number(x: f64) -> String {
    if x.is_infinite() {
        "inf".into()
    } else if x != 0.0 && x.abs() < 1e-3 {
        format!("{x:.3e}")
    } else {
        format!("{x:.6}")
    }
}

/// The human-readable form of a check report.
pub fn render(report: &CheckReport) -> String {
    let rows = report
        .outputs
        .iter()
        .map(|o| {
            vec![
                o.name.clone(),
                number(o.max_abs),
                number(o.mean_abs),
                number(o.rmse),
                number(o.cosine),
                if o.snr_db.is_infinite() {
                    "inf".into()
                } else {
                    format!("{:.2}", o.snr_db)
                },
                o.top1_agreement
                    .map(|a| format!("{:.2}%", 100.0 * a))
                    .unwrap_or_else(|| "-".into()),
                o.worst_sample.to_string(),
            ]
        })
        .collect();
    let header = [
        "output",
        "max abs",
        "mean abs",
        "rmse",
        "cosine",
        "snr dB",
        "top-1 agree",
        "worst sample",
    ];
    let mut out = format!(
        "{} samples, {} per run\n\n",
        report.samples, report.batch_size
    );
    out.push_str(&table(&header, rows, &[1, 2, 3, 4, 5, 6, 7]));
    if let Some(acc) = &report.accuracy {
        out.push_str(&format!(
            "\n\naccuracy: reference {:.2}%, candidate {:.2}%",
            100.0 * acc.reference,
            100.0 * acc.candidate
        ));
    }
    if report.passed {
        out.push_str("\n\ncheck passed");
    } else {
        out.push_str("\n\ncheck FAILED:");
        for failure in &report.failures {
            out.push_str(&format!("\n  {failure}"));
        }
    }
    out
}
