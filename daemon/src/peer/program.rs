//! Which program is on the other end of a connection, for `confirm_clients`. Decisions are
//! remembered per program, so the name must be one the user recognises in a dialog, and
//! one program must not pass for another by a mere choice of arguments.
//!
//! The rule: the executable's path as the kernel resolves it (`/proc/PID/exe`). For an
//! interpreter (python, node, sh, …) it is the script, when the command line reads
//! `interpreter SCRIPT …`: the first argument, not an option, naming an existing file —
//! which is also what a `#!` line produces. With an option before it (`-c`, `-e`, `-m`,
//! `-u script`), or no script (a REPL), it is the interpreter itself: inline code never
//! passes for an approved script, at the price of asking again for `python3 -u x.py`.
//! When the peer is the `mcp-auth` CLI, the program is the CLI's parent process, by the
//! same rule: whoever ran `mcp-auth token`. Otherwise one "always" for the CLI would let
//! every script that calls it through.

use std::path::Path;

use super::executable;

/// A program as `confirm_clients` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub path: String,
    /// The peer is the `mcp-auth` CLI and `path` names its parent.
    pub via_cli: bool,
}

/// Interpreters whose script names the program, by file name without a version suffix
/// (`python3.12` → `python`).
const INTERPRETERS: &[&str] = &[
    "python",
    "pypy",
    "node",
    "nodejs",
    "bun",
    "deno",
    "ruby",
    "perl",
    "php",
    "lua",
    "luajit",
    "sh",
    "bash",
    "dash",
    "zsh",
    "ksh",
    "mksh",
    "fish",
    "tclsh",
    "Rscript",
    "osascript",
    "pwsh",
];

/// The name of the CLI, whose parent is the program that asks.
const CLI: &str = "mcp-auth";

/// The program of process `pid` whose executable is `exe`; `None` when it cannot be told.
pub fn identify(pid: Option<u32>, exe: Option<&str>) -> Option<Program> {
    let exe = exe?;
    if file_name(exe) != CLI {
        return Some(Program {
            path: of_process(pid, exe),
            via_cli: false,
        });
    }
    let parent = parent_of(pid?)?;
    let parent_exe = executable(parent)?;
    Some(Program {
        path: of_process(Some(parent), &parent_exe),
        via_cli: true,
    })
}

fn of_process(pid: Option<u32>, exe: &str) -> String {
    if is_interpreter(exe)
        && let Some(script) = pid.and_then(script_of)
    {
        return script;
    }
    exe.to_string()
}

fn file_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
}

pub fn is_interpreter(exe: &str) -> bool {
    let stem = file_name(exe).trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    INTERPRETERS.contains(&stem)
}

/// The script an interpreter runs: `argv[1]` when it is no option and names a file
/// (relative to the process's working directory), canonical.
#[cfg(target_os = "linux")]
fn script_of(pid: u32) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let first = cmdline.split(|b| *b == 0).nth(1)?;
    if first.is_empty() || first.starts_with(b"-") {
        return None;
    }
    let arg = Path::new(std::ffi::OsStr::from_bytes(first));
    let path = if arg.is_absolute() {
        arg.to_path_buf()
    } else {
        std::fs::read_link(format!("/proc/{pid}/cwd"))
            .ok()?
            .join(arg)
    };
    let real = std::fs::canonicalize(path).ok()?;
    real.is_file().then(|| real.to_string_lossy().into_owned())
}

#[cfg(not(target_os = "linux"))]
fn script_of(_pid: u32) -> Option<String> {
    None
}

#[cfg(target_os = "linux")]
fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|p| *p > 1)
}

#[cfg(not(target_os = "linux"))]
fn parent_of(_pid: u32) -> Option<u32> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn interpreters_are_told_by_name_without_version() {
        for exe in [
            "/usr/bin/python3.12",
            "/usr/bin/python3",
            "/usr/local/bin/node",
            "/bin/sh",
            "/usr/bin/perl5.36.0",
            "/opt/pypy3/bin/pypy3",
        ] {
            assert!(is_interpreter(exe), "{exe}");
        }
        for exe in [
            "/usr/bin/code",
            "/usr/bin/claude",
            "/usr/bin/mcp-auth",
            "/x/python-tool",
        ] {
            assert!(!is_interpreter(exe), "{exe}");
        }
    }

    /// Real processes: a script run by sh is named by the script; sh with `-c` (inline
    /// code that mentions the script) and the test itself are named by their executable.
    #[test]
    fn a_script_names_the_program_and_inline_code_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("client.sh");
        // `read` is a builtin: no child process outlives the test.
        std::fs::write(&script, "read x\n").unwrap();
        let run = |args: &[&str]| {
            let child = std::process::Command::new("/bin/sh")
                .args(args)
                .current_dir(dir.path())
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // /proc is read once the exec has happened (a loaded machine may take a while).
            let pid = child.id();
            let own = executable(std::process::id());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let mut exe = executable(pid);
            // The kernel names the new executable before it lays out the new command
            // line: wait for both.
            let exec_done = |exe: &Option<String>| {
                exe != &own
                    && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
            };
            while !exec_done(&exe) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
                exe = executable(pid);
            }
            let program = identify(Some(pid), exe.as_deref());
            (child, exe, program)
        };
        let real = std::fs::canonicalize(&script)
            .unwrap()
            .display()
            .to_string();
        let (mut a, _, program) = run(&["client.sh"]);
        assert_eq!(program.unwrap().path, real, "relative to its cwd");
        let (mut b, exe, program) = run(&["-c", &format!("read x; : {real}")]);
        assert_eq!(program.unwrap().path, exe.unwrap());
        for c in [&mut a, &mut b] {
            let _ = c.kill();
            let _ = c.wait();
        }
        let me = std::process::id();
        let own = identify(Some(me), executable(me).as_deref()).unwrap();
        assert!(!own.via_cli && own.path.contains("mcp_authd"), "{own:?}");
    }
}
