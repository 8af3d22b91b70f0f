//! What `check` reads: float16 models and data of any float type, fixed dimensions, labels in
//! the forms exporters write, test-data files named after their input, and the exit code of
//! a replayed curve. Every command leaves every file but its outputs unchanged.

use std::path::{Path, PathBuf};

use ndarray_npy::NpzWriter;

use crate::check::check_report;
use crate::check_fix::{run_untouched, tree};
use crate::common::{arg, assert_close, fixture, run, sample, sample_test_set};

fn check_fixture(name: &str) -> PathBuf {
    fixture("check").join(name)
}

/// Regression (issue 15, item 15): float16 models could not be checked at all.
#[test]
fn float16_models_check_with_every_kind_of_input() {
    let model = check_fixture("fp16_mlp.onnx");
    let data = check_fixture("fp16_mlp_test_data");
    let fp16 = check_fixture("fp16_inputs.npz");
    let fp64 = check_fixture("fp64_inputs.npz");
    let cases: [(&[&str], usize, &str); 4] = [
        (&["--inputs", arg(&data)], 1, ""),
        (&["--random", "5"], 5, ""),
        (&["--inputs", arg(&fp16)], 12, ""),
        (
            &["--inputs", arg(&fp64)],
            12,
            "note: input `x`: F64 data cast to F16, the model's type",
        ),
    ];
    for (flags, samples, note) in cases {
        let mut args = vec!["check", arg(&model), arg(&model), "--atol", "0"];
        args.extend_from_slice(flags);
        let (code, stderr) = run_untouched(&args);
        assert_eq!(code, 0, "{flags:?}: {stderr}");
        assert!(stderr.contains(note), "{flags:?}: {stderr}");
        let (_, report) = check_report(&args[1..]);
        assert_eq!(report["samples"], samples, "{flags:?}");
        assert_eq!(report["outputs"][0]["max_abs"], 0.0, "{flags:?}");
    }
    // float64 data (numpy's default) for a float32 model is cast the same way.
    let dir = tempfile::tempdir().unwrap();
    let (test_set, _) = sample_test_set();
    let pixels: ndarray::Array2<f32> =
        ndarray_npy::NpzReader::new(std::fs::File::open(&test_set).unwrap())
            .unwrap()
            .by_name("pixels")
            .unwrap();
    let fp64_set = dir.path().join("fp64.npz");
    let mut npz = NpzWriter::new(std::fs::File::create(&fp64_set).unwrap());
    npz.add_array("pixels", &pixels.mapv(f64::from)).unwrap();
    npz.finish().unwrap();
    let dense = sample("dense.onnx");
    let (code, a) = check_report(&[
        arg(&dense),
        arg(&sample("reference_final.onnx")),
        "--inputs",
        arg(&fp64_set),
        "--min-cosine",
        "0",
    ]);
    assert_eq!(code, 0, "{a}");
    assert_eq!(
        a["notes"][0],
        "input `pixels`: F64 data cast to F32, the model's type"
    );
}

/// Regression (issue 15, item 16): --random drew a batch axis the model does not have, so
/// `pytorch_mm` exited 3 though its test data runs.
#[test]
fn random_inputs_honour_the_models_fixed_dimensions() {
    let model = fixture("pytorch_mm.onnx");
    let (code, report) = check_report(&[arg(&model), arg(&model), "--random", "3", "--atol", "0"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["samples"], 3);
    let (code, stderr) = run_untouched(&[
        "check",
        arg(&model),
        arg(&model),
        "--random",
        "3",
        "--shape",
        "0=2,4",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--shape 0: dimension 1 is 4, but the model fixes it at 3 [2, 3]"),
        "{stderr}"
    );
}

/// Regression (issue 15, item 17): every random sample was drawn before the first run. Samples
/// are now drawn per run, each from its own seed, so a sample is the same in any batch.
#[test]
fn random_samples_do_not_depend_on_the_batch_they_run_in() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("mlp_gemm.onnx");
    let candidate = dir.path().join("pruned.onnx");
    assert!(run(&[
        "prune",
        arg(&model),
        "-o",
        arg(&candidate),
        "--sparsity",
        "0.7"
    ])
    .status
    .success());
    let report = |batch: &str| {
        check_report(&[
            arg(&model),
            arg(&candidate),
            "--random",
            "10",
            "--seed",
            "4",
            "--batch-size",
            batch,
            "--min-cosine",
            "0",
        ])
        .1
    };
    let (one, seven) = (report("1"), report("7"));
    assert_eq!(
        one["outputs"][0]["worst_sample"],
        seven["outputs"][0]["worst_sample"]
    );
    assert_close(
        &one["outputs"][0]["max_abs"],
        &seven["outputs"][0]["max_abs"],
        "max_abs",
    );
}

/// Regression (issue 15, item 18): `replay --all-steps --check` exited 0 when every step
/// failed its tolerance.
#[test]
fn all_steps_exits_1_when_the_last_step_fails_and_marks_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps");
    let report = dir.path().join("curve.json");
    let (test_set, labels) = sample_test_set();
    let (code, stderr) = run_untouched(&[
        "replay",
        arg(&sample("dense.onnx")),
        "--schedule",
        arg(&sample("schedule.json")),
        "--all-steps",
        "--out-dir",
        arg(&steps),
        "--report",
        arg(&report),
        "--check",
        "--inputs",
        arg(&test_set),
        "--labels",
        &labels,
        "--min-cosine",
        "0.999",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the last step failed its check"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let steps = json["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 8);
    assert_eq!(steps.last().unwrap()["passed"], false);
    for step in steps {
        assert_eq!(step["passed"], step["check"]["passed"]);
    }
}

fn write_npz(path: &Path, key: &str, labels: ndarray::ArrayD<i64>) {
    let mut npz = NpzWriter::new(std::fs::File::create(path).unwrap());
    npz.add_array(key, &labels).unwrap();
    npz.finish().unwrap();
}

fn sample_labels() -> ndarray::Array1<i64> {
    let (test_set, _) = sample_test_set();
    ndarray_npy::NpzReader::new(std::fs::File::open(test_set).unwrap())
        .unwrap()
        .by_name("labels")
        .unwrap()
}

/// Regression (issue 15, item 19): labels without `:KEY` blamed `.npy`, one-hot labels were
/// "4500 labels for 450 samples", labels past the classes gave 0% silently.
#[test]
fn labels_are_read_in_the_forms_exporters_write() {
    let dir = tempfile::tempdir().unwrap();
    let (test_set, labels) = sample_test_set();
    let dense = sample("dense.onnx");
    let base = [
        "check",
        arg(&dense),
        arg(&dense),
        "--inputs",
        arg(&test_set),
    ];
    let (code, stderr) = run_untouched(&[&base[..], &["--labels", arg(&test_set)]].concat());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--labels: a .npz holds several arrays: name the one with the labels as")
            && stderr.contains("test_set.npz:KEY (it holds pixels, labels)"),
        "{stderr}"
    );
    let (code, stderr) = run_untouched(
        &[
            &base[..],
            &["--labels", &format!("{}:nokey", test_set.display())],
        ]
        .concat(),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--labels: has no array `nokey` (it holds pixels, labels)"),
        "{stderr}"
    );

    let integers = sample_labels();
    let mut one_hot = ndarray::Array2::<i64>::zeros((integers.len(), 10));
    for (row, &label) in integers.iter().enumerate() {
        one_hot[[row, label as usize]] = 1;
    }
    let one_hot_file = dir.path().join("one_hot.npz");
    write_npz(&one_hot_file, "y", one_hot.into_dyn());
    let spec = format!("{}:y", one_hot_file.display());
    let (code, with_one_hot) = check_report(&[&base[1..], &["--labels", &spec]].concat());
    assert_eq!(code, 0, "{with_one_hot}");
    let (_, with_integers) = check_report(&[&base[1..], &["--labels", &labels]].concat());
    assert_eq!(with_one_hot["accuracy"], with_integers["accuracy"]);
    assert!(with_one_hot["notes"][0]
        .as_str()
        .unwrap()
        .contains("labels are one-hot rows [450, 10]"));

    let mut outside = integers.clone();
    outside[3] = 10;
    let outside_file = dir.path().join("outside.npz");
    write_npz(&outside_file, "labels", outside.into_dyn());
    let before = tree(dir.path());
    let (code, stderr) = run_untouched(
        &[
            &base[..],
            &["--labels", &format!("{}:labels", outside_file.display())],
        ]
        .concat(),
    );
    assert_eq!(tree(dir.path()), before);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "--labels: label 10 of sample 3 is outside the 10 classes (0..9) of output `logits`"
        ),
        "{stderr}"
    );
}

/// Regression (issue 15, item 19): test-data files were matched by position even when their
/// tensor names another input.
#[test]
fn test_data_files_feed_the_input_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("test_data_set_0");
    std::fs::create_dir(&set).unwrap();
    let original = fixture("pytorch_mm_test_data").join("test_data_set_0");
    // input_0.pb now holds input `1` and input_1.pb input `0`, each named.
    for (from, to, name) in [
        ("input_1.pb", "input_0.pb", "1"),
        ("input_0.pb", "input_1.pb", "0"),
    ] {
        use protobuf::Message;
        let mut tensor = onnx_protobuf::TensorProto::parse_from_bytes(
            &std::fs::read(original.join(from)).unwrap(),
        )
        .unwrap();
        tensor.name = name.into();
        std::fs::write(set.join(to), tensor.write_to_bytes().unwrap()).unwrap();
    }
    let model = fixture("pytorch_mm.onnx");
    let (code, report) = check_report(&[
        arg(&model),
        arg(&model),
        "--inputs",
        arg(dir.path()),
        "--atol",
        "0",
    ]);
    assert_eq!(code, 0, "{report}");
    // A name that matches no input falls back to the position, and errors say both.
    use protobuf::Message;
    let mut tensor = onnx_protobuf::TensorProto::parse_from_bytes(
        &std::fs::read(original.join("input_1.pb")).unwrap(),
    )
    .unwrap();
    tensor.name = "weights".into();
    std::fs::write(set.join("input_1.pb"), tensor.write_to_bytes().unwrap()).unwrap();
    let (code, stderr) = run_untouched(&[
        "check",
        arg(&model),
        arg(&model),
        "--inputs",
        arg(dir.path()),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "input_1.pb: tensor `weights` feeds input `1` (by position), which another file of this data set already feeds"
        ),
        "{stderr}"
    );
}

/// Regression (issue 15, item 4): `prune -o OUT --check` with a bad label key wrote OUT, then
/// exited 2. The check's flags and files are now read before anything is written.
#[test]
fn bad_check_input_is_refused_before_the_output_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pruned.onnx");
    let (test_set, _) = sample_test_set();
    let nokey = format!("{}:nokey", test_set.display());
    let (code, stderr) = run_untouched(&[
        "prune",
        arg(&sample("dense.onnx")),
        "-o",
        arg(&out),
        "--sparsity",
        "0.5",
        "--check",
        "--inputs",
        arg(&test_set),
        "--labels",
        &nokey,
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("has no array `nokey`"), "{stderr}");
    assert!(tree(dir.path()).is_empty(), "something was written");
}
