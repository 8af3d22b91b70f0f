//! What packagers and pipelines rely on: `--version` names tract's version, shell completions and
//! man pages generate from the command definitions, and the wheel installs and runs
//! (`scripts/build_wheel.sh`, only with `ONNX_PRUNE_WHEEL_TEST=1`: it needs Python, PyPI and a
//! release build).

use std::path::Path;
use std::process::Command;

use crate::common::{run, stdout_ok, COMMANDS};

/// tract-onnx's version in the repository's Cargo.lock, read independently of build.rs.
fn locked_tract_version() -> String {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"))
        .expect("Cargo.lock is readable");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == r#"name = "tract-onnx""# {
            let version = lines.next().expect("a version follows the name");
            return version
                .strip_prefix(r#"version = ""#)
                .and_then(|v| v.strip_suffix('"'))
                .expect("version = \"...\"")
                .to_owned();
        }
    }
    panic!("no tract-onnx in Cargo.lock");
}

#[test]
fn version_names_the_tract_version_in_cargo_lock() {
    let expected = format!(
        "onnx-prune {} (tract {})\n",
        env!("CARGO_PKG_VERSION"),
        locked_tract_version()
    );
    assert_eq!(stdout_ok(&["--version"]), expected);
    assert_eq!(stdout_ok(&["-V"]), expected);
}

#[test]
fn completions_generate_for_every_supported_shell() {
    // What each shell's script registers, so that a script for the wrong shell fails too.
    let markers = [
        ("bash", "complete -F _onnx__prune"),
        ("zsh", "#compdef onnx-prune"),
        ("fish", "complete -c onnx-prune"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[onnx-prune]"),
    ];
    for (shell, marker) in markers {
        let script = stdout_ok(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: no `{marker}`");
        for command in COMMANDS {
            assert!(
                script.contains(command),
                "{shell}: `{command}` not completed"
            );
        }
        for flag in [
            "sparsity",
            "schedule",
            "min-cosine",
            "round-to",
            "drop-layers",
        ] {
            let spelled = match shell {
                "fish" => format!("-l {flag}"),
                _ => format!("--{flag}"),
            };
            assert!(
                script.contains(&spelled),
                "{shell}: `{spelled}` not completed"
            );
        }
    }
}

/// Sources the bash script and asks it to complete `line`, as bash does on TAB.
fn bash_complete(line: &str) -> Vec<String> {
    let script = stdout_ok(&["completions", "bash"]);
    let words: Vec<&str> = line.split(' ').collect();
    let program = format!(
        "{script}\nCOMP_WORDS=({words})\nCOMP_CWORD={cword}\nCOMP_LINE='{line}'\n\
         COMP_POINT=${{#COMP_LINE}}\n_onnx__prune onnx-prune '{current}' '{previous}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        words = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
        current = words[words.len() - 1],
        previous = words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Also guards the states clap_complete 4.6 misspells for a hyphenated binary name (its issue
/// 6421): without `generate::fix_bash_states`, nothing after a command completed.
#[test]
fn bash_completes_commands_flags_and_values() {
    assert_eq!(bash_complete("onnx-prune pr"), ["prune"]);
    assert!(bash_complete("onnx-prune prune --spars").contains(&"--sparsity".to_owned()));
    assert!(bash_complete("onnx-prune shrink --round").contains(&"--round-to".to_owned()));
    assert_eq!(bash_complete("onnx-prune shrink --scope gr"), ["group"]);
    assert_eq!(
        bash_complete("onnx-prune prune --scope g"),
        ["global"],
        "value enums complete their values"
    );
    let shells = bash_complete("onnx-prune completions ");
    for shell in ["bash", "zsh", "fish", "powershell"] {
        assert!(shells.contains(&shell.to_owned()), "{shells:?}");
    }
}

#[test]
fn an_unknown_shell_exits_2_listing_the_supported_ones() {
    let out = run(&["completions", "tcsh"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'tcsh'"), "{stderr}");
    for shell in ["bash", "zsh", "fish", "powershell"] {
        assert!(stderr.contains(shell), "`{shell}` not listed: {stderr}");
    }
    assert!(out.stdout.is_empty(), "nothing is printed on failure");
}

#[test]
fn man_pages_generate_for_the_tool_and_each_command() {
    let page = stdout_ok(&["man"]);
    assert!(
        page.starts_with(".ie \\n(.g .ds Aq"),
        "roff preamble: {page:.200}"
    );
    assert!(page.contains(".TH onnx-prune 1"), "{page:.400}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for command in COMMANDS {
        assert!(
            page.contains(&format!("onnx\\-prune\\-{command}(1)")),
            "{command}"
        );
        let sub = stdout_ok(&["man", command]);
        assert!(
            sub.contains(&format!(".TH onnx-prune-{command} 1")),
            "{command}: {sub:.400}"
        );
        assert!(sub.contains(".SH OPTIONS"), "{command}");
    }
    let prune = stdout_ok(&["man", "prune"]);
    for flag in [
        "\\-\\-sparsity",
        "\\-\\-scope",
        "\\-\\-min\\-cosine",
        "global",
    ] {
        assert!(prune.contains(flag), "prune's page lacks {flag}");
    }
    let shrink = stdout_ok(&["man", "shrink"]);
    for flag in [
        "\\-\\-round\\-to",
        "\\-\\-dry\\-run",
        "\\-\\-drop\\-layers",
        "group",
    ] {
        assert!(shrink.contains(flag), "shrink's page lacks {flag}");
    }
}

#[test]
fn man_for_an_unknown_command_exits_2_listing_the_commands() {
    let out = run(&["man", "shrinkwrap"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`shrinkwrap`"), "{stderr}");
    for command in COMMANDS {
        assert!(stderr.contains(command), "`{command}` not listed: {stderr}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn wheel_installs_and_runs_in_a_fresh_virtual_environment() {
    if std::env::var("ONNX_PRUNE_WHEEL_TEST").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set ONNX_PRUNE_WHEEL_TEST=1 to build the wheel (maturin from PyPI, an \
             optimised build of several minutes) and smoke-test it (scripts/build_wheel.sh)"
        );
        return;
    }
    let status = Command::new("bash")
        .arg("scripts/build_wheel.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("bash runs scripts/build_wheel.sh");
    assert!(status.success(), "scripts/build_wheel.sh failed: {status}");
}
