//! `completions` and `man`: shell completion scripts and manual pages made
//! from the command's own clap definitions, so they always match its
//! arguments (clap_complete, clap_mangen).

use std::io::Write;
use std::path::PathBuf;

use clap_complete::Shell;

use crate::error::{Action, CliError};
use crate::print::stdout_error;

/// Print a completion script for a shell to standard output.
///
/// Install it where the shell looks, for example
/// `laminar-ring completions bash > ~/.local/share/bash-completion/completions/laminar-ring`
/// (the README lists zsh and fish too).
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn completions(args: &CompletionsArgs, mut cmd: clap::Command) -> Result<(), CliError> {
    let name = cmd.get_name().to_owned();
    // Into memory first: clap_complete panics if its writer fails, and a
    // closed standard output must end the command quietly.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, &name, &mut script);
    if args.shell == Shell::Bash {
        script = fix_bash_states(&script, &name);
    }
    to_stdout(&script)
}

/// clap_complete's bash script names the state after a subcommand of a
/// hyphenated binary two ways (clap-rs/clap#6421): `laminar__ring__subcmd__X`
/// where it is set, `laminar__subcmd__ring__subcmd__X` where it is matched,
/// so nothing after a subcommand completed. This spells the matches as the
/// state is set (and changes nothing once clap_complete agrees with itself).
fn fix_bash_states(script: &[u8], name: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(script);
    let set = name.replace('-', "__");
    let matched = name.replace('-', "__subcmd__");
    if set == matched {
        return script.to_vec();
    }
    text.replace(&format!("{matched}__subcmd__"), &format!("{set}__subcmd__"))
        .into_bytes()
}

/// Print the manual page (roff) to standard output, or write it and a page
/// per subcommand into a directory.
///
/// `laminar-ring man | man -l -` shows it; `laminar-ring man --dir
/// ~/.local/share/man/man1` installs laminar-ring(1) and
/// laminar-ring-create(1), laminar-ring-produce(1), ...
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write laminar-ring.1 and one page per subcommand
    /// (laminar-ring-SUBCOMMAND.1) into this directory, creating it if
    /// needed.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn man(args: &ManArgs, cmd: clap::Command) -> Result<(), CliError> {
    let Some(dir) = &args.dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .expect("writing into a Vec cannot fail");
        return to_stdout(&page);
    };
    let shown = dir.display().to_string();
    std::fs::create_dir_all(dir).map_err(|e| CliError::io(Action::Create, &shown, e))?;
    clap_mangen::generate_to(cmd, dir).map_err(|e| CliError::io(Action::Write, &shown, e))
}

fn to_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}
