//! Byte-faithful output: unchanged models come back byte for byte, and re-encoding every tensor
//! in place gives back the same file.

use onnx_prune_core::model::Role;
use onnx_prune_core::prune::Zeroing;
use onnx_prune_core::write::to_bytes;
use onnx_prune_core::{discover, save, Destination, Edit, Model, Storage};
use protobuf::Message;

use crate::common::{arg, fixture, onnx_fixtures, stdout_ok};

fn external_files(model: &std::path::Path) -> Vec<String> {
    Model::load(model)
        .unwrap()
        .external_files()
        .keys()
        .cloned()
        .collect()
}

#[test]
fn pruning_nothing_gives_every_fixture_back_byte_for_byte() {
    for path in onnx_fixtures() {
        let model = Model::load(&path).unwrap();
        if discover(&model)
            .iter()
            .all(|w| w.role == Role::Shape || model.tensors()[w.tensor].elements <= 1)
        {
            continue; // only scalars and shape parameters, which are never pruned
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.onnx");
        stdout_ok(&[
            "prune",
            arg(&path),
            "-o",
            arg(&out),
            "--sparsity",
            "0",
            "--include",
            ".",
            "--min-params",
            "0",
        ]);
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&path).unwrap(),
            "{}",
            path.display()
        );
        for location in external_files(&path) {
            let original = path.parent().unwrap().join(&location);
            assert_eq!(
                std::fs::read(dir.path().join(&location)).unwrap(),
                std::fs::read(original).unwrap()
            );
        }
    }
}

#[test]
fn rewriting_every_dense_tensor_in_place_gives_the_same_bytes() {
    // Zeroing elements whose magnitude key is below 1 touches only exact zeros, which stay zero,
    // but forces every tensor through the writer: raw data streamed, typed fields re-encoded.
    for path in onnx_fixtures() {
        let model = Model::load(&path).unwrap();
        let edits: Vec<Edit> = discover(&model)
            .iter()
            .filter(|w| model.tensors()[w.tensor].sparse.is_none())
            .map(|w| Edit::zero(w.tensor, Zeroing::Threshold { key: 1, ties: 0 }))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.onnx");
        save(&model, &edits, Destination::File(&out), Storage::Dense).unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            model.bytes(),
            "{}",
            path.display()
        );
    }
}

#[test]
fn unknown_fields_metadata_and_explicit_defaults_survive_pruning() {
    let path = fixture("mlp_gemm.onnx");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pruned.onnx");
    stdout_ok(&["prune", arg(&path), "-o", arg(&out), "--sparsity", "0.5"]);
    let before =
        onnx_protobuf::ModelProto::parse_from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    let mut after =
        onnx_protobuf::ModelProto::parse_from_bytes(&std::fs::read(&out).unwrap()).unwrap();
    // The unknown field 99 the fixture carries is still there.
    assert_eq!(
        after.special_fields.unknown_fields().get(99),
        Some(protobuf::UnknownValueRef::LengthDelimited(b"hello"))
    );
    // Apart from the pruned raw data, the parsed messages are equal.
    let pruned = ["fc1.weight", "fc2.weight"];
    for (a, b) in after
        .graph
        .mut_or_insert_default()
        .initializer
        .iter_mut()
        .zip(&before.graph.initializer)
    {
        assert_eq!(a.name, b.name);
        if pruned.contains(&a.name.as_str()) {
            assert_ne!(a.raw_data, b.raw_data);
            a.raw_data = b.raw_data.clone();
        }
    }
    assert_eq!(after, before);
    // The explicit `transA: 0` survives: the pruned file is the input with only raw data changed.
    let (a, b) = (std::fs::read(&path).unwrap(), std::fs::read(&out).unwrap());
    assert_eq!(a.len(), b.len());
    let changed = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert!(
        changed > 0 && changed <= 4 * (2048 + 512),
        "{changed} bytes changed"
    );
}

#[test]
fn float16_in_int32_data_is_pruned_and_reencoded_validly() {
    let path = fixture("typed_dtypes.onnx");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pruned.onnx");
    stdout_ok(&[
        "prune",
        arg(&path),
        "-o",
        arg(&out),
        "--sparsity",
        "0.5",
        "--include",
        "typed",
    ]);
    let after = onnx_protobuf::ModelProto::parse_from_bytes(&std::fs::read(&out).unwrap()).unwrap();
    let f16 = after
        .graph
        .initializer
        .iter()
        .find(|t| t.name == "w_f16_typed")
        .unwrap();
    assert_eq!(f16.int32_data.len(), 256);
    assert_eq!(f16.int32_data.iter().filter(|&&v| v == 0).count(), 128);
    let f32s = after
        .graph
        .initializer
        .iter()
        .find(|t| t.name == "w_f32_typed")
        .unwrap();
    assert_eq!(f32s.float_data.iter().filter(|&&v| v == 0.0).count(), 128);
}

#[test]
fn replacing_values_changes_that_tensor_only_in_every_storage() {
    // Typed fields (float_data, int32_data for float16, double_data), raw data and external
    // data: each weight in turn gets new values (its own elements reversed); the written model
    // holds them, every other tensor keeps its bytes, and the in-memory copy (what calibration
    // hands tract) is the written file.
    for name in ["typed_dtypes.onnx", "mlp_gemm.onnx", "conv_constants.onnx"] {
        let path = fixture(name);
        let model = Model::load(&path).unwrap();
        for weight in discover(&model) {
            let tensor = &model.tensors()[weight.tensor];
            let size = tensor.dtype.size().unwrap();
            let bytes = onnx_prune_core::model::dense_bytes(&model, tensor).unwrap();
            let reversed: Vec<u8> = bytes.chunks(size).rev().flatten().copied().collect();
            let edits = [Edit::replace(weight.tensor, reversed.clone())];
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("out.onnx");
            save(&model, &edits, Destination::File(&out), Storage::Dense).unwrap();
            assert_eq!(
                std::fs::read(&out).unwrap(),
                to_bytes(&model, &edits).unwrap()
            );
            let written = Model::load(&out).unwrap();
            for (before, after) in model.tensors().iter().zip(written.tensors()) {
                let (a, b) = (
                    onnx_prune_core::model::dense_bytes(&model, before).unwrap(),
                    onnx_prune_core::model::dense_bytes(&written, after).unwrap(),
                );
                if before.name == tensor.name && before.graph == tensor.graph {
                    assert_eq!(*b, reversed[..], "{name}: {}", weight.id);
                } else {
                    assert_eq!(a, b, "{name}: {} changed with {}", before.name, weight.id);
                }
            }
        }
    }
}
