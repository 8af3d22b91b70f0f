//! Magnitude pruning: snapshots of every pattern on the fixtures, properties checked on the
//! written files against an independent sort, and determinism across thread counts.

use std::path::Path;

use onnx_prune_core::model::dense_bytes;
use onnx_prune_core::{discover, Model};
use proptest::prelude::*;

use crate::common::{arg, fixture, matmul_model, run, run_with_env, stdout_ok};

/// Every weight of a written model as f64 values, by id.
fn values(path: &Path) -> Vec<(String, Vec<i64>, Vec<f64>)> {
    let model = Model::load(path).unwrap();
    discover(&model)
        .iter()
        .filter(|w| model.tensors()[w.tensor].sparse.is_none())
        .map(|w| {
            let t = &model.tensors()[w.tensor];
            let bytes = dense_bytes(&model, t).unwrap();
            let n = t.elements as usize;
            let values = (0..n)
                .map(|i| {
                    f64::from_bits(onnx_prune_core::model::magnitude_key(t.dtype, &bytes, i))
                        * sign(t.dtype, &bytes, i)
                })
                .collect();
            (w.id.clone(), t.dims.clone(), values)
        })
        .collect()
}

fn sign(dtype: onnx_prune_core::DataType, bytes: &[u8], i: usize) -> f64 {
    let size = dtype.size().unwrap();
    if bytes[i * size + size - 1] & 0x80 != 0 {
        -1.0
    } else {
        1.0
    }
}

fn prune(model: &Path, out: &Path, flags: &[&str]) -> serde_json::Value {
    let report = out.with_extension("json");
    let mut args = vec![
        "prune",
        arg(model),
        "-o",
        arg(out),
        "--report",
        arg(&report),
    ];
    args.extend_from_slice(flags);
    stdout_ok(&args);
    serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap()
}

#[test]
fn every_pattern_on_every_fixture() {
    let patterns: [&[&str]; 4] = [
        &["--sparsity", "0.5"],
        &["--sparsity", "0.5", "--scope", "global"],
        &["--pattern", "2:4"],
        &["--pattern", "block:2x2", "--sparsity", "0.5"],
    ];
    insta::glob!("../fixtures", "*.onnx", |path| {
        let model = Model::load(path).unwrap();
        if !discover(&model).iter().any(|w| w.prunable) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut summary = Vec::new();
        for flags in patterns {
            let out = dir.path().join("out.onnx");
            let report = prune(path, &out, flags);
            // Invariants on the written file before the snapshot: pruned values were zeroed,
            // every other value kept, unselected weights untouched.
            let (before, after) = (values(path), values(&out));
            for ((id, _, a), (_, _, b)) in before.iter().zip(&after) {
                let changed = a.iter().zip(b).filter(|(x, y)| x != y).count();
                assert!(
                    a.iter().zip(b).all(|(x, y)| x == y || *y == 0.0),
                    "{id}: a value changed"
                );
                let selected = report["weights"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|w| w["id"] == *id);
                assert!(
                    selected || changed == 0,
                    "{id} was not selected but changed"
                );
            }
            summary.push(serde_json::json!({ "flags": flags.join(" "), "report": report }));
        }
        insta::assert_json_snapshot!(summary);
    });
}

#[test]
fn global_pruning_of_a_real_pytorch_export_matches_a_sort() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("digits_mlp_pytorch.onnx");
    let out = dir.path().join("pruned.onnx");
    let report = prune(&model, &out, &["--sparsity", "0.9", "--scope", "global"]);
    let before = values(&model);
    let after = values(&out);
    // The oracle: sort every selected magnitude, ties by (weight order, flat index).
    let selected = ["fc1.weight", "fc2.weight", "fc3.weight"];
    let mut all: Vec<(f64, usize, usize)> = Vec::new();
    for (w, (id, _, v)) in before.iter().enumerate() {
        if selected.contains(&id.as_str()) {
            all.extend(v.iter().enumerate().map(|(i, x)| (x.abs(), w, i)));
        }
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let k = (0.9 * all.len() as f64).round() as usize;
    for (rank, &(_, w, i)) in all.iter().enumerate() {
        assert_eq!(
            after[w].2[i] == 0.0,
            rank < k,
            "{} element {i}",
            before[w].0
        );
    }
    assert_eq!(
        report["totals"]["zeros_after"].as_u64().unwrap() as usize,
        k
    );
}

#[test]
fn two_of_four_groups_run_along_the_reduction_axis() {
    let dir = tempfile::tempdir().unwrap();
    // Gemm B with transB=1 ([out, in]: axis 1), MatMul [K, N] (axis 0), Conv (axis 1).
    for (fixture_name, id, axis) in [
        ("mlp_gemm.onnx", "fc1.weight", 1),
        ("mlp_gemm.onnx", "fc2.weight", 0),
        ("conv_constants.onnx", "Constant:/block/dw/w", 1),
    ] {
        let out = dir.path().join("out.onnx");
        let report = prune(
            &fixture(fixture_name),
            &out,
            &["--pattern", "2:4", "--include", &format!("^{id}$")],
        );
        let (_, dims, v) = values(&out).into_iter().find(|(i, _, _)| i == id).unwrap();
        let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let inner: usize = dims[axis + 1..].iter().product();
        let outer: usize = dims[..axis].iter().product();
        let skipped = &report["weights"][0]["skipped"];
        assert!(skipped.is_null(), "{id}");
        for o in 0..outer {
            for i in 0..inner {
                for g in (0..dims[axis]).step_by(4) {
                    let zeros = (g..g + 4)
                        .filter(|a| v[(o * dims[axis] + a) * inner + i] == 0.0)
                        .count();
                    assert!(zeros >= 2, "{id}: group at outer {o} inner {i} axis {g}");
                }
            }
        }
    }
    // A weight whose axis does not divide by 4 is left alone with a reason; when it is the
    // only one selected, nothing would be pruned, which is an error rather than a silent no-op.
    let out = run(&[
        "prune",
        arg(&fixture("conv_constants.onnx")),
        "-o",
        arg(&dir.path().join("stem.onnx")),
        "--pattern",
        "2:4",
        "--include",
        "^Constant:/stem/conv/w$",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("axis 1 has 3 elements, not a multiple of 4")
    );
}

#[test]
fn same_bytes_with_one_thread_and_with_many() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("digits_mlp_pytorch.onnx");
    let requests: [&[&str]; 5] = [
        &["--sparsity", "0.63", "--scope", "global"],
        &["--sparsity", "0.63", "--scope", "tensor"],
        &["--pattern", "2:4"],
        &["--pattern", "block:4x4", "--sparsity", "0.5"],
        &["--sparsity", "0.63", "--storage", "sparse"],
    ];
    let mut outputs = Vec::new();
    for threads in ["1", "2", "7"] {
        for (r, flags) in requests.iter().enumerate() {
            let out = dir.path().join(format!("out-{threads}-{r}.onnx"));
            let args = [&["prune", arg(&model), "-o", arg(&out)][..], flags].concat();
            assert!(run_with_env(&args, &[("RAYON_NUM_THREADS", threads)])
                .status
                .success());
            outputs.push((r, std::fs::read(&out).unwrap()));
        }
    }
    for (r, bytes) in &outputs {
        let first = &outputs.iter().find(|(s, _)| s == r).unwrap().1;
        assert_eq!(bytes, first, "{:?}", requests[*r]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Exactly round(S x n) zeros (or the existing ones), the smallest magnitudes zeroed first,
    /// ties by flat index, every kept value unchanged.
    #[test]
    fn exact_zero_counts_and_kept_values(
        (rows, cols, weight) in (1usize..24, 16usize..40).prop_flat_map(|(r, c)| {
            // Few distinct values so that ties and existing zeros are common.
            (Just(r), Just(c), prop::collection::vec(-4i8..=4, r * c))
        }),
        sparsity in 0.0f64..0.999,
    ) {
        let weight: Vec<f32> = weight.iter().map(|&v| f32::from(v) * 0.25).collect();
        let n = weight.len();
        prop_assume!(n >= 16);
        let dir = tempfile::tempdir().unwrap();
        let model = matmul_model(dir.path(), rows, cols, &weight);
        let out = dir.path().join("out.onnx");
        prune(&model, &out, &["--sparsity", &sparsity.to_string(), "--min-params", "0"]);
        let after = &values(&out)[0].2;
        let zeros_before = weight.iter().filter(|v| **v == 0.0).count();
        let k = (sparsity * n as f64).round() as usize;
        prop_assert_eq!(after.iter().filter(|v| **v == 0.0).count(), k.max(zeros_before));
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| weight[a].abs().total_cmp(&weight[b].abs()).then(a.cmp(&b)));
        for (rank, &i) in order.iter().enumerate() {
            let expected = if rank < k { 0.0 } else { f64::from(weight[i]) };
            prop_assert_eq!(after[i], expected, "element {}", i);
        }
    }
}

#[test]
fn sparse_storage_holds_the_same_model_smaller() {
    for name in ["mlp_gemm.onnx", "conv_constants.onnx", "if_subgraph.onnx"] {
        let dir = tempfile::tempdir().unwrap();
        let (dense, sparse) = (
            dir.path().join("dense.onnx"),
            dir.path().join("sparse.onnx"),
        );
        let flags = ["--sparsity", "0.8", "--include", ".", "--min-params", "0"];
        prune(&fixture(name), &dense, &flags);
        let report = prune(
            &fixture(name),
            &sparse,
            &[&flags[..], &["--storage", "sparse"]].concat(),
        );
        let moved = report["weights"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["stored_sparse"] == true)
            .count();
        assert!(moved >= 2, "{name}: {moved} weights moved");
        assert!(
            std::fs::metadata(&sparse).unwrap().len() < std::fs::metadata(&dense).unwrap().len()
        );
        // The same zeros, weight by weight, as `inspect` counts them.
        let zeros = |path: &Path| -> Vec<(String, u64)> {
            let json: serde_json::Value =
                serde_json::from_str(&stdout_ok(&["inspect", arg(path), "--json"])).unwrap();
            let mut zeros: Vec<(String, u64)> = json["weights"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| {
                    (
                        w["id"].as_str().unwrap().to_string(),
                        w["zeros"].as_u64().unwrap(),
                    )
                })
                .collect();
            zeros.sort();
            zeros
        };
        assert_eq!(zeros(&dense), zeros(&sparse), "{name}");
        // tract, which reads only dense initializers, runs both to the same outputs; it has no
        // Loop, and says so with exit 3 naming the node.
        if name == "if_subgraph.onnx" {
            let out = crate::common::run(&["check", arg(&dense), arg(&sparse), "--random", "4"]);
            assert_eq!(out.status.code(), Some(3));
            assert!(String::from_utf8_lossy(&out.stderr).contains("\"Loop_0\" Unimplemented(Loop)"));
            continue;
        }
        let (code, check) = crate::check::check_report(&[
            arg(&dense),
            arg(&sparse),
            "--random",
            "4",
            "--atol",
            "0",
        ]);
        assert_eq!(code, 0, "{name}: {check}");
        assert_eq!(check["outputs"][0]["max_abs"], 0.0, "{name}");
    }
}

#[test]
fn external_data_beside_the_input_gets_its_own_file_and_the_input_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["external_data.onnx", "external_data.bin"] {
        std::fs::copy(fixture(name), dir.path().join(name)).unwrap();
    }
    let model = dir.path().join("external_data.onnx");
    let out = dir.path().join("pruned.onnx");
    prune(&model, &out, &["--sparsity", "0.5"]);
    for name in ["external_data.onnx", "external_data.bin"] {
        assert_eq!(
            std::fs::read(dir.path().join(name)).unwrap(),
            std::fs::read(fixture(name)).unwrap()
        );
    }
    let pruned = Model::load(&out).unwrap();
    let files: Vec<&String> = pruned.external_files().keys().collect();
    assert_eq!(files, ["pruned.onnx.external_data.bin"]);
    for (id, _, values) in values(&out) {
        let zeros = values.iter().filter(|v| **v == 0.0).count();
        assert_eq!(zeros, values.len() / 2, "{id}");
    }
    // Writing it again elsewhere keeps the layout: same names, same offsets.
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("copy.onnx");
    prune(&out, &copy, &["--sparsity", "0"]);
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&out).unwrap());
    assert!(elsewhere
        .path()
        .join("pruned.onnx.external_data.bin")
        .exists());
}

/// Regression: two outputs of one external-data model written to one directory shared the data
/// file name, so the second write replaced the weights the first output still read. The second
/// now gets a data file named after itself; re-writing an output writes its data under the
/// other name (the old model reads the first until the new one is in place) and removes the
/// old data file.
#[test]
fn a_second_output_in_the_same_directory_leaves_the_first_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.onnx"), dir.path().join("b.onnx"));
    prune(&fixture("external_data.onnx"), &a, &["--sparsity", "0.25"]);
    let first = values(&a);
    prune(&fixture("external_data.onnx"), &b, &["--sparsity", "0.75"]);
    assert_eq!(values(&a), first, "a.onnx's weights changed");
    let files = |path: &Path| -> Vec<String> {
        Model::load(path)
            .unwrap()
            .external_files()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(files(&a), ["external_data.bin"]);
    assert_eq!(files(&b), ["b.onnx.external_data.bin"]);
    // The same output again: new data under the output's own name, the old data file gone.
    prune(&fixture("external_data.onnx"), &a, &["--sparsity", "0.5"]);
    assert_eq!(files(&a), ["a.onnx.external_data.bin"]);
    assert!(!dir.path().join("external_data.bin").exists());
    // a.onnx, b.onnx, their data files and their JSON reports.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 6);
}
