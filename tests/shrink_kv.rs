//! `shrink --allow-interface-change`: attention heads that a KV cache holds (graph inputs
//! `past_key_values.*`, outputs `present.*`) go from the projections and from the caches'
//! declared shapes alike, on the Llama exports with a cache (both torch exporters) and on
//! onnxruntime's fused `GroupQueryAttention` (`fixtures/transformers/fused_kv/generate.py`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, Axis, Slice};
use ndarray_npy::NpzReader;
use onnx_prune_core::shrink::{self, Interface};
use onnx_prune_core::Model;
use tract_onnx::prelude::*;

use crate::common::{arg, fixture, report_of, run, shrink_in};
use crate::graph_diff::{graph_diff, interface_diff};
use crate::shrink_exporters::second_halves;

const KV_EXPORTS: [&str; 2] = ["llama_kv_torchscript.onnx", "llama_kv_dynamo.onnx"];

fn kv(name: &str) -> PathBuf {
    fixture("transformers").join(name)
}

fn gqa() -> PathBuf {
    fixture("transformers/fused_kv/llama_ort_gqa.onnx")
}

/// The open groups of `analysis` that remove whole heads, by units.
fn head_units(analysis: &shrink::Analysis) -> Vec<usize> {
    analysis
        .open()
        .filter(|g| g.block > 1)
        .map(|g| g.units())
        .collect()
}

#[test]
fn kv_cache_heads_stay_whole_unless_the_interface_may_change() {
    for name in KV_EXPORTS {
        let model = Model::load(kv(name)).unwrap();
        let kept = shrink::analyze(&model).unwrap();
        assert!(head_units(&kept).is_empty(), "{name}: {}", kept.describe());
        let said = kept.describe();
        for cache in ["past_key_values.0.key", "present.1.value"] {
            assert!(
                said.contains(&format!("`{cache}` holds these heads"))
                    && said.contains("--allow-interface-change opens it"),
                "{name}: {said}"
            );
        }
        let open = shrink::analyze_with(&model, Interface::MayChange).unwrap();
        // Two KV heads per layer, each with its two query heads (the dynamo export's one
        // repeat_kv shape for both layers gets a copy for the second).
        assert_eq!(head_units(&open), vec![2, 2], "{name}: {}", open.describe());
        insta::assert_snapshot!(format!("kv_groups_{name}"), open.describe());
    }
}

/// The arrays of an .npz, by name.
fn read_npz(path: &Path) -> BTreeMap<String, Tensor> {
    let mut npz = NpzReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = BTreeMap::new();
    for key in npz.names().unwrap() {
        let name = key.trim_end_matches(".npy").to_string();
        let floats: Result<ArrayD<f32>, _> = npz.by_name(&key);
        let tensor: Tensor = match floats {
            Ok(a) => a.into(),
            Err(_) => {
                let ints: ArrayD<i64> = npz.by_name(&key).unwrap();
                ints.into()
            }
        };
        out.insert(name, tensor);
    }
    out
}

/// Runs `model` through tract on `inputs` (by the model's input names); outputs by name.
fn run_tract(model: &Path, inputs: &BTreeMap<String, Tensor>) -> BTreeMap<String, ArrayD<f32>> {
    // At the fed shapes; the recorded shapes of outputs and intermediates (symbols the dynamo
    // export names) are left for tract to infer again, as `onnx-prune check` can.
    let mut graph = tract_onnx::onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(true)
        .model_for_path(model)
        .unwrap();
    let names: Vec<String> = graph
        .input_outlets()
        .unwrap()
        .iter()
        .map(|o| graph.node(o.node).name.clone())
        .collect();
    for (i, name) in names.iter().enumerate() {
        let t = &inputs[name];
        let fact = InferenceFact::dt_shape(t.datum_type(), t.shape());
        graph = graph.with_input_fact(i, fact).unwrap();
    }
    let outputs: Vec<String> = graph
        .output_outlets()
        .unwrap()
        .iter()
        .map(|o| {
            graph
                .outlet_label(*o)
                .unwrap_or(&graph.node(o.node).name)
                .to_string()
        })
        .collect();
    let plan = graph.into_optimized().unwrap().into_runnable().unwrap();
    let feeds: TVec<TValue> = names.iter().map(|n| inputs[n].clone().into()).collect();
    let results = plan.run(feeds).unwrap();
    outputs
        .into_iter()
        .zip(results)
        .map(|(name, t)| {
            let array = t.into_tensor().into_plain_array::<f32>().unwrap();
            (name, array)
        })
        .collect()
}

/// The first `kept` positions of axis 1 (the caches' head axis).
fn first_heads(array: &ArrayD<f32>, kept: usize) -> ArrayD<f32> {
    array
        .slice_axis(Axis(1), Slice::from(0..kept as isize))
        .to_owned()
}

fn assert_close(a: &ArrayD<f32>, b: &ArrayD<f32>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    let worst = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs() / (1.0 + x.abs()))
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "{what}: worst relative difference {worst}");
}

#[test]
fn shrunk_caches_compute_what_zeroed_heads_compute() {
    // The second KV head of every attention block goes (with its two query heads). The shrunk
    // model reads caches of one KV head; the original, with the removed heads'
    // output-projection rows zeroed, reads the same kept head and anything in the removed
    // one (here the cache's values times -7 plus 3): logits and the kept heads of every
    // present.* output agree through tract.
    let dir = tempfile::tempdir().unwrap();
    let inputs = read_npz(&kv("llama_kv_inputs.npz"));
    for name in KV_EXPORTS {
        let model = Model::load(kv(name)).unwrap();
        let analysis = shrink::analyze_with(&model, Interface::MayChange).unwrap();
        let removed = second_halves(&analysis);
        let changes = analysis.interface_changes(&removed);
        assert_eq!(changes.len(), 8, "{name}: {changes:?}");
        // Every cache loses its second head (position 1).
        assert!(changes
            .iter()
            .all(|c| (c.axis, c.before, c.after, &c.removed[..]) == (1, 2, 1, &[1][..])));
        let (bytes, _) = shrink::shrink_bytes(&model, &analysis, &removed, &[]).unwrap();
        let masked =
            shrink::zeroed_bytes(&model, &analysis, &removed, shrink::Side::Consumers).unwrap();
        let (masked_path, shrunk_path) = (dir.path().join("masked.onnx"), dir.path().join(name));
        std::fs::write(&masked_path, masked).unwrap();
        std::fs::write(&shrunk_path, bytes).unwrap();

        let mut small = inputs.clone();
        let mut scrambled = inputs.clone();
        for (key, tensor) in &inputs {
            if !key.starts_with("past_key_values") {
                continue;
            }
            let cache = tensor.to_plain_array_view::<f32>().unwrap().to_owned();
            small.insert(key.clone(), first_heads(&cache, 1).into());
            let mut other = cache.clone();
            other
                .slice_axis_mut(Axis(1), Slice::from(1..))
                .mapv_inplace(|v| v * -7.0 + 3.0);
            scrambled.insert(key.clone(), other.into());
        }
        let shrunk = run_tract(&shrunk_path, &small);
        let reference = run_tract(&masked_path, &scrambled);
        assert_close(&shrunk["logits"], &reference["logits"], name);
        for (output, values) in &shrunk {
            if output.starts_with("present") {
                assert_eq!(values.shape()[1], 1, "{name}: {output}");
                let what = format!("{name}: {output}");
                assert_close(values, &first_heads(&reference[output], 1), &what);
            }
        }
    }
}

#[test]
fn graph_after_removing_kv_cache_heads() {
    // The second KV head of each layer removed with its query heads: the projections, the
    // Reshape targets and the caches' declared head axis (`past_key_values.*`, `present.*`).
    let model = Model::load(kv("llama_kv_torchscript.onnx")).unwrap();
    let analysis = shrink::analyze_with(&model, Interface::MayChange).unwrap();
    let (bytes, _) =
        shrink::shrink_bytes(&model, &analysis, &second_halves(&analysis), &[]).unwrap();
    let original = std::fs::read(kv("llama_kv_torchscript.onnx")).unwrap();
    let diff = graph_diff(&original, &bytes) + &interface_diff(&original, &bytes);
    insta::assert_snapshot!("kv_llama_kv_torchscript", diff);
    let shrunk = dir_model(&bytes);
    for input in shrunk.graph_inputs() {
        if input.name.starts_with("past_key_values") {
            assert_eq!(
                input.dims,
                vec![None, Some(1), None, Some(8)],
                "{}",
                input.name
            );
        }
    }
}

/// `bytes` loaded as a model (from a temporary file).
fn dir_model(bytes: &[u8]) -> Model {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, bytes).unwrap();
    Model::load(&path).unwrap()
}

#[test]
fn the_flag_opens_cache_heads_and_the_report_lists_the_changed_interface() {
    let tmp = tempfile::tempdir().unwrap();
    let model = kv("llama_kv_torchscript.onnx");
    let args = ["--sparsity", "0.5", "--include", "q_proj"];
    // Without the flag: exit 2, naming the flag and a cache input, nothing written.
    let (out, report) = shrink_in(tmp.path(), &model, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--allow-interface-change") && stderr.contains("past_key_values.0.key"),
        "{stderr}"
    );
    assert!(report.is_null() && !tmp.path().join("out.onnx").exists());
    // --dry-run says which flag opens them.
    let dry = run(&["shrink", arg(&model), "--dry-run"]);
    let listing = String::from_utf8_lossy(&dry.stdout);
    assert!(
        listing.contains("graph input `past_key_values.1.value` holds these heads on axis 1")
            && listing.contains("--allow-interface-change opens it"),
        "{listing}"
    );
    // With it, --dry-run lists what each head group changes.
    let dry = run(&[
        "shrink",
        arg(&model),
        "--dry-run",
        "--allow-interface-change",
    ]);
    let listing = String::from_utf8_lossy(&dry.stdout);
    assert!(
        listing.contains(
            "changes:   graph input `past_key_values.0.key` (axis 1), graph input \
             `past_key_values.0.value` (axis 1), graph output `present.0.key` (axis 1)"
        ),
        "{listing}"
    );
    // And it writes: each layer keeps one of its two KV heads; every cache says so.
    let flagged = [&args[..], &["--allow-interface-change"]].concat();
    let (out, _) = shrink_in(tmp.path(), &model, &flagged);
    let report = report_of(&out, &tmp.path().join("r.json"));
    let changes = report["interface_changes"].as_array().unwrap();
    let names: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| (c["kind"].as_str().unwrap(), c["name"].as_str().unwrap()))
        .collect();
    assert_eq!(names.len(), 8, "{report:#}");
    assert!(
        names.contains(&("input", "past_key_values.0.key")),
        "{names:?}"
    );
    assert!(names.contains(&("output", "present.1.value")), "{names:?}");
    for c in changes {
        assert_eq!(
            (&c["axis"], &c["before"], &c["after"]),
            (&1.into(), &2.into(), &1.into())
        );
    }
    let heads: Vec<(u64, u64)> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["heads_before"].is_u64())
        .filter(|g| !g["removed"].as_array().unwrap().is_empty())
        .map(|g| {
            (
                g["heads_before"].as_u64().unwrap(),
                g["heads_after"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(heads, vec![(2, 1), (2, 1)], "{report:#}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("interface changed: graph input `past_key_values.0.key` axis 1: 2 -> 1"),
        "{stdout}"
    );
    // --check and --sparsity auto feed both models the same caches: refused with the flag.
    let inputs = kv("llama_kv_inputs.npz");
    let auto = [
        "--sparsity",
        "auto",
        "--allow-interface-change",
        "--inputs",
        arg(&inputs),
    ];
    let checked = [&flagged[..], &["--check"]].concat();
    for (args, flag) in [(checked, "--check"), (auto.to_vec(), "--sparsity auto")] {
        let (out, _) = shrink_in(tmp.path(), &model, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(flag) && stderr.contains("--allow-interface-change"));
    }
}

#[test]
fn group_query_attention_keeps_its_head_counts_with_its_weights() {
    // tract does not run com.microsoft ops: bench/transformers/kv_cache_heads.py checks the
    // shrunk model against its masked original in onnxruntime. Here: the fused op's heads go by
    // their KV head (2 query heads of 16 channels each), num_heads 4 -> 2 and kv_num_heads
    // 2 -> 1, the projections [32, 64] -> [32, 32] (Q) and [32, 32] -> [32, 16] (K, V), the
    // output projection's rows 64 -> 32, and the caches' head axis 2 -> 1.
    let model = Model::load(gqa()).unwrap();
    let kept = shrink::analyze(&model).unwrap();
    assert!(head_units(&kept).is_empty(), "{}", kept.describe());
    let analysis = shrink::analyze_with(&model, Interface::MayChange).unwrap();
    assert_eq!(head_units(&analysis), vec![2, 2], "{}", analysis.describe());
    insta::assert_snapshot!("kv_groups_llama_ort_gqa", analysis.describe());
    let removed = second_halves(&analysis);
    let (bytes, _) = shrink::shrink_bytes(&model, &analysis, &removed, &[]).unwrap();
    let original = std::fs::read(gqa()).unwrap();
    let diff = graph_diff(&original, &bytes) + &interface_diff(&original, &bytes);
    insta::assert_snapshot!("kv_llama_ort_gqa", diff);
    let shrunk = dir_model(&bytes);
    let dims = |name: &str| {
        let t = shrunk.tensors().iter().find(|t| t.name == name).unwrap();
        t.dims.clone()
    };
    for layer in 0..2 {
        assert_eq!(dims(&format!("layers.{layer}.q_proj")), vec![32, 32]);
        assert_eq!(dims(&format!("layers.{layer}.k_proj")), vec![32, 16]);
        assert_eq!(dims(&format!("layers.{layer}.v_proj")), vec![32, 16]);
        assert_eq!(dims(&format!("layers.{layer}.o_proj")), vec![32, 32]);
    }
    for node in shrunk.graphs()[0]
        .nodes
        .iter()
        .filter(|n| n.op_type == "GroupQueryAttention")
    {
        assert_eq!(
            (node.ints["num_heads"], node.ints["kv_num_heads"]),
            (2, 1),
            "{}",
            node.name
        );
    }
    let changes = analysis.interface_changes(&removed);
    assert_eq!(changes.len(), 8, "{changes:?}");
    for input in shrunk.graph_inputs() {
        if input.name.starts_with("past_key_values") {
            assert_eq!(
                input.dims,
                vec![None, Some(1), None, Some(16)],
                "{}",
                input.name
            );
        }
    }
}

#[test]
fn fused_attention_caches_lose_the_heads_of_their_attention() {
    // MultiHeadAttention with `past_key`/`past_value` and com.microsoft Attention with its one
    // `past` [2, B, heads, S, D]: the caches' head axis (1, and 2 for Attention) follows the
    // heads kept, 4 -> 2, with num_heads (onnxruntime agrees with the masked original:
    // bench/transformers/kv_cache_heads.py).
    for (name, axis) in [("decoder_ort_mha", 1), ("decoder_ort_attention", 2)] {
        let path = fixture("transformers/fused_kv").join(format!("{name}.onnx"));
        let model = Model::load(&path).unwrap();
        let kept = shrink::analyze(&model).unwrap();
        assert!(head_units(&kept).is_empty(), "{name}: {}", kept.describe());
        let analysis = shrink::analyze_with(&model, Interface::MayChange).unwrap();
        assert_eq!(head_units(&analysis), vec![4, 4], "{}", analysis.describe());
        let removed = second_halves(&analysis);
        let changes = analysis.interface_changes(&removed);
        assert!(!changes.is_empty());
        assert!(
            changes
                .iter()
                .all(|c| (c.axis, c.before, c.after, &c.removed[..]) == (axis, 4, 2, &[2, 3][..])),
            "{name}: {changes:?}"
        );
        let (bytes, _) = shrink::shrink_bytes(&model, &analysis, &removed, &[]).unwrap();
        let original = std::fs::read(&path).unwrap();
        let diff = graph_diff(&original, &bytes) + &interface_diff(&original, &bytes);
        insta::assert_snapshot!(format!("kv_{name}"), diff);
    }
}
