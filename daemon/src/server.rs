//! The local-socket accept loop: socket file and directory permissions, peer uid check,
//! a connection cap, one task per connection.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use interprocess::local_socket::ListenerOptions;
use interprocess::local_socket::tokio::{Listener, Stream, prelude::*};
#[cfg(unix)]
use mcp_authd_ipc::socket::current_uid;
use mcp_authd_ipc::{ErrorKind, Response, RpcError, socket, write_frame};
use tokio::sync::{Semaphore, watch};

use crate::broker::Broker;
use crate::connection;
use crate::peer::Peer;

/// Connections served at once; more are refused so one runaway client cannot exhaust
/// the daemon's file descriptors.
const MAX_CONNECTIONS: usize = 512;

/// Binds the socket, refusing to take over one a live daemon answers on. What is at the
/// path is only removed when it is a socket nobody answers on (a stale one of ours): a
/// regular file, a directory or a symbolic link there is reported, never deleted.
pub async fn bind(path: &Path) -> anyhow::Result<Listener> {
    prepare_dir(path)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::FileTypeExt;
                anyhow::ensure!(
                    meta.file_type().is_socket(),
                    "{} exists and is not a socket ({}); mcp-authd does not delete it: move it away or choose another --socket",
                    path.display(),
                    describe_file_type(&meta.file_type())
                );
            }
            #[cfg(not(unix))]
            let _ = meta;
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
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot inspect {}", path.display()));
        }
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

/// A file type in words, for the error that refuses to delete it.
#[cfg(unix)]
fn describe_file_type(t: &std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
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
                "the socket's directory {} is open to other users; clients refuse a socket there: set DirectoryMode=0700 in mcp-authd.socket",
                dir.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Creates the socket's directory private (0700). An existing one must be a real directory
/// (a symbolic link is never followed: whoever made it chooses where the socket goes), owned
/// by us, and closed to others, as clients check before they send anything: a directory
/// mcp-authd names (`mcp-authd…`) is made 0700, any other open one is refused.
fn prepare_dir(path: &Path) -> anyhow::Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        // Created 0700 from the start (no window with the umask's mode); one that exists,
        // maybe made by someone else first, is judged below.
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
        let meta = std::fs::symlink_metadata(dir)
            .with_context(|| format!("cannot inspect {}", dir.display()))?;
        anyhow::ensure!(
            !meta.file_type().is_symlink(),
            "the socket's directory {} is a symbolic link; mcp-authd does not follow it (whoever made it would choose where the socket goes): remove it or choose another --socket",
            dir.display()
        );
        anyhow::ensure!(
            meta.is_dir(),
            "{} is not a directory; choose another --socket",
            dir.display()
        );
        anyhow::ensure!(
            meta.uid() == current_uid(),
            "the socket's directory {} belongs to uid {}, not to mcp-authd's user (uid {}): another user may have planted it; remove it (as root if needed) or choose another --socket",
            dir.display(),
            meta.uid(),
            current_uid()
        );
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            let ours = dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("mcp-authd"));
            anyhow::ensure!(
                ours,
                "the socket's directory {} is open to other users (mode {mode:o}) and clients refuse such a socket; chmod 700 {} or choose another --socket",
                dir.display(),
                dir.display()
            );
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {} private", dir.display()))?;
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(())
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
                    "permission denied: this mcp-authd serves only uid {}; run your own ({})",
                    current_uid(),
                    mcp_authd_ipc::next_step::SERVICE_INSTALL
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
