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
