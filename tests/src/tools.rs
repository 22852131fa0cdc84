//! Programs outside Rust that some tests run (python3, node, socat, zsh, fish, groff):
//! `bash scripts/setup.sh --tests` installs them. A missing one fails the test in CI
//! (`CI=true`); elsewhere the test says which part it skipped.

use std::path::PathBuf;

/// The first executable called `name` on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| {
            path.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `found`, or — when the program is missing — a failure in CI and a notice elsewhere.
pub fn required(name: &str, found: Option<PathBuf>, needed_for: &str) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    let message =
        format!("{name} is missing ({needed_for}); `bash scripts/setup.sh --tests` installs it");
    assert!(!in_ci(), "{message}");
    eprintln!("SKIPPED: {message}");
    None
}

/// CI services set `CI=true`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}
