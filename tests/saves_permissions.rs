//! Saves under faults (issue 22), permissions: new data files keep the mode of the data they come
//! from, and a run as an unprivileged user (uid 65534, through `setpriv` or `runuser` when the
//! tests run as root: root ignores permission bits) is refused an input or output it may not
//! write before any work, and nothing changes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{arg, fixture, run, stdout_ok};
use crate::saves::{external_copy, names, tree, PRUNE_ALL};

/// Issue 22 item 5: new data files take the mode of the data file they replace (`--in-place`)
/// or derive from (`-o`): private weights stay private.
#[test]
fn new_data_files_keep_the_mode_of_the_data_they_come_from() {
    let dir = tempfile::tempdir().unwrap();
    let model = external_copy(dir.path());
    let data = dir.path().join("external_data.bin");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("out.onnx");
    stdout_ok(&[&["prune", arg(&model), "-o", arg(&out)][..], &PRUNE_ALL].concat());
    stdout_ok(&[&["prune", arg(&model), "--in-place"][..], &PRUNE_ALL].concat());
    for dir in [dir.path(), &out_dir] {
        for name in names(dir) {
            if !name.ends_with(".bin") {
                continue;
            }
            let mode = std::fs::metadata(dir.join(&name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }
}

/// The unprivileged user the permission tests run as.
const NOBODY: u32 = 65534;

/// Runs the binary with `args` as an unprivileged user when the tests run as root (through
/// `setpriv`, else `runuser`), directly otherwise; `None` (with a message) where neither
/// works.
fn run_unprivileged(args: &[&str]) -> Option<Output> {
    let bin = env!("CARGO_BIN_EXE_onnx-prune");
    // SAFETY: no arguments, no side effects.
    if unsafe { libc::geteuid() } != 0 {
        return Some(run(args));
    }
    let id = NOBODY.to_string();
    let setpriv = Command::new("setpriv")
        .args([
            &format!("--reuid={id}"),
            &format!("--regid={id}"),
            "--clear-groups",
            bin,
        ])
        .args(args)
        .output();
    if let Ok(out) = setpriv {
        if !String::from_utf8_lossy(&out.stderr).starts_with("setpriv:") {
            return Some(out);
        }
    }
    let runuser = Command::new("runuser")
        .args(["-u", "nobody", "--", bin])
        .args(args)
        .output();
    match runuser {
        Ok(out) if !String::from_utf8_lossy(&out.stderr).starts_with("runuser:") => Some(out),
        _ => {
            eprintln!("skipped: cannot run as an unprivileged user here (no setpriv or runuser)");
            None
        }
    }
}

/// A directory the unprivileged user owns and can reach, holding a copy of `mlp_gemm.onnx`.
fn unprivileged_dir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = root.path().join("work");
    std::fs::create_dir(&dir).unwrap();
    let model = dir.join("model.onnx");
    std::fs::copy(fixture("mlp_gemm.onnx"), &model).unwrap();
    // SAFETY: no side effects but on these files.
    if unsafe { libc::geteuid() } == 0 {
        for path in [&dir, &model] {
            std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
    }
    (root, dir)
}

/// Issue 22 item 5: `--in-place` refuses a file the user may not write (0444, or another
/// user's in a directory the user can write), as `cp` would: exit 4, the file unchanged.
#[test]
fn in_place_refuses_a_file_the_user_may_not_write() {
    let (_root, dir) = unprivileged_dir();
    let model = dir.join("model.onnx");
    std::fs::set_permissions(&model, std::fs::Permissions::from_mode(0o444)).unwrap();
    let theirs = dir.join("theirs.onnx");
    std::fs::copy(&model, &theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o644)).unwrap();
    // SAFETY: no arguments.
    let as_root = unsafe { libc::geteuid() } == 0;
    if !as_root {
        eprintln!("note: `theirs.onnx` belongs to this user: only the 0444 case is checked");
    }
    let before = tree(&dir);
    let cases: &[&Path] = if as_root {
        &[&model, &theirs]
    } else {
        &[&model]
    };
    for file in cases {
        let Some(out) = run_unprivileged(&["prune", arg(file), "--in-place", "--sparsity", "0.5"])
        else {
            return;
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{}: {stderr}", file.display());
        assert!(stderr.contains("--in-place"), "{stderr}");
        assert!(stderr.contains("not writable for you"), "{stderr}");
        assert_eq!(tree(&dir), before);
    }
}

/// Issue 23 item 1: an output the user may not write (`--report`, `--plot`, `-o` in a
/// directory the user cannot write) is refused before any work, naming the flag: exit 4, and
/// the model is not written.
#[test]
fn outputs_the_user_may_not_write_are_refused_before_any_work() {
    let (_root, dir) = unprivileged_dir();
    let model = dir.join("model.onnx");
    let ro = dir.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let out = dir.join("out.onnx");
    let (m, o) = (arg(&model), arg(&out));
    let report = ro.join("r.json");
    let plot = ro.join("p.svg");
    let in_ro = ro.join("out.onnx");
    let r = arg(&report);
    let with_report = |command| vec![command, m, "-o", o, "--sparsity", "0.5", "--report", r];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (with_report("prune"), "--report"),
        (with_report("shrink"), "--report"),
        (
            vec!["prune", m, "-o", arg(&in_ro), "--sparsity", "0.5"],
            "-o",
        ),
        (
            vec!["sensitivity", m, "--random", "4", "--plot", arg(&plot)],
            "--plot",
        ),
        (
            vec!["check", m, m, "--random", "2", "--report", arg(&report)],
            "--report",
        ),
    ];
    let before = tree(&dir);
    for (args, flag) in cases {
        let Some(result) = run_unprivileged(&args) else {
            return;
        };
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot write {flag} `")),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("cannot create files in"), "{stderr}");
        assert!(result.stdout.is_empty(), "{args:?} worked before failing");
        assert_eq!(tree(&dir), before, "{args:?} wrote something");
    }
}
