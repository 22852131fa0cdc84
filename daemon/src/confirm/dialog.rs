//! The desktop dialog that asks the user: zenity or kdialog on Linux when a display is
//! set, osascript on macOS. No dialog: the request waits for `mcp-auth approve` alone.
//!
//! Everything shown comes from elsewhere — the program's path (any local program picks its
//! own file name), the server URL, the account from the authorization server — so each
//! value goes through [`field`]: no control or invisible formatting characters (no fake
//! lines, no right-to-left tricks), bounded length, and markup escaped for the toolkits
//! that read it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mcp_authd_ipc::clients::Answer;

pub const TITLE: &str = "mcp-authd: allow a program?";
pub const ALLOW_ONCE: &str = "Allow once";
pub const ALWAYS: &str = "Always allow";
pub const DENY: &str = "Deny";

#[derive(Debug, Clone)]
pub enum Dialog {
    Zenity(PathBuf),
    Kdialog(PathBuf),
    Osascript(PathBuf),
}

/// What the user is shown: who asks, for what.
pub struct Question<'a> {
    pub program: &'a str,
    pub via_cli: bool,
    pub pid: Option<u32>,
    pub server: &'a str,
    pub account: Option<&'a str>,
    pub grant: &'a str,
    pub request: u64,
}

impl Dialog {
    /// The dialog this session can show, if any.
    pub fn available() -> Option<Dialog> {
        if cfg!(target_os = "macos") {
            let osascript = Path::new("/usr/bin/osascript");
            return osascript
                .exists()
                .then(|| Dialog::Osascript(osascript.into()));
        }
        let display = ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()));
        if !display {
            return None;
        }
        on_path("zenity")
            .map(Dialog::Zenity)
            .or_else(|| on_path("kdialog").map(Dialog::Kdialog))
    }

    /// Shows the question and returns the answer; `None` when the dialog gave none (it
    /// timed out, or could not be shown). Dropping the future closes the dialog.
    pub async fn ask(&self, q: &Question<'_>, timeout: Duration) -> Option<Answer> {
        let (program, args) = self.command(q, timeout);
        let out = tokio::process::Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!("cannot show the confirmation dialog: {e}");
                return None;
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let answer = self.answer(out.status.code(), stdout.trim(), &stderr);
        if answer.is_none() {
            tracing::warn!(
                status = ?out.status.code(),
                "the confirmation dialog gave no answer: {}",
                crate::oauth::printable(stderr.trim(), 300)
            );
        }
        answer
    }

    fn command(&self, q: &Question<'_>, timeout: Duration) -> (PathBuf, Vec<String>) {
        let secs = timeout.as_secs().max(1).to_string();
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            Dialog::Zenity(path) => {
                let text = q.text(Markup::Escaped);
                let mut a = args(&["--question", "--title", TITLE, "--text"]);
                a.push(text);
                a.extend(args(&[
                    "--ok-label",
                    ALLOW_ONCE,
                    "--extra-button",
                    ALWAYS,
                    "--cancel-label",
                    DENY,
                    "--default-cancel",
                    "--width",
                    "480",
                    "--timeout",
                    &secs,
                ]));
                (path.clone(), a)
            }
            Dialog::Kdialog(path) => {
                let text = q.text(Markup::Escaped);
                let mut a = args(&["--title", TITLE, "--yesnocancel"]);
                a.push(text);
                a.extend(args(&[
                    "--yes-label",
                    ALLOW_ONCE,
                    "--no-label",
                    ALWAYS,
                    "--cancel-label",
                    DENY,
                ]));
                (path.clone(), a)
            }
            Dialog::Osascript(path) => {
                // The text travels as an argument, never inside the script's source.
                let script = format!(
                    "on run argv\n\
                     display dialog (item 1 of argv) with title \"{TITLE}\" buttons {{\"{DENY}\", \"{ALWAYS}\", \"{ALLOW_ONCE}\"}} default button \"{DENY}\" cancel button \"{DENY}\" giving up after {secs}\n\
                     return button returned of result\n\
                     end run"
                );
                (
                    path.clone(),
                    vec!["-e".into(), script, q.text(Markup::Plain)],
                )
            }
        }
    }

    /// The answer from the dialog's exit status and output.
    fn answer(&self, code: Option<i32>, stdout: &str, stderr: &str) -> Option<Answer> {
        match self {
            // 0: OK; 1: Cancel, the window closed, or the extra button (named on stdout);
            // 5: timed out. A display it cannot open is also 1, with its complaint.
            Dialog::Zenity(_) => match (code, stdout) {
                (Some(0), _) => Some(Answer::Once),
                (Some(1), ALWAYS) => Some(Answer::Always),
                (Some(1), "") if !stderr.to_ascii_lowercase().contains("open display") => {
                    Some(Answer::Deny)
                }
                _ => None,
            },
            Dialog::Kdialog(_) => match code {
                Some(0) => Some(Answer::Once),
                Some(1) => Some(Answer::Always),
                Some(2) => Some(Answer::Deny),
                _ => None,
            },
            // The cancel button ends the script with error -128.
            Dialog::Osascript(_) => match (code, stdout) {
                (Some(0), ALLOW_ONCE) => Some(Answer::Once),
                (Some(0), ALWAYS) => Some(Answer::Always),
                (Some(1), _) if stderr.contains("(-128)") => Some(Answer::Deny),
                _ => None,
            },
        }
    }
}

#[derive(Clone, Copy)]
enum Markup {
    /// zenity (Pango) and kdialog (Qt rich text) read markup: `<`, `>`, `&` are escaped.
    Escaped,
    Plain,
}

impl Question<'_> {
    fn text(&self, markup: Markup) -> String {
        let f = |s: &str| field(s, markup);
        let program = if self.via_cli {
            format!("{} (through mcp-auth)", f(self.program))
        } else {
            f(self.program)
        };
        let pid = self
            .pid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "unknown".into());
        let mut text = format!(
            "A program asks for the access token of an MCP server.\n\n\
             Program: {program}\nProcess: {pid}\nServer: {}\n",
            f(self.server)
        );
        if let Some(account) = self.account {
            text.push_str(&format!("Account: {}\n", f(account)));
        }
        text.push_str(&format!(
            "Grant: {}\n\nAllow it? (From a terminal: {})",
            f(self.grant),
            mcp_authd_ipc::next_step::approve_command(self.request)
        ));
        text
    }
}

/// A value from elsewhere, fit for one line of a dialog: the one sanitizer for
/// server-controlled text, then the dialog's markup escaped.
fn field(s: &str, markup: Markup) -> String {
    let short = crate::oauth::printable(s, 200);
    match markup {
        Markup::Plain => short,
        Markup::Escaped => short
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;"),
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    #[cfg(unix)]
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata().is_ok_and(|m| {
                #[cfg(unix)]
                let runnable = m.permissions().mode() & 0o111 != 0;
                #[cfg(not(unix))]
                let runnable = true;
                m.is_file() && runnable
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cannot_add_lines_markup_or_reorder_text() {
        let hostile = "evil\n\nProgram: /usr/bin/code\u{2028}<b>ok</b>&\u{202E}yp.\u{1b}[31m";
        let escaped = field(hostile, Markup::Escaped);
        assert_eq!(
            escaped,
            "evilProgram: /usr/bin/code&lt;b&gt;ok&lt;/b&gt;&amp;yp."
        );
        assert_eq!(field(&"x".repeat(500), Markup::Plain).chars().count(), 201);
    }

    #[test]
    fn each_dialog_reads_its_buttons() {
        let z = Dialog::Zenity("zenity".into());
        assert_eq!(z.answer(Some(0), "", ""), Some(Answer::Once));
        assert_eq!(z.answer(Some(1), ALWAYS, ""), Some(Answer::Always));
        assert_eq!(z.answer(Some(1), "", ""), Some(Answer::Deny));
        assert_eq!(z.answer(Some(5), "", ""), None, "timed out");
        assert_eq!(
            z.answer(
                Some(1),
                "",
                "(zenity:1): Gtk-WARNING **: cannot open display: :9"
            ),
            None
        );
        let k = Dialog::Kdialog("kdialog".into());
        assert_eq!(k.answer(Some(2), "", ""), Some(Answer::Deny));
        assert_eq!(k.answer(None, "", ""), None, "killed");
        let o = Dialog::Osascript("osascript".into());
        assert_eq!(o.answer(Some(0), ALWAYS, ""), Some(Answer::Always));
        assert_eq!(o.answer(Some(0), "", ""), None, "gave up");
        assert_eq!(
            o.answer(Some(1), "", "execution error: User canceled. (-128)"),
            Some(Answer::Deny)
        );
    }
}
