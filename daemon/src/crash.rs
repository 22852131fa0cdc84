//! Fault injection for the crash tests: `MCP_AUTHD_CRASH_AT=<point>` makes the daemon
//! SIGKILL itself at that point, as a power cut or `kill -9` would. Debug builds only: a
//! release binary ignores the variable.

/// Dies here if the crash tests asked for it.
#[cfg(all(debug_assertions, unix))]
pub fn point(name: &str) {
    if std::env::var("MCP_AUTHD_CRASH_AT").is_ok_and(|p| p == name) {
        tracing::warn!("crash point {name}: killing myself (MCP_AUTHD_CRASH_AT)");
        // SAFETY: kill(2) on our own pid; nothing runs after SIGKILL.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

#[cfg(not(all(debug_assertions, unix)))]
pub fn point(_name: &str) {}
