//! The layer and vocabulary passes of `shrink` for people: every layer's influence and which
//! went, the vocabulary's rows, and the totals when no channel pass ran.

use onnx_prune_core::shrink::layers::{LayersReport, Stream};
use onnx_prune_core::shrink::vocab::VocabReport;
use onnx_prune_core::shrink::ShrinkReportTotals;

use super::table;

/// Every layer's influence and whether it goes.
pub fn render_layers(stream: &Stream, report: &LayersReport) -> String {
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
    let mut out = table(&["layer", "blocks", "influence", ""], rows, &[0, 2]) + "\n";
    for note in &report.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

/// One line on the vocabulary: rows before and after, or why the table stays whole.
pub fn render_vocab(report: &VocabReport) -> String {
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

/// Parameters and MACs before and after; `free` names the inputs whose free dimensions were
/// set to 1 to count the MACs.
pub fn render_totals(t: &ShrinkReportTotals, free: &[String]) -> String {
    let mut out = format!("params {} -> {}", t.params_before, t.params_after);
    if let (Some(a), Some(b)) = (t.macs_before, t.macs_after) {
        out.push_str(&format!("; MACs {a} -> {b}"));
        if !free.is_empty() {
            out.push_str(&format!(
                " (free dimensions of {} set to 1)",
                quoted_list(free)
            ));
        }
    }
    out
}

/// `a`, `b` and `c`.
pub fn quoted_list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}
