//! The report of a rewrite (`prune`, `replay`) for people.

use onnx_prune_core::prune::{FileSizes, RewriteReport};

use super::{bytes, percent, table};

/// The human-readable form of a rewrite report.
pub fn render_rewrite(report: &RewriteReport) -> String {
    let measured = report.weights.iter().any(|w| w.output_error.is_some());
    let rows = report
        .weights
        .iter()
        .map(|w| {
            let mut notes: Vec<String> = match (&w.skipped, w.stored_sparse, &w.storage_note) {
                (Some(reason), _, _) => vec![format!("skipped: {reason}")],
                (None, true, _) => vec!["stored sparse".into()],
                (None, false, Some(note)) => vec![note.clone()],
                (None, false, None) => Vec::new(),
            };
            if w.values_changed {
                notes.push("kept values updated".into());
            }
            notes.extend(w.notes.iter().cloned());
            let mut row = vec![
                w.id.clone(),
                w.params.to_string(),
                percent(w.zeros_before, w.params),
                percent(w.zeros_after, w.params),
            ];
            if measured {
                row.push(w.output_error.map_or("-".into(), |e| format!("{e:.3e}")));
            }
            row.push(notes.join("; "));
            row
        })
        .collect();
    let mut header = vec!["id", "params", "zeros before", "zeros after"];
    let mut right = vec![1, 2, 3];
    if measured {
        header.push("output error");
        right.push(4);
    }
    header.push("");
    let mut out = table(&header, rows, &right);
    let t = &report.totals;
    if let Some(method) = report.method.filter(|m| measured || *m != "magnitude") {
        out.push_str(&format!("\n\nmethod: {method}"));
    }
    out.push_str(&format!(
        "\n\ntotal: {} weights, {} params, zeros {} -> {}\n",
        report.weights.len(),
        t.params,
        percent(t.zeros_before, t.params),
        percent(t.zeros_after, t.params),
    ));
    let size = |s: &FileSizes| {
        format!(
            "{} on disk, {} compressed{}",
            bytes(s.bytes),
            bytes(s.compressed.bytes),
            if s.compressed.estimated {
                " (estimated)"
            } else {
                ""
            }
        )
    };
    out.push_str(&format!("input:  {}\n", size(&report.input)));
    match &report.output {
        Some(output) => out.push_str(&format!(
            "output: {}\n(zeros make a dense model smaller only once compressed)",
            size(output)
        )),
        None => out.push_str("dry run: nothing written"),
    }
    out
}
