//! Where the daemon listens. One function decides it, so the daemon and every client agree.

use std::io;
use std::path::PathBuf;

use interprocess::local_socket::Name;

/// Environment variable that overrides the socket path (below `--socket`).
pub const SOCKET_ENV: &str = "MCP_AUTHD_SOCKET";

/// The socket path: `explicit` (a `--socket` flag), else `$MCP_AUTHD_SOCKET`, else the
/// per-user default.
pub fn resolve(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| {
            std::env::var_os(SOCKET_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(default_path)
}

/// `$XDG_RUNTIME_DIR/mcp-authd/mcp-authd.sock`; without that variable, a per-user directory
/// in the temp dir (`/tmp/mcp-authd-<uid>/`), which the daemon creates 0700 and checks.
#[cfg(unix)]
pub fn default_path() -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("mcp-authd"),
        None => {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let uid = unsafe { libc::geteuid() };
            std::env::temp_dir().join(format!("mcp-authd-{uid}"))
        }
    };
    dir.join("mcp-authd.sock")
}

/// A named pipe per user: `\\.\pipe\mcp-authd-<user>`.
#[cfg(windows)]
pub fn default_path() -> PathBuf {
    let user = std::env::var("USERNAME").unwrap_or_else(|_| "user".into());
    PathBuf::from(format!(r"\\.\pipe\mcp-authd-{user}"))
}

/// The interprocess name for a socket path (a filesystem path on Unix, a pipe on Windows).
pub fn to_name(path: &std::path::Path) -> io::Result<Name<'_>> {
    use interprocess::local_socket::{GenericFilePath, ToFsName};
    path.to_fs_name::<GenericFilePath>()
}

/// Why a client will not talk to what listens at a socket path. Without
/// `XDG_RUNTIME_DIR` the socket lives under the shared temp dir, where another local user
/// can create the directory or a listener first; a client that talked to it would send
/// the server URLs it wants and take back a token of the other user's choosing.
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    #[error(
        "the socket's directory {} is a symbolic link; mcp-authd's directory must be a real one: remove the link and restart mcp-authd",
        dir.display()
    )]
    LinkedDirectory { dir: PathBuf },
    #[error(
        "the socket's directory {} belongs to uid {owner}, not to you (uid {me}): another user may have planted it; remove it (as root if needed) and restart mcp-authd",
        dir.display()
    )]
    ForeignDirectory { dir: PathBuf, owner: u32, me: u32 },
    #[error(
        "the socket's directory {} is open to other users (mode {mode:o}); only 700 is trusted: chmod 700 {} (or let mcp-authd create its own directory)",
        dir.display(),
        dir.display()
    )]
    OpenDirectory { dir: PathBuf, mode: u32 },
    #[error("cannot inspect the socket's directory {}: {source}", dir.display())]
    Unreadable {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the process listening at {} runs as uid {peer}, not as you (uid {me}): it is not your mcp-authd, nothing was sent to it; remove the socket (as root if needed) and start your own mcp-authd",
        path.display()
    )]
    ForeignListener { path: PathBuf, peer: u32, me: u32 },
    #[error(
        "cannot tell who listens at {}: {source}; nothing was sent to it",
        path.display()
    )]
    UnknownListener {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The current effective user id.
#[cfg(unix)]
pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Checks the directory that holds the socket path, without following a link at its last
/// component: a real directory, owned by this user, with no permission for group or others
/// (700). A directory anyone else can write to lets them replace the socket; one they own
/// is theirs to fill. The path's earlier components are not judged (on macOS `/var` itself
/// is a link).
#[cfg(unix)]
pub fn check_directory(path: &std::path::Path) -> Result<(), Untrusted> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    let meta = std::fs::symlink_metadata(&dir).map_err(|source| Untrusted::Unreadable {
        dir: dir.clone(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(Untrusted::LinkedDirectory { dir });
    }
    let me = current_uid();
    if meta.uid() != me {
        return Err(Untrusted::ForeignDirectory {
            dir,
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Untrusted::OpenDirectory { dir, mode });
    }
    Ok(())
}

/// Checks that the process at the other end of a connected socket runs as this user
/// (`SO_PEERCRED` on Linux, `getpeereid` on macOS, as the kernel reports them).
#[cfg(unix)]
pub fn check_listener(
    path: &std::path::Path,
    stream: &interprocess::local_socket::tokio::Stream,
) -> Result<(), Untrusted> {
    use interprocess::local_socket::traits::StreamCommon as _;
    let me = current_uid();
    match stream.peer_creds() {
        Ok(creds) => match creds.euid() {
            Some(peer) if peer == me => Ok(()),
            Some(peer) => Err(Untrusted::ForeignListener {
                path: path.to_path_buf(),
                peer,
                me,
            }),
            None => Err(Untrusted::UnknownListener {
                path: path.to_path_buf(),
                source: std::io::Error::other("the OS gave no user id"),
            }),
        },
        Err(source) => Err(Untrusted::UnknownListener {
            path: path.to_path_buf(),
            source,
        }),
    }
}
