//! Who is on the other end of a connection, as the kernel tells it: for the audit log of
//! token hand-outs, and for `confirm_clients`, which asks about the program
//! ([`program`]) and lets a connection have a grant `once`.

pub mod program;

use std::sync::{Arc, Mutex, OnceLock};

use interprocess::local_socket::tokio::Stream;

use program::Program;

/// The connecting process. Each field is `None` where the OS does not say.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    /// The executable's path (`/proc/<pid>/exe` on Linux), read when the peer connects.
    pub exe: Option<String>,
    /// What `confirm_clients` learnt of this connection (filled only when it asks); it
    /// ends with the connection.
    pub confirm: Arc<Confirmed>,
}

/// What `confirm_clients` learnt of one connection.
#[derive(Debug, Default)]
pub struct Confirmed {
    /// Read from /proc the first time a grant asks, then kept for the connection.
    program: OnceLock<Option<Program>>,
    /// Grants the user allowed this connection `once`.
    once: Mutex<Vec<String>>,
}

impl Peer {
    /// The program this connection belongs to (see [`program`]), read once.
    pub fn program(&self) -> Option<&Program> {
        self.confirm
            .program
            .get_or_init(|| program::identify(self.pid, self.exe.as_deref()))
            .as_ref()
    }

    /// Whether the user allowed this connection a grant's tokens `once`.
    pub fn allowed_once(&self, grant_id: &str) -> bool {
        lock(&self.confirm.once).iter().any(|g| g == grant_id)
    }

    /// The user allowed this connection a grant's tokens `once`: for as long as it lasts.
    pub fn allow_once(&self, grant_id: &str) {
        lock(&self.confirm.once).push(grant_id.to_string());
    }

    pub fn of(stream: &Stream) -> Peer {
        #[cfg(unix)]
        {
            use interprocess::local_socket::tokio::prelude::*;
            let creds = stream.peer_creds().ok();
            let pid = creds
                .as_ref()
                .and_then(|c| c.pid())
                .and_then(|p| u32::try_from(p).ok());
            let uid = creds.as_ref().and_then(|c| c.euid());
            Peer {
                pid,
                uid,
                exe: pid.and_then(executable),
                confirm: Arc::default(),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = stream;
            Peer::default()
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The path of a process's executable, where the OS offers it without privileges.
pub(crate) fn executable(pid: u32) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.display().to_string())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}
