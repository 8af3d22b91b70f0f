//! `shrink` of attention heads on real transformer exports (`fixtures/transformers/`, both torch
//! exporters): the head groups found in each, and shrunk heads computing what the original
//! computes with those heads' output-projection rows zeroed.

use std::path::PathBuf;

use onnx_prune_core::shrink::{self, Analysis};
use onnx_prune_core::Model;

use crate::common::{arg, fixture, report_of, shrink_in};
use crate::graph_diff::graph_diff;
use crate::shrink_exporters::{
    assert_second_halves_shrink_as_masked, assert_shrinks_as_masked, second_halves,
};
use crate::shrink_layers::transformer_fixtures;

fn dir() -> PathBuf {
    fixture("transformers")
}

/// The open groups of `analysis` that remove whole heads.
fn head_groups(analysis: &Analysis) -> Vec<&shrink::Group> {
    analysis.open().filter(|g| g.block > 1).collect()
}

/// Exports whose attention is written out op by op, without a KV cache (whose head axis is
/// part of the model's interface and stays whole). torch.nn.MultiheadAttention (`digits_vit_*`)
/// packs Q, K and V on an axis of their own and stays whole too.
fn unfused() -> Vec<(String, serde_json::Value)> {
    transformer_fixtures()
        .into_iter()
        .filter(|(name, _)| {
            !name.contains("_ort_") && !name.starts_with("digits_vit") && !name.contains("_kv_")
        })
        .collect()
}

#[test]
fn attention_heads_of_each_export() {
    insta::glob!("../fixtures/transformers", "*.onnx", |path| {
        let analysis = shrink::analyze(&Model::load(path).unwrap()).unwrap();
        insta::assert_snapshot!(analysis.describe());
    });
    // Every attention block of an unfused export is one open group whose unit is a KV head
    // (with its query heads, under grouped-query attention).
    for (name, facts) in unfused() {
        let analysis = shrink::analyze(&Model::load(dir().join(&name)).unwrap()).unwrap();
        let heads: Vec<u64> = head_groups(&analysis)
            .iter()
            .map(|g| g.units() as u64)
            .collect();
        // (The dynamo Llama's layers read one repeat_kv shape: each gets its own copy.)
        let expected: Vec<u64> = facts["kv_heads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_u64().unwrap())
            .collect();
        assert_eq!(heads, expected, "{name}: {}", analysis.describe());
        let hidden = facts["hidden_size"].as_u64().unwrap() as usize;
        for g in head_groups(&analysis) {
            assert_eq!(g.channels % hidden, 0, "{name}: {}", g.name());
        }
    }
}

#[test]
fn shrunk_heads_compute_what_zeroed_heads_compute() {
    for (name, facts) in unfused() {
        if name.contains("external") {
            continue; // the same graph as bert_dynamo.onnx
        }
        let inputs = dir().join(facts["inputs_file"].as_str().unwrap());
        assert_second_halves_shrink_as_masked(&dir().join(&name), &inputs);
    }
}

#[test]
fn shrink_reports_heads_before_and_after() {
    let tmp = tempfile::tempdir().unwrap();
    let model = dir().join("bert_torchscript.onnx");
    let (out, _) = shrink_in(tmp.path(), &model, &["--sparsity", "0.5"]);
    let report = report_of(&out, &tmp.path().join("r.json"));
    let heads: Vec<(u64, u64)> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["heads_before"].is_u64())
        .map(|g| {
            (
                g["heads_before"].as_u64().unwrap(),
                g["heads_after"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(heads, vec![(4, 2), (4, 2)], "{report:#}");
}

/// Accuracy (candidate, reference) of `text_bert_torchscript.onnx` (trained by
/// `fixtures/transformers/train.py`) with half of each attention block's heads removed, on its
/// held-out split.
fn half_the_heads(calibrated: bool) -> (f64, f64) {
    let tmp = tempfile::tempdir().unwrap();
    let test = dir().join("text_bert_test.npz");
    let labels = format!("{}:labels", test.display());
    let calibration = dir().join("text_bert_calibration.npz");
    let mut args = vec![
        "--sparsity",
        "0.5",
        "--include",
        "attention/self/query",
        "--check",
        "--inputs",
        arg(&test),
        "--labels",
        &labels,
    ];
    if calibrated {
        args.extend(["--calibration", arg(&calibration)]);
    }
    let model = dir().join("text_bert_torchscript.onnx");
    // Exit 1 when the check fails (by weight norms it does): the report is written either way.
    let (out, report) = shrink_in(tmp.path(), &model, &args);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let heads: Vec<u64> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["heads_after"].as_u64())
        .collect();
    assert_eq!(heads, vec![2, 2], "{report:#}");
    let accuracy = &report["check"]["accuracy"];
    (
        accuracy["candidate"].as_f64().unwrap(),
        accuracy["reference"].as_f64().unwrap(),
    )
}

#[test]
fn calibrated_heads_keep_the_accuracy_that_weight_norms_lose() {
    // Measured: 0.758 by weight norms, 0.860 calibrated (heads ranked by their output's norm
    // times their output-projection rows, the projection refitted), 0.868 whole.
    let (by_weights, reference) = half_the_heads(false);
    let (calibrated, _) = half_the_heads(true);
    assert!(
        calibrated >= reference - 0.02,
        "{calibrated} vs {reference}"
    );
    assert!(
        calibrated > by_weights + 0.05,
        "{calibrated} vs {by_weights}"
    );
}

#[test]
fn fused_attention_ops_keep_num_heads_with_their_weights() {
    // onnxruntime's optimizer fuses the attention of bert_eager_torchscript.onnx into one
    // com.microsoft Attention (packed Q|K|V weight) or a MultiHeadAttention over three
    // projections. tract does not run them: their numbers are checked against onnxruntime in
    // bench/transformers/fused_heads.py (shrunk and masked originals agree exactly).
    // Half the heads go: Attention's packed weight [32, 96] becomes [32, 48]; the packed
    // biases of both, [96], become [48].
    for name in ["bert_ort_attention.onnx", "bert_ort_mha.onnx"] {
        let tmp = tempfile::tempdir().unwrap();
        let (out, _) = shrink_in(tmp.path(), &dir().join(name), &["--sparsity", "0.5"]);
        report_of(&out, &tmp.path().join("r.json"));
        let model = Model::load(tmp.path().join("out.onnx")).unwrap();
        let graph = &model.graphs()[0];
        let fused: Vec<&onnx_prune_core::model::Node> = graph
            .nodes
            .iter()
            .filter(|n| n.domain == "com.microsoft" && n.op_type.ends_with("Attention"))
            .collect();
        assert_eq!(fused.len(), 2, "{name}");
        for node in fused {
            assert_eq!(node.ints["num_heads"], 2, "{name}: {}", node.name);
            let dims = |input: usize| {
                let name = &node.inputs[input];
                model
                    .tensors()
                    .iter()
                    .find(|t| &t.name == name)
                    .map(|t| t.dims.clone())
            };
            match node.op_type.as_str() {
                "Attention" => {
                    assert_eq!(dims(1), Some(vec![32, 48]), "{name}: {}", node.name);
                    assert_eq!(dims(2), Some(vec![48]), "{name}: {}", node.name);
                }
                _ => assert_eq!(dims(3), Some(vec![48]), "{name}: {}", node.name),
            }
        }
    }
}

#[test]
fn graph_after_removing_heads() {
    // The second half of every open group's units (heads, FFN neurons) removed: what the
    // rewrite changes in a BERT, GPT-2's fused QKV, a grouped-query Llama, a fused Attention
    // and a fresh MiniLM whose layers share one zero bias (each reader gets its own copy).
    for name in [
        "bert_torchscript.onnx",
        "minilm_init_torchscript.onnx",
        "minilm_init_dynamo.onnx",
        "gpt2_torchscript.onnx",
        "llama_dynamo.onnx",
        "bert_ort_attention.onnx",
    ] {
        let model = Model::load(dir().join(name)).unwrap();
        let analysis = shrink::analyze(&model).unwrap();
        let (bytes, _) =
            shrink::shrink_bytes(&model, &analysis, &second_halves(&analysis), &[]).unwrap();
        let diff = graph_diff(&std::fs::read(dir().join(name)).unwrap(), &bytes);
        insta::assert_snapshot!(format!("heads_{name}"), diff);
    }
}

/// KV head 1 of the first head group of `analysis` (layer 0 of a grouped-query Llama), and
/// nothing else.
fn second_kv_head_of_layer_0(analysis: &Analysis) -> Vec<Vec<usize>> {
    let first = head_groups(analysis)[0].id;
    analysis
        .groups
        .iter()
        .map(|g| match g.id == first {
            true => g.channels_of(1).collect(),
            false => Vec::new(),
        })
        .collect()
}

#[test]
fn each_layer_of_the_dynamo_llama_counts_its_own_kv_heads() {
    // Both layers' repeat_kv read one Expand shape and one Reshape target (Concats holding the
    // KV and query head counts). With a KV head removed from layer 0 only, layer 1's Expands
    // and Reshapes read copies of those Concats that keep its counts, and the shrunk model
    // computes what the original does with that head's output-projection rows zeroed.
    let name = "llama_dynamo.onnx";
    let facts = transformer_fixtures()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1;
    let inputs = dir().join(facts["inputs_file"].as_str().unwrap());
    assert_shrinks_as_masked(&dir().join(name), &inputs, second_kv_head_of_layer_0);
    let model = Model::load(dir().join(name)).unwrap();
    let analysis = shrink::analyze(&model).unwrap();
    let removed = second_kv_head_of_layer_0(&analysis);
    let (bytes, _) = shrink::shrink_bytes(&model, &analysis, &removed, &[]).unwrap();
    let diff = graph_diff(&std::fs::read(dir().join(name)).unwrap(), &bytes);
    insta::assert_snapshot!("one_layer_loses_a_kv_head_llama_dynamo", diff);
}
