//! SVG plots drawn with plotters: readable without a legend, each line or point labelled.

use std::ops::Range;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use onnx_prune_tune::Sensitivity;

/// Plot size in pixels.
const SIZE: (u32, u32) = (1000, 640);

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn fail(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}

/// A white SVG canvas with a captioned, meshed chart, drawn on by `draw`.
fn svg(
    caption: &str,
    (x_desc, x_range): (&str, Range<f64>),
    (y_desc, y_range): (&str, Range<f64>),
    draw: impl FnOnce(&mut Chart, &DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(fail)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            // Room on the right for labels at the lines' ends.
            .margin_right(220)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x_range, y_range)
            .map_err(fail)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(fail)?;
        draw(&mut chart, &root)?;
        root.present().map_err(fail)?;
    }
    Ok(svg)
}

/// The range of `values` with some room above and below, always including 0.
fn span(values: impl Iterator<Item = f64> + Clone) -> Range<f64> {
    let top = values.clone().fold(0.001, f64::max);
    let bottom = values.fold(0.0, f64::min);
    bottom * 1.1..top * 1.1
}

/// The sensitivity curves: sparsity across, the metric up, one labelled line per weight.
pub fn sensitivity_svg(result: &Sensitivity) -> Result<String> {
    let values = result
        .weights
        .iter()
        .flat_map(|c| c.values.iter().map(|v| 100.0 * v));
    let x_max = 100.0 * result.sparsities.last().copied().unwrap_or(1.0);
    let caption = format!(
        "{} when one {} is pruned ({} samples, {})",
        result.metric.label(),
        result.unit(),
        result.samples,
        result.how()
    );
    let y_desc = format!("{} (percentage points)", result.metric.label());
    svg(
        &caption,
        (
            &format!("sparsity of the {} (%)", result.unit()),
            0.0..x_max,
        ),
        (&y_desc, span(values)),
        |chart, root| {
            for (i, curve) in result.weights.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let points: Vec<(f64, f64)> = result
                    .sparsities
                    .iter()
                    .zip(&curve.values)
                    .map(|(s, v)| (100.0 * s, 100.0 * v))
                    .collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .map_err(fail)?;
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(fail)?;
                if let Some(last) = points.last() {
                    let (x, y) = chart.backend_coord(last);
                    let font = ("sans-serif", 13).into_font().color(&color);
                    root.draw(&Text::new(curve.id.clone(), (x + 8, y - 6), font))
                        .map_err(fail)?;
                }
            }
            Ok(())
        },
    )
}

/// A replayed schedule: each step's sparsity across, its metric up, points labelled by step.
pub fn steps_svg(metric: &str, points: &[(i64, f64, f64)]) -> Result<String> {
    let x_max = points.iter().map(|p| 100.0 * p.1).fold(1.0, f64::max) * 1.05;
    let y_range = span(points.iter().map(|p| 100.0 * p.2));
    svg(
        &format!("{metric} over the replayed training steps"),
        ("sparsity (%)", 0.0..x_max),
        (&format!("{metric} (%)"), y_range),
        |chart, root| {
            let color = Palette99::pick(0).to_rgba();
            let xy: Vec<(f64, f64)> = points.iter().map(|p| (100.0 * p.1, 100.0 * p.2)).collect();
            chart
                .draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))
                .map_err(fail)?;
            chart
                .draw_series(xy.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(fail)?;
            for (&(step, _, _), point) in points.iter().zip(&xy) {
                let (x, y) = chart.backend_coord(point);
                let font = ("sans-serif", 13).into_font().color(&BLACK);
                root.draw(&Text::new(format!("step {step}"), (x + 6, y + 4), font))
                    .map_err(fail)?;
            }
            Ok(())
        },
    )
}
