//! `--help` and the man pages as people read them (#23 item 13): sentences are wrapped by the
//! terminal, not broken where the source happened to break them; examples fit in 80 columns;
//! man pages name each command in one line, show the values flags take, and keep examples
//! verbatim.

use crate::common::{run_with_env, stdout_ok, COMMANDS};

/// `onnx-prune [command] --help` at a terminal `columns` wide.
fn help(command: Option<&str>, columns: usize) -> String {
    let columns = columns.to_string();
    let args: Vec<&str> = command.into_iter().chain(["--help"]).collect();
    let out = run_with_env(&args, &[("COLUMNS", &columns)]);
    assert!(out.status.success(), "{args:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Every command's help, the tool's own first.
fn every_command() -> impl Iterator<Item = Option<&'static str>> {
    std::iter::once(None).chain(COMMANDS.iter().map(|c| Some(*c)))
}

/// At 200 columns, a line of prose followed by more of the same paragraph was wrapped because
/// the next word did not fit, never broken early.
#[test]
fn help_breaks_lines_only_where_the_terminal_is_full() {
    for command in every_command() {
        let text = help(command, 200);
        let prose = text.split("\nExamples:\n").next().unwrap();
        let lines: Vec<&str> = prose.lines().collect();
        for pair in lines.windows(2) {
            let (line, next) = (pair[0], pair[1]);
            // Rows of a two-column list (`  prune   Zero the ...`) are items, not prose.
            let row = |l: &str| l.trim().contains("  ");
            let continues = !line.trim().is_empty()
                && !next.trim().is_empty()
                && !row(line)
                && !row(next)
                && indent(next) == indent(line)
                && !next.trim_start().starts_with(['-', '['])
                && !line.trim_end().ends_with(':');
            if continues {
                let word = next.split_whitespace().next().unwrap();
                assert!(
                    line.len() + 1 + word.len() > 200,
                    "{command:?}: a hard break after\n{line}\n{next}"
                );
            }
        }
    }
}

/// At 80 columns nothing in an example wraps: each command of the examples block fits on its
/// lines (continued after a backslash), and each flag's example fits on one line.
#[test]
fn examples_fit_in_80_columns() {
    for command in every_command() {
        let text = help(command, 80);
        let mut parts = text.split("\nExamples:\n");
        let prose = parts.next().unwrap();
        if let Some(examples) = parts.next() {
            let mut continued = false;
            for line in examples.lines().filter(|l| !l.trim().is_empty()) {
                assert!(line.len() <= 80, "{command:?}: {line}");
                assert!(
                    continued || line.starts_with("  onnx-prune "),
                    "{command:?}: a wrapped example line: {line}"
                );
                continued = line.ends_with('\\');
            }
        } else {
            assert!(command.is_none(), "{command:?} has no examples");
        }
        let lines: Vec<&str> = prose.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("Example: ") {
                let next = lines.get(i + 1).copied().unwrap_or("");
                assert!(
                    next.trim().is_empty() || indent(next) != indent(line),
                    "{command:?}: the example wraps:\n{line}\n{next}"
                );
            }
        }
    }
}

/// The roff of `onnx-prune man [command]`.
fn man(command: Option<&str>) -> String {
    let args: Vec<&str> = ["man"].into_iter().chain(command).collect();
    stdout_ok(&args)
}

/// The lines of section `name` of a man page.
fn section<'a>(page: &'a str, name: &str) -> Vec<&'a str> {
    let heading = format!(".SH {name}");
    page.lines()
        .skip_while(|l| *l != heading)
        .skip(1)
        .take_while(|l| !l.starts_with(".SH "))
        .collect()
}

#[test]
fn man_pages_name_each_command_in_one_line_and_keep_examples_verbatim() {
    for command in every_command() {
        let page = man(command);
        let name = section(&page, "NAME");
        assert_eq!(name.len(), 1, "{command:?}: NAME is {name:?}");
        assert!(name[0].len() < 120, "{command:?}: NAME is {name:?}");
        let synopsis = section(&page, "SYNOPSIS").join("\n");
        assert!(!synopsis.contains("\\fB\\-\\-help\\fR \\fI"), "{synopsis}");
        if command.is_none() {
            assert!(section(&page, "EXAMPLES").is_empty());
            continue;
        }
        let examples = section(&page, "EXAMPLES");
        assert_eq!(examples.first(), Some(&".nf"), "{command:?}: {examples:?}");
        assert_eq!(examples.last(), Some(&".fi"), "{command:?}: {examples:?}");
        assert!(
            examples[1].starts_with("onnx\\-prune "),
            "{command:?}: {examples:?}"
        );
        assert!(section(&page, "EXTRA").is_empty(), "{command:?}");
    }
    // SYNOPSIS shows what each flag takes.
    let prune = section(&man(Some("prune")), "SYNOPSIS").join("\n");
    for placeholder in [
        "\\fB\\-\\-sparsity\\fR \\fIS|auto\\fR",
        "\\fB\\-o\\fR|\\fB\\-\\-output\\fR \\fIOUT\\fR",
        "[\\fB\\-\\-include\\fR \\fIREGEX\\fR]...",
        "\\fB\\-\\-scope\\fR \\fI{tensor|global}\\fR",
        "\\fIMODEL\\fR",
    ] {
        assert!(prune.contains(placeholder), "{placeholder} not in {prune}");
    }
    let shrink = man(Some("shrink"));
    assert!(
        section(&shrink, "EXAMPLES").contains(
            &"onnx\\-prune shrink model.onnx \\-o smaller.onnx \\-\\-sparsity auto \\-\\-round\\-to 8 \\e"
        ),
        "{shrink}"
    );
}
