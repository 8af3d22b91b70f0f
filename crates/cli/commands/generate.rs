//! Shell completions and man pages, generated from the same clap definitions that parse the
//! command line, so that they never drift from it.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs, ManArgs};

/// The name the binary is installed under.
const BIN: &str = "onnx-prune";

/// Prints the completion script for the shell asked for.
pub fn completions(args: CompletionsArgs) -> Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), BIN, &mut script);
    if args.shell == clap_complete::Shell::Bash {
        script = fix_bash_states(&script);
    }
    print(&script)
}

/// clap_complete 4.6's bash script names the states of a hyphenated binary two ways: its loop
/// over the words reaches `onnx__prune__subcmd__check`, its case arms expect
/// `onnx__subcmd__prune__subcmd__check`, so no flag after a command ever completed (clap issue
/// 6421). Spells the arms as the loop does; a no-op once clap_complete agrees with itself.
fn fix_bash_states(script: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(script);
    let arms = BIN.replace('-', "__subcmd__");
    let state = BIN.replace('-', "__");
    text.replace(&arms, &state).into_bytes()
}

/// Prints the man page (roff) of the tool, or of one of its commands.
pub fn man(args: ManArgs) -> Result<ExitCode> {
    let mut cli = Cli::command().disable_help_subcommand(true);
    // Building names each command's page after its full invocation (`onnx-prune-prune`).
    cli.build();
    let page = match &args.command {
        None => cli,
        Some(name) => match cli.find_subcommand(name) {
            Some(command) => command.clone(),
            None => {
                let known: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
                bail!(
                    "man: no command `{name}`; the commands are: {}",
                    known.join(", ")
                );
            }
        },
    };
    // The examples go in an EXAMPLES section of their own, verbatim: clap_mangen would fill
    // and justify them as prose under EXTRA.
    let examples = page.get_after_help().map(|h| h.to_string());
    let page = page.after_help(None::<&'static str>);
    let mut roff = Vec::new();
    clap_mangen::Man::new(page.clone()).render(&mut roff)?;
    let mut roff = String::from_utf8(roff).context("clap_mangen wrote UTF-8")?;
    // clap_mangen's SYNOPSIS names the flags without their values.
    replace_section(&mut roff, "SYNOPSIS", &synopsis(&page));
    if let Some(examples) = examples {
        let lines: Vec<String> = examples
            .lines()
            .filter(|l| l.trim() != "Examples:")
            .map(|l| escape_line(l.strip_prefix("  ").unwrap_or(l)))
            .collect();
        let section = format!(".SH EXAMPLES\n.nf\n{}\n.fi\n", lines.join("\n"));
        match roff.find("\n.SH VERSION") {
            Some(at) => roff.insert_str(at + 1, &section),
            None => roff.push_str(&section),
        }
    }
    print(roff.as_bytes())
}

/// `text` for roff: backslashes, hyphens (which would print as hyphens, not minus signs) and
/// apostrophes escaped.
fn escape(text: &str) -> String {
    text.replace('\\', "\\e")
        .replace('-', "\\-")
        .replace('\'', "\\*(Aq")
}

/// A line of `text` for roff: escaped, and not read as a request when it starts with a dot.
fn escape_line(text: &str) -> String {
    let line = escape(text);
    if line.starts_with('.') {
        format!("\\&{line}")
    } else {
        line
    }
}

/// Replaces the body of section `name` of `roff` with `body`.
fn replace_section(roff: &mut String, name: &str, body: &str) {
    let heading = format!(".SH {name}\n");
    let Some(start) = roff.find(&heading).map(|at| at + heading.len()) else {
        return;
    };
    let end = roff[start..]
        .find("\n.SH ")
        .map_or(roff.len(), |at| start + at + 1);
    roff.replace_range(start..end, &format!("{body}\n"));
}

/// The SYNOPSIS of `command`: its flags with their value placeholders (`--sparsity S|auto`),
/// optional ones in brackets, repeatable ones followed by `...`, then its positionals.
fn synopsis(command: &clap::Command) -> String {
    let bold = |s: &str| format!("\\fB{}\\fR", escape(s));
    let italic = |s: &str| format!("\\fI{}\\fR", escape(s));
    let name = command.get_bin_name().unwrap_or_else(|| command.get_name());
    let mut words = vec![bold(name)];
    for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
        let flag = match (arg.get_short(), arg.get_long()) {
            _ if arg.is_positional() => continue,
            (Some(short), Some(long)) => format!(
                "{}|{}",
                bold(&format!("-{short}")),
                bold(&format!("--{long}"))
            ),
            (Some(short), None) => bold(&format!("-{short}")),
            (None, Some(long)) => bold(&format!("--{long}")),
            (None, None) => continue,
        };
        let value = match placeholder(arg) {
            Some(value) => format!(" {}", italic(&value)),
            None => String::new(),
        };
        words.push(optional(arg, format!("{flag}{value}")));
    }
    for arg in command.get_positionals().filter(|a| !a.is_hide_set()) {
        let value = placeholder(arg).unwrap_or_else(|| arg.get_id().to_string());
        words.push(optional(arg, italic(&value)));
    }
    if command.has_subcommands() {
        words.push(italic("COMMAND"));
    }
    words.join(" ")
}

/// `word` in brackets unless `arg` is required, followed by `...` when it repeats.
fn optional(arg: &clap::Arg, word: String) -> String {
    let word = if arg.is_required_set() {
        word
    } else {
        format!("[{word}]")
    };
    if matches!(arg.get_action(), clap::ArgAction::Append) {
        format!("{word}...")
    } else {
        word
    }
}

/// What `arg` takes: its possible values (`{bash|zsh}`), else its value name; `None` for a
/// flag that takes none.
fn placeholder(arg: &clap::Arg) -> Option<String> {
    if !arg.get_num_args().is_some_and(|n| n.takes_values()) {
        return None;
    }
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_string())
        .collect();
    if !values.is_empty() {
        return Some(format!("{{{}}}", values.join("|")));
    }
    Some(match arg.get_value_names() {
        Some(names) => names
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        None => arg.get_id().to_string().to_uppercase(),
    })
}

/// Writes generated text to standard output.
fn print(bytes: &[u8]) -> Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("writing to standard output")?;
    Ok(ExitCode::SUCCESS)
}
