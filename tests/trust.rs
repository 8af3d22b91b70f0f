//! Trust: a run writes only the files it was told to write, refuses what it cannot honour, and
//! validates everything before its first byte. Each test names the issue-15 item it guards and
//! compares every file of its directory before and after.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use onnx_prune_core::Model;

use crate::common::{arg, fixture, run, sample, stdout_ok};

/// Every file under `dir` (following no links): its bytes, or where it links to.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            files.insert(path, format!("-> {}", target.display()).into_bytes());
        } else if meta.is_dir() {
            files.extend(tree(&path));
        } else if meta.is_file() {
            files.insert(path.clone(), std::fs::read(&path).unwrap());
        } else {
            files.insert(path, b"(special file)".to_vec());
        }
    }
    files
}

/// Runs `args` in a state where `dir` must come out unchanged, expecting exit 2 and `needle`.
fn refused_leaving(dir: &Path, args: &[&str], needle: &str) {
    let before = tree(dir);
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: `{needle}` not in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(tree(dir), before, "{args:?} changed files");
}

/// A working copy of a fixture (and `extra` files beside it) in a new directory.
fn copied(name: &str, extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for file in [name].iter().chain(extra) {
        std::fs::copy(fixture(file), dir.path().join(file)).unwrap();
    }
    let model = dir.path().join(name);
    (dir, model)
}

/// Item 1: outputs that are not regular files (a FIFO, a device, a directory, `-`) are refused.
#[test]
fn outputs_that_are_not_regular_files_are_refused() {
    let (dir, model) = copied("mlp_gemm.onnx", &[]);
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let prune = ["prune", arg(&model), "--sparsity", "0.5"];
    let out = dir.path().join("out.onnx");
    for (flags, needle) in [
        (vec!["-o", arg(&fifo)], "is a FIFO"),
        (vec!["-o", arg(&out), "--report", arg(&fifo)], "is a FIFO"),
        (vec!["-o", "/dev/null"], "is a device"),
        (vec!["-o", arg(dir.path())], "is a directory"),
        (vec!["-o", "-"], "standard output"),
        (vec!["-o", arg(&out), "--report", "-"], "standard output"),
    ] {
        refused_leaving(dir.path(), &[&prune[..], &flags].concat(), needle);
    }
    let dev_null = std::fs::metadata("/dev/null").unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &dev_null.file_type()
    ));
}

/// Item 1: an output that is a symlink replaces the file it points to; the link stays a link.
#[test]
fn an_output_symlink_is_followed_and_stays_a_link() {
    let (dir, model) = copied("mlp_gemm.onnx", &[]);
    let real = dir.path().join("real.onnx");
    std::fs::write(&real, b"old").unwrap();
    let link = dir.path().join("latest.onnx");
    std::os::unix::fs::symlink("real.onnx", &link).unwrap();
    stdout_ok(&["prune", arg(&model), "--sparsity", "0.5", "-o", arg(&link)]);
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(
        Model::load(&real).is_ok(),
        "the link's target holds the model"
    );
}

/// Item 2: `--report` naming an input or another output is refused before anything runs.
#[test]
fn a_report_over_an_input_or_another_output_is_refused() {
    let (dir, model) = copied("external_data.onnx", &["external_data.bin"]);
    let out = dir.path().join("out.onnx");
    let data = dir.path().join("external_data.bin");
    let prune = ["prune", arg(&model), "--sparsity", "0.5", "-o", arg(&out)];
    let model_link = dir.path().join("link.onnx");
    std::os::unix::fs::symlink(&model, &model_link).unwrap();
    for (report, needle) in [
        (&model, "would overwrite the input"),
        (&model_link, "would overwrite the input"),
        (&data, "would overwrite the input"),
        (&out, "name the same file"),
    ] {
        refused_leaving(
            dir.path(),
            &[&prune[..], &["--report", arg(report)]].concat(),
            needle,
        );
    }
    let other = dir.path().join("other.onnx");
    std::fs::copy(fixture("mlp_gemm.onnx"), &other).unwrap();
    refused_leaving(
        dir.path(),
        &[
            "check",
            arg(&other),
            arg(&other),
            "--random",
            "2",
            "--report",
            arg(&other),
        ],
        "would overwrite the input",
    );
    let sample_dir = tempfile::tempdir().unwrap();
    for file in ["dense.onnx", "schedule.json"] {
        std::fs::copy(sample(file), sample_dir.path().join(file)).unwrap();
    }
    let masks = sample_dir.path().join("masks");
    std::fs::create_dir(&masks).unwrap();
    for entry in std::fs::read_dir(sample("masks")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, masks.join(path.file_name().unwrap())).unwrap();
    }
    let schedule = sample_dir.path().join("schedule.json");
    let mask = masks.join("epoch_010.safetensors");
    for report in [&schedule, &mask] {
        refused_leaving(
            sample_dir.path(),
            &[
                "replay",
                arg(&sample_dir.path().join("dense.onnx")),
                "--schedule",
                arg(&schedule),
                "-o",
                arg(&sample_dir.path().join("out.onnx")),
                "--report",
                arg(report),
            ],
            "would overwrite the input",
        );
    }
}

/// Item 3: `--in-place` on a content-store layout (`snap/m.onnx -> ../blobs/a`,
/// `snap/<data> -> ../blobs/b`, as the Hugging Face hub cache lays files out) replaces exactly
/// the two blobs it read, leaves the links as links and writes no stray file.
#[test]
fn in_place_through_a_content_store_writes_the_blobs_it_read() {
    let root = tempfile::tempdir().unwrap();
    let (blobs, snap) = (root.path().join("blobs"), root.path().join("snap"));
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::copy(fixture("external_data.onnx"), blobs.join("aaa")).unwrap();
    std::fs::copy(fixture("external_data.bin"), blobs.join("bbb")).unwrap();
    // Relative links, as the hub cache makes them: `snap/x -> ../blobs/<hash>`.
    let blob = |name: &str| Path::new("..").join("blobs").join(name);
    std::os::unix::fs::symlink(blob("aaa"), snap.join("m.onnx")).unwrap();
    std::os::unix::fs::symlink(blob("bbb"), snap.join("external_data.bin")).unwrap();
    let data_before = std::fs::read(blobs.join("bbb")).unwrap();
    stdout_ok(&[
        "prune",
        arg(&snap.join("m.onnx")),
        "--in-place",
        "--sparsity",
        "0.5",
        "--include",
        ".",
        "--min-params",
        "0",
    ]);
    let files: Vec<PathBuf> = tree(root.path()).into_keys().collect();
    assert_eq!(
        files,
        [
            blobs.join("aaa"),
            blobs.join("bbb"),
            snap.join("external_data.bin"),
            snap.join("m.onnx"),
        ]
    );
    assert!(std::fs::symlink_metadata(snap.join("m.onnx"))
        .unwrap()
        .is_symlink());
    assert_ne!(
        std::fs::read(blobs.join("bbb")).unwrap(),
        data_before,
        "the blob read is the blob pruned"
    );
    let inspected: serde_json::Value = serde_json::from_str(&stdout_ok(&[
        "inspect",
        arg(&snap.join("m.onnx")),
        "--json",
    ]))
    .unwrap();
    assert!(inspected["totals"]["zeros"].as_u64().unwrap() > 0);
}

/// Item 4: everything is validated before the first byte is written.
#[test]
fn bad_flags_and_unreadable_check_inputs_fail_before_anything_is_written() {
    let (dir, model) = copied("mlp_gemm.onnx", &[]);
    let missing_dir_report = dir.path().join("missing_dir/r.json");
    refused_leaving(
        dir.path(),
        &[
            "prune",
            arg(&model),
            "--sparsity",
            "0.5",
            "--in-place",
            "--report",
            arg(&missing_dir_report),
        ],
        "does not exist",
    );
    let (test_set, _) = crate::common::sample_test_set();
    let (sample_dir, dense) = {
        let dir = tempfile::tempdir().unwrap();
        let dense = dir.path().join("dense.onnx");
        std::fs::copy(sample("dense.onnx"), &dense).unwrap();
        (dir, dense)
    };
    let out = sample_dir.path().join("out.onnx");
    let prune = ["prune", arg(&dense), "--sparsity", "0.5", "-o", arg(&out)];
    let no_key = format!("{}:nokey", test_set.display());
    for (flags, needle) in [
        (
            vec!["--check", "--inputs", "/nonexistent/x.npz"],
            "/nonexistent/x.npz",
        ),
        (
            vec!["--check", "--inputs", arg(&test_set), "--labels", &no_key],
            "nokey",
        ),
    ] {
        refused_leaving(sample_dir.path(), &[&prune[..], &flags].concat(), needle);
    }
}

/// Item 5: replay's outputs are unambiguous.
#[test]
fn replay_output_flags_that_contradict_each_other_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (dense, schedule) = (sample("dense.onnx"), sample("schedule.json"));
    let replay = ["replay", arg(&dense), "--schedule", arg(&schedule)];
    let steps = dir.path().join("steps");
    let out = dir.path().join("out.onnx");
    for (flags, needle) in [
        (vec!["--out-dir", arg(&steps)], "--all-steps"),
        (
            vec!["--out-dir", arg(&steps), "-o", arg(&out)],
            "--all-steps",
        ),
        (
            vec!["--all-steps", "--out-dir", arg(&steps), "--step", "5"],
            "--step",
        ),
        (vec!["-o", "-"], "standard output"),
    ] {
        refused_leaving(dir.path(), &[&replay[..], &flags].concat(), needle);
    }
}

/// Item 6: sparse storage that cannot be honoured (external data) says so per tensor.
#[test]
fn sparse_storage_of_external_data_says_it_stays_dense() {
    let (dir, model) = copied("external_data.onnx", &["external_data.bin"]);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let report = out_dir.join("report.json");
    let out = run(&[
        "prune",
        arg(&model),
        "-o",
        arg(&out_dir.join("m.onnx")),
        "--sparsity",
        "0.9",
        "--include",
        ".",
        "--min-params",
        "0",
        "--storage",
        "sparse",
        "--report",
        arg(&report),
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept dense"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    for weight in report["weights"].as_array().unwrap() {
        assert!(
            weight["storage_note"]
                .as_str()
                .unwrap()
                .contains("external data"),
            "{weight}"
        );
    }
}

/// Item 7: weights stored as sparse tensors are pruned and stay sparse.
#[test]
fn sparse_tensors_are_pruned_and_stay_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let report = dir.path().join("r.json");
    stdout_ok(&[
        "prune",
        arg(&fixture("sparse_tensors.onnx")),
        "-o",
        arg(&out),
        "--sparsity",
        "0.8",
        "--include",
        "sp.weight",
        "--report",
        arg(&report),
    ]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let weight = &report["weights"][0];
    assert_eq!(weight["id"], "sp.weight");
    assert_eq!(weight["zeros_after"], 819, "round(0.8 x 1024)");
    assert_eq!(weight["stored_sparse"], true);
    let inspected: serde_json::Value =
        serde_json::from_str(&stdout_ok(&["inspect", arg(&out), "--json"])).unwrap();
    let listed = inspected["weights"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "sp.weight")
        .unwrap();
    assert_eq!(listed["zeros"], 819);
    assert_eq!(listed["storage"], "sparse");
}

/// Item 8: flags that would have no effect, or name nothing, are errors.
#[test]
fn flags_without_effect_are_errors() {
    let (dir, model) = copied("mlp_gemm.onnx", &[]);
    let out = dir.path().join("out.onnx");
    let prune = ["prune", arg(&model), "-o", arg(&out)];
    for (flags, needle) in [
        (
            vec!["--sparsity", "0.5", "--sparsity-for", "nomatch=0.2"],
            "matches none",
        ),
        (
            vec!["--sparsity", "0.5", "--sparsity-for", "fc=0.2=0.3"],
            "not a number",
        ),
        (vec!["--sparsity", "0.5", "--op-types", "Gemm,Foo"], "`Foo`"),
        (vec!["--sparsity", "0.5", "--pattern", "2:4"], "no effect"),
        (
            vec!["--pattern", "2:4", "--sparsity-for", "fc=0.2"],
            "no effect",
        ),
        (
            vec!["--sparsity", "0.5", "--dry-run", "--check"],
            "--dry-run",
        ),
        (
            vec!["--sparsity", "0.5", "--dry-run"],
            "--dry-run writes nothing: drop -o",
        ),
        (
            vec!["--sparsity", "0.5", "--inputs", "x.npz"],
            "--inputs only takes effect with --check; add --check or drop it",
        ),
        (vec!["--pattern", "2:3"], "fits none"),
        (
            vec!["--sparsity", "0.5", "--min-params", "100000"],
            "--min-params",
        ),
    ] {
        refused_leaving(dir.path(), &[&prune[..], &flags].concat(), needle);
    }
}

/// Item 8: a `--map` entry that names no mask key is reported.
#[test]
fn unused_map_entries_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("map.json");
    std::fs::write(&map, r#"{"no.such_mask": "fc1.weight"}"#).unwrap();
    let out = run(&[
        "replay",
        arg(&sample("dense.onnx")),
        "--schedule",
        arg(&sample("schedule.json")),
        "-o",
        arg(&dir.path().join("out.onnx")),
        "--map",
        arg(&map),
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`no.such_mask` names no mask key"));
}

/// Item 9: a reader that closes the pipe early ends the run quietly, exit 0.
#[test]
fn a_closed_pipe_is_not_a_panic() {
    let out = std::process::Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            &format!(
                "'{}' inspect --json '{}' | head -c 10 >/dev/null",
                env!("CARGO_BIN_EXE_onnx-prune"),
                fixture("light_resnet50.onnx").display()
            ),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Issue 23 item 11: messages read as one sentence, without runs of spaces left by a string
/// continuation.
#[test]
fn messages_hold_no_runs_of_spaces() {
    let (dir, model) = copied("mlp_gemm.onnx", &[]);
    let out = dir.path().join("out.onnx");
    let method = run(&[
        "prune",
        arg(&model),
        "-o",
        arg(&out),
        "--sparsity",
        "0.5",
        "--method",
        "wanda",
    ]);
    let stderr = String::from_utf8_lossy(&method.stderr);
    assert_eq!(method.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("give calibration samples with --calibration"),
        "{stderr}"
    );
    assert!(!stderr.contains("  "), "{stderr}");
}

/// Issue 23 item 6: `shrink --shape` counts MACs at that shape without `--check`.
#[test]
fn shrink_counts_macs_at_the_shape_given_without_check() {
    let (model, _, _) = crate::common::digits_cnn();
    let macs = |shape: &[&str]| {
        let args = [&["--sparsity", "0.5"][..], shape].concat();
        let totals = crate::shrink_selection::shrink_report(&model, &args)["totals"].clone();
        (
            totals["macs_before"].as_u64(),
            totals["macs_after"].as_u64(),
        )
    };
    let (one, four) = (macs(&[]), macs(&["--shape", "input=4,1,8,8"]));
    assert_eq!(four.0, one.0.map(|m| 4 * m));
    assert_eq!(four.1, one.1.map(|m| 4 * m));
    assert!(one.0.is_some(), "MACs counted");
}

/// Issue 23 item 13: `sensitivity --help` lists --report and --plot under an output heading,
/// not among the calibration flags.
#[test]
fn sensitivity_help_puts_its_outputs_under_their_own_heading() {
    let help = stdout_ok(&["sensitivity", "--help"]);
    let heading = help.find("\nOutput:\n").expect("an Output heading");
    for flag in ["--report <FILE>", "--plot <FILE.svg>"] {
        assert!(help.find(flag).unwrap() > heading, "{flag} in:\n{help}");
    }
    assert!(help.find("\nCalibration:\n").unwrap() < heading, "{help}");
}
