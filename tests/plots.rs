//! Plots stay readable with many lines (#23 item 14): with more than 12 lines only the most
//! sensitive are labelled, no colour is pale on white, no two labels overprint, and no fifth of
//! the width is left empty. Checked by reading the SVG: label boxes are estimated from the
//! font size, 0.6 em per character (a generous average for sans-serif).

use std::path::{Path, PathBuf};

use crate::common::{arg, float_tensor, float_value, model_bytes, node, report_of, run};

/// Plot width, as drawn.
const WIDTH: f64 = 1000.0;

/// A box: left, top, right, bottom.
type Rect = (f64, f64, f64, f64);

/// A text of the plot: its string, box and fill colour.
struct Label {
    text: String,
    rect: Rect,
    fill: String,
}

fn number(node: roxmltree::Node, name: &str) -> f64 {
    node.attribute(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The texts of `svg`, with their boxes.
fn labels(svg: &roxmltree::Document) -> Vec<Label> {
    svg.descendants()
        .filter(|n| n.has_tag_name("text") && n.attribute("transform").is_none())
        .filter_map(|n| {
            let text = n.text()?.trim().to_string();
            let size = n
                .attribute("font-size")
                .and_then(|s| s.trim_end_matches("px").parse().ok())
                .unwrap_or(12.0);
            let width = 0.6 * size * text.chars().count() as f64;
            let x = number(n, "x");
            let left = match n.attribute("text-anchor") {
                Some("middle") => x - width / 2.0,
                Some("end") => x - width,
                _ => x,
            };
            let y = number(n, "y");
            let top = match n.attribute("dy") {
                Some("0.76em") => y,
                Some("0.5ex") => y - size / 2.0,
                _ => y - size,
            };
            Some(Label {
                text,
                rect: (left, top, left + width, top + size),
                fill: n.attribute("fill").unwrap_or("#000000").to_string(),
            })
        })
        .collect()
}

fn overlap(a: Rect, b: Rect) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// Contrast of colour `#rrggbb` against white (WCAG 2).
fn contrast(colour: &str) -> f64 {
    let channel = |i: usize| {
        let c = u8::from_str_radix(&colour[1 + 2 * i..3 + 2 * i], 16).unwrap() as f64 / 255.0;
        if c <= 0.03928 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let luminance = 0.2126 * channel(0) + 0.7152 * channel(1) + 0.0722 * channel(2);
    1.05 / (luminance + 0.05)
}

/// The widest stretch of the width that nothing is drawn in (the white background aside).
fn widest_empty_stretch(svg: &roxmltree::Document) -> f64 {
    let mut spans: Vec<(f64, f64)> = labels(svg).iter().map(|l| (l.rect.0, l.rect.2)).collect();
    for n in svg.descendants() {
        match n.tag_name().name() {
            "polyline" | "polygon" => {
                let xs: Vec<f64> = n
                    .attribute("points")
                    .unwrap_or("")
                    .split_whitespace()
                    .filter_map(|p| p.split(',').next()?.parse().ok())
                    .collect();
                if let (Some(lo), Some(hi)) = (
                    xs.iter().copied().reduce(f64::min),
                    xs.iter().copied().reduce(f64::max),
                ) {
                    spans.push((lo, hi));
                }
            }
            "circle" => {
                let (x, r) = (number(n, "cx"), number(n, "r"));
                spans.push((x - r, x + r));
            }
            "line" => spans.push((number(n, "x1"), number(n, "x2"))),
            "rect" if number(n, "width") < WIDTH => {
                let x = number(n, "x");
                spans.push((x, x + number(n, "width")));
            }
            _ => {}
        }
    }
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut reached, mut widest) = (0.0f64, 0.0f64);
    for (lo, hi) in spans {
        widest = widest.max(lo - reached);
        reached = reached.max(hi);
    }
    widest.max(WIDTH - reached)
}

/// Asserts that no two texts of `svg` overprint, that every text and line is dark enough on
/// white, and that no fifth of the width is empty.
pub fn assert_readable(svg: &roxmltree::Document) {
    let texts = labels(svg);
    for (i, a) in texts.iter().enumerate() {
        for b in &texts[i + 1..] {
            assert!(
                !overlap(a.rect, b.rect),
                "`{}` overprints `{}`",
                a.text,
                b.text
            );
        }
        assert!(contrast(&a.fill) >= 4.5, "`{}` in pale {}", a.text, a.fill);
    }
    for n in svg.descendants() {
        let opaque = n.attribute("opacity").is_none_or(|o| o == "1");
        let colour = match n.tag_name().name() {
            "polyline" => n.attribute("stroke"),
            "circle" => n.attribute("fill"),
            _ => None,
        };
        if let (Some(colour), true) = (colour, opaque) {
            assert!(contrast(colour) >= 4.5, "a line in pale {colour}");
        }
    }
    let empty = widest_empty_stretch(svg);
    assert!(empty < WIDTH / 5.0, "{empty} pixels of the width are empty");
}

/// A chain of 16 MatMuls `layers.<i>.weight` of 8x8, each scaled differently so that their
/// sensitivities differ.
fn deep_mlp(dir: &Path) -> PathBuf {
    let mut graph = onnx_protobuf::GraphProto::new();
    let layers = 16;
    for i in 0..layers {
        let input = if i == 0 {
            "x".to_string()
        } else {
            format!("h{i}")
        };
        let output = if i + 1 == layers {
            "y".to_string()
        } else {
            format!("h{}", i + 1)
        };
        let weight = format!("layers.{i}.weight");
        graph
            .node
            .push(node("MatMul", &[&input, &weight], &[&output]));
        let values: Vec<f32> = (0..64)
            .map(|j| ((i * 64 + j) as f32 * 0.61).sin() * (0.2 + 0.05 * i as f32))
            .collect();
        graph
            .initializer
            .push(float_tensor(&weight, &[8, 8], &values));
    }
    graph.input.push(float_value("x", &[None, Some(8)]));
    graph.output.push(float_value("y", &[None, Some(8)]));
    let path = dir.join("deep.onnx");
    std::fs::write(&path, model_bytes(graph)).unwrap();
    path
}

#[test]
fn sixteen_curves_label_the_ten_most_sensitive_without_overprinting() {
    let dir = tempfile::tempdir().unwrap();
    let model = deep_mlp(dir.path());
    let (plot, report) = (dir.path().join("s.svg"), dir.path().join("s.json"));
    let out = run(&[
        "sensitivity",
        arg(&model),
        "--random",
        "16",
        "--sparsities",
        "0.3,0.6,0.9",
        "--min-params",
        "1",
        "--plot",
        arg(&plot),
        "--report",
        arg(&report),
    ]);
    let json = report_of(&out, &report);
    let svg = std::fs::read_to_string(&plot).unwrap();
    let svg = roxmltree::Document::parse(&svg).unwrap();
    assert_readable(&svg);

    let cost = |w: &serde_json::Value| {
        w["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .fold(0.0, f64::max)
    };
    let texts: Vec<String> = labels(&svg).into_iter().map(|l| l.text).collect();
    let weights = json["weights"].as_array().unwrap();
    assert_eq!(weights.len(), 16);
    let (labelled, grey): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) = weights
        .iter()
        .partition(|w| texts.contains(&w["id"].as_str().unwrap().to_string()));
    assert_eq!(labelled.len(), 10, "{texts:?}");
    let least_labelled = labelled
        .iter()
        .map(|w| cost(w))
        .fold(f64::INFINITY, f64::min);
    assert!(
        grey.iter().all(|w| cost(w) <= least_labelled),
        "an unlabelled line is more sensitive than a labelled one"
    );
    assert!(
        texts.iter().any(|t| t.contains("6 less sensitive")),
        "the grey lines are not explained: {texts:?}"
    );
}
