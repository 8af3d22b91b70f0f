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
    let mut roff = Vec::new();
    clap_mangen::Man::new(page).render(&mut roff)?;
    print(&roff)
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
