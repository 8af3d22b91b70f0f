//! `check` on models whose inputs select a branch (`--fix`), the batch size it picks, and the
//! usage errors of its flags. Every command also leaves every file but its outputs unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::check::check_report;
use crate::common::{arg, assert_close, fixture, fixtures, run, sample, sample_test_set};

/// Every file under `dir` with its bytes.
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Runs `onnx-prune args`, asserting that no file of the fixtures changed; returns the exit
/// code and stderr.
pub fn run_untouched(args: &[&str]) -> (i32, String) {
    let before = tree(&fixtures());
    let out = run(args);
    assert_eq!(tree(&fixtures()), before, "a fixture changed: {args:?}");
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_fixture(name: &str) -> PathBuf {
    fixture("check").join(name)
}

/// Prunes `model` at 50% into `dir` and returns the pruned model.
fn pruned(model: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("pruned.onnx");
    let result = run(&[
        "prune",
        arg(model),
        "-o",
        arg(&out),
        "--sparsity",
        "0.5",
        "--min-params",
        "1",
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

#[test]
fn an_if_on_a_free_input_is_exit_3_naming_the_node_and_suggesting_fix() {
    let model = check_fixture("if_sample_rate.onnx");
    let (code, stderr) = run_untouched(&["check", arg(&model), arg(&model), "--random", "4"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("`If` node `sr_branch`"), "{stderr}");
    assert!(stderr.contains("--fix sr=VALUE"), "{stderr}");
}

#[test]
fn a_real_pytorch_export_branching_on_its_sample_rate_runs_with_fix() {
    let model = check_fixture("scripted_if.onnx");
    let (code, stderr) = run_untouched(&["check", arg(&model), arg(&model), "--random", "4"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("`If` node `/If`") && stderr.contains("--fix sr=VALUE"),
        "{stderr}"
    );
    for sr in ["sr=16000", "sr=8000"] {
        let (code, report) = check_report(&[
            arg(&model),
            arg(&model),
            "--random",
            "4",
            "--fix",
            sr,
            "--atol",
            "0",
        ]);
        assert_eq!(code, 0, "{sr}: {report}");
    }
}

#[test]
fn fix_decides_an_if_whose_branches_differ_in_shape() {
    let dir = tempfile::tempdir().unwrap();
    let model = check_fixture("if_sample_rate.onnx");
    let candidate = pruned(&model, dir.path());
    let mut reports = Vec::new();
    for sr in ["16000", "8000"] {
        let fix = format!("sr={sr}");
        let (code, report) = check_report(&[
            arg(&model),
            arg(&candidate),
            "--random",
            "16",
            "--fix",
            &fix,
            "--min-cosine",
            "0",
        ]);
        assert_eq!(code, 0, "{report}");
        assert_eq!(report["samples"], 16);
        let output = &report["outputs"][0];
        assert_eq!(output["name"], "speech");
        assert!(output["max_abs"].as_f64().unwrap() > 0.0, "{report}");
        reports.push(report);
    }
    // Each sample rate runs its own branch, whose weights were pruned differently.
    assert_ne!(
        reports[0]["outputs"][0]["mean_abs"],
        reports[1]["outputs"][0]["mean_abs"]
    );
    // The same model, self-checked, runs with --fix through prune --check too.
    let out = dir.path().join("again.onnx");
    let (code, stderr) = run_untouched(&[
        "prune",
        arg(&model),
        "-o",
        arg(&out),
        "--sparsity",
        "0.5",
        "--min-params",
        "1",
        "--check",
        "--random",
        "4",
        "--fix",
        "sr=8000",
        "--min-cosine",
        "0",
    ]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_condition_on_a_concrete_shape_is_folded() {
    let model = check_fixture("if_shape.onnx");
    for length in ["16", "5"] {
        let shape = format!("x=1,{length}");
        let (code, report) = check_report(&[
            arg(&model),
            arg(&model),
            "--random",
            "3",
            "--shape",
            &shape,
            "--atol",
            "0",
        ]);
        assert_eq!(code, 0, "{length}: {report}");
        assert_eq!(report["outputs"][0]["max_abs"], 0.0);
    }
}

#[test]
fn bad_fix_values_are_exit_2_naming_the_flag_and_input() {
    let model = check_fixture("if_sample_rate.onnx");
    for (fix, expected) in [
        (
            "nope=1",
            "--fix nope=1: the model has no input `nope` (its inputs: x, sr)",
        ),
        (
            "sr=abc",
            "--fix sr=abc: `abc` is not an integer (input `sr` is I64)",
        ),
        ("sr=1.5", "--fix sr=1.5: `1.5` is not an integer"),
        (
            "x=1,2",
            "--fix x=1,2: 2 values do not fill input `x` of shape [?, 16]",
        ),
        // #23 item 10: a scalar given two values said an `If` branched on a Bool of shape [2].
        (
            "sr=16000,8000",
            "--fix sr=16000,8000: input `sr` is a scalar and 2 values were given",
        ),
        ("sr", "--fix `sr` is not NAME=VALUE"),
    ] {
        let (code, stderr) = run_untouched(&[
            "check",
            arg(&model),
            arg(&model),
            "--random",
            "2",
            "--fix",
            fix,
        ]);
        assert_eq!(code, 2, "{fix}: {stderr}");
        assert!(stderr.contains(expected), "{fix}: {stderr}");
    }
}

#[test]
fn flags_out_of_their_range_are_exit_2() {
    let model = sample("dense.onnx");
    for (flags, expected) in [
        (
            &["--shape", "nope=1,64"][..],
            "--shape nope: the model has no input `nope`",
        ),
        (
            &["--min-cosine", "1.5"][..],
            "--min-cosine 1.5: must be in [-1, 1]",
        ),
        (
            &["--min-agreement=-0.1"][..],
            "--min-agreement -0.1: must be in [0, 1]",
        ),
        (
            &["--atol=-1"][..],
            "--atol -1: must be a finite number >= 0",
        ),
        (&["--batch-size", "0"][..], "--batch-size 0"),
    ] {
        let mut args = vec!["check", arg(&model), arg(&model), "--random", "2"];
        args.extend_from_slice(flags);
        let (code, stderr) = run_untouched(&args);
        assert_eq!(code, 2, "{flags:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
}

/// The metrics that come from single samples must be equal bit for bit; sums too, since
/// samples are summed in order whatever the batch.
fn assert_same_metrics(a: &serde_json::Value, b: &serde_json::Value, what: &str) {
    assert_eq!(a["samples"], b["samples"], "{what}");
    assert_eq!(a["accuracy"], b["accuracy"], "{what}");
    for (x, y) in a["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["outputs"].as_array().unwrap())
    {
        for key in ["name", "worst_sample", "top1_agreement"] {
            assert_eq!(x[key], y[key], "{what}: {key}");
        }
        for key in ["max_abs", "mean_abs", "rmse", "cosine"] {
            assert_close(&x[key], &y[key], &format!("{what}: {key}"));
        }
    }
}

#[test]
fn the_batch_size_picked_gives_the_metrics_of_batch_1() {
    let dir = tempfile::tempdir().unwrap();
    let (test_set, labels) = sample_test_set();
    let digits = [
        arg(&sample("dense.onnx")).to_string(),
        arg(&sample("reference_final.onnx")).to_string(),
        "--inputs".into(),
        arg(&test_set).to_string(),
        "--labels".into(),
        labels,
    ];
    let mut cases: Vec<(String, Vec<String>)> = vec![("digits".into(), digits.to_vec())];
    for name in ["tf2onnx_cnn.onnx", "paddle2onnx_cnn.onnx", "mlp_gemm.onnx"] {
        let model = fixture(name);
        let sub = dir.path().join(name);
        std::fs::create_dir(&sub).unwrap();
        let candidate = pruned(&model, &sub);
        cases.push((
            name.into(),
            vec![
                arg(&model).to_string(),
                arg(&candidate).to_string(),
                "--random".into(),
                "40".into(),
            ],
        ));
    }
    for (name, args) in cases {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend_from_slice(&["--min-cosine", "0", "--max-accuracy-drop", "1"]);
        let (code, picked) = check_report(&args);
        assert_eq!(code, 0, "{name}: {picked}");
        args.extend_from_slice(&["--batch-size", "1"]);
        let (_, one) = check_report(&args);
        assert_eq!(one["batch_size"], 1);
        assert_same_metrics(&picked, &one, &name);
    }
}

/// Regression (issue 15, item 14): a `[T, B, C]` output was split along its first axis, so the
/// metrics changed with --batch-size (mean abs 1.1746 / 1.1909 / 1.1838 at 1 / 3 / 4).
#[test]
fn an_output_whose_batch_axis_is_not_first_gives_the_same_metrics_at_every_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let model = check_fixture("time_batch_channels.onnx");
    let candidate = pruned(&model, dir.path());
    let inputs = check_fixture("time_batch_channels_inputs.npz");
    let mut reports = Vec::new();
    for batch in [None, Some("1"), Some("3"), Some("4")] {
        let mut args = vec![
            arg(&model),
            arg(&candidate),
            "--inputs",
            arg(&inputs),
            "--min-cosine",
            "0",
        ];
        if let Some(batch) = batch {
            args.extend_from_slice(&["--batch-size", batch]);
        }
        let (code, report) = check_report(&args);
        assert_eq!(code, 0, "{report}");
        assert_eq!(report["samples"], 7);
        reports.push(report);
    }
    for report in &reports[1..] {
        assert_same_metrics(&reports[0], report, "batch sizes");
    }
    assert_eq!(reports[2]["batch_size"], 3);
}
