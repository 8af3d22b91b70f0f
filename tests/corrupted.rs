//! A corpus of corrupted models and schedules through the CLI: each exits 2 with a message
//! naming the file, never panics, and leaves nothing behind. Includes every input that found a
//! bug, by fuzzing or by the mutation campaign (`fixtures/hostile/`).

use std::path::{Path, PathBuf};

use crate::common::{arg, fixture, fixtures, model_bytes, run, sample};

/// Runs `args`; it must exit 2 naming the file `named`, without a panic, leaving `out_dir`
/// empty.
fn refused(args: &[&str], named: &str, out_dir: &Path) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(named),
        "{args:?}: `{named}` not in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    let left: Vec<_> = std::fs::read_dir(out_dir).unwrap().collect();
    assert!(left.is_empty(), "{args:?} left {left:?}");
}

/// `inspect` and `prune` of a corrupted model both refuse it, naming the file `named`.
fn model_refused(model: &Path, named: &str) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.onnx");
    refused(&["inspect", arg(model)], named, out_dir.path());
    let prune = ["prune", arg(model), "-o", arg(&out), "--sparsity", "0.5"];
    refused(
        &[&prune[..], &["--include", "."]].concat(),
        named,
        out_dir.path(),
    );
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

/// A model whose only initializer is `tensor`.
fn model_with(tensor: onnx_protobuf::TensorProto) -> Vec<u8> {
    let mut graph = onnx_protobuf::GraphProto::new();
    graph.initializer.push(tensor);
    model_bytes(graph)
}

fn float_tensor(dims: Vec<i64>, raw: Vec<u8>) -> onnx_protobuf::TensorProto {
    let mut t = onnx_protobuf::TensorProto::new();
    t.name = "w".into();
    t.data_type = 1;
    t.dims = dims;
    t.raw_data = raw;
    t
}

#[test]
fn corrupted_models_exit_2_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut corpus: Vec<(String, Vec<u8>)> = Vec::new();
    for name in ["mlp_gemm.onnx", "conv_constants.onnx", "if_subgraph.onnx"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        // Cuts inside the graph, and inside the last field.
        for percent in [25, 50, 75] {
            let cut = bytes.len() * percent / 100;
            corpus.push((format!("{name}.cut{percent}"), bytes[..cut].to_vec()));
        }
        corpus.push((
            format!("{name}.cut-last"),
            bytes[..bytes.len() - 1].to_vec(),
        ));
        // The first field's key flipped to wire type 7, which protobuf does not have.
        let mut flipped = bytes.clone();
        flipped[0] |= 0x07;
        corpus.push((format!("{name}.flipped"), flipped));
    }
    corpus.push(("random.onnx".into(), noise(4096, 0x9e37_79b9_7f4a_7c15)));
    // A graph claiming a terabyte.
    let mut huge_graph = vec![0x08, 0x08, 0x3a];
    huge_graph.extend(varint(1 << 40));
    huge_graph.extend(noise(64, 7));
    corpus.push(("graph-length-past-end.onnx".into(), huge_graph));
    // A tensor claiming 2^64 elements, and one claiming 2^40 with four bytes of data.
    let overflow = float_tensor(vec![1 << 32, 1 << 32], vec![0; 4]);
    corpus.push(("dims-overflow.onnx".into(), model_with(overflow)));
    let huge = float_tensor(vec![1 << 20, 1 << 20], vec![0; 4]);
    corpus.push(("dims-huge.onnx".into(), model_with(huge)));
    // External data far past the end of its file.
    let mut external = float_tensor(vec![4], Vec::new());
    external.data_location = protobuf::EnumOrUnknown::from_i32(1);
    for (key, value) in [
        ("location", "data.bin"),
        ("offset", "1152921504606846976"),
        ("length", "16"),
    ] {
        let mut entry = onnx_protobuf::StringStringEntryProto::new();
        entry.key = key.into();
        entry.value = value.into();
        external.external_data.push(entry);
    }
    std::fs::write(dir.path().join("data.bin"), [0u8; 16]).unwrap();
    corpus.push(("external-offset-past-end.onnx".into(), model_with(external)));
    for (name, bytes) in corpus {
        let path = dir.path().join(&name);
        std::fs::write(&path, bytes).unwrap();
        // The external data file is the one at fault there.
        let named = if name.starts_with("external") {
            "data.bin"
        } else {
            &name
        };
        model_refused(&path, named);
    }
}

/// A manifest for `file`, a mask file given by absolute path.
fn manifest_for(dir: &Path, file: &Path) -> PathBuf {
    let path = dir.join("schedule.json");
    let text = serde_json::json!({
        "format": "onnx-prune/mask-schedule",
        "version": 1,
        "steps": [{"step": 1, "file": file}],
    });
    std::fs::write(&path, text.to_string()).unwrap();
    path
}

#[test]
fn corrupted_schedules_and_mask_files_exit_2_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("renamed_transposed.onnx");
    let replay = |schedule: &Path, named: &Path| {
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("out.onnx");
        let args = ["replay", arg(&model), "--schedule", arg(schedule)];
        let name = named.file_name().unwrap().to_string_lossy();
        refused(
            &[&args[..], &["-o", arg(&out)]].concat(),
            &name,
            out_dir.path(),
        );
    };
    let sample_schedule = std::fs::read(sample("schedule.json")).unwrap();
    let mut schedules: Vec<(String, Vec<u8>)> = vec![
        ("truncated.json".into(), sample_schedule[..100].to_vec()),
        ("random.json".into(), noise(512, 3)),
        ("empty.json".into(), Vec::new()),
    ];
    for (name, schedule) in [
        (
            "negative-frequency.json",
            r#"{"kind": "constant", "target_sparsity": 0.5, "begin_step": 0, "frequency": -5}"#,
        ),
        (
            "end-before-begin.json",
            r#"{"kind": "polynomial_decay", "initial_sparsity": 0.1, "final_sparsity": 0.5, "begin_step": 100, "end_step": 10}"#,
        ),
        (
            "infinite-power.json",
            r#"{"kind": "polynomial_decay", "initial_sparsity": 0.1, "final_sparsity": 0.5, "begin_step": 0, "end_step": 10, "power": 1e999}"#,
        ),
        (
            "step-past-i64.json",
            r#"{"kind": "constant", "target_sparsity": 0.5, "begin_step": 99999999999999999999}"#,
        ),
    ] {
        let text = format!(
            r#"{{"format": "onnx-prune/mask-schedule", "version": 1, "sparsity_schedule": {schedule}}}"#
        );
        schedules.push((name.into(), text.into_bytes()));
    }
    for (name, bytes) in schedules {
        let path = dir.path().join(&name);
        std::fs::write(&path, bytes).unwrap();
        replay(&path, &path);
    }
    // Mask files: truncated, random, and a header claiming more than the file holds.
    let masks = std::fs::read(sample("masks/epoch_009.safetensors")).unwrap();
    let mut mask_files = vec![
        ("truncated.safetensors", masks[..masks.len() / 2].to_vec()),
        ("random.safetensors", noise(1024, 5)),
        ("random.npz", noise(1024, 11)),
    ];
    let mut huge_header = masks.clone();
    huge_header[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    mask_files.push(("huge-header.safetensors", huge_header));
    for (name, bytes) in mask_files {
        let sub = tempfile::tempdir_in(dir.path()).unwrap();
        let path = sub.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        replay(&manifest_for(sub.path(), &path), &path);
    }
}

/// Each input a fuzz target or the mutation campaign (`tests/hostile.rs`) found a bug with,
/// and what the fixed tool says of it.
const FINDINGS: [(&str, &str); 3] = [
    // ndarray-npy allocated the 3.6 GB the header claimed before reading it.
    (
        "npy_header_claims_3_6_gb.npz",
        "its header claims 3632594826 bytes",
    ),
    // A schedule's sparsity was used unchecked: 1.5 pruned every weight.
    (
        "schedule_sparsity_above_one.json",
        "target_sparsity 1.5 is not in [0, 1)",
    ),
    // A sparse tensor with more values than elements made inspect subtract past zero.
    (
        "sparse_nnz_above_elements.onnx",
        "holds 35 values but its shape [8] has 8 elements",
    ),
];

#[test]
fn inputs_that_found_bugs_are_refused() {
    let hostile = fixtures().join("hostile");
    let model = fixture("renamed_transposed.onnx");
    let mut files: Vec<String> = std::fs::read_dir(&hostile)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut listed: Vec<&str> = FINDINGS.iter().map(|(name, _)| *name).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "every file in fixtures/hostile has its finding"
    );
    for (name, message) in FINDINGS {
        let path = hostile.join(name);
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("out.onnx");
        let args: Vec<String> = if name.ends_with(".onnx") {
            ["prune", arg(&path), "-o", arg(&out), "--sparsity", "0.5"]
                .map(String::from)
                .to_vec()
        } else {
            let schedule = if name.ends_with(".json") {
                path.clone()
            } else {
                manifest_for(out_dir.path(), &path)
            };
            [
                "replay",
                arg(&model),
                "--schedule",
                arg(&schedule),
                "-o",
                arg(&out),
            ]
            .map(String::from)
            .to_vec()
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = run(&args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(name), "`{name}` not in {stderr}");
        assert!(stderr.contains(message), "`{message}` not in {stderr}");
        assert!(!out.exists());
    }
}
