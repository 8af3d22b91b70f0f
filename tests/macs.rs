//! MACs in `shrink`'s table and report (#23 item 6): counted with free dimensions set to 1,
//! they say so next to the figure and in the report's notes; where they cannot be counted
//! that way, the note names the `--shape` that counts them.

use std::path::{Path, PathBuf};

use crate::common::{float_tensor, float_value, int_tensor, model_bytes, node, shrink_in};

/// Runs `shrink MODEL` with `flags` (as [`shrink_in`]), which must succeed; returns stdout,
/// stderr and the report.
fn shrink(model: &Path, flags: &[&str]) -> (String, String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let (result, json) = shrink_in(dir.path(), model, flags);
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    assert!(result.status.success(), "{stderr}");
    (String::from_utf8(result.stdout).unwrap(), stderr, json)
}

fn notes(report: &serde_json::Value) -> String {
    report["notes"].to_string()
}

#[test]
fn macs_counted_at_batch_1_say_so_in_the_table_and_the_report() {
    let (model, _, _) = crate::common::digits_cnn();
    let (stdout, _, report) = shrink(&model, &["--sparsity", "0.5"]);
    assert!(
        report["totals"]["macs_before"].as_u64().is_some(),
        "{report}"
    );
    let figure = stdout.lines().find(|l| l.contains("MACs")).unwrap();
    assert!(
        figure.contains("(free dimensions of `input` set to 1)"),
        "{stdout}"
    );
    assert!(
        notes(&report).contains("free dimensions of `input` set to 1")
            && notes(&report).contains("--shape input=D,D,..."),
        "{report}"
    );

    // At a shape given in full, nothing was assumed.
    let (stdout, _, report) = shrink(&model, &["--sparsity", "0.5", "--shape", "input=4,1,8,8"]);
    assert!(!stdout.contains("free dimensions"), "{stdout}");
    assert!(!notes(&report).contains("free dimensions"), "{report}");
}

/// `y = Relu(Reshape(x, [-1, 4]) W1) W2` for `x` of shape `[N, N]`: at 1x1, the reshape
/// cannot be done, so MACs are only counted at a shape given with `--shape`.
fn reshaped_mlp(dir: &Path) -> PathBuf {
    let mut graph = onnx_protobuf::GraphProto::new();
    graph
        .node
        .push(node("Reshape", &["x", "rows_of_4"], &["r"]));
    graph.node.push(node("MatMul", &["r", "w1"], &["h"]));
    graph.node.push(node("Relu", &["h"], &["a"]));
    graph.node.push(node("MatMul", &["a", "w2"], &["y"]));
    let values = |n: usize| {
        (0..n)
            .map(|i| (i as f32 * 0.37).sin())
            .collect::<Vec<f32>>()
    };
    graph.initializer.push(int_tensor("rows_of_4", &[-1, 4]));
    graph
        .initializer
        .push(float_tensor("w1", &[4, 8], &values(32)));
    graph
        .initializer
        .push(float_tensor("w2", &[8, 2], &values(16)));
    graph.input.push(float_value("x", &[None, None]));
    graph.output.push(float_value("y", &[None, Some(2)]));
    let path = dir.join("reshaped.onnx");
    std::fs::write(&path, model_bytes(graph)).unwrap();
    path
}

#[test]
fn macs_not_countable_at_batch_1_suggest_the_shape_flag() {
    let dir = tempfile::tempdir().unwrap();
    let model = reshaped_mlp(dir.path());
    let (_, stderr, report) = shrink(&model, &[]);
    assert!(stderr.contains("MACs not counted"), "{stderr}");
    assert!(stderr.contains("--shape x=D,D,..."), "{stderr}");
    assert!(!stderr.contains("--fix"), "{stderr}");
    assert!(report["totals"]["macs_before"].is_null(), "{report}");

    // x of 2x8 is 4 rows of 4: 4 x 4 x 8 + 4 x 8 x 2 MACs.
    let (_, _, report) = shrink(&model, &["--shape", "x=2,8"]);
    assert_eq!(report["totals"]["macs_before"], 192, "{report}");
}
