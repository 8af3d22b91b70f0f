//! `check` through tract: ground truth from PyTorch, self-checks, damaged models, test-data dirs.

use crate::common::{arg, fixture, run, sample, sample_test_set};

fn torch_metrics() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(sample("torch_metrics.json")).unwrap()).unwrap()
}

/// Runs `check` with a JSON report; returns the exit code and the report.
pub fn check_report(args: &[&str]) -> (i32, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("check.json");
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--report", arg(&report)]);
    let out = run(&all);
    let code = out.status.code().unwrap();
    assert!(
        report.exists(),
        "no report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        code,
        serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap(),
    )
}

#[test]
fn accuracy_of_the_pytorch_sample_equals_torch_exactly() {
    let (test_set, labels) = sample_test_set();
    let (code, report) = check_report(&[
        arg(&sample("dense.onnx")),
        arg(&sample("reference_final.onnx")),
        "--inputs",
        arg(&test_set),
        "--labels",
        &labels,
        "--min-cosine",
        "0",
    ]);
    let metrics = torch_metrics();
    assert_eq!(code, 0);
    assert_eq!(report["samples"], 450);
    assert_eq!(report["accuracy"]["reference"], metrics["dense_accuracy"]);
    assert_eq!(report["accuracy"]["candidate"], metrics["final_accuracy"]);
}

#[test]
fn a_model_checked_against_itself_has_zero_error() {
    let model = sample("dense.onnx");
    let (code, report) = check_report(&[
        arg(&model),
        arg(&model),
        "--random",
        "37",
        "--seed",
        "3",
        "--atol",
        "0",
    ]);
    assert_eq!(code, 0);
    let output = &report["outputs"][0];
    assert_eq!(output["name"], "logits");
    assert_eq!(output["max_abs"], 0.0);
    assert_eq!(output["cosine"], 1.0);
    assert_eq!(output["top1_agreement"], 1.0);
    assert_eq!(output["elements_out_of_tolerance"], 0);
}

#[test]
fn a_damaged_model_fails_with_exit_1_naming_the_output_and_sample() {
    let dir = tempfile::tempdir().unwrap();
    let damaged = dir.path().join("damaged.onnx");
    let out = run(&[
        "prune",
        arg(&sample("dense.onnx")),
        "-o",
        arg(&damaged),
        "--sparsity",
        "0.99",
        "--scope",
        "global",
    ]);
    assert!(out.status.success());
    let test_set = sample("test_set.npz");
    let (code, report) = check_report(&[
        arg(&sample("dense.onnx")),
        arg(&damaged),
        "--inputs",
        arg(&test_set),
    ]);
    assert_eq!(code, 1);
    assert_eq!(report["passed"], false);
    let failure = report["failures"][0].as_str().unwrap();
    assert!(failure.starts_with("output `logits`: cosine"), "{failure}");
    assert!(failure.contains("worst sample"), "{failure}");
}

#[test]
fn onnx_test_data_directories_are_read() {
    let model = fixture("pytorch_conv2d.onnx");
    let data = fixture("pytorch_conv2d_test_data");
    let (code, report) = check_report(&[arg(&model), arg(&model), "--inputs", arg(&data)]);
    assert_eq!(code, 0);
    insta::assert_json_snapshot!(report);
}

#[test]
fn prune_then_check_reports_both() {
    let dir = tempfile::tempdir().unwrap();
    let pruned = dir.path().join("pruned.onnx");
    let report = dir.path().join("report.json");
    let (test_set, labels) = sample_test_set();
    let out = run(&[
        "prune",
        arg(&sample("dense.onnx")),
        "-o",
        arg(&pruned),
        "--sparsity",
        "0.5",
        "--scope",
        "global",
        "--report",
        arg(&report),
        "--check",
        "--inputs",
        arg(&test_set),
        "--labels",
        &labels,
        "--min-cosine",
        "0.95",
        "--max-accuracy-drop",
        "0.05",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(report["check"]["passed"], true);
    assert_eq!(
        report["check"]["accuracy"]["reference"],
        torch_metrics()["dense_accuracy"]
    );
    // tract's kernels differ by CPU in the last bits: metrics are snapshotted rounded.
    // The batch size is timed (the metrics do not depend on it).
    insta::assert_json_snapshot!(report["check"], {
        ".batch_size" => "[timed]",
        ".outputs[].cosine" => insta::rounded_redaction(4),
        ".outputs[].max_abs" => insta::rounded_redaction(4),
        ".outputs[].mean_abs" => insta::rounded_redaction(4),
        ".outputs[].rmse" => insta::rounded_redaction(4),
        ".outputs[].snr_db" => insta::rounded_redaction(3),
    });
}

#[test]
fn inputs_that_do_not_fit_the_model_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = sample("dense.onnx");
    let out = run(&[
        "check",
        arg(&model),
        arg(&model),
        "--inputs",
        arg(&dir.path().join("missing.npz")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.npz"));
    let out = run(&[
        "check",
        arg(&model),
        arg(&model),
        "--inputs",
        &format!("other={}", dir.path().join("x.npy").display()),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["check", arg(&model), arg(&model)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--random"));
}

/// Regression: random indices past an embedding table's end made tract panic (exit 101, a
/// backtrace); it is bad input for that model, said in one line.
#[test]
fn input_values_out_of_the_models_range_are_an_error_not_a_panic() {
    let model = fixture("pytorch_embedding.onnx");
    let out = run(&[
        "check",
        arg(&model),
        arg(&model),
        "--random",
        "4",
        "--seed",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pytorch_embedding.onnx: tract failed on sample"));
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Regression: test-data inputs were concatenated on their first axis as if it were a sample
/// axis, which refused two matrices of different heights and panicked on outputs smaller than
/// the batch. Each data set is now one run, compared whole.
#[test]
fn test_data_sets_without_a_batch_axis_are_compared_whole() {
    for name in ["pytorch_mm", "pytorch_chunk"] {
        let model = fixture(&format!("{name}.onnx"));
        let data = fixture(&format!("{name}_test_data"));
        let (code, report) = check_report(&[
            arg(&model),
            arg(&model),
            "--inputs",
            arg(&data),
            "--atol",
            "0",
        ]);
        assert_eq!(code, 0, "{name}: {report}");
        assert_eq!(report["samples"], 1, "{name}");
        assert!(
            report["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|o| o["max_abs"] == 0.0),
            "{name}"
        );
    }
}

/// A [`Reference`] loaded once and compared with several candidates (what sensitivity, the
/// `--sparsity auto` search and `replay --all-steps` do) reports exactly what a separate check
/// of each candidate reports, whether it keeps its outputs or runs again.
#[test]
fn a_reference_kept_for_many_candidates_reports_what_single_checks_report() {
    use onnx_prune_core::Model;
    use onnx_prune_verify::{check, CheckOptions, InputSource, Keep, Reference};

    let dir = tempfile::tempdir().unwrap();
    let (test_set, labels) = sample_test_set();
    let dense = sample("dense.onnx");
    let half = dir.path().join("half.onnx");
    let pruned = run(&["prune", arg(&dense), "-o", arg(&half), "--sparsity", "0.5"]);
    assert!(pruned.status.success());
    let options = CheckOptions {
        inputs: vec![InputSource::Npz(test_set)],
        labels: Some(labels),
        batch_size: Some(8),
        ..CheckOptions::default()
    };
    let reference = Model::load(&dense).unwrap();
    let kept = Reference::load(&reference, &options, Keep::Outputs).unwrap();
    let rerun = Reference::load(&reference, &options, Keep::Nothing).unwrap();
    for candidate in [sample("reference_final.onnx"), half] {
        let model = Model::load(&candidate).unwrap();
        let single = serde_json::to_value(check(&reference, &model, &options).unwrap()).unwrap();
        for reference in [&kept, &rerun] {
            let compared = reference.compare(&model).unwrap();
            assert_eq!(serde_json::to_value(compared).unwrap(), single);
        }
        assert!(
            single["accuracy"]["candidate"].as_f64().unwrap() > 0.5,
            "{single}"
        );
    }
}
