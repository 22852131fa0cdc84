//! `mcp-authd --man`: the man page generated from the command-line definition, with the
//! environment the daemon reads. `scripts/install.sh` installs it.

use std::io::Write;

use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

/// Environment variables the daemon reads, and what for.
const ENVIRONMENT: [(&str, &str); 5] = [
    (
        "MCP_AUTHD_HOME",
        "directory of the database (and of config.toml) when --home is not given",
    ),
    ("MCP_AUTHD_CONFIG", "config file when --config is not given"),
    (
        "MCP_AUTHD_SOCKET",
        "socket when --socket is not given; else $XDG_RUNTIME_DIR/mcp-authd/mcp-authd.sock, \
         else /tmp/mcp-authd-<uid>/mcp-authd.sock",
    ),
    (
        "MCP_AUTHD_LOG",
        "log filter (tracing syntax), default info; the log goes to stderr",
    ),
    (
        "MCP_AUTHD_BROWSER",
        "program run with the authorization URL as its last argument instead of the default browser",
    ),
];

/// Prints the page; a reader that stopped early (`| head`) is no error.
pub fn print(cmd: clap::Command) -> anyhow::Result<()> {
    let mut page = Vec::new();
    render(cmd, &mut page)?;
    match std::io::stdout().lock().write_all(&page) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn render(cmd: clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    let man = Man::new(cmd);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, meaning) in ENVIRONMENT {
        roff.control("TP", [])
            .text([bold(name)])
            .text([roman(meaning)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([bold("mcp-auth"), roman("(1)")]);
    roff.to_writer(out)?;
    man.render_version_section(out)
}
