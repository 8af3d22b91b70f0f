//! `onnx-prune inspect`.

use std::process::ExitCode;

use anyhow::Result;
use onnx_prune_core::{inspect, Inspection, Model};

use crate::args::InspectArgs;
use crate::stdout;
use crate::table::{bytes, percent, shape, table};

pub fn run(args: InspectArgs) -> Result<ExitCode> {
    let model = Model::load(&args.model)?;
    let report = inspect(&model, args.min_params)?;
    if args.json {
        stdout::print(serde_json::to_string_pretty(&report)?)?;
    } else {
        stdout::print(render(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The human-readable form of an inspection.
pub fn render(report: &Inspection) -> String {
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
