//! What `prune` selects and zeroes (issue 15 items 10, 11 and the layout ops): the count rounds
//! half to even, shape parameters are never weights while weights behind layout ops are, and
//! N:M keeps N of every M.

use onnx_prune_core::model::Role;
use onnx_prune_core::{discover, Model};

use crate::common::{arg, float_tensor, int_tensor, matmul_model, model_bytes, run, stdout_ok};

/// Item 11: `round(S x n)` rounds half to even, as Python's `round` does.
#[test]
fn half_rounds_to_even() {
    let dir = tempfile::tempdir().unwrap();
    let weight: Vec<f32> = (1..=265).map(|v| v as f32).collect();
    let model = matmul_model(dir.path(), 5, 53, &weight);
    let out = run(&[
        "prune",
        arg(&model),
        "--dry-run",
        "--sparsity",
        "0.5",
        "--report",
        arg(&dir.path().join("r.json")),
    ]);
    assert!(out.status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(report["weights"][0]["zeros_after"], 132);
}

fn node(op: &str, inputs: &[&str], output: &str) -> onnx_protobuf::NodeProto {
    let mut n = onnx_protobuf::NodeProto::new();
    n.op_type = op.into();
    n.name = format!("{op}_{output}");
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = vec![output.into()];
    n
}

/// Items 12 and 13: shape parameters are never pruned, even when named; a weight that reaches
/// `MatMul` through `Slice` and `Transpose` (an LSTM cell as exporters write it) is a MatMul
/// weight, and N:M groups run along its reduction axis in its own layout.
#[test]
fn shape_parameters_are_never_pruned_and_weights_behind_layout_ops_are() {
    let dir = tempfile::tempdir().unwrap();
    let cell: Vec<f32> = (0..32 * 8)
        .map(|v| ((v * 37) % 101) as f32 - 50.0)
        .collect();
    let mut graph = onnx_protobuf::GraphProto::new();
    graph
        .initializer
        .push(float_tensor("cell.weight", &[32, 8], &cell));
    graph.initializer.push(int_tensor("starts", &[0]));
    graph.initializer.push(int_tensor("ends", &[8]));
    graph.initializer.push(int_tensor("axes", &[0]));
    let scales: Vec<f32> = vec![1.0; 300];
    graph
        .initializer
        .push(float_tensor("scales", &[300], &scales));
    graph.initializer.push(float_tensor("limit", &[], &[3.0]));
    graph.node.push(node(
        "Slice",
        &["cell.weight", "starts", "ends", "axes"],
        "gate",
    ));
    graph.node.push(node("Transpose", &["gate"], "gate_t"));
    graph.node.push(node("MatMul", &["x", "gate_t"], "h"));
    graph.node.push(node("Resize", &["h", "", "scales"], "y"));
    graph
        .node
        .push(node("Range", &["limit", "limit", "limit"], "r"));
    let model = dir.path().join("cell.onnx");
    std::fs::write(&model, model_bytes(graph)).unwrap();

    let loaded = Model::load(&model).unwrap();
    let weights = discover(&loaded);
    let role = |id: &str| weights.iter().find(|w| w.id == id).unwrap().role;
    assert_eq!(role("cell.weight"), Role::MatmulWeight);
    assert_eq!(role("scales"), Role::Shape);
    assert_eq!(role("limit"), Role::Shape);
    let cell_weight = weights.iter().find(|w| w.id == "cell.weight").unwrap();
    assert!(cell_weight.prunable);
    assert_eq!(
        cell_weight.reduction_axis,
        Some(1),
        "K of the transposed slice"
    );

    let report = dir.path().join("r.json");
    let out = run(&[
        "prune",
        arg(&model),
        "-o",
        arg(&dir.path().join("out.onnx")),
        "--sparsity",
        "0.5",
        "--include",
        ".",
        "--min-params",
        "0",
        "--report",
        arg(&report),
    ]);
    assert!(out.status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let ids: Vec<&str> = report["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["cell.weight"],
        "scales and the Range bound are left alone"
    );

    let pruned = dir.path().join("nm.onnx");
    stdout_ok(&["prune", arg(&model), "-o", arg(&pruned), "--pattern", "2:4"]);
    let pruned = Model::load(&pruned).unwrap();
    let tensor = &pruned.tensors()[cell_weight.tensor];
    let data = onnx_prune_core::model::dense_bytes(&pruned, tensor).unwrap();
    let values: Vec<f32> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for group in values.chunks(4) {
        assert_eq!(
            group.iter().filter(|v| **v == 0.0).count(),
            2,
            "every 4 consecutive elements of a row keep 2: {group:?}"
        );
    }
}

/// Item 10: N:M keeps N of every M, as the N:M literature and TF-MOT define it.
#[test]
fn one_of_four_keeps_one_in_every_group() {
    let dir = tempfile::tempdir().unwrap();
    let weight: Vec<f32> = (0..64).map(|v| (v * 7 % 64) as f32 + 1.0).collect();
    let model = matmul_model(dir.path(), 8, 8, &weight);
    let out = dir.path().join("out.onnx");
    let flags = ["--pattern", "1:4", "--min-params", "0"];
    stdout_ok(&[&["prune", arg(&model), "-o", arg(&out)][..], &flags].concat());
    let pruned = Model::load(&out).unwrap();
    let data = onnx_prune_core::model::dense_bytes(&pruned, &pruned.tensors()[0]).unwrap();
    let values: Vec<f32> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // MatMul [K, N]: groups run down each column (axis 0); the largest of each group stays.
    for column in 0..8 {
        for start in [0, 4] {
            let group: Vec<f32> = (start..start + 4).map(|k| values[k * 8 + column]).collect();
            let kept: Vec<f32> = group.iter().copied().filter(|v| *v != 0.0).collect();
            let largest = (start..start + 4)
                .map(|k| weight[k * 8 + column])
                .fold(0.0f32, f32::max);
            assert_eq!(kept, [largest], "column {column}, rows {start}..");
        }
    }
}
