//! The local-socket accept loop: socket file and directory permissions, peer uid check,
//! a connection cap, one task per connection.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use interprocess::local_socket::ListenerOptions;
use interprocess::local_socket::tokio::{Listener, Stream, prelude::*};
use mcp_authd_ipc::{ErrorKind, Response, RpcError, socket, write_frame};
use tokio::sync::{Semaphore, watch};

use crate::broker::Broker;
use crate::connection;
use crate::peer::Peer;

/// Connections served at once; more are refused so one runaway client cannot exhaust
/// the daemon's file descriptors.
const MAX_CONNECTIONS: usize = 512;

/// Binds the socket, refusing to take over one a live daemon answers on.
pub async fn bind(path: &Path) -> anyhow::Result<Listener> {
    prepare_dir(path)?;
    if path.exists() {
        if let Ok(name) = socket::to_name(path)
            && Stream::connect(name).await.is_ok()
        {
            anyhow::bail!(
                "another mcp-authd is already running at {}; stop it first (or use another --socket)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let name =
        socket::to_name(path).with_context(|| format!("invalid socket path {}", path.display()))?;
    let options = ListenerOptions::new().name(name);
    #[cfg(unix)]
    let options = {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        options.mode(0o600)
    };
    let listener = options
        .create_tokio()
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private", path.display()))?;
    }
    Ok(listener)
}

/// A socket the service manager made: its file is made 0600 if the manager left it open
/// (that is the socket's own file, safe to change); a directory open to others is only
/// reported — it may be a shared one the manager was told to use, and the 0600 socket and
/// the peer check still hold.
pub fn secure_inherited(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot inspect the inherited socket {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).with_context(
                || format!("the inherited socket {} is open to other users ({:o}) and cannot be made private", path.display(), mode & 0o777),
            )?;
            tracing::warn!(
                "the inherited socket {} was open to other users ({:o}); made it 0600 (set SocketMode=0600 in mcp-authd.socket)",
                path.display(),
                mode & 0o777
            );
        }
        if let Some(dir) = path.parent()
            && let Ok(meta) = std::fs::metadata(dir)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "the socket's directory {} is open to other users; the socket itself is 0600 and other users are refused, but DirectoryMode=0700 in mcp-authd.socket is better",
                dir.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Creates the socket's directory private (0700). An existing directory must belong to us
/// and be closed to others, unless it is a shared one the user chose (e.g. `/tmp`), where
/// the 0600 socket and the peer check still hold.
fn prepare_dir(path: &Path) -> anyhow::Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let ours = dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("mcp-authd"));
        let meta = std::fs::metadata(dir)?;
        if ours {
            anyhow::ensure!(
                meta.uid() == current_uid(),
                "{} belongs to another user; remove it or choose another --socket",
                dir.display()
            );
            if meta.mode() & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
    }
    Ok(())
}

#[cfg(unix)]
fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// How long a stopping daemon lets in-flight requests finish before it exits anyway (a
/// browser login may wait for minutes; a refresh takes well under this).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The longest a stopping daemon waits for refreshes in flight and for their rotated
/// refresh tokens to reach the secret store: a token request's time limit (30 s, see
/// `oauth::http`) plus a keychain write's (5 s), and a little. A refresh cut short after
/// the server rotated its token costs the grant a new login, so this is worth waiting.
/// The units' stop timeouts (systemd `TimeoutStopSec`, launchd `ExitTimeOut`) are longer.
pub const REFRESH_GRACE: Duration = Duration::from_secs(40);

/// Accepts connections until `shutdown` turns true, then stops listening (a socket the
/// daemon bound itself is removed) and waits up to [`SHUTDOWN_GRACE`] for the requests in
/// flight: every connection stops reading, finishes its requests and writes their replies.
pub async fn run(listener: Listener, broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        if let Err(why) = peer_allowed(&stream) {
            refuse(stream, ErrorKind::PermissionDenied, why);
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!("connection refused: {MAX_CONNECTIONS} connections already open");
            refuse(
                stream,
                ErrorKind::LimitExceeded,
                format!(
                    "mcp-authd already serves {MAX_CONNECTIONS} connections; close idle ones and retry"
                ),
            );
            continue;
        };
        let (broker, shutdown) = (broker.clone(), shutdown.clone());
        let peer = Peer::of(&stream);
        tokio::spawn(async move {
            connection::serve(stream, broker, shutdown, peer).await;
            drop(permit);
        });
    }
    drop(listener);
    let busy = MAX_CONNECTIONS - slots.available_permits();
    if busy > 0 {
        tracing::info!("waiting for {busy} connection(s) to finish their requests");
    }
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight after {} s are abandoned",
            SHUTDOWN_GRACE.as_secs()
        );
    }
}

/// Tells a refused peer why in one error line, then closes. What the peer sends meanwhile
/// is read and dropped for a moment, so that its first request does not fail with a broken
/// pipe before it reads the reason. Bounded in time and bytes.
fn refuse(mut stream: Stream, kind: ErrorKind, why: String) {
    tokio::spawn(async move {
        let reply = Response::err(None, RpcError::new(kind, why));
        let written =
            tokio::time::timeout(Duration::from_secs(1), write_frame(&mut stream, &reply)).await;
        if matches!(written, Ok(Ok(()))) {
            let drain = connection::Drain {
                quiet: Duration::from_millis(200),
                total: Duration::from_secs(1),
                max_bytes: 64 * 1024,
            };
            drain.run(&mut stream).await;
        }
    });
}

/// Only processes of our own user may talk to us (the socket mode says so too; this
/// holds even if a parent directory is more open than it should be).
fn peer_allowed(stream: &Stream) -> Result<(), String> {
    #[cfg(unix)]
    {
        match stream.peer_creds().map(|c| c.euid()) {
            Ok(Some(uid)) if uid == current_uid() => Ok(()),
            Ok(uid) => {
                tracing::warn!(
                    "connection from uid {uid:?} refused: only uid {} may use this daemon",
                    current_uid()
                );
                Err(format!(
                    "permission denied: this mcp-authd serves only uid {}; run your own (mcp-auth service install)",
                    current_uid()
                ))
            }
            Err(e) => {
                tracing::warn!("connection refused: cannot read the peer's credentials: {e}");
                Err("permission denied: the peer's credentials cannot be read".into())
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = stream;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The service managers wait longer than the daemon's own bound before they kill it.
    #[test]
    fn the_units_stop_timeouts_outlast_the_refresh_grace() {
        let unit = include_str!("../../systemd/mcp-authd.service");
        let systemd: u64 = unit
            .lines()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .expect("TimeoutStopSec in the unit")
            .trim()
            .parse()
            .unwrap();
        let plist = include_str!("../../launchd/dev.mcp-authd.plist");
        let after_key = plist
            .split("<key>ExitTimeOut</key>")
            .nth(1)
            .expect("ExitTimeOut in the plist");
        let launchd: u64 = after_key
            .trim_start()
            .strip_prefix("<integer>")
            .and_then(|r| r.split('<').next())
            .expect("an integer")
            .parse()
            .unwrap();
        // The runtime's own shutdown adds up to 2 s (main.rs).
        let needed = REFRESH_GRACE.as_secs() + 2;
        assert!(systemd > needed, "TimeoutStopSec={systemd}");
        assert!(launchd > needed, "ExitTimeOut={launchd}");
    }
}
