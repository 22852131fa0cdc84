//! Socket activation: a listening socket inherited from the service manager (systemd's
//! `LISTEN_FDS`, launchd's `Sockets`) instead of one the daemon binds itself.

use std::path::PathBuf;

use interprocess::local_socket::tokio::Listener;

/// Why an inherited socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error(
        "LISTEN_FDS={0} but mcp-authd takes exactly one socket; give mcp-authd.socket a single ListenStream="
    )]
    FdCount(String),
    #[error(
        "the inherited file descriptor {fd} is not a listening Unix socket ({source}); check ListenStream= in mcp-authd.socket"
    )]
    NotASocket { fd: i32, source: std::io::Error },
    #[cfg_attr(not(target_os = "macos"), allow(dead_code))]
    #[error(
        "launchd gave no socket named `Listeners` ({0}); check the Sockets key of the LaunchAgent plist"
    )]
    Launchd(String),
}

/// A listening socket handed over by the service manager. The manager owns its file:
/// the daemon never removes it.
pub struct Inherited {
    #[cfg(unix)]
    socket: std::os::unix::net::UnixListener,
    /// The socket's path, when the kernel tells it.
    pub path: Option<PathBuf>,
}

impl Inherited {
    /// The tokio listener; must be called inside the runtime.
    pub fn into_listener(self) -> Result<Listener, ActivationError> {
        #[cfg(unix)]
        {
            use std::os::fd::{AsRawFd, OwnedFd};
            let fd = self.socket.as_raw_fd();
            let uds = interprocess::os::unix::uds_local_socket::tokio::Listener::try_from(
                OwnedFd::from(self.socket),
            )
            .map_err(|source| ActivationError::NotASocket { fd, source })?;
            Ok(Listener::from(uds))
        }
        #[cfg(not(unix))]
        unreachable!("no socket activation off Unix")
    }
}

/// The socket systemd passed (`LISTEN_PID` is us, `LISTEN_FDS` is 1: descriptor 3), or
/// launchd's `Listeners` socket on macOS; `None` when the daemon was started by hand.
/// The variables are removed so that processes the daemon starts (a browser) do not
/// believe they were activated.
pub fn inherited() -> Result<Option<Inherited>, ActivationError> {
    #[cfg(target_os = "macos")]
    if let Some(fd) = launchd::activate()? {
        return from_fd(fd).map(Some);
    }
    #[cfg(unix)]
    {
        let pid = std::env::var("LISTEN_PID").ok();
        let fds = std::env::var("LISTEN_FDS").ok();
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            // SAFETY: called from main before the runtime or any other thread starts.
            unsafe { std::env::remove_var(var) };
        }
        let (Some(pid), Some(fds)) = (pid, fds) else {
            return Ok(None);
        };
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            // Meant for another process (e.g. our parent): not ours to take.
            return Ok(None);
        }
        if fds.trim() != "1" {
            return Err(ActivationError::FdCount(fds));
        }
        from_fd(SD_LISTEN_FDS_START).map(Some)
    }
    #[cfg(not(unix))]
    Ok(None)
}

/// The first descriptor systemd passes.
#[cfg(unix)]
const SD_LISTEN_FDS_START: i32 = 3;

#[cfg(unix)]
fn from_fd(fd: i32) -> Result<Inherited, ActivationError> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::net::UnixListener;

    // SAFETY: the service manager passed this descriptor to us and nothing else in the
    // process owns it; it is taken exactly once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // The manager hands the descriptor over without close-on-exec (it had to survive our
    // exec); set it so that a browser or helper the daemon starts does not inherit the
    // listening socket (it could accept the user's connections after the daemon is gone).
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(ActivationError::NotASocket {
            fd,
            source: std::io::Error::last_os_error(),
        });
    }
    let socket = UnixListener::from(owned);
    let not_a_socket = |source| ActivationError::NotASocket { fd, source };
    let addr = socket.local_addr().map_err(not_a_socket)?;
    socket.set_nonblocking(true).map_err(not_a_socket)?;
    let path = addr.as_pathname().map(|p| p.to_path_buf());
    Ok(Inherited { socket, path })
}

/// launchd's check-in: `launch_activate_socket("Listeners")` from libSystem.
#[cfg(target_os = "macos")]
mod launchd {
    use std::ffi::{CString, c_char, c_int};

    unsafe extern "C" {
        fn launch_activate_socket(
            name: *const c_char,
            fds: *mut *mut c_int,
            cnt: *mut usize,
        ) -> c_int;
    }

    /// The descriptor of the plist's `Listeners` socket, `None` when not started by launchd.
    pub fn activate() -> Result<Option<i32>, super::ActivationError> {
        let name = CString::new("Listeners").expect("no NUL");
        let mut fds: *mut c_int = std::ptr::null_mut();
        let mut count: usize = 0;
        // SAFETY: documented API; on success launchd allocates `fds` with malloc.
        let rc = unsafe { launch_activate_socket(name.as_ptr(), &mut fds, &mut count) };
        match rc {
            0 => {
                // SAFETY: `fds` holds `count` descriptors allocated by launchd.
                let first = (count > 0).then(|| unsafe { *fds });
                // SAFETY: launchd's buffer, ours to free.
                unsafe { libc::free(fds.cast()) };
                first
                    .map(Some)
                    .ok_or_else(|| super::ActivationError::Launchd("an empty socket list".into()))
            }
            // ESRCH: not managed by launchd; ENOENT: no such socket in the plist.
            libc::ESRCH | libc::ENOENT => Ok(None),
            other => Err(super::ActivationError::Launchd(
                std::io::Error::from_raw_os_error(other).to_string(),
            )),
        }
    }
}
