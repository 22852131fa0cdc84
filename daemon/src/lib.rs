//! mcp-authd, the per-user OAuth credential broker for MCP servers, as a library.
//!
//! `main.rs` parses the command line, sets up logging and the runtime, and calls [`run`];
//! an in-process test calls the same [`run`] on its own runtime (with paused time, where
//! the daemon's timing is the point). `oauth` and `secret` are public for the fuzz
//! targets in `fuzz/`, which run the daemon's own parsers of what servers send.

// Logging is set up by the binary (main.rs), which shares this package's dependencies.
use tracing_subscriber as _;

mod activation;
mod audit;
mod broker;
mod browser;
mod config;
mod confirm;
mod connection;
mod crash;
mod data_lock;
mod hand_out;
mod login;
mod loopback;
mod machine;
mod man;
mod methods;
#[cfg(test)]
mod no_import_circles;
mod no_refresh;
#[cfg(test)]
mod no_secret_in_debug;
pub mod oauth;
mod peer;
mod reply;
mod scheduler;
pub mod secret;
mod server;
mod step_up;
mod store;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

pub use activation::{ActivationError, Inherited, inherited};
pub use man::print as print_man_page;

/// Where one daemon listens and keeps its data: the command line's choices, `None`
/// for the defaults (the environment, then the platform's directories).
#[derive(Default)]
pub struct Options {
    pub socket: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub config: Option<PathBuf>,
    /// The listening socket the service manager passed ([`inherited`]).
    pub inherited: Option<Inherited>,
    /// Whether SIGTERM and SIGINT stop the daemon and SIGHUP re-reads its config file; a
    /// daemon inside a test process leaves that process's signals alone.
    pub handle_signals: bool,
}

/// Serves until `shutdown` completes (or a signal arrives, with
/// [`Options::handle_signals`]), then stops gracefully: refreshes in flight finish and store
/// their rotated tokens, connections finish their requests, the audit log is written out.
pub async fn run(
    options: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let Options {
        socket,
        home,
        config,
        inherited,
        handle_signals,
    } = options;
    let paths = config::Paths::resolve(home, config)?;
    create_private_dir(&paths.data_dir)?;
    // Before the database or the socket is touched: a second daemon leaves both alone.
    let _data_lock = data_lock::DataLock::acquire(&paths.data_dir)?;
    let config = config::Config::load(&paths.config_file)?;
    let socket_path = match inherited.as_ref().and_then(|i| i.path.clone()) {
        Some(path) => path,
        None => mcp_authd_ipc::socket::resolve(socket),
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
        audit.clone(),
        secrets,
        http,
        config,
        paths,
        socket_path.display().to_string(),
    ));
    broker.load_confirmations().await?;

    // Before the socket serves anyone, so that a client that got an answer can rely on
    // SIGTERM being graceful and SIGHUP reloading instead of ending the daemon.
    let signal = if handle_signals {
        Some(shutdown_signal()?)
    } else {
        None
    };
    #[cfg(unix)]
    if handle_signals {
        use tokio::signal::unix::{SignalKind, signal};
        let hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        tokio::spawn(reload_on_hangup(hangup, broker.clone()));
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let refresher =
        tokio::spawn(scheduler::RefreshScheduler::new(broker.clone()).run(stopped.clone()));
    let server = tokio::spawn(server::run(listener, broker.clone(), stopped));
    let signal = async {
        match signal {
            Some(signal) => signal.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = signal => {}
        () = shutdown => {}
    }
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
        let _ = broker.reload_config();
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
