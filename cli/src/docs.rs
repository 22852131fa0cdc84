//! `mcp-auth completions SHELL` and `mcp-auth man`: shell completions and man pages
//! generated from the command-line definition itself, so they cannot drift from it.
//! `scripts/install.sh` installs what these print.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use crate::output::EXIT_CODES_HELP;

#[derive(clap::Args)]
pub struct ManArgs {
    /// Write mcp-auth.1 and a page per subcommand (mcp-auth-login.1, …) into this directory
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut crate::Cli::command(), "mcp-auth", &mut script);
    print(&script)
}

pub fn man(args: ManArgs) -> ExitCode {
    let result = match args.dir {
        Some(dir) => write_pages(&dir),
        None => {
            let mut page = Vec::new();
            match main_page(&mut page) {
                Ok(()) => return print(&page),
                Err(e) => Err(e).context("cannot render the man page"),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-auth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a reader that stopped early (`| head`) is no error.
fn print(bytes: &[u8]) -> ExitCode {
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("mcp-auth: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

/// mcp-auth.1, then mcp-auth-<sub>.1 for every subcommand (mcp-auth-service-install.1 for
/// nested ones): the main page's SUBCOMMANDS section refers to those names.
fn write_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let main = dir.join("mcp-auth.1");
    let mut file =
        std::fs::File::create(&main).with_context(|| format!("cannot write {}", main.display()))?;
    main_page(&mut file).with_context(|| format!("cannot write {}", main.display()))?;
    println!("wrote {}", main.display());
    let mut cmd = documented();
    // Building gives subcommands their display names (mcp-auth-login).
    cmd.build();
    let mut pending: VecDeque<clap::Command> = cmd.get_subcommands().cloned().collect();
    while let Some(sub) = pending.pop_front() {
        if sub.is_hide_set() {
            continue;
        }
        pending.extend(sub.get_subcommands().cloned());
        let path = Man::new(sub)
            .generate_to(dir)
            .with_context(|| format!("cannot write a man page into {}", dir.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The generated sections, with EXIT STATUS (from the text `--help` shows), ENVIRONMENT
/// and SEE ALSO in place of clap's catch-all EXTRA section.
fn main_page(w: &mut dyn Write) -> std::io::Result<()> {
    let man = Man::new(documented());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in exit_codes() {
        roff.control("TP", [])
            .text([bold(code)])
            .text([roman(meaning)]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    roff.control("TP", [])
        .text([bold("MCP_AUTHD_SOCKET")])
        .text([roman(
            "the daemon's socket when --socket is not given; else \
             $XDG_RUNTIME_DIR/mcp-authd/mcp-authd.sock, else /tmp/mcp-authd-<uid>/mcp-authd.sock",
        )]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([bold("mcp-authd"), roman("(1)")]);
    roff.to_writer(w)?;
    man.render_version_section(w)
}

/// The command line as the man pages show it: `mcp-auth help` is `--help` there.
fn documented() -> clap::Command {
    crate::Cli::command().disable_help_subcommand(true)
}

/// (code, meaning) for each line of the exit-code table.
fn exit_codes() -> impl Iterator<Item = (&'static str, &'static str)> {
    EXIT_CODES_HELP.lines().skip(1).filter_map(|line| {
        let (code, meaning) = line.trim().split_once(char::is_whitespace)?;
        Some((code, meaning.trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exit_code_line_becomes_a_man_page_entry() {
        let codes: Vec<_> = exit_codes().map(|(code, _)| code).collect();
        assert_eq!(codes, ["0", "1", "2", "3", "4", "5", "6", "7", "8"]);
        assert!(exit_codes().all(|(_, meaning)| !meaning.is_empty()));
    }
}
