//! `mcp-auth service install | uninstall | status`: the daemon as a per-user service —
//! systemd user units with socket activation on Linux, a LaunchAgent on macOS.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Subcommand;
use mcp_authd_ipc::next_step::{SERVICE_INSTALL, SERVICE_STATUS};
use serde::Serialize;

/// The unit files shipped in `systemd/`; `install` points `ExecStart` at the real binary.
const SERVICE_UNIT: &str = include_str!("../../systemd/mcp-authd.service");
const SOCKET_UNIT: &str = include_str!("../../systemd/mcp-authd.socket");
/// The LaunchAgent shipped in `launchd/`, with `@MCP_AUTHD@` and `@SOCKET@` placeholders.
const LAUNCH_AGENT: &str = include_str!("../../launchd/dev.mcp-authd.plist");
const LAUNCHD_LABEL: &str = "dev.mcp-authd";
/// `ExecStart` of the shipped service unit.
const SHIPPED_EXEC: &str = "ExecStart=%h/.local/bin/mcp-authd";

#[derive(Subcommand)]
pub enum Action {
    /// Write the user service (systemd units / LaunchAgent), enable and start it
    Install {
        /// The mcp-authd binary the service runs [default: the one beside mcp-auth]
        #[arg(long)]
        daemon: Option<PathBuf>,
        /// Only write the files; do not enable or start anything
        #[arg(long)]
        no_start: bool,
    },
    /// Stop and disable the user service and remove its files
    Uninstall {
        /// Only remove the files; do not stop or disable anything
        #[arg(long)]
        no_stop: bool,
    },
    /// Whether the user service is installed, enabled and running
    Status,
}

#[derive(Serialize)]
struct ServiceStatus {
    manager: &'static str,
    files: Vec<FileStatus>,
    /// What the service manager says (`enabled`, `active`, …), or why it cannot be asked.
    manager_state: String,
}

#[derive(Serialize)]
struct FileStatus {
    path: String,
    installed: bool,
}

pub fn main(action: Action, socket: Option<PathBuf>, json: bool) -> ExitCode {
    match run(action, socket, json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = format!("{e:#}");
            if mcp_authd_ipc::next_step::names_a_command(&message) {
                eprintln!("mcp-auth: {message}");
            } else {
                eprintln!(
                    "mcp-auth: {message}; fix that and run the command again, or run the daemon without a service: mcp-authd"
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// For `mcp-auth doctor`: whether every service file is installed, and what the service
/// manager says about it.
pub fn health() -> anyhow::Result<(bool, String)> {
    let files = ServiceFiles::for_this_user()?;
    let installed = files.paths().iter().all(|p| p.exists());
    Ok((installed, files.state()))
}

fn run(action: Action, socket: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let files = ServiceFiles::for_this_user()?;
    match action {
        Action::Install { daemon, no_start } => {
            let daemon = match daemon {
                Some(d) => d,
                None => beside_this_binary("mcp-authd")?,
            };
            let daemon = std::fs::canonicalize(&daemon).with_context(|| {
                format!(
                    "{} not found; pass the daemon's path with --daemon",
                    daemon.display()
                )
            })?;
            let socket = mcp_authd_ipc::socket::resolve(socket);
            if let ServiceFiles::Launchd { logs, .. } = &files {
                let dir = logs.parent().unwrap_or(logs);
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                // launchd binds the socket before the daemon runs, and clients refuse a
                // socket whose directory is open to others: make it private now (systemd
                // does this itself with DirectoryMode=0700).
                #[cfg(unix)]
                if let Some(dir) = socket.parent().filter(|d| !d.exists()) {
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
            }
            for (path, text) in files.render(&daemon, &socket)? {
                write_file(&path, &text)?;
                println!("wrote {}", path.display());
            }
            if no_start {
                println!("not started (--no-start); to start: {}", files.start_hint());
                return Ok(());
            }
            files.enable()?;
            println!("enabled and started; check with: {SERVICE_STATUS}");
        }
        Action::Uninstall { no_stop } => {
            if !no_stop && let Err(e) = files.disable() {
                eprintln!(
                    "mcp-auth: could not stop the service ({e:#}); removing its files anyway"
                );
            }
            for path in files.paths() {
                match std::fs::remove_file(&path) {
                    Ok(()) => println!("removed {}", path.display()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).context(format!("cannot remove {}", path.display())),
                }
            }
            if !no_stop {
                let _ = files.reload_manager();
            }
        }
        Action::Status => {
            let status = ServiceStatus {
                manager: files.manager(),
                files: files
                    .paths()
                    .into_iter()
                    .map(|p| FileStatus {
                        installed: p.exists(),
                        path: p.display().to_string(),
                    })
                    .collect(),
                manager_state: files.state(),
            };
            if json {
                crate::output::print_json(&status);
                return Ok(());
            }
            for f in &status.files {
                let state = if f.installed {
                    "installed"
                } else {
                    "not installed"
                };
                println!("{:<14} {}", state, f.path);
            }
            println!("{}: {}", status.manager, status.manager_state);
            if status.files.iter().any(|f| !f.installed) {
                println!("to install: {SERVICE_INSTALL}");
            }
        }
    }
    Ok(())
}

/// A sibling of the running `mcp-auth` (both are installed together).
fn beside_this_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find mcp-auth's own path")?;
    Ok(exe.with_file_name(name))
}

/// Writes a file readable by its owner only, atomically (temporary file, then rename).
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("a service file needs a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs a service-manager command; its stderr becomes the error.
fn manager_command(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The service files of the current user, on this platform.
enum ServiceFiles {
    /// `~/.config/systemd/user` (or `$XDG_CONFIG_HOME/systemd/user`).
    Systemd { dir: PathBuf },
    /// `~/Library/LaunchAgents`; the daemon's log goes to `logs` (`~/Library/Logs`, the
    /// user's own, where Console.app looks; not a shared directory another user could
    /// plant a link in).
    Launchd { dir: PathBuf, logs: PathBuf },
}

impl ServiceFiles {
    fn for_this_user() -> anyhow::Result<ServiceFiles> {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .context("HOME is not set; the user service lives in the home directory")?;
        if cfg!(target_os = "macos") {
            return Ok(ServiceFiles::Launchd {
                dir: home.join("Library/LaunchAgents"),
                logs: home.join("Library/Logs/mcp-authd.log"),
            });
        }
        if !cfg!(target_os = "linux") {
            bail!("`mcp-auth service` supports systemd (Linux) and launchd (macOS)");
        }
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|c| !c.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".config"));
        Ok(ServiceFiles::Systemd {
            dir: config.join("systemd/user"),
        })
    }

    fn manager(&self) -> &'static str {
        match self {
            ServiceFiles::Systemd { .. } => "systemd --user",
            ServiceFiles::Launchd { .. } => "launchd",
        }
    }

    fn paths(&self) -> Vec<PathBuf> {
        match self {
            ServiceFiles::Systemd { dir } => {
                vec![dir.join("mcp-authd.service"), dir.join("mcp-authd.socket")]
            }
            ServiceFiles::Launchd { dir, .. } => vec![dir.join(format!("{LAUNCHD_LABEL}.plist"))],
        }
    }

    fn render(&self, daemon: &Path, socket: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
        let paths = self.paths();
        Ok(match self {
            ServiceFiles::Systemd { .. } => vec![
                (paths[0].clone(), render_service(daemon)?),
                (paths[1].clone(), SOCKET_UNIT.to_string()),
            ],
            ServiceFiles::Launchd { logs, .. } => {
                vec![(paths[0].clone(), render_launch_agent(daemon, socket, logs))]
            }
        })
    }

    fn start_hint(&self) -> String {
        match self {
            ServiceFiles::Systemd { .. } => {
                "systemctl --user daemon-reload && systemctl --user enable --now mcp-authd.socket"
                    .into()
            }
            ServiceFiles::Launchd { .. } => format!(
                "launchctl bootstrap gui/$(id -u) {}",
                self.paths()[0].display()
            ),
        }
    }

    fn reload_manager(&self) -> anyhow::Result<()> {
        if let ServiceFiles::Systemd { .. } = self {
            manager_command("systemctl", &["--user", "daemon-reload"])?;
        }
        Ok(())
    }

    fn enable(&self) -> anyhow::Result<()> {
        let hint = || {
            format!(
                "the files are written but the service manager refused; is there a user session? Then run: {}",
                self.start_hint()
            )
        };
        match self {
            ServiceFiles::Systemd { .. } => {
                self.reload_manager().with_context(hint)?;
                manager_command(
                    "systemctl",
                    &["--user", "enable", "--now", "mcp-authd.socket"],
                )
                .with_context(hint)?;
            }
            ServiceFiles::Launchd { .. } => {
                let plist = self.paths()[0].display().to_string();
                manager_command("launchctl", &["bootstrap", &gui_domain(), &plist])
                    .with_context(hint)?;
            }
        }
        Ok(())
    }

    fn disable(&self) -> anyhow::Result<()> {
        match self {
            ServiceFiles::Systemd { .. } => manager_command(
                "systemctl",
                &[
                    "--user",
                    "disable",
                    "--now",
                    "mcp-authd.socket",
                    "mcp-authd.service",
                ],
            )
            .map(drop),
            ServiceFiles::Launchd { .. } => manager_command(
                "launchctl",
                &["bootout", &format!("{}/{LAUNCHD_LABEL}", gui_domain())],
            )
            .map(drop),
        }
    }

    /// `enabled/active` of the socket and service units, or launchd's view of the agent.
    fn state(&self) -> String {
        match self {
            ServiceFiles::Systemd { .. } => {
                let mut parts = Vec::new();
                for unit in ["mcp-authd.socket", "mcp-authd.service"] {
                    let ask = |what: &str| {
                        Command::new("systemctl")
                            .args(["--user", what, unit])
                            .output()
                            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                            .ok()
                            .filter(|s| !s.is_empty())
                    };
                    match (ask("is-enabled"), ask("is-active")) {
                        (Some(enabled), Some(active)) => {
                            parts.push(format!("{unit} {enabled}, {active}"))
                        }
                        _ => {
                            return "cannot ask systemctl --user (no user session?)".to_string();
                        }
                    }
                }
                parts.join("; ")
            }
            ServiceFiles::Launchd { .. } => {
                match manager_command(
                    "launchctl",
                    &["print", &format!("{}/{LAUNCHD_LABEL}", gui_domain())],
                ) {
                    Ok(_) => "loaded".into(),
                    Err(_) => "not loaded".into(),
                }
            }
        }
    }
}

fn gui_domain() -> String {
    #[cfg(unix)]
    {
        // SAFETY: getuid has no preconditions and cannot fail.
        format!("gui/{}", unsafe { libc::getuid() })
    }
    #[cfg(not(unix))]
    {
        "gui/0".into()
    }
}

/// The shipped service unit running `daemon`.
fn render_service(daemon: &Path) -> anyhow::Result<String> {
    let exec = format!(
        "ExecStart={}",
        systemd_executable(&daemon.display().to_string())?
    );
    Ok(SERVICE_UNIT.replace(SHIPPED_EXEC, &exec))
}

/// `path` as the executable of a systemd command line, meaning exactly that path: `%`
/// starts a specifier (`%%`), and a path with a space is quoted (`$` is literal there).
/// systemd refuses an executable whose path holds a quote, a backslash or a control
/// character however it is escaped (systemd.syntax(7)), and a newline would end the
/// line and start a directive of the path's choosing: such a path is refused.
fn systemd_executable(path: &str) -> anyhow::Result<String> {
    if let Some(c) = path
        .chars()
        .find(|&c| c == '"' || c == '\'' || c == '\\' || c.is_control())
    {
        bail!(
            "systemd cannot run a program whose path holds {c:?}: {path:?}; move mcp-authd to a plain path and pass it with --daemon"
        );
    }
    let word = path.replace('%', "%%");
    Ok(if path.chars().any(char::is_whitespace) {
        format!("\"{word}\"")
    } else {
        word
    })
}

/// The shipped LaunchAgent running `daemon` with launchd owning `socket`, its stderr
/// going to `log`.
fn render_launch_agent(daemon: &Path, socket: &Path, log: &Path) -> String {
    LAUNCH_AGENT
        .replace("@MCP_AUTHD@", &xml_escape(&daemon.display().to_string()))
        .replace("@SOCKET@", &xml_escape(&socket.display().to_string()))
        .replace("@LOG@", &xml_escape(&log.display().to_string()))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_unit_runs_the_given_binary() {
        assert!(SERVICE_UNIT.contains(SHIPPED_EXEC));
        let unit = render_service(Path::new("/opt/mcp authd/bin/mcp-authd")).unwrap();
        assert!(unit.contains("ExecStart=\"/opt/mcp authd/bin/mcp-authd\"\n"));
        assert!(!unit.contains("%h/.local/bin"));
        let unit = render_service(Path::new("/opt/100%h $HOME/mcp-authd")).unwrap();
        assert!(unit.contains("ExecStart=\"/opt/100%%h $HOME/mcp-authd\"\n"));
        for odd in [
            "/opt/a\nExecStartPre=/bin/evil/mcp-authd",
            "/opt/it's/mcp-authd",
            "/o\\p",
        ] {
            let e = render_service(Path::new(odd)).unwrap_err().to_string();
            assert!(
                e.contains("systemd cannot run a program whose path holds"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_launch_agent_gets_every_path_escaped_and_logs_in_the_users_library() {
        let plist = render_launch_agent(
            Path::new("/Users/a&b/.local/bin/mcp-authd"),
            Path::new("/tmp/mcp-authd-501/mcp-authd.sock"),
            Path::new("/Users/<o'k>/Library/Logs/mcp-authd.log"),
        );
        assert!(plist.contains("<string>/Users/a&amp;b/.local/bin/mcp-authd</string>"));
        assert!(plist.contains("<string>/tmp/mcp-authd-501/mcp-authd.sock</string>"));
        assert!(plist.contains(
            "<key>StandardErrorPath</key>\n    <string>/Users/&lt;o&apos;k&gt;/Library/Logs/mcp-authd.log</string>"
        ));
        assert!(!plist.contains("/tmp/mcp-authd.log"));
        assert!(!plist.contains('@'));
    }
}
