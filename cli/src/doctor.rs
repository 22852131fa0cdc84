//! `mcp-auth doctor`: checks what makes mcp-authd work, one line each, with the fix.
//!
//! Exit code 0 when nothing failed (warnings included), 1 when a check failed.

use std::path::Path;
use std::process::ExitCode;

use mcp_authd_ipc::methods::{
    DOCTOR, DoctorResult, GRANTS_LIST, GrantsList, STATUS, SecretBackend, StatusResult,
};
use mcp_authd_ipc::next_step::{self, SERVICE_INSTALL};
use mcp_authd_ipc::{Client, ClientError};
use serde::Serialize;

/// Larger skews make tokens look expired early or not yet valid.
const MAX_SKEW_SECS: i64 = 30;

#[derive(Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

#[derive(Serialize)]
struct Check {
    check: &'static str,
    status: Status,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

#[derive(Serialize)]
struct Report {
    /// No check failed.
    ok: bool,
    checks: Vec<Check>,
}

fn check(check: &'static str, status: Status, detail: String, fix: Option<String>) -> Check {
    Check {
        check,
        status,
        detail,
        fix,
    }
}

pub async fn run(socket: &Path, json: bool) -> ExitCode {
    let mut checks = Vec::new();
    let client = Client::connect(socket).await;
    let daemon = match client {
        Ok(mut client) => match client
            .call::<_, StatusResult>(STATUS, &serde_json::json!({}))
            .await
        {
            Ok(status) => {
                checks.push(check(
                    "daemon",
                    Status::Ok,
                    format!(
                        "mcp-authd {} answers at {} (pid {})",
                        status.version,
                        socket.display(),
                        status.pid
                    ),
                    None,
                ));
                Some((client, status))
            }
            Err(e) => {
                checks.push(daemon_down(&e));
                None
            }
        },
        Err(e) => {
            checks.push(daemon_down(&e));
            None
        }
    };
    checks.push(socket_permissions(socket));
    match daemon {
        Some((mut client, status)) => {
            checks.push(secret_store(&status));
            match client
                .call::<_, DoctorResult>(DOCTOR, &serde_json::json!({}))
                .await
            {
                Ok(d) => {
                    checks.push(database(&status, &d));
                    checks.extend(clock(&d));
                }
                Err(e) => checks.push(check(
                    "database",
                    Status::Fail,
                    format!("the daemon cannot run its checks: {e}"),
                    Some("update mcp-auth and mcp-authd to the same version".into()),
                )),
            }
            match client
                .call::<_, GrantsList>(GRANTS_LIST, &serde_json::json!({}))
                .await
            {
                Ok(list) => checks.extend(refresh_tokens(&list, crate::output::now())),
                Err(e) => checks.push(check(
                    "refresh tokens",
                    Status::Skip,
                    format!("cannot list the grants: {e}"),
                    None,
                )),
            }
        }
        None => {
            for name in ["secret store", "database", "clock", "refresh tokens"] {
                checks.push(check(name, Status::Skip, "needs the daemon".into(), None));
            }
        }
    }
    checks.push(service());

    let report = Report {
        ok: checks.iter().all(|c| c.status != Status::Fail),
        checks,
    };
    if json {
        crate::output::print_json(&report);
    } else {
        for c in &report.checks {
            let tag = match c.status {
                Status::Ok => " ok ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            match &c.fix {
                Some(fix) => println!("[{tag}] {}: {} — fix: {fix}", c.check, c.detail),
                None => println!("[{tag}] {}: {}", c.check, c.detail),
            }
        }
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn daemon_down(e: &ClientError) -> Check {
    // An untrusted socket's message says itself what to remove or change.
    let fix = (!matches!(e, ClientError::Untrusted { .. }))
        .then(|| format!("start it: `{SERVICE_INSTALL}` (or run `mcp-authd` in a terminal)"));
    check("daemon", Status::Fail, e.to_string(), fix)
}

/// The socket's directory 0700 and the socket 0600, both ours: other users must not even
/// reach the door (the daemon also refuses them by peer credentials).
fn socket_permissions(socket: &Path) -> Check {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        let dir = socket.parent().unwrap_or(Path::new("/"));
        let mut problems = Vec::new();
        let mut fixes = Vec::new();
        // Not following a link, as clients do not (ipc-proto `socket::check_directory`).
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => problems.push(format!(
                "{} is a symbolic link (clients refuse it)",
                dir.display()
            )),
            Ok(m) if m.uid() != me => {
                problems.push(format!("{} belongs to uid {}", dir.display(), m.uid()))
            }
            Ok(m) if m.mode() & 0o077 != 0 => {
                problems.push(format!(
                    "{} is {:o}, not 700",
                    dir.display(),
                    m.mode() & 0o777
                ));
                fixes.push(format!("chmod 700 {}", dir.display()));
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("{}: {e}", dir.display())),
        }
        match std::fs::symlink_metadata(socket) {
            Ok(m) if m.uid() != me => {
                problems.push(format!("{} belongs to uid {}", socket.display(), m.uid()))
            }
            Ok(m) if m.mode() & 0o177 != 0 => {
                problems.push(format!(
                    "{} is {:o}, not 600",
                    socket.display(),
                    m.mode() & 0o777
                ));
                fixes.push(format!("chmod 600 {}", socket.display()));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return check(
                    "socket",
                    Status::Skip,
                    format!("{} does not exist", socket.display()),
                    None,
                );
            }
            Err(e) => problems.push(format!("{}: {e}", socket.display())),
        }
        if problems.is_empty() {
            return check(
                "socket",
                Status::Ok,
                format!("{} is 600 in a 700 directory, both yours", socket.display()),
                None,
            );
        }
        if fixes.is_empty() {
            fixes.push("remove the socket and its directory and restart mcp-authd".into());
        }
        check(
            "socket",
            Status::Fail,
            problems.join("; "),
            Some(fixes.join(" && ")),
        )
    }
    #[cfg(not(unix))]
    check(
        "socket",
        Status::Skip,
        "a named pipe; no file permissions".into(),
        None,
    )
}

fn secret_store(status: &StatusResult) -> Check {
    let s = &status.secret_store;
    if !s.refresh_tokens_not_stored.is_empty() {
        return check(
            "secret store",
            Status::Fail,
            format!(
                "the newest refresh token of {} is not yet stored: the {} did not take it (kept in memory, retried)",
                s.refresh_tokens_not_stored.join(", "),
                s.backend
            ),
            Some(format!(
                "unlock the keychain (answer its prompt) and keep mcp-authd running until `{}` no longer warns; stopping it now would lose those grants",
                next_step::STATUS
            )),
        );
    }
    match &s.warning {
        None if s.backend == SecretBackend::Keychain => check("secret store", Status::Ok, format!("the OS keychain ({})", s.detail), None),
        warning => check(
            "secret store",
            Status::Warn,
            format!(
                "secrets are in {} ({}){}",
                s.backend,
                s.detail,
                warning.as_ref().map(|w| format!(": {w}")).unwrap_or_default()
            ),
            Some("run an unlocked Secret Service (gnome-keyring, KeePassXC) in your session and restart mcp-authd; set secret_store = \"keychain\" in the config to insist on it".into()),
        ),
    }
}

fn database(status: &StatusResult, d: &DoctorResult) -> Check {
    let db = format!("{}/state.db", status.data_dir);
    if d.database_integrity != "ok" {
        return check(
            "database",
            Status::Fail,
            format!("{db} is damaged: {}", d.database_integrity),
            Some(format!(
                "stop mcp-authd, move {db} aside (or restore a backup) and log in again"
            )),
        );
    }
    if d.database_schema != d.database_schema_expected {
        return check(
            "database",
            Status::Fail,
            format!(
                "{db} has schema {}, this mcp-authd expects {}",
                d.database_schema, d.database_schema_expected
            ),
            Some("run the mcp-authd that wrote it, or a newer one".into()),
        );
    }
    check(
        "database",
        Status::Ok,
        format!(
            "{db} passes SQLite's quick_check, schema {}",
            d.database_schema
        ),
        None,
    )
}

fn clock(d: &DoctorResult) -> Vec<Check> {
    if d.clock.is_empty() {
        return vec![check(
            "clock",
            Status::Skip,
            "no authorization server to compare with yet (no grant)".into(),
            None,
        )];
    }
    d.clock
        .iter()
        .map(|c| match (c.skew_secs, &c.error) {
            (Some(s), _) if s.abs() <= MAX_SKEW_SECS => check(
                "clock",
                Status::Ok,
                format!("within {} s of {}", s.abs(), c.issuer),
                None,
            ),
            (Some(s), _) => check(
                "clock",
                Status::Warn,
                format!(
                    "this clock is {} s {} {} (its Date header); tokens will look expired early or not yet valid",
                    s.abs(),
                    if s > 0 { "behind" } else { "ahead of" },
                    c.issuer
                ),
                Some("synchronize the clock: `timedatectl set-ntp true` (or your OS's time settings)".into()),
            ),
            (None, error) => check(
                "clock",
                Status::Warn,
                format!(
                    "cannot compare with {}: {}",
                    c.issuer,
                    error.as_deref().unwrap_or("no answer")
                ),
                Some(format!("check that {} is reachable", c.url)),
            ),
        })
        .collect()
}

/// One warning per grant without a refresh token (its user will be sent to the browser at
/// every expiry), with why and what may help; else one line saying all have one.
fn refresh_tokens(list: &GrantsList, now: i64) -> Vec<Check> {
    if list.grants.is_empty() {
        return vec![check(
            "refresh tokens",
            Status::Skip,
            "no grant yet".into(),
            None,
        )];
    }
    let without: Vec<Check> = list
        .grants
        .iter()
        .filter_map(|g| {
            let n = g.no_refresh_token.as_ref()?;
            Some(check(
                "refresh tokens",
                Status::Warn,
                format!(
                    "{} has no refresh token: {}. {}",
                    g.server,
                    n.reason,
                    crate::grants::login_again(g, n, now)
                ),
                n.fix.clone(),
            ))
        })
        .collect();
    if !without.is_empty() {
        return without;
    }
    vec![check(
        "refresh tokens",
        Status::Ok,
        format!(
            "every grant ({}) holds one: no browser login at token expiry",
            list.grants.len()
        ),
        None,
    )]
}

fn service() -> Check {
    match crate::service::health() {
        Ok((true, state)) if state.contains("enabled") || state.contains("loaded") => {
            check("service", Status::Ok, format!("installed; {state}"), None)
        }
        Ok((true, state)) => check(
            "service",
            Status::Warn,
            format!("installed but not enabled: {state}"),
            Some(format!(
                "`{SERVICE_INSTALL}` again, or enable it with your service manager"
            )),
        ),
        Ok((false, _)) => check(
            "service",
            Status::Warn,
            "not installed: the daemon does not start by itself".into(),
            Some(format!("`{SERVICE_INSTALL}`")),
        ),
        Err(e) => check("service", Status::Skip, format!("{e:#}"), None),
    }
}
