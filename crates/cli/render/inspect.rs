//! An inspection for people: the model, then one row per weight.

use onnx_prune_core::inspect::Inspection;

use super::{bytes, percent, shape, table};

/// The human-readable form of an inspection.
pub fn render_inspection(report: &Inspection) -> String {
    let m = &report.model;
    let opsets: Vec<String> = m
        .opsets
        .iter()
        .map(|(domain, version)| {
            let domain = if domain.is_empty() { "ai.onnx" } else { domain };
            format!("{domain} {version}")
        })
        .collect();
    let mut out = format!(
        "model {}: ir {}, producer {}, opsets {}\n{} graph(s), {} node(s)\n\n",
        m.file,
        m.ir_version,
        format!("{} {}", m.producer, m.producer_version).trim(),
        opsets.join(", "),
        m.graphs,
        m.nodes,
    );
    let rows = report
        .weights
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                w.location.clone(),
                w.op_type.clone().unwrap_or_else(|| "-".into()),
                w.role.to_string(),
                w.dtype.clone(),
                shape(&w.shape),
                w.params.to_string(),
                percent(w.zeros, w.params),
                if w.prunable { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    let header = [
        "id", "location", "op", "role", "dtype", "shape", "params", "zeros", "prunable",
    ];
    out.push_str(&table(&header, rows, &[6, 7]));
    let t = &report.totals;
    out.push_str(&format!(
        "\n\ntotal: {} weights, {} params ({} zeros), {} prunable by default, {} of weight data\n\
         file: {} on disk, {} compressed{}",
        t.weights,
        t.params,
        percent(t.zeros, t.params),
        t.prunable_params,
        bytes(t.bytes),
        bytes(t.file_bytes),
        bytes(t.compressed_bytes.bytes),
        if t.compressed_bytes.estimated {
            " (estimated)"
        } else {
            ""
        },
    ));
    out
}
