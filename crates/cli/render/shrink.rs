//! A shrink report for people: the groups that changed, refits, and the totals.

use onnx_prune_core::shrink::{Analysis, RefitOutcome, ShrinkReport};

use super::{render_totals, table};

/// The groups that changed, and the totals (`free`: as [`render_totals`] takes it).
pub fn render_shrink(analysis: &Analysis, report: &ShrinkReport, free: &[String]) -> String {
    let rows: Vec<Vec<String>> = report
        .groups
        .iter()
        .filter(|g| !g.removed.is_empty())
        .map(|g| {
            let more = g.producers.len().saturating_sub(1);
            let name = analysis.groups[g.id].name().to_string();
            vec![
                g.id.to_string(),
                if more > 0 {
                    format!("{name} (+{more})")
                } else {
                    name
                },
                g.channels_before.to_string(),
                g.channels_after.to_string(),
            ]
        })
        .collect();
    let open = analysis.open().count();
    let mut out = if rows.is_empty() {
        "no channel removed\n".to_string()
    } else {
        table(
            &["group", "producer", "channels before", "after"],
            rows,
            &[0, 2, 3],
        ) + "\n"
    };
    for change in &report.interface_changes {
        out.push_str(&format!(
            "interface changed: graph {} `{}` axis {}: {} -> {} heads (removed {:?})\n",
            change.kind, change.name, change.axis, change.before, change.after, change.removed
        ));
    }
    if !report.refits.is_empty() {
        out.push('\n');
        out.push_str(&refit_table(&report.refits));
        out.push('\n');
    }
    out.push_str(&format!(
        "\n{} groups ({open} open, {} blocked); {}",
        analysis.groups.len(),
        analysis.groups.len() - open,
        render_totals(&report.totals, free)
    ));
    out
}

/// Per refitted consumer, its relative output error on the calibration data with the removed
/// inputs zeroed and after the least-squares refit.
fn refit_table(refits: &[RefitOutcome]) -> String {
    let percent = |e: Option<f64>| e.map_or("-".to_string(), |e| format!("{:.2}%", e * 100.0));
    let rows = refits
        .iter()
        .map(|r| {
            vec![
                r.weight.clone(),
                percent(r.output_error_before),
                percent(r.output_error_after),
                r.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["consumer weight", "output error zeroed", "refitted", "note"],
        rows,
        &[1, 2],
    )
}
