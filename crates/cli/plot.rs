//! SVG plots drawn with plotters: readable without a legend, each line labelled where it ends.

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::sensitivity::Sensitivity;

/// Plot size in pixels.
const SIZE: (u32, u32) = (1000, 640);

/// The sensitivity curves: sparsity across, the metric up, one labelled line per weight.
pub fn sensitivity_svg(result: &Sensitivity) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        let fail = |e: &dyn std::fmt::Display| anyhow!("drawing the plot: {e}");
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let values = || result.weights.iter().flat_map(|c| c.values.iter().copied());
        // Pruning can also help a little (a negative drop): the axis shows that too.
        let y_max = 100.0 * values().fold(0.001, f64::max) * 1.1;
        let y_min = 100.0 * values().fold(0.0, f64::min) * 1.1;
        let x_max = 100.0 * result.sparsities.last().copied().unwrap_or(1.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{} when one weight is pruned ({} samples, {})",
                    result.metric.label(),
                    result.samples,
                    result.pattern
                ),
                ("sans-serif", 20),
            )
            .margin(12)
            // Room on the right for the labels at the lines' ends.
            .margin_right(220)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, y_min..y_max)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("sparsity of the weight (%)")
            .y_desc(format!("{} (percentage points)", result.metric.label()))
            .draw()
            .map_err(|e| fail(&e))?;
        for (i, curve) in result.weights.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points: Vec<(f64, f64)> = result
                .sparsities
                .iter()
                .zip(&curve.values)
                .map(|(s, v)| (100.0 * s, 100.0 * v))
                .collect();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| fail(&e))?;
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| fail(&e))?;
            if let Some(&(x, y)) = points.last() {
                let position = chart.backend_coord(&(x, y));
                root.draw(&Text::new(
                    curve.id.clone(),
                    (position.0 + 8, position.1 - 6),
                    ("sans-serif", 13).into_font().color(&color),
                ))
                .map_err(|e| fail(&e))?;
            }
        }
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}
