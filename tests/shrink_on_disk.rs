//! `shrink` of a model whose weights live in external data (issue 21, "smaller on disk"): the
//! written data file holds only what the new model references, so the files shrink with the
//! parameters, and the report says the sizes before and after.

use std::path::Path;

use protobuf::Message;

use crate::common::{arg, fixture, stdout_ok};

/// Each external tensor of the model at `path`: (location, offset, length).
fn external_ranges(path: &Path) -> Vec<(String, u64, u64)> {
    let model = onnx_protobuf::ModelProto::parse_from_bytes(&std::fs::read(path).unwrap()).unwrap();
    let mut ranges: Vec<(String, u64, u64)> = model
        .graph
        .initializer
        .iter()
        .filter(|t| !t.external_data.is_empty())
        .map(|t| {
            let entry = |key: &str| {
                t.external_data
                    .iter()
                    .find(|e| e.key == key)
                    .map(|e| e.value.clone())
            };
            (
                entry("location").unwrap(),
                entry("offset").map_or(0, |v| v.parse().unwrap()),
                entry("length").unwrap().parse().unwrap(),
            )
        })
        .collect();
    ranges.sort_by_key(|r| r.1);
    ranges
}

/// Total size of the files under `dir`.
fn size_of(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Shrinks `inline` and `external` (the same model, its weights inline and in external data)
/// at 50% into `dir/inline/` and `dir/external/`; checks that both compute the same outputs
/// (through tract), that the external data file holds exactly the ranges the new model
/// references, aligned as before, and that the report's sizes are the files'.
fn shrinks_on_disk(inline: &Path, external: &Path, data: &str, align: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("inline"), dir.path().join("external"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let (out_a, out_b) = (a.join("out.onnx"), b.join("out.onnx"));
    let report = dir.path().join("report.json");
    let shrink = |input: &Path, out: &Path| {
        let args = ["shrink", arg(input), "-o", arg(out), "--sparsity", "0.5"];
        stdout_ok(&[&args[..], &["--report", arg(&report)]].concat());
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&report).unwrap()).unwrap()
    };
    shrink(inline, &out_a);
    let json = shrink(external, &out_b);

    // The same computation: the check of one against the other finds no difference.
    let checked = dir.path().join("check.json");
    stdout_ok(&[
        "check",
        arg(&out_a),
        arg(&out_b),
        "--random",
        "4",
        "--report",
        arg(&checked),
    ]);
    let check: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&checked).unwrap()).unwrap();
    for output in check["outputs"].as_array().unwrap() {
        assert_eq!(output["max_abs"].as_f64().unwrap(), 0.0, "{output}");
    }

    // The data file holds the referenced ranges one after another, aligned as the input's.
    let ranges = external_ranges(&out_b);
    let mut end = 0u64;
    for (location, offset, length) in &ranges {
        assert_eq!(location, data);
        assert_eq!(*offset, end.next_multiple_of(align), "{ranges:?}");
        end = offset + length;
    }
    let written = std::fs::metadata(b.join(data)).unwrap().len();
    assert_eq!(written, end, "nothing past the last tensor");
    let input_data = std::fs::metadata(external.with_file_name(data))
        .unwrap()
        .len();
    assert!(written < input_data, "{written} of {input_data} bytes");

    let totals = &json["totals"];
    let before = std::fs::metadata(external).unwrap().len() + input_data;
    assert_eq!(totals["bytes_before"].as_u64(), Some(before), "{totals}");
    assert_eq!(
        totals["bytes_after"].as_u64(),
        Some(size_of(&b)),
        "{totals}"
    );
    assert!(totals["params_after"].as_u64() < totals["params_before"].as_u64());
}

/// The residual graph with every tensor in `weights.bin` (offsets multiples of 32).
#[test]
fn a_shrunk_residual_graph_writes_only_the_data_it_references() {
    let graphs = fixture("shrink/graphs");
    shrinks_on_disk(
        &graphs.join("residual_add.onnx"),
        &graphs.join("external/residual_add.onnx"),
        "weights.bin",
        32,
    );
}

/// The dynamo export of `fixtures/calibration`: its data file starts with 9,808 bytes no
/// tensor references (offsets multiples of 8), which the shrunk model's data file drops.
#[test]
fn a_shrunk_dynamo_export_drops_the_bytes_nothing_references() {
    let calibration = fixture("calibration");
    shrinks_on_disk(
        &calibration.join("bias_free.onnx"),
        &calibration.join("bias_free_external.onnx"),
        "bias_free_external.data",
        8,
    );
}
