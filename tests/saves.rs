//! Saves under faults (issue 22): a model and its external data commit as one set, every output
//! is prepared before any is committed, the exit code says what happened, a changed input is
//! named, permissions are kept and checked before any work, and nothing is left behind.
//!
//! The runs stop at the writer's pause points (`ONNX_PRUNE_PAUSE`, debug builds only) so that a
//! test can signal, kill or change files at a known step; the full file system is a small tmpfs
//! (root only); permission tests run the binary as an unprivileged user (uid 65534) through
//! `setpriv` or `runuser` when the tests run as root. Each of these is skipped with a message
//! where the machine cannot do it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};

use crate::common::{arg, fixture, run, stdout_ok};

/// Every file under `dir`: its bytes.
pub(crate) fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            for (inner, bytes) in tree(&path) {
                files.insert(format!("{name}/{inner}"), bytes);
            }
        } else {
            files.insert(name, std::fs::read(&path).unwrap());
        }
    }
    files
}

/// The names in `dir`, sorted.
pub(crate) fn names(dir: &Path) -> Vec<String> {
    tree(dir).into_keys().collect()
}

/// Total zeros over the weights `inspect --json` lists.
fn zeros(model: &Path) -> u64 {
    let json: serde_json::Value =
        serde_json::from_str(&stdout_ok(&["inspect", arg(model), "--json"])).unwrap();
    json["totals"]["zeros"].as_u64().unwrap()
}

/// `fixture` and its external data file copied into a new directory; the model's path.
pub(crate) fn external_copy(dir: &Path) -> PathBuf {
    std::fs::copy(fixture("external_data.bin"), dir.join("external_data.bin")).unwrap();
    let model = dir.join("external_data.onnx");
    std::fs::copy(fixture("external_data.onnx"), &model).unwrap();
    model
}

/// Prunes every tensor (inline and external) of the external-data fixture.
pub(crate) const PRUNE_ALL: [&str; 6] =
    ["--sparsity", "0.5", "--include", ".", "--min-params", "0"];

/// A run of the binary stopped at a pause point.
struct Paused {
    child: Child,
    stderr: BufReader<ChildStderr>,
    /// What it printed on stderr so far.
    said: String,
}

/// Starts `args` and waits until the run pauses at `step`; `None` (with a message) in release
/// builds, which have no pause points. The child is waited for by [`Paused::finish`] or
/// [`Paused::kill`].
#[allow(clippy::zombie_processes)]
fn paused(args: &[&str], step: &str) -> Option<Paused> {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: pause points exist in debug builds only");
        return None;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_onnx-prune"))
        .args(args)
        .env("ONNX_PRUNE_PAUSE", step)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let status = child.wait().unwrap();
            panic!("{args:?} ended ({status}) before pausing at {step}: {said}");
        }
        said.push_str(&line);
        if line.contains(&format!("paused at {step}")) {
            return Some(Paused {
                child,
                stderr,
                said,
            });
        }
    }
}

impl Paused {
    /// Sends the signal `name` (`INT`, `TERM`) to the run.
    fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-s", name, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Reads stderr until a line holds `needle` (what the run says once a signal is handled).
    fn wait_for(&mut self, needle: &str) {
        loop {
            let mut line = String::new();
            assert!(
                self.stderr.read_line(&mut line).unwrap() > 0,
                "ended without saying `{needle}`: {}",
                self.said
            );
            self.said.push_str(&line);
            if line.contains(needle) {
                return;
            }
        }
    }

    /// Lets the run go on past its pause point and waits for its end: its exit code and all it
    /// said on stderr.
    fn resume(mut self) -> (Option<i32>, String) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        self.finish()
    }

    /// Waits for the run's end without letting it past its pause point (it ends on a signal):
    /// its exit code and all it said on stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        // Held open while waiting: `wait` closes stdin, which would let the run go on.
        let stdin = self.child.stdin.take();
        let status = self.child.wait().unwrap();
        drop(stdin);
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stderr, &mut rest);
        (status.code(), self.said + &rest)
    }

    /// Kills the run outright (SIGKILL), as the OOM killer or a power loss would stop it.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Issue 22 item 1: `--in-place` on a model with weights both inline and external, killed
/// between writing the new data and the commit, leaves the input's set whole; killed just
/// after the commit, the new set; the next run removes what the killed ones left.
#[test]
fn in_place_killed_before_or_after_the_commit_leaves_one_whole_set() {
    let dir = tempfile::tempdir().unwrap();
    let model = external_copy(dir.path());
    let before = tree(dir.path());
    let args = [&["prune", arg(&model), "--in-place"][..], &PRUNE_ALL].concat();
    let Some(run) = paused(&args, "staged") else {
        return;
    };
    run.kill();
    for (name, bytes) in &before {
        assert_eq!(&tree(dir.path())[name], bytes, "{name} changed");
    }
    assert_eq!(zeros(&model), 0, "the old model reads the old data");

    // Killed after the commit: the new model and its new data, whole.
    let run = paused(&args, "committed").unwrap();
    run.kill();
    let pruned = zeros(&model);
    assert!(pruned > 0);
    let model_bytes = std::fs::read(&model).unwrap();
    assert_ne!(model_bytes, before["external_data.onnx"]);

    // The next run cleans up after both: one model and the one data file it reads.
    stdout_ok(&[&["prune", arg(&model), "--in-place"][..], &PRUNE_ALL].concat());
    assert_eq!(
        zeros(&model),
        pruned,
        "pruning twice at 0.5 changes nothing more"
    );
    let left = names(dir.path());
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&"external_data.onnx".to_string()), "{left:?}");
}

/// Runs `args` under `strace`, killed (SIGKILL) on entry of its `n`th rename; `false` (with a
/// message) where strace is missing or may not trace.
fn killed_at_rename(args: &[&str], n: usize) -> bool {
    let renames = "rename,renameat,renameat2";
    let traced = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("trace={renames}"))
        .arg("-e")
        .arg(format!("inject={renames}:signal=SIGKILL:when={n}"))
        .arg(env!("CARGO_BIN_EXE_onnx-prune"))
        .args(args)
        .output();
    match traced {
        Ok(out) if !String::from_utf8_lossy(&out.stderr).contains("strace:") => true,
        _ => {
            eprintln!("skipped: strace is missing or may not trace here");
            false
        }
    }
}

/// What a model at `path` computes with: each tensor's name, shape and bytes, wherever they
/// are stored (so two sets that differ only in the names of their data files are equal).
fn read_set(path: &Path) -> Vec<(String, Vec<i64>, Vec<u8>)> {
    let model = onnx_prune_core::Model::load(path).unwrap();
    model
        .tensors()
        .iter()
        .map(|t| {
            let bytes = onnx_prune_core::model::dense_bytes(&model, t).unwrap();
            (t.name.clone(), t.dims.clone(), bytes.into_owned())
        })
        .collect()
}

/// Issue 22 item 1, without a pause point (any build, and main's binary): a run killed on
/// entry of each of its renames leaves at `OUT` the old model with its old data, or the new
/// model with its new data, never one with the other. On main the data files were renamed
/// first and the model last, so a kill at the second rename left the old model reading the
/// new data.
#[test]
fn a_kill_at_any_rename_leaves_the_old_set_or_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("shrink/graphs/external/residual_add.onnx");
    let out = dir.path().join("out.onnx");
    let shrink = |s: &'static str| ["shrink", arg(&input), "-o", arg(&out), "--sparsity", s];
    stdout_ok(&shrink("0.5"));
    let new = read_set(&out);
    for n in 1..=3 {
        stdout_ok(&shrink("0.25"));
        let old = read_set(&out);
        if !killed_at_rename(&shrink("0.5"), n) {
            return;
        }
        let now = read_set(&out);
        assert!(
            now == old || now == new,
            "killed at rename {n}: a mixed set"
        );
    }
    // In place, a model with one weight inline and one in external data: the old set has no
    // zeros, the new one zeros in both, a mixed one in only one of them.
    let model = inline_and_external(dir.path());
    let args = [&["prune", arg(&model), "--in-place"][..], &PRUNE_ALL].concat();
    for n in 1..=3 {
        if !killed_at_rename(&args, n) {
            return;
        }
        let zeros = zeros_per_weight(&model);
        assert!(
            zeros.iter().all(|&z| z == 0) || zeros.iter().all(|&z| z > 0),
            "killed at rename {n}: a mixed set, zeros {zeros:?}"
        );
    }
}

/// Zeros of each weight `inspect --json` lists.
fn zeros_per_weight(model: &Path) -> Vec<u64> {
    let json: serde_json::Value =
        serde_json::from_str(&stdout_ok(&["inspect", arg(model), "--json"])).unwrap();
    json["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["zeros"].as_u64().unwrap())
        .collect()
}

/// `dir/mixed.onnx`, `y = x · A · B` with `A` (8x8) inline and `B` (8x8) in `dir/mixed.bin`.
fn inline_and_external(dir: &Path) -> PathBuf {
    let values = |seed: f32| -> Vec<u8> {
        (0..64)
            .flat_map(|i| (seed + i as f32 * 0.37).sin().to_le_bytes())
            .collect()
    };
    let tensor = |name: &str| {
        let mut t = onnx_protobuf::TensorProto::new();
        t.name = name.into();
        t.dims = vec![8, 8];
        t.data_type = 1;
        t
    };
    let mut a = tensor("a");
    a.raw_data = values(1.0);
    let mut b = tensor("b");
    std::fs::write(dir.join("mixed.bin"), values(2.0)).unwrap();
    b.data_location = protobuf::EnumOrUnknown::from_i32(1);
    for (key, value) in [
        ("location", "mixed.bin"),
        ("offset", "0"),
        ("length", "256"),
    ] {
        let mut entry = onnx_protobuf::StringStringEntryProto::new();
        entry.key = key.into();
        entry.value = value.into();
        b.external_data.push(entry);
    }
    let node = |inputs: [&str; 2], output: &str| {
        let mut n = onnx_protobuf::NodeProto::new();
        n.op_type = "MatMul".into();
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![output.into()];
        n
    };
    let mut graph = onnx_protobuf::GraphProto::new();
    graph.node.push(node(["x", "a"], "h"));
    graph.node.push(node(["h", "b"], "y"));
    graph.initializer.push(a);
    graph.initializer.push(b);
    let path = dir.join("mixed.onnx");
    std::fs::write(&path, crate::common::model_bytes(graph)).unwrap();
    path
}

/// Issue 22 items 1 and 3: `shrink -o OUT` over an existing external-data output, interrupted
/// (SIGINT, SIGTERM) before the commit, exits 130 saying nothing was changed, and every file
/// is as it was, byte for byte; then the run goes through and the old data file goes.
#[test]
fn an_interrupted_shrink_over_an_external_output_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("shrink/graphs/external/residual_add.onnx");
    let out = dir.path().join("out.onnx");
    let shrink = |s: &'static str| ["shrink", arg(&input), "-o", arg(&out), "--sparsity", s];
    stdout_ok(&shrink("0.3"));
    let before = tree(dir.path());
    for signal in ["INT", "TERM"] {
        let Some(run) = paused(&shrink("0.5"), "staged") else {
            return;
        };
        run.signal(signal);
        let (code, stderr) = run.finish();
        assert_eq!(code, Some(130), "{stderr}");
        assert!(stderr.contains("nothing was changed"), "{stderr}");
        assert_eq!(tree(dir.path()), before, "SIG{signal} changed files");
    }
    stdout_ok(&shrink("0.5"));
    let after = names(dir.path());
    assert_eq!(after.len(), 2, "{after:?}");
    assert_ne!(tree(dir.path()), before);
}

/// Issue 22 item 1: a second run writing the same output while the first holds it fails at
/// once, saying so (exit 4), and the first completes.
#[test]
fn a_second_writer_of_the_same_output_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let model = external_copy(dir.path());
    let out = dir.path().join("out.onnx");
    let first = [&["prune", arg(&model), "-o", arg(&out)][..], &PRUNE_ALL].concat();
    let Some(holder) = paused(&first, "writing") else {
        return;
    };
    let second = run(&[
        "prune",
        arg(&model),
        "-o",
        arg(&out),
        "--sparsity",
        "0.7",
        "--include",
        ".",
        "--min-params",
        "0",
    ]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("another onnx-prune run is writing it"),
        "{stderr}"
    );
    let (code, stderr) = holder.resume();
    assert_eq!(code, Some(0), "{stderr}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout_ok(&["inspect", arg(&out), "--json"])).unwrap();
    let (zeros, params) = (
        json["totals"]["zeros"].as_u64().unwrap(),
        json["totals"]["params"].as_u64().unwrap(),
    );
    assert!(
        zeros.abs_diff(params / 2) <= 4,
        "{zeros} of {params}: the first run's model"
    );
}

/// Issue 22 item 3: an interruption after the commit is too late: the run finishes, says so,
/// and exits 0 with the new model in place.
#[test]
fn an_interruption_after_the_commit_finishes_and_says_it_came_too_late() {
    let dir = tempfile::tempdir().unwrap();
    let model = external_copy(dir.path());
    let args = [&["prune", arg(&model), "--in-place"][..], &PRUNE_ALL].concat();
    let Some(run) = paused(&args, "committed") else {
        return;
    };
    let mut run = run;
    run.signal("INT");
    run.wait_for("finishing");
    let (code, stderr) = run.resume();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("came after the outputs were put in place"),
        "{stderr}"
    );
    assert!(zeros(&model) > 0);
    assert_eq!(names(dir.path()).len(), 2, "the old data file removed");
}

/// A small tmpfs mounted at a directory for the test's life (root only).
struct Mounted(PathBuf);

impl Mounted {
    /// A full 64 KiB tmpfs at `at`, or `None` (with a message) where mounting is not allowed.
    fn full(at: &Path) -> Option<Mounted> {
        std::fs::create_dir_all(at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs", arg(at)])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return None;
        }
        let mounted = Mounted(at.to_path_buf());
        let mut filler = std::fs::File::create(at.join("filler")).unwrap();
        while filler.write_all(&[7u8; 4096]).is_ok() {}
        let _ = filler.sync_all();
        Some(mounted)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Issue 22 items 2 and 3: with the report's file system full, the model is not written
/// either (`-o`) and the input is not replaced (`--in-place`): exit 4, naming the report.
#[test]
fn a_full_disk_for_the_report_changes_nothing_and_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let model = external_copy(dir.path());
    let Some(_full) = Mounted::full(&dir.path().join("full")) else {
        return;
    };
    let report = dir.path().join("full/report.json");
    let before = tree(dir.path());
    let out = dir.path().join("out.onnx");
    for target in [&["-o", arg(&out)][..], &["--in-place"]] {
        let args = [
            &["prune", arg(&model)][..],
            target,
            &PRUNE_ALL,
            &["--report", arg(&report)],
        ]
        .concat();
        let result = run(&args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(stderr.contains("report.json"), "{stderr}");
        assert!(
            !stderr.contains(".onnx-prune-"),
            "a temporary name: {stderr}"
        );
        assert_eq!(tree(dir.path()), before, "{args:?} changed files");
    }
}

/// Issue 22 item 4: an input truncated while it is read ends the run with a message naming it
/// (not a bus error), exit 2, and nothing written; one rewritten with other bytes of the same
/// size is found before the commit.
#[test]
fn an_input_changed_while_it_is_read_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    let out = dir.path().join("out.onnx");
    let args = ["prune", arg(&model), "-o", arg(&out), "--sparsity", "0.5"];
    for change in ["truncate", "rewrite"] {
        std::fs::copy(fixture("mlp_gemm.onnx"), &model).unwrap();
        let Some(run) = paused(&args, "writing") else {
            return;
        };
        if change == "truncate" {
            std::fs::File::options()
                .write(true)
                .open(&model)
                .unwrap()
                .set_len(0)
                .unwrap();
        } else {
            let mut bytes = std::fs::read(&model).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            std::thread::sleep(std::time::Duration::from_millis(20));
            std::fs::write(&model, bytes).unwrap();
        }
        let (code, stderr) = run.resume();
        assert_eq!(code, Some(2), "{change}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{}: changed while onnx-prune was reading it",
                model.display()
            )),
            "{change}: {stderr}"
        );
        assert_eq!(names(dir.path()), ["model.onnx"], "{change} left files");
    }
}

/// Issue 22 item 6: a single-file output killed while being written leaves no temporary file
/// (it has no name until the commit), and the lock file it left goes with the next run.
#[test]
fn a_killed_single_file_save_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    std::fs::copy(fixture("mlp_gemm.onnx"), &model).unwrap();
    let out = dir.path().join("out.onnx");
    let args = ["prune", arg(&model), "-o", arg(&out), "--sparsity", "0.5"];
    let Some(run) = paused(&args, "staged") else {
        return;
    };
    run.kill();
    let left = names(dir.path());
    assert!(
        !left
            .iter()
            .any(|n| n.starts_with(".onnx-prune-") || n == "out.onnx"),
        "{left:?}"
    );
    stdout_ok(&args);
    assert_eq!(names(dir.path()), ["model.onnx", "out.onnx"]);
}

/// Issue 22 item 7: `-o new.onnx/` names a directory and is refused; a model read from a pipe
/// gets a message saying so.
#[test]
fn a_trailing_slash_and_a_piped_model_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("mlp_gemm.onnx");
    let slash = format!("{}/", dir.path().join("new.onnx").display());
    let result = run(&["prune", arg(&model), "-o", &slash, "--sparsity", "0.5"]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ends with `/`"), "{stderr}");
    assert!(names(dir.path()).is_empty());

    let mut child = Command::new(env!("CARGO_BIN_EXE_onnx-prune"))
        .args(["inspect", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(&std::fs::read(&model).unwrap());
    drop(stdin);
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a pipe or a device"), "{stderr}");
}
