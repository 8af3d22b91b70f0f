//! `shrink`: the channel groups of each kind of graph, masked equivalence of random removals,
//! dead channels found exactly, the report, external data, and bad input.

use std::path::{Path, PathBuf};

use onnx_prune_core::shrink::{self, Request, Side};
use onnx_prune_core::Model;

use crate::common::{arg, fixture, run, stdout_ok};

pub(crate) fn graph(name: &str) -> PathBuf {
    fixture("shrink/graphs").join(name)
}

/// Real exports among the top-level fixtures that reach the shrink analysis.
const REAL: &[&str] = &[
    "conv_constants.onnx",
    "light_resnet50.onnx",
    "light_squeezenet.onnx",
    "paddle2onnx_cnn.onnx",
    "pytorch_chunk.onnx",
    "pytorch_conv2d.onnx",
    "tf2onnx_cnn.onnx",
    "digits_mlp_pytorch.onnx",
    "mlp_gemm.onnx",
];

fn describe(path: &Path) -> String {
    shrink::analyze(&Model::load(path).unwrap())
        .unwrap()
        .describe()
}

#[test]
fn groups_of_each_kind_of_graph() {
    insta::glob!("../fixtures/shrink/graphs", "*.onnx", |path| {
        insta::assert_snapshot!(describe(path));
    });
}

#[test]
fn groups_of_the_real_shrink_fixtures() {
    insta::glob!("../fixtures/shrink/real", "*.onnx", |path| {
        // Bad input on purpose: refused in `bad_input_exits_2_and_writes_nothing`.
        if !path.ends_with("inconsistent_shapes.onnx") {
            insta::assert_snapshot!(describe(path));
        }
    });
}

#[test]
fn groups_of_real_exports() {
    for name in REAL {
        insta::assert_snapshot!(format!("real_{name}"), describe(&fixture(name)));
    }
}

/// A removal of about 40% of each open group's units, never all of them (a small LCG: the
/// same removals on every run).
fn random_removal(analysis: &shrink::Analysis, seed: u64) -> Vec<Vec<usize>> {
    let mut state = seed;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    analysis
        .groups
        .iter()
        .map(|g| {
            if !g.blocked.is_empty() {
                return Vec::new();
            }
            let mut units: Vec<usize> = (0..g.period).filter(|_| next() < 0.4).collect();
            if units.len() == g.period {
                units.pop();
            }
            (0..g.channels)
                .filter(|c| units.contains(&(c % g.period)))
                .collect()
        })
        .collect()
}

/// Runs both models through tract on random inputs; they must agree to float rounding.
fn assert_same_outputs(reference: &Path, candidate: &Path) {
    let out = run(&[
        "check",
        arg(reference),
        arg(candidate),
        "--random",
        "3",
        "--seed",
        "5",
        "--atol",
        "1e-4",
        "--rtol",
        "1e-4",
    ]);
    assert!(
        out.status.success(),
        "{} vs {}: {}{}",
        reference.display(),
        candidate.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn every_graph() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixture("shrink/graphs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .chain(REAL.iter().map(|n| fixture(n)))
        .collect();
    paths.sort();
    paths
}

#[test]
fn shrunk_models_compute_what_the_masked_originals_compute() {
    let dir = tempfile::tempdir().unwrap();
    let mut shrunk_any = 0;
    for path in every_graph() {
        let model = Model::load(&path).unwrap();
        let analysis = shrink::analyze(&model).unwrap();
        for seed in [1, 2] {
            let removed = random_removal(&analysis, seed);
            if removed.iter().all(Vec::is_empty) {
                continue;
            }
            shrunk_any += 1;
            let (bytes, totals) = shrink::shrink_bytes(&model, &analysis, &removed, &[]).unwrap();
            assert!(
                totals.params_after < totals.params_before,
                "{}",
                path.display()
            );
            let masked =
                shrink::zeroed_bytes(&model, &analysis, &removed, Side::Consumers).unwrap();
            let (a, b) = (
                dir.path().join("masked.onnx"),
                dir.path().join("shrunk.onnx"),
            );
            std::fs::write(&a, masked).unwrap();
            std::fs::write(&b, bytes).unwrap();
            assert_same_outputs(&a, &b);
        }
    }
    assert!(shrunk_any >= 16, "only {shrunk_any} removals were tried");
}

/// Channels whose weights were zeroed on one side, then shrunk without --sparsity.
fn dead_after_zeroing(path: &Path, side: Side, dir: &Path) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
    let model = Model::load(path).unwrap();
    let analysis = shrink::analyze(&model).unwrap();
    let removed = random_removal(&analysis, 3);
    let zeroed = dir.join("zeroed.onnx");
    std::fs::write(
        &zeroed,
        shrink::zeroed_bytes(&model, &analysis, &removed, side).unwrap(),
    )
    .unwrap();
    let out = dir.join("dead_removed.onnx");
    let status = run(&["shrink", arg(&zeroed), "-o", arg(&out)]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_same_outputs(&zeroed, &out);
    let z = Model::load(&zeroed).unwrap();
    let found = shrink::choose(&z, &shrink::analyze(&z).unwrap(), &Request::default()).unwrap();
    (removed, found)
}

#[test]
fn dead_channels_are_removed_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for path in every_graph() {
        let analysis = shrink::analyze(&Model::load(&path).unwrap()).unwrap();
        if analysis.open().next().is_none() {
            continue;
        }
        // Unread channels (consumer weights zero) are dead whatever the ops on the way.
        let (removed, found) = dead_after_zeroing(&path, Side::Consumers, dir.path());
        for (g, (r, f)) in removed.iter().zip(&found).enumerate() {
            assert!(
                r.iter().all(|c| f.contains(c)),
                "{} group {g}: {r:?} not in {f:?}",
                path.display()
            );
        }
        // Channels made zero are dead when every op on the way maps 0 to 0: in these graphs
        // (no normalisation shift, no added constant) every such group.
        let (removed, found) = dead_after_zeroing(&path, Side::Producers, dir.path());
        let name = path.file_name().unwrap().to_str().unwrap();
        if MAPS_ZERO_TO_ZERO.contains(&name) {
            for (g, group) in analysis.groups.iter().enumerate() {
                if group.not_zero.is_none() {
                    let (r, f) = (&removed[g], &found[g]);
                    assert!(
                        r.iter().all(|c| f.contains(c)),
                        "{name} group {g}: {r:?} not in {f:?}"
                    );
                }
            }
        }
    }
}

/// Graphs whose groups carry no per-channel shift (BatchNormalization beta, added constants).
const MAPS_ZERO_TO_ZERO: &[&str] = &[
    "concat.onnx",
    "conv_transpose.onnx",
    "digits_mlp_pytorch.onnx",
    "flatten_gemm.onnx",
    "grouped.onnx",
    "mlp_gemm.onnx",
    "split.onnx",
    "tf2onnx_cnn.onnx",
];

#[test]
fn batch_norm_with_a_shift_makes_zeroed_channels_constant_not_dead() {
    // Regression guard: a BN with beta != 0 maps 0 to beta - mean * scale / sqrt(var + eps),
    // so zeroed conv filters before it leave constant channels that must stay.
    let dir = tempfile::tempdir().unwrap();
    let (removed, found) =
        dead_after_zeroing(&graph("residual_add.onnx"), Side::Producers, dir.path());
    assert!(removed.iter().any(|r| !r.is_empty()));
    assert!(found.iter().all(Vec::is_empty), "{found:?}");
}

#[test]
fn report_of_a_shrink() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("out.onnx"), dir.path().join("r.json"));
    let model = graph("residual_add.onnx");
    stdout_ok(&[
        "shrink",
        arg(&model),
        "-o",
        arg(&out),
        "--sparsity",
        "0.5",
        "--round-to",
        "2",
        "--report",
        arg(&report),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    for g in json["groups"].as_array().unwrap() {
        let (before, after) = (
            g["channels_before"].as_u64().unwrap(),
            g["channels_after"].as_u64().unwrap(),
        );
        assert_eq!(
            before - after,
            g["removed"].as_array().unwrap().len() as u64
        );
        assert!(after >= 1 && (after % 2 == 0 || after == before));
    }
    // MACs at 1x3x8x8, counted by hand: 64 positions x (8 x 27 + 8 x 72 + 4 x 72) before; with
    // 4 of the 8 residual channels left, 64 x (4 x 27 + 4 x 36 + 4 x 36) after.
    assert_eq!(json["totals"]["macs_before"], 69120);
    assert_eq!(json["totals"]["macs_after"], 25344);
    insta::assert_json_snapshot!(json);
}

#[test]
fn external_data_shrinks_like_inline_data() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("inline.onnx"),
        dir.path().join("ext/out.onnx"),
    );
    std::fs::create_dir_all(dir.path().join("ext")).unwrap();
    for (input, output) in [
        (graph("residual_add.onnx"), &a),
        (graph("external/residual_add.onnx"), &b),
    ] {
        stdout_ok(&[
            "shrink",
            arg(&input),
            "-o",
            arg(output),
            "--sparsity",
            "0.5",
        ]);
    }
    assert!(dir.path().join("ext/weights.bin").exists());
    assert_eq!(describe(&a), describe(&b));
    assert_same_outputs(&a, &b);
}

/// Runs a shrink that must fail with exit 2, mentioning `needle`, and write nothing.
pub fn refused(args: &[&str], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let mut all = vec!["shrink"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", arg(&out)]);
    let result = run(&all);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert!(!out.exists(), "{args:?} wrote its output");
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let model = graph("residual_add.onnx");
    let model = arg(&model);
    refused(&[model, "--sparsity", "1"], "--sparsity must be in [0, 1)");
    refused(&[model, "--sparsity=-0.1"], "--sparsity must be in [0, 1)");
    refused(&[model, "--round-to", "0"], "--round-to must be at least 1");
    // Flags that select nothing or change nothing are mistakes, not no-ops.
    refused(
        &[model, "--include", "no such node"],
        "--include `no such node` matches no channel group's producer",
    );
    refused(
        &[model, "--sparsity", "0.5", "--exclude", "Conv_9999"],
        "--exclude `Conv_9999` matches no channel group's producer",
    );
    refused(
        &[model, "--sparsity", "0.5", "--round-to", "4096"],
        "--round-to 4096 keeps every channel of every selected group",
    );
    refused(
        &[model, "--scope", "global"],
        "--scope has no effect without --sparsity",
    );
    let conv = fixture("pytorch_conv2d.onnx");
    refused(&[arg(&conv)], "blocked by graph output");
    let bad = graph("bad/inconsistent.onnx");
    refused(&[arg(&bad)], "node `Conv_");
    // A real export with one weight widened: onnx.checker passes it, tract and onnxruntime
    // refuse it.
    let widened = fixture("shrink/real/inconsistent_shapes.onnx");
    refused(
        &[arg(&widened)],
        "node `/layer1/conv2/Conv` (Conv): inconsistent shapes",
    );
}

pub(crate) fn real(name: &str) -> PathBuf {
    fixture("shrink/real").join(name)
}

/// Runs both models through tract on the fixture's own inputs; they must agree to float
/// rounding.
pub fn assert_same_on(reference: &Path, candidate: &Path, inputs: &Path) {
    let out = run(&[
        "check",
        arg(reference),
        arg(candidate),
        "--inputs",
        arg(inputs),
        "--atol",
        "1e-4",
        "--rtol",
        "1e-4",
    ]);
    assert!(
        out.status.success(),
        "{}: {}{}",
        candidate.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dead_channels_of_real_exports_go_and_outputs_stay() {
    // expected.json (written by fixtures/shrink/real/generate.py) records, per export with
    // channels zeroed on purpose or pruned by ln_structured in training, the parameters left
    // once exactly the dead channels are removed.
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(real("expected.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (name, facts) in expected["models"].as_object().unwrap() {
        let Some(after) = facts["parameters_after_removing_dead"].as_u64() else {
            continue;
        };
        let before = facts["parameters"].as_u64().unwrap();
        let (input, output) = (real(name), dir.path().join(name));
        let report = dir.path().join("report.json");
        stdout_ok(&[
            "shrink",
            arg(&input),
            "-o",
            arg(&output),
            "--report",
            arg(&report),
        ]);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let totals = &json["totals"];
        let removed =
            totals["params_before"].as_u64().unwrap() - totals["params_after"].as_u64().unwrap();
        if name == "paddle2onnx_cnn_dead.onnx" {
            // The conv channels' group is blocked: Paddle2ONNX flattens with a Reshape whose
            // target comes from Shape/Slice/Concat, a shape computation. The linear_0 columns
            // 7, 30, 41 go: 3 x 512 weights, 3 biases and 3 x 10 rows of linear_1.
            assert_eq!(removed, 3 * 512 + 3 + 3 * 10, "{name}");
        } else {
            assert_eq!(removed, before - after, "{name}");
        }
        let inputs = real(facts["inputs"].as_str().unwrap());
        assert_same_on(&input, &output, &inputs);
        checked += 1;
    }
    assert!(checked >= 8, "{checked}");
}

#[test]
fn shrunk_real_exports_compute_what_the_masked_originals_compute() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "resnet_tiny.onnx",
        "resnet_tiny_bn.onnx",
        "c2f_tiny.onnx",
        "mobilenet_tiny.onnx",
        "decoder_tiny.onnx",
        "flatten_gemm.onnx",
        "digits_cnn.onnx",
    ] {
        let model = Model::load(real(name)).unwrap();
        let analysis = shrink::analyze(&model).unwrap();
        let removed = random_removal(&analysis, 7);
        assert!(removed.iter().any(|r| !r.is_empty()), "{name}");
        let (bytes, _) = shrink::shrink_bytes(&model, &analysis, &removed, &[]).unwrap();
        let masked = shrink::zeroed_bytes(&model, &analysis, &removed, Side::Consumers).unwrap();
        let (a, b) = (
            dir.path().join("masked.onnx"),
            dir.path().join("shrunk.onnx"),
        );
        std::fs::write(&a, masked).unwrap();
        std::fs::write(&b, bytes).unwrap();
        assert_same_outputs(&a, &b);
    }
}

#[test]
fn c2f_chunk_groups_follow_split_offsets() {
    // Torch-Pruning #146/#147: YOLOv8's C2f chunk. cv1's 16 channels split 8 + 8; the residual
    // Adds couple the second half with m.0.cv2 and m.1.cv2 (a whole group joining channels
    // 8..16), and the Concat feeds all of them to cv2.
    let analysis = shrink::analyze(&Model::load(real("c2f_tiny.onnx")).unwrap()).unwrap();
    let cv1 = analysis
        .groups
        .iter()
        .find(|g| g.producers.contains(&"node_Conv_118".to_string()))
        .unwrap();
    assert_eq!(cv1.channels, 16);
    assert_eq!(cv1.period, 16);
    assert!(cv1.blocked.is_empty(), "{:?}", cv1.blocked);
    for p in ["node_Conv_122", "node_Conv_126"] {
        assert!(
            cv1.producers.contains(&p.to_string()),
            "{:?}",
            cv1.producers
        );
    }
    insta::assert_snapshot!(analysis.describe());
}

#[test]
fn check_compares_outputs_and_times_both_models() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("out.onnx"), dir.path().join("r.json"));
    let model = real("digits_cnn_ln_structured.onnx");
    let test_set = real("digits_cnn_test_set.npz");
    let labels = format!("{}:labels", arg(&test_set));
    let stdout = stdout_ok(&[
        "shrink",
        arg(&model),
        "-o",
        arg(&out),
        "--report",
        arg(&report),
        "--check",
        "--inputs",
        arg(&test_set),
        "--labels",
        &labels,
    ]);
    assert!(stdout.contains("tract latency per sample"), "{stdout}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["check"]["passed"], true);
    let accuracy = &json["check"]["accuracy"];
    assert_eq!(accuracy["reference"], accuracy["candidate"]);
    for key in ["seconds_per_sample_before", "seconds_per_sample_after"] {
        assert!(json["latency"][key].as_f64().unwrap() > 0.0, "{key}");
    }
    assert_eq!(json["totals"]["params_after"], 18610);
}
