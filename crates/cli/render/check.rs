//! A check report for people, and the exit code it gives.

use std::process::ExitCode;

use onnx_prune_verify::CheckReport;

use super::table;

/// Exit code for a check that ran and failed a tolerance.
const EXIT_CHECK_FAILED: u8 = 1;

/// 0 when the check passed, 1 when it failed.
pub fn check_exit_code(report: &CheckReport) -> ExitCode {
    if report.passed {
        ExitCode::SUCCESS
    } else {
        check_failed()
    }
}

/// The exit code of a check that ran and failed its tolerance.
pub fn check_failed() -> ExitCode {
    ExitCode::from(EXIT_CHECK_FAILED)
}

/// Says on stderr what was done to the data to fit the models.
pub fn print_notes(notes: &[String]) {
    for note in notes {
        eprintln!("note: {note}");
    }
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
pub fn render_check(report: &CheckReport) -> String {
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
