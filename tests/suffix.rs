//! The candidates of one weight run from that weight on, the dense values crossing into its
//! part kept (issue 20): they measure what the same candidates measure run through the whole
//! model, on models whose skip connections carry dense values past the pruned layer.

use std::path::Path;

use onnx_prune_core::model::discover_with;
use onnx_prune_core::prune::{select, Pattern, PruneConfig, Selection};
use onnx_prune_core::Model;
use onnx_prune_tune::Planner;
use onnx_prune_verify::{CheckOptions, CheckReport, InputSource, Keep, Reference};

use crate::common::fixture;

/// So many candidates per weight that every part is worth loading.
const PARTS_ALWAYS_PAY: usize = 1 << 20;

/// Every selected weight of `model` pruned alone to 70% and compared twice: run from the
/// weight on, and run through the whole model with the weights as inputs. Returns each
/// weight's part size (nodes run, nodes in all).
fn parts_measure_what_whole_runs_measure(
    model: &Path,
    options: &CheckOptions,
) -> Vec<(usize, usize)> {
    let model = Model::load(model).unwrap();
    let weights = discover_with(&model, 1);
    let selected = select(&model, &weights, &Selection::default()).unwrap();
    let tensors: Vec<usize> = selected.iter().map(|w| w.tensor).collect();
    let reference = Reference::load(&model, options, Keep::Outputs).unwrap();
    let whole = reference.swappable(&model, &tensors).unwrap();
    let planner = Planner::new(&model, None, &selected).unwrap();
    let config = PruneConfig {
        sparsity: 0.7,
        pattern: Pattern::Unstructured,
        ..PruneConfig::default()
    };
    let compared = reference
        .each_suffix(&model, (&tensors, PARTS_ALWAYS_PAY), |w, suffix| {
            let edits = planner.plan(&selected[w..=w], &config).unwrap().edits;
            let part = suffix
                .compare(&edits)?
                .expect("the edits change the weight only");
            let full = reference.compare_swapped(&whole, &edits)?.expect("swapped");
            Ok::<_, onnx_prune_verify::Error>((suffix.nodes(), part, full))
        })
        .unwrap();
    let mut sizes = Vec::new();
    for (weight, compared) in selected.iter().zip(compared) {
        let id = &weight.id;
        let (nodes, part, full) =
            compared.unwrap_or_else(|| panic!("`{id}` was not run from its layer on"));
        assert_same_measures(id, &part, &full);
        sizes.push(nodes);
    }
    sizes
}

/// The two reports agree to float32 rounding (tract's kernels differ between the plans).
fn assert_same_measures(id: &str, part: &CheckReport, full: &CheckReport) {
    let close = |a: f64, b: f64, what: &str| {
        assert!(
            (a - b).abs() <= 1e-5 + 1e-3 * a.abs().max(b.abs()),
            "`{id}`: {what} {a} from the part, {b} from the whole model"
        );
    };
    assert_eq!(part.outputs.len(), full.outputs.len());
    for (p, f) in part.outputs.iter().zip(&full.outputs) {
        assert_eq!(p.name, f.name);
        close(
            1.0 - p.cosine,
            1.0 - f.cosine,
            &format!("`{}` 1 - cosine", p.name),
        );
        close(p.max_abs, f.max_abs, &format!("`{}` max_abs", p.name));
        close(p.rmse, f.rmse, &format!("`{}` rmse", p.name));
    }
    assert_eq!(part.passed, full.passed, "`{id}`");
}

/// YOLOv8's C2f blocks split and concatenate, its neck concatenates backbone features with
/// upsampled ones and its head's Reshape targets and Slice bounds are computed from constants.
#[test]
fn yolov8_parts_measure_what_the_whole_model_measures() {
    let real = fixture("shrink/real");
    let options = CheckOptions {
        inputs: vec![InputSource::Npz(real.join("yolov8_tiny_inputs.npz"))],
        ..CheckOptions::default()
    };
    let sizes = parts_measure_what_whole_runs_measure(&real.join("yolov8_tiny.onnx"), &options);
    assert!(sizes.len() >= 50, "{sizes:?}");
    // The first convolution's part is nearly the whole graph, a head convolution's a sliver.
    let (first, all) = sizes[0];
    assert!(first > all * 9 / 10, "{sizes:?}");
    let smallest = sizes.iter().map(|s| s.0).min().unwrap();
    assert!(smallest < all / 10, "{sizes:?}");
}

/// A ResNet with BatchNormalization: every block's input is added to its output.
#[test]
fn resnet_parts_measure_what_the_whole_model_measures() {
    let real = fixture("shrink/real");
    let options = CheckOptions {
        inputs: vec![InputSource::Npz(real.join("resnet_tiny_inputs.npz"))],
        ..CheckOptions::default()
    };
    let sizes = parts_measure_what_whole_runs_measure(&real.join("resnet_tiny_bn.onnx"), &options);
    let (last, all) = sizes[sizes.len() - 1];
    assert!(last < all / 2, "{sizes:?}");
}

/// A ViT exported by TorchScript: residual streams, and Reshape targets computed from the
/// activations' shapes (`Shape -> Gather -> Unsqueeze -> Concat`), which the parts compute
/// themselves so that tract still sees constant targets.
#[test]
fn vit_parts_measure_what_the_whole_model_measures() {
    let layers = fixture("transformers/layers");
    let options = CheckOptions {
        inputs: vec![InputSource::Npz(layers.join("digits_test.npz"))],
        ..CheckOptions::default()
    };
    let sizes = parts_measure_what_whole_runs_measure(&layers.join("digits_vit.onnx"), &options);
    let (last, all) = sizes[sizes.len() - 1];
    assert!(last < all / 10, "{sizes:?}");
}
