//! `shrink --vocab`/`--vocab-from`: the embedding tables found in each export, the graph after
//! the pass, bit-identical outputs through tract for inputs made of kept ids, the remap and
//! the kept rows as written, a tied output head left whole, and bad input.

use std::path::{Path, PathBuf};

use onnx_prune_core::shrink::vocab;
use onnx_prune_core::Model;
use protobuf::Message;

use crate::common::{arg, fixture, run, stdout_ok};
use crate::graph_diff::graph_diff;
use crate::shrink::refused;

fn dir() -> PathBuf {
    fixture("transformers/layers")
}

fn used_ids() -> Vec<i64> {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("expected.json")).unwrap()).unwrap();
    expected["used_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

/// The exports of the text models (both exporters).
const TEXT: &[&str] = &[
    "bert_ts.onnx",
    "bert_dynamo.onnx",
    "gpt2_ts.onnx",
    "gpt2_dynamo.onnx",
    "llama_ts.onnx",
    "llama_dynamo.onnx",
];

#[test]
fn embeddings_of_each_export() {
    insta::glob!("../fixtures/transformers/layers", "*.onnx", |path| {
        let found = vocab::embeddings(&Model::load(path).unwrap()).unwrap();
        insta::assert_snapshot!(vocab::describe(&found));
    });
}

#[test]
fn embeddings_of_the_transformer_fixtures() {
    // What their generator recorded (fixtures/transformers/expected.json): the table gathered
    // at `input_ids`, and a tied LM head that shares the table's initializer.
    insta::glob!("../fixtures/transformers", "*.onnx", |path| {
        let found = vocab::embeddings(&Model::load(path).unwrap()).unwrap();
        insta::assert_snapshot!(vocab::describe(&found));
    });
    let facts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("transformers/expected.json")).unwrap())
            .unwrap();
    for (name, facts) in facts["fixtures"].as_object().unwrap() {
        let found =
            vocab::embeddings(&Model::load(fixture("transformers").join(name)).unwrap()).unwrap();
        let Some(table) = facts["embedding"].as_str() else {
            assert!(found.is_empty(), "{name}");
            continue;
        };
        let chosen = vocab::select(&found, Some("input_ids")).unwrap();
        assert_eq!(chosen.table, table, "{name}");
        assert_eq!(chosen.rows as u64, facts["vocab_size"], "{name}");
        let shared = facts["lm_head"]["shares_initializer"] == true;
        assert_eq!(!chosen.other_uses.is_empty(), shared, "{name}");
    }
}

#[test]
fn the_trained_text_classifier_keeps_its_answers_with_the_rows_its_data_uses() {
    // The BERT classifier trained by fixtures/transformers/train.py: its sentences use ids
    // 0-131 of 1000. Keeping the ids of the calibration split (and the special tokens 0-3,
    // [UNK] = 3 among them) leaves 132 rows; the held-out test split uses no other id, so its
    // outputs are bit-identical and the accuracy stays 86.8%.
    let dir = fixture("transformers");
    for exporter in ["torchscript", "dynamo"] {
        let model = dir.join(format!("text_bert_{exporter}.onnx"));
        let tmp = tempfile::tempdir().unwrap();
        let (out, report) = (tmp.path().join("out.onnx"), tmp.path().join("r.json"));
        let from = format!("{}:input_ids", arg(&dir.join("text_bert_calibration.npz")));
        let test = dir.join("text_bert_test.npz");
        let labels = format!("{}:labels", arg(&test));
        stdout_ok(&[
            "shrink",
            arg(&model),
            "-o",
            arg(&out),
            "--vocab-from",
            &from,
            "--keep-token",
            "0,1,2,3",
            "--unknown-token",
            "3",
            "--report",
            arg(&report),
            "--check",
            "--inputs",
            arg(&test),
            "--labels",
            &labels,
            "--atol",
            "0",
            "--rtol",
            "0",
        ]);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(json["vocabulary"]["rows_after"], 132, "{exporter}");
        assert_eq!(json["check"]["outputs"][0]["max_abs"], 0.0, "{exporter}");
        assert_eq!(json["check"]["accuracy"]["candidate"], 0.868, "{exporter}");
        let totals = &json["totals"];
        let removed =
            totals["params_before"].as_u64().unwrap() - totals["params_after"].as_u64().unwrap();
        assert_eq!(removed, (1000 - 132) * 32, "{exporter}");
    }
}

/// `shrink` of `model` keeping the ids of the calibration inputs (`--unknown-token`: the
/// first of them), with `extra` flags; returns the output and the report.
fn keep_used(model: &Path, tmp: &Path, extra: &[&str]) -> (PathBuf, serde_json::Value) {
    let (out, report) = (tmp.join("out.onnx"), tmp.join("report.json"));
    let from = format!("{}:input_ids", arg(&dir().join("text_inputs.npz")));
    let unknown = used_ids()[0].to_string();
    let mut args = vec![
        "shrink",
        arg(model),
        "-o",
        arg(&out),
        "--vocab-from",
        &from,
        "--unknown-token",
        &unknown,
        "--report",
        arg(&report),
    ];
    args.extend_from_slice(extra);
    stdout_ok(&args);
    let json = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    (out, json)
}

#[test]
fn outputs_are_bit_identical_for_inputs_of_kept_ids() {
    for name in TEXT {
        let tmp = tempfile::tempdir().unwrap();
        let model = dir().join(name);
        let (out, json) = keep_used(&model, tmp.path(), &[]);
        let v = &json["vocabulary"];
        assert_eq!(
            (v["rows_before"].as_u64(), v["rows_after"].as_u64()),
            (Some(64), Some(24))
        );
        let totals = &json["totals"];
        let removed =
            totals["params_before"].as_u64().unwrap() - totals["params_after"].as_u64().unwrap();
        assert_eq!(removed, 40 * 16, "{name}: 40 rows of 16");
        // Other inputs, made only of kept ids, through tract: not one bit differs.
        let check = tmp.path().join("check.json");
        stdout_ok(&[
            "check",
            arg(&model),
            arg(&out),
            "--inputs",
            arg(&dir().join("text_kept_only.npz")),
            "--atol",
            "0",
            "--rtol",
            "0",
            "--report",
            arg(&check),
        ]);
        let check: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&check).unwrap()).unwrap();
        assert_eq!(check["outputs"][0]["max_abs"], 0.0, "{name}");
    }
}

/// The main graph of the model file at `path`.
fn graph(path: &Path) -> onnx_protobuf::GraphProto {
    onnx_protobuf::ModelProto::parse_from_bytes(&std::fs::read(path).unwrap())
        .unwrap()
        .graph
        .unwrap()
}

fn floats(t: &onnx_protobuf::TensorProto, dir: &Path) -> Vec<f32> {
    let raw = if t.raw_data.is_empty() {
        // External data: location, offset, length.
        let entry = |key: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.clone())
        };
        let data = std::fs::read(dir.join(entry("location").unwrap())).unwrap();
        let offset: usize = entry("offset").map_or(0, |o| o.parse().unwrap());
        let length: usize = entry("length").unwrap().parse().unwrap();
        data[offset..offset + length].to_vec()
    } else {
        t.raw_data.clone()
    };
    raw.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn kept_rows_and_the_remap_as_written() {
    // Every id maps to its row among the kept ids (in id order), every other id to the row of
    // the unknown token; the kept rows are the original rows, byte for byte.
    let used = used_ids();
    for name in ["gpt2_ts.onnx", "llama_dynamo.onnx"] {
        let tmp = tempfile::tempdir().unwrap();
        let model = dir().join(name);
        let (out, json) = keep_used(&model, tmp.path(), &["--keep-token", "63"]);
        let table = json["vocabulary"]["table"].as_str().unwrap().to_string();
        let mut kept = used.clone();
        kept.push(63);
        kept.sort_unstable();
        let (before, after) = (graph(&model), graph(&out));
        let find = |g: &onnx_protobuf::GraphProto, n: &str| {
            g.initializer.iter().find(|t| t.name == n).cloned().unwrap()
        };
        let remap = find(&after, &format!("{table}_vocab_remap"));
        let remap: Vec<i64> = remap
            .raw_data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(remap.len(), 64);
        for id in 0..64i64 {
            let want = kept
                .iter()
                .position(|&k| k == id)
                .unwrap_or(kept.iter().position(|&k| k == used[0]).unwrap());
            assert_eq!(remap[id as usize], want as i64, "{name}: id {id}");
        }
        let old = floats(&find(&before, &table), &dir());
        let new = floats(&find(&after, &table), tmp.path());
        assert_eq!(new.len(), kept.len() * 16);
        for (row, &id) in kept.iter().enumerate() {
            let id = id as usize;
            assert_eq!(new[row * 16..row * 16 + 16], old[id * 16..id * 16 + 16]);
        }
    }
}

#[test]
fn graph_after_keeping_rows() {
    for name in ["bert_ts.onnx", "gpt2_dynamo.onnx"] {
        let tmp = tempfile::tempdir().unwrap();
        let model = dir().join(name);
        let (out, _) = keep_used(&model, tmp.path(), &[]);
        let diff = graph_diff(
            &std::fs::read(&model).unwrap(),
            &std::fs::read(out).unwrap(),
        );
        insta::assert_snapshot!(format!("vocab_{name}"), diff);
    }
    // onnxruntime's fused EmbedLayerNormalization reads int32 ids: its remap is int32 (tract
    // cannot run the fused op; onnxruntime gives the same outputs, checked by hand).
    let fused = fixture("transformers/bert_ort_attention.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.onnx");
    let from = format!(
        "{}:input_ids",
        arg(&fixture("transformers/bert_inputs.npz"))
    );
    stdout_ok(&[
        "shrink",
        arg(&fused),
        "-o",
        arg(&out),
        "--vocab-from",
        &from,
        "--keep-token",
        "100",
        "--unknown-token",
        "100",
    ]);
    let diff = graph_diff(
        &std::fs::read(&fused).unwrap(),
        &std::fs::read(&out).unwrap(),
    );
    insta::assert_snapshot!("vocab_bert_ort_attention.onnx", diff);
    let remap = graph(&out)
        .initializer
        .into_iter()
        .find(|t| t.name.ends_with("_vocab_remap_int32"))
        .unwrap();
    assert_eq!(remap.data_type, 6);
}

#[test]
fn a_tied_output_head_leaves_the_table_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, json) = keep_used(&dir().join("gpt2_ts_tied.onnx"), tmp.path(), &[]);
    let v = &json["vocabulary"];
    assert_eq!(v["rows_before"], v["rows_after"]);
    let readers = v["left_whole_for"].as_array().unwrap();
    assert_eq!(readers.len(), 1);
    assert!(readers[0].as_str().unwrap().contains("(Transpose)"), "{v}");
    // Nothing changed: the output is the input, byte for byte.
    assert_eq!(
        std::fs::read(out).unwrap(),
        std::fs::read(dir().join("gpt2_ts_tied.onnx")).unwrap()
    );
}

#[test]
fn layers_and_vocabulary_in_one_run_then_channels() {
    let tmp = tempfile::tempdir().unwrap();
    let calibration = dir().join("text_inputs.npz");
    // Llama's SwiGLU FFN groups are open to the channel pass today (the other exports' are
    // blocked until attention heads and their FFNs are understood).
    let (out, json) = keep_used(
        &dir().join("llama_ts.onnx"),
        tmp.path(),
        &[
            "--drop-layers",
            "1",
            "--calibration",
            arg(&calibration),
            "--sparsity",
            "0.25",
        ],
    );
    assert_eq!(json["layers"]["layers_after"], 2);
    assert_eq!(json["vocabulary"]["rows_after"], 24);
    assert_eq!(json["method"], "activation");
    assert!(json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["removed"].as_array().is_some_and(|r| !r.is_empty())));
    // The written model runs in tract (its outputs differ: exit 1 is a failed tolerance).
    let result = run(&[
        "check",
        arg(&dir().join("llama_ts.onnx")),
        arg(&out),
        "--inputs",
        arg(&calibration),
    ]);
    assert!(matches!(result.status.code(), Some(0 | 1)), "{result:?}");
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let model = dir().join("bert_ts.onnx");
    let model = arg(&model);
    let in_range = write("ok.txt", "1 2 3\n4\n");
    let out_of_range = write("big.txt", "1 2\n64\n");
    let negative = write("negative.txt", "-1\n");
    let words = write("words.txt", "1\n[CLS]\n");
    refused(
        &[model, "--vocab", &out_of_range, "--unknown-token", "1"],
        "token id 64 is out of range: table `model.embeddings.word_embeddings.weight` has 64 rows",
    );
    refused(
        &[model, "--vocab", &negative, "--unknown-token", "1"],
        "token id -1 is out of range",
    );
    refused(
        &[model, "--vocab", &words, "--unknown-token", "1"],
        "line 2: `[CLS]` is not an integer token id",
    );
    let floats = tmp.path().join("floats.npy");
    ndarray_npy::write_npy(&floats, &ndarray::arr1(&[1.0f32, 2.0])).unwrap();
    refused(
        &[model, "--vocab", arg(&floats), "--unknown-token", "1"],
        "does not hold integers",
    );
    refused(
        &[model, "--vocab", &in_range, "--unknown-token", "9"],
        "--unknown-token 9 is not among the kept ids: add it with --keep-token 9",
    );
    refused(
        &[
            model,
            "--vocab",
            &in_range,
            "--unknown-token",
            "1",
            "--keep-token",
            "99",
        ],
        "--keep-token: token id 99 is out of range",
    );
    refused(
        &[model, "--vocab", &in_range],
        "--vocab/--vocab-from need --unknown-token",
    );
    refused(
        &[model, "--keep-token", "1"],
        "--keep-token and --unknown-token have no effect without --vocab",
    );
    let data = dir().join("text_inputs.npz");
    refused(
        &[
            model,
            "--vocab-from",
            &format!("{}:ids", arg(&data)),
            "--unknown-token",
            "1",
        ],
        "has no array `ids` (it holds input_ids)",
    );
    refused(
        &[model, "--vocab-from", arg(&data), "--unknown-token", "1"],
        "give DATA.npz:KEY",
    );
    // A model without an embedding: the error says what --dry-run lists.
    let vit = dir().join("vit_ts.onnx");
    refused(
        &[arg(&vit), "--vocab", &in_range, "--unknown-token", "1"],
        "the model has no embedding Gather; found:\nembedding: none found",
    );
    let dry = run(&[
        "shrink",
        arg(&vit),
        "--dry-run",
        "--vocab",
        &in_range,
        "--unknown-token",
        "1",
    ]);
    assert_eq!(dry.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&dry.stderr).contains("embedding: none found"));
}
