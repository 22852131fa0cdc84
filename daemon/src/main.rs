//! mcp-authd: the per-user OAuth credential broker for MCP servers.

mod activation;
mod audit;
mod broker;
mod browser;
mod challenge;
mod config;
mod confirm;
mod connection;
mod crash;
mod data_lock;
mod login;
mod loopback;
mod machine;
mod man;
mod methods;
mod no_refresh;
#[cfg(test)]
mod no_secret_in_debug;
mod peer;
mod scheduler;
mod server;
mod store;

// The parsers of what servers send live in the library, where the fuzz targets reach them.
use mcp_authd::{oauth, secret};
// Used by the library's modules, not by the binary's own: named so that
// `unused_crate_dependencies` checks the others.
use std::path::PathBuf;
use std::sync::Arc;
use {aws_lc_rs as _, base64 as _, p256 as _, rustls_pki_types as _};

use anyhow::Context;
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
        return man::print(Args::command());
    }
    // Before any thread exists: it edits the environment.
    let inherited = activation::inherited();
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
    let result = runtime.block_on(run(args, inherited?));
    // A keychain call stuck in a blocking thread must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

async fn run(args: Args, inherited: Option<activation::Inherited>) -> anyhow::Result<()> {
    let paths = config::Paths::resolve(args.home, args.config)?;
    create_private_dir(&paths.data_dir)?;
    // Before the database or the socket is touched: a second daemon leaves both alone.
    let _data_lock = data_lock::DataLock::acquire(&paths.data_dir)?;
    let config = config::Config::load(&paths.config_file)?;
    let socket_path = match inherited.as_ref().and_then(|i| i.path.clone()) {
        Some(path) => path,
        None => mcp_authd_ipc::socket::resolve(args.socket),
    };

    let db = store::Db::open(&paths.data_dir.join("state.db")).await?;
    let secrets = store::SecretStore::open(config.secret_store, &paths.data_dir)
        .await
        .context("the config requires the OS keychain (secret_store = \"keychain\") and it cannot be used")?;
    let http = oauth::http::Http::new(config.ca_file.as_deref())
        .context("cannot set up the HTTP client")?;
    let listener = match inherited {
        Some(inherited) => {
            tracing::info!("using the listening socket passed by the service manager");
            if let Some(path) = &inherited.path {
                server::secure_inherited(path)?;
            }
            inherited.into_listener()?
        }
        None => server::bind(&socket_path).await?,
    };
    let status = secrets.status();
    tracing::info!(
        socket = %socket_path.display(),
        data_dir = %paths.data_dir.display(),
        secret_store = %status.backend,
        "mcp-authd {} listening",
        env!("CARGO_PKG_VERSION")
    );
    let (audit, _audit_writer) = audit::AuditLog::start(db.clone());
    let broker = Arc::new(broker::Broker::new(
        db.clone(),
        audit,
        secrets,
        http,
        config,
        paths,
        socket_path.display().to_string(),
    ));
    broker.confirm.load(&broker.db).await?;

    // Before the socket serves anyone, so that a client that got an answer can rely on
    // SIGTERM being graceful and SIGHUP reloading instead of ending the daemon.
    let shutdown = shutdown_signal()?;
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        tokio::spawn(reload_on_hangup(hangup, broker.clone()));
    }
    let audit = broker.audit.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let refresher =
        tokio::spawn(scheduler::RefreshScheduler::new(broker.clone()).run(stopped.clone()));
    let server = tokio::spawn(server::run(listener, broker.clone(), stopped));
    shutdown.await;
    tracing::info!("shutting down");
    // No refresh starts from now on; those in flight finish and store their rotated
    // refresh tokens (bounded), while connections finish their requests.
    broker.stop_refreshing();
    let _ = stop.send(true);
    let deadline = tokio::time::Instant::now() + server::REFRESH_GRACE;
    let _ = tokio::time::timeout_at(deadline, server).await;
    let _ = tokio::time::timeout_at(deadline, refresher).await;
    broker
        .drain(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await;
    // Every hand-out answered is in the audit log before the database closes.
    audit.flush().await;
    drop(audit);
    db.close().await;
    Ok(())
}

/// SIGHUP re-reads the config file (`systemctl --user reload mcp-authd`); the outcome goes
/// to the log.
#[cfg(unix)]
async fn reload_on_hangup(mut hangup: tokio::signal::unix::Signal, broker: Arc<broker::Broker>) {
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config file");
        let _ = methods::reload_config(&broker);
    }
}

/// Registers the SIGTERM and SIGINT handlers now and returns the wait for either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", dir.display()))?;
    }
    Ok(())
}
