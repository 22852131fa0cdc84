//! Who is on the other end of a connection, as the kernel tells it: for the audit log of
//! token hand-outs.

use std::sync::Arc;

use interprocess::local_socket::tokio::Stream;

/// The connecting process. Each field is `None` where the OS does not say.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    /// The executable's path (`/proc/<pid>/exe` on Linux), read when the peer connects.
    pub exe: Option<String>,
    /// What `confirm_clients` knows of this connection (filled only when it asks).
    pub confirm: Arc<crate::confirm::PeerConfirm>,
}

impl Peer {
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
