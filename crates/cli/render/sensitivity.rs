//! A sensitivity analysis for people: units down, sparsities across.

use onnx_prune_tune::search::Line;
use onnx_prune_tune::Searched;
use onnx_prune_tune::{Sensitivity, Structure};

use super::table;

/// The human-readable form: units down, sparsities across, the metric in percentage points.
pub fn render_sensitivity(result: &Sensitivity) -> String {
    let layers = result.structure == Structure::Layers;
    let mut header = vec![result.unit().to_string(), "params".to_string()];
    match layers {
        true => header.push("dropped".to_string()),
        false => header.extend(
            result
                .sparsities
                .iter()
                .map(|s| format!("{:.0}%", 100.0 * s)),
        ),
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let rows = result
        .weights
        .iter()
        .map(|curve| {
            let mut row = vec![curve.id.clone(), curve.params.to_string()];
            row.extend(curve.values.iter().map(|v| format!("{:.2}", 100.0 * v)));
            row
        })
        .collect();
    let right: Vec<usize> = (1..header.len()).collect();
    let (by, done) = match layers {
        true => ("", "dropped"),
        false => (" by sparsity", "pruned"),
    };
    format!(
        "{}{by}, in percentage points ({} samples, {}), one {} {done} at a time\n\n{}",
        result.metric.label(),
        result.samples,
        result.how(),
        result.unit(),
        table(&header, rows, &right)
    )
}

/// The line an `--sparsity auto` search ends with: what it found, on which line, against
/// the best uniform sparsity, and the checks it took.
pub fn render_searched<T>(searched: &Searched<T>, found: &str) -> String {
    let line = match searched.best.line {
        Line::Uniform => "every unit alike",
        Line::Curves => "drawn from the curves",
    };
    let uniform = match searched.best_uniform {
        Some(u) => format!("the best uniform passing is {:.2}%", 100.0 * u),
        None => "no uniform sparsity passed".to_string(),
    };
    format!(
        "--sparsity auto: {found} {:.2}%, {line} ({uniform}; {} sensitivity runs, {} search \
         checks, metric {})\n",
        100.0 * searched.best.overall,
        searched.sensitivity_runs,
        searched.evaluations,
        searched.metric.label()
    )
}
