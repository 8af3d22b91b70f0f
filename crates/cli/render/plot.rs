//! SVG plots drawn with plotters: readable without a legend. Each line or point is labelled in
//! a dark colour (at least 4.5:1 against white), labels never overprint one another, and the
//! room kept for them is what they need. With many lines, only the most sensitive are
//! coloured and labelled; the others are drawn grey underneath them.

use std::ops::Range;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use onnx_prune_tune::Sensitivity;

/// Plot size in pixels.
const SIZE: (u32, u32) = (1000, 640);

/// Label font size in pixels.
const LABEL_FONT: u32 = 13;

/// Room a label takes per character (a generous average for sans-serif at [`LABEL_FONT`]).
const LABEL_CHAR_WIDTH: i32 = 8;

/// Vertical room of one label.
const LABEL_HEIGHT: i32 = LABEL_FONT as i32 + 3;

/// Gap between a line's end and its label.
const LABEL_GAP: i32 = 8;

/// At most this many lines are labelled; with more, [`LABELLED_OF_MANY`] of them.
const MAX_LABELLED: usize = 12;

/// Lines labelled when there are more than [`MAX_LABELLED`]: the most sensitive.
const LABELLED_OF_MANY: usize = 10;

/// Dark colours of distinct hues, each at least 4.5:1 against white (WCAG AA for text).
const COLOURS: [RGBColor; MAX_LABELLED] = [
    RGBColor(0x15, 0x65, 0xc0),
    RGBColor(0xc0, 0x39, 0x2b),
    RGBColor(0x1b, 0x78, 0x37),
    RGBColor(0x7b, 0x32, 0x94),
    RGBColor(0xa6, 0x50, 0x1a),
    RGBColor(0x00, 0x72, 0x7a),
    RGBColor(0xc2, 0x18, 0x5b),
    RGBColor(0x8c, 0x6d, 0x00),
    RGBColor(0x28, 0x35, 0x93),
    RGBColor(0x5d, 0x40, 0x37),
    RGBColor(0x2e, 0x7d, 0x32),
    RGBColor(0x6a, 0x3d, 0x9a),
];

/// The unlabelled lines: the lightest grey at 4.5:1 against white.
const GREY: RGBColor = RGBColor(0x76, 0x76, 0x76);

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn fail(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}

/// The width a label of `text` takes.
fn label_width(text: &str) -> i32 {
    text.chars().count() as i32 * LABEL_CHAR_WIDTH
}

/// A white SVG canvas with a captioned, meshed chart, `right` pixels kept free on the right
/// of the plot area for labels, drawn on by `draw`.
fn svg(
    caption: &str,
    (x_desc, x_range): (&str, Range<f64>),
    (y_desc, y_range): (&str, Range<f64>),
    right: i32,
    draw: impl FnOnce(&mut Chart, &DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(fail)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .margin_right(right.max(12))
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

/// The tops of labels wanted at `wanted` (pixel rows, in any order), moved apart so that no two
/// overlap and all stay within `within`, in the order given.
fn spread(wanted: &[i32], within: Range<i32>) -> Vec<i32> {
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_by_key(|&i| (wanted[i], i));
    let mut tops = vec![0; wanted.len()];
    let mut next = within.start;
    for &i in &order {
        tops[i] = wanted[i].max(next);
        next = tops[i] + LABEL_HEIGHT;
    }
    let mut limit = within.end - LABEL_HEIGHT;
    for &i in order.iter().rev() {
        tops[i] = tops[i].min(limit);
        limit = tops[i] - LABEL_HEIGHT;
    }
    tops
}

/// The sensitivity curves: sparsity across, the metric up, one line per unit, the most
/// sensitive labelled at their ends.
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
    // The most sensitive first: the largest cost at any sparsity.
    let cost = |i: usize| result.weights[i].values.iter().copied().fold(0.0, f64::max);
    let mut ranked: Vec<usize> = (0..result.weights.len()).collect();
    ranked.sort_by(|&a, &b| cost(b).total_cmp(&cost(a)).then(a.cmp(&b)));
    let count = result.weights.len();
    let labelled = if count > MAX_LABELLED {
        ranked.truncate(LABELLED_OF_MANY);
        ranked
    } else {
        (0..count).collect()
    };
    let mut x_desc = format!("sparsity of the {} (%)", result.unit());
    if labelled.len() < count {
        x_desc.push_str(&format!(
            "; grey: the {} less sensitive of {count} {}s, unlabelled",
            count - labelled.len(),
            result.unit()
        ));
    }
    let right = labelled
        .iter()
        .map(|&i| label_width(&result.weights[i].id))
        .max()
        .unwrap_or(0)
        + 2 * LABEL_GAP;
    svg(
        &caption,
        (&x_desc, 0.0..x_max),
        (&y_desc, span(values)),
        right,
        |chart, root| {
            let points = |i: usize| -> Vec<(f64, f64)> {
                result
                    .sparsities
                    .iter()
                    .zip(&result.weights[i].values)
                    .map(|(s, v)| (100.0 * s, 100.0 * v))
                    .collect()
            };
            let line = |chart: &mut Chart, i: usize, colour: RGBColor, width: u32| {
                let xy = points(i);
                chart
                    .draw_series(LineSeries::new(xy.clone(), colour.stroke_width(width)))
                    .map_err(fail)?;
                chart
                    .draw_series(xy.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                    .map_err(fail)?;
                Ok::<_, anyhow::Error>(xy.last().map(|p| chart.backend_coord(p)))
            };
            // Grey lines first, under the coloured ones.
            for i in (0..count).filter(|i| !labelled.contains(i)) {
                line(chart, i, GREY, 1)?;
            }
            let mut ends = Vec::new();
            for (k, &i) in labelled.iter().enumerate() {
                if let Some(end) = line(chart, i, COLOURS[k % COLOURS.len()], 2)? {
                    ends.push((k, i, end));
                }
            }
            let (_, rows) = chart.plotting_area().get_pixel_range();
            let wanted: Vec<i32> = ends
                .iter()
                .map(|(_, _, (_, y))| y - LABEL_HEIGHT / 2)
                .collect();
            for ((k, i, (x, y)), top) in ends.iter().zip(spread(&wanted, rows)) {
                let colour = COLOURS[k % COLOURS.len()];
                let at = (x + LABEL_GAP, top);
                if (top + LABEL_HEIGHT / 2 - y).abs() > 2 {
                    // Moved off its line's end: a leader line says whose label it is.
                    let leader = vec![(x + 2, *y), (at.0 - 2, top + LABEL_HEIGHT / 2)];
                    root.draw(&PathElement::new(leader, colour.stroke_width(1)))
                        .map_err(fail)?;
                }
                let font = ("sans-serif", LABEL_FONT).into_font().color(&colour);
                root.draw(&Text::new(result.weights[*i].id.clone(), at, font))
                    .map_err(fail)?;
            }
            Ok(())
        },
    )
}

/// Whether boxes `a` and `b` ((left, top), (right, bottom)) overlap.
fn overlap(a: ((i32, i32), (i32, i32)), b: ((i32, i32), (i32, i32))) -> bool {
    a.0 .0 < b.1 .0 && b.0 .0 < a.1 .0 && a.0 .1 < b.1 .1 && b.0 .1 < a.1 .1
}

/// A replayed schedule: each step's sparsity across, its metric up, points labelled by step
/// where a label fits without overprinting another (the first and last steps first).
pub fn steps_svg(metric: &str, points: &[(i64, f64, f64)]) -> Result<String> {
    let x_max = points.iter().map(|p| 100.0 * p.1).fold(1.0, f64::max) * 1.05;
    let y_range = span(points.iter().map(|p| 100.0 * p.2));
    let widest = points
        .iter()
        .map(|p| label_width(&format!("step {}", p.0)))
        .max()
        .unwrap_or(0);
    svg(
        &format!("{metric} over the replayed training steps"),
        ("sparsity (%)", 0.0..x_max),
        (&format!("{metric} (%)"), y_range),
        widest + LABEL_GAP,
        |chart, root| {
            let colour = COLOURS[0];
            let xy: Vec<(f64, f64)> = points.iter().map(|p| (100.0 * p.1, 100.0 * p.2)).collect();
            chart
                .draw_series(LineSeries::new(xy.clone(), colour.stroke_width(2)))
                .map_err(fail)?;
            chart
                .draw_series(xy.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(fail)?;
            let (columns, rows) = chart.plotting_area().get_pixel_range();
            let inside = (
                columns.start,
                rows.start,
                columns.end + widest + LABEL_GAP,
                rows.end,
            );
            let mut order: Vec<usize> = (0..points.len()).collect();
            if let Some(last) = order.pop() {
                order.insert(1.min(order.len()), last);
            }
            let mut placed: Vec<((i32, i32), (i32, i32))> = Vec::new();
            for i in order {
                let text = format!("step {}", points[i].0);
                let (x, y) = chart.backend_coord(&xy[i]);
                let (w, h) = (label_width(&text), LABEL_HEIGHT);
                let offsets = [
                    (6, 4),
                    (6, -4 - h),
                    (-6 - w, 4),
                    (-6 - w, -4 - h),
                    (6, 4 + h),
                    (6, -4 - 2 * h),
                ];
                let fits = offsets
                    .iter()
                    .map(|&(dx, dy)| ((x + dx, y + dy), (x + dx + w, y + dy + h)))
                    .find(|&b| {
                        b.0 .0 >= inside.0
                            && b.0 .1 >= inside.1
                            && b.1 .0 <= inside.2
                            && b.1 .1 <= inside.3
                            && !placed.iter().any(|&p| overlap(p, b))
                    });
                if let Some(b) = fits {
                    placed.push(b);
                    let font = ("sans-serif", LABEL_FONT).into_font().color(&BLACK);
                    root.draw(&Text::new(text, b.0, font)).map_err(fail)?;
                }
            }
            Ok(())
        },
    )
}
