//! mcp-authd: the per-user OAuth credential broker for MCP servers.

// A thin shell over the library, which shares this package's dependencies and is the
// crate `unused_crate_dependencies` checks them on.
#![allow(unused_crate_dependencies)]

use std::path::PathBuf;

use clap::{CommandFactory, Parser};

/// Holds OAuth grants for MCP servers and hands short-lived access tokens to local
/// processes of the same user over a local socket.
#[derive(Parser)]
#[command(name = "mcp-authd", version)]
struct Args {
    /// Socket to listen on [default: $MCP_AUTHD_SOCKET, else $XDG_RUNTIME_DIR/mcp-authd/mcp-authd.sock]
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Directory for the database and config [default: $MCP_AUTHD_HOME, else the platform data dir]
    #[arg(long)]
    home: Option<PathBuf>,
    /// Config file [default: $MCP_AUTHD_CONFIG, else config.toml in the platform config dir]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the man page (roff) and exit
    #[arg(long)]
    man: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.man {
        return mcp_authd::print_man_page(Args::command());
    }
    // Before any thread exists: it edits the environment.
    let inherited = mcp_authd::inherited();
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCP_AUTHD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // Before any secret is in memory; the process's children (a browser) inherit the limit.
    if let Err(e) = mcp_authd_ipc::hygiene::disable_core_dumps(true) {
        tracing::warn!("cannot turn core dumps off ({e}); a crash could write tokens to disk");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let options = mcp_authd::Options {
        socket: args.socket,
        home: args.home,
        config: args.config,
        inherited: inherited?,
        handle_signals: true,
    };
    let result = runtime.block_on(mcp_authd::run(options, std::future::pending()));
    // A keychain call stuck in a blocking thread must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}
