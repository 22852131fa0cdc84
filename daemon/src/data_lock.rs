//! One daemon per data directory: two daemons on the same grants would both redeem the same
//! refresh token, which the authorization server sees as a replay and answers by revoking
//! the whole grant.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory; it holds the pid of the daemon that has it.
pub const LOCK_FILE: &str = "mcp-authd.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another mcp-authd ({holder}) already uses the data directory {}; two daemons on the same grants would redeem the same refresh tokens: stop it first (systemctl --user stop mcp-authd, launchctl bootout, or kill it), or give this one another --home",
        dir.display()
    )]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An exclusive `flock` on `<data dir>/mcp-authd.lock`, held as long as this value lives
/// (the kernel releases it when the process ends, however it ends, so a crash leaves no
/// stale lock behind). The descriptor is close-on-exec: a browser the daemon started does
/// not keep the lock after the daemon is gone.
pub struct DataLock {
    _file: File,
}

impl DataLock {
    /// Takes the lock or says which process holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataLock, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        // Not truncated on open: the file holds the current holder's pid until we have the lock.
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        let mut file = options.open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "pid not yet written".to_string(),
                };
                return Err(LockError::Held {
                    dir: data_dir.to_path_buf(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(DataLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_gets_it_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in the same
        // process conflicts just as another process would.
        let err = DataLock::acquire(dir.path()).err().expect("refused");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        drop(first);
        let _again = DataLock::acquire(dir.path()).unwrap();
    }
}
