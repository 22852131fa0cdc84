//! `confirm_clients`, end to end with the real binaries: the first time a program asks for
//! a grant's token the daemon asks the user — a pending request that `mcp-auth approve`
//! answers from another process, or a desktop dialog (zenity, here a stand-in executable
//! that records what it was shown) — and remembers `always` and `deny` per grant and
//! program, also across a restart. No answer in time is a clear error, never a hang, and a
//! waiting question blocks nobody else.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mcp_authd_ipc::clients::{Answer, PendingList, PendingRequest};
use mcp_authd_ipc::methods::{TOKEN_CHALLENGE, TOKEN_GET, TokenGetParams, TokenGetResult};
use mcp_authd_ipc::{Client, ClientError, ErrorKind};
use mcp_authd_tests::daemon::{Daemon, DaemonHome, bin};
use mcp_authd_tests::tools::{on_path, required};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};
use serde_json::Value;

/// `mcp-auth`'s exit code when the user denied the program, or did not answer in time.
const NOT_CONFIRMED: i32 = 8;

/// No desktop: the daemon may only ask through `mcp-auth approve`.
const HEADLESS: &[(&str, &str)] = &[("DISPLAY", ""), ("WAYLAND_DISPLAY", "")];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// This test executable: the parent of every `mcp-auth` it runs, so the program the
/// daemon names for them.
fn this_program() -> String {
    std::fs::canonicalize("/proc/self/exe")
        .unwrap()
        .display()
        .to_string()
}

/// `mcp-auth --socket … ARGS`, running in the background.
fn spawn_cli(d: &Daemon, args: &[&str]) -> Child {
    Command::new(bin("mcp-auth"))
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .env_remove("MCP_AUTHD_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mcp-auth")
}

/// Waits for a child, killing it (and failing) if it hangs.
fn finish(mut child: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "still running after {within:?}: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn pending(d: &Daemon) -> Vec<PendingRequest> {
    let list: PendingList = serde_json::from_str(&d.cli_ok(&["approve", "--json"])).unwrap();
    list.requests
}

/// The one request waiting, once it appears (a loaded machine may take a while).
fn wait_for_request(d: &Daemon) -> PendingRequest {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut all = pending(d);
        if let Some(r) = all.pop() {
            assert!(all.is_empty(), "one question at a time here: {all:?}");
            return r;
        }
        assert!(Instant::now() < deadline, "no request appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A token without asking anyone.
fn token_at_once(d: &Daemon, url: &str) -> String {
    let out = finish(spawn_cli(d, &["token", url]), Duration::from_secs(15));
    assert!(out.status.success(), "{out:?}");
    text(&out.stdout).trim().to_string()
}

/// `token.get` through the Rust client, from this process itself.
fn token_error_kind(d: &Daemon, url: &str) -> Option<ErrorKind> {
    let params = TokenGetParams {
        server: url.to_string(),
        ..Default::default()
    };
    call_error_kind(d, TOKEN_GET, serde_json::to_value(params).unwrap())
}

/// The error kind a call from this process gets.
fn call_error_kind(d: &Daemon, method: &'static str, params: Value) -> Option<ErrorKind> {
    let socket = d.socket().to_path_buf();
    tokio::runtime::Handle::current().block_on(async move {
        let mut client = Client::connect(&socket).await.unwrap();
        match client.call::<_, TokenGetResult>(method, &params).await {
            Err(ClientError::Rpc(e)) => e.kind(),
            Err(other) => panic!("not an error of the daemon: {other}"),
            Ok(t) => panic!("a token of grant {} instead of an error", t.grant),
        }
    })
}

fn inspect_clients(d: &Daemon, grant: &str) -> Vec<(String, String)> {
    let v: Value = serde_json::from_str(&d.cli_ok(&["inspect", grant, "--json"])).unwrap();
    v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["program"].as_str().unwrap().to_string(),
                c["decision"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn grant_id(d: &Daemon, url: &str) -> String {
    let v: Value = serde_json::from_str(&d.cli_ok(&["inspect", url, "--json"])).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// A stand-in for the dialog program: it records its arguments (one file per run named
/// after its pid, NUL between them), then runs `then` (shell): answers as the user would,
/// by its exit status and output, or waits.
fn fake_dialog(dir: &Path, name: &str, then: &str) -> PathBuf {
    let bin_dir = dir.join("bin");
    let calls = dir.join("calls");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::create_dir_all(&calls).unwrap();
    let path = bin_dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > '{}/call.'$$\n{then}\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin_dir
}

/// The argument lists the stand-in dialog recorded, one per run.
fn dialog_calls(dir: &Path) -> Vec<Vec<String>> {
    let Ok(entries) = std::fs::read_dir(dir.join("calls")) else {
        return Vec::new();
    };
    entries
        .map(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            text(&bytes)
                .split('\0')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A copy of `examples/token.py` under `name`: a client that talks to the socket itself,
/// so the daemon names it by its script.
fn python_client(dir: &Path, name: &str) -> Option<(PathBuf, PathBuf)> {
    let python = required(
        "python3",
        on_path("python3"),
        "a script client of confirm_clients",
    )?;
    let script = dir.join(name);
    std::fs::copy(repo().join("examples/token.py"), &script).unwrap();
    Some((python, script))
}

fn run_python(python: &Path, script: &Path, d: &Daemon, url: &str) -> Child {
    Command::new(python)
        .arg(script)
        .arg(url)
        .env("MCP_AUTHD_SOCKET", d.socket())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3")
}

/// `mcp-auth token` waits while another process answers through `mcp-auth approve`:
/// `--once` lets that run through and the next run asks again; `--always` is remembered
/// (no second question, also after a restart) and listed by `inspect`; `forget-client`
/// makes the program ask again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_from_a_terminal_once_then_always_across_a_restart_until_forgotten() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new(
        "file",
        "confirm_clients = true\nconfirm_timeout_secs = 60\n",
    );
    tokio::task::spawn_blocking(move || {
        let d = home.start_with_env(None, HEADLESS);
        d.cli_ok(&["login", &url]);
        let grant = grant_id(&d, &url);
        let me = this_program();

        // Once: the waiting CLI gets its token when another process answers.
        let waiting = spawn_cli(&d, &["token", &url]);
        let r = wait_for_request(&d);
        assert_eq!(
            (r.grant.as_str(), r.program.as_deref(), r.via_cli, r.dialog),
            (grant.as_str(), Some(me.as_str()), true, false),
            "{r:?}"
        );
        assert_eq!(r.pid, Some(waiting.id()), "the process that asked");
        let said = d.cli_ok(&["approve", &r.id.to_string(), "--once"]);
        assert!(said.contains("this time"), "{said}");
        let out = finish(waiting, Duration::from_secs(15));
        assert!(out.status.success(), "{out:?}");
        let token = text(&out.stdout).trim().to_string();
        let runtime = tokio::runtime::Handle::current();
        assert_eq!(runtime.block_on(mcp.status_with_token(&token)), 200);
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("mcp-auth approve {}", r.id)),
            "the waiting CLI says how to answer: {stderr}"
        );
        assert!(inspect_clients(&d, &grant).is_empty(), "once is not stored");

        // Asked again (a new connection); `always` is remembered.
        let waiting = spawn_cli(&d, &["token", &url]);
        let r2 = wait_for_request(&d);
        assert_ne!(r2.id, r.id);
        d.cli_ok(&["approve", &r2.id.to_string(), "--always"]);
        assert!(finish(waiting, Duration::from_secs(15)).status.success());
        token_at_once(&d, &url);
        assert!(pending(&d).is_empty(), "no second question");
        assert_eq!(
            inspect_clients(&d, &grant),
            [(me.clone(), "always".to_string())]
        );
        let inspect = d.cli_ok(&["inspect", &grant]);
        assert!(
            inspect.contains("Programs (confirm_clients):") && inspect.contains(&me),
            "{inspect}"
        );

        // Remembered in SQLite: no question after a restart either.
        d.stop();
        let d = home.start_with_env(None, HEADLESS);
        token_at_once(&d, &url);
        assert!(pending(&d).is_empty(), "no question after a restart");

        // Forgotten: asked again.
        let said = d.cli_ok(&["forget-client", &grant, &me]);
        assert!(said.contains("asked again"), "{said}");
        assert!(inspect_clients(&d, &grant).is_empty());
        let missing = d.cli(&["forget-client", &grant, &me]);
        assert_eq!(missing.status.code(), Some(6), "{missing:?}");
        let waiting = spawn_cli(&d, &["token", &url]);
        let r3 = wait_for_request(&d);
        d.cli_ok(&["approve", &r3.id.to_string()]);
        assert!(finish(waiting, Duration::from_secs(15)).status.success());
        let gone = d.cli(&["approve", &r3.id.to_string()]);
        assert_eq!(gone.status.code(), Some(6), "answered already: {gone:?}");
    })
    .await
    .unwrap();
}

/// No answer in time: a clear error with its own exit code, the question gone. Meanwhile
/// nothing else waits: `status`, and a grant whose server does not ask, answer at once.
/// `--deny` fails the waiting program and is remembered: the next run fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_and_a_deny_are_clear_errors_and_block_nobody_else() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let asking = McpServer::start(&auth, McpOptions::default()).await;
    let quiet = McpServer::start(&auth, McpOptions::default()).await;
    let (url, quiet_url) = (asking.url().to_string(), quiet.url().to_string());
    let home = DaemonHome::new(
        "file",
        &format!(
            "confirm_clients = true\nconfirm_timeout_secs = 5\n[servers.\"{quiet_url}\"]\nconfirm_clients = false\n"
        ),
    );
    tokio::task::spawn_blocking(move || {
        let d = home.start_with_env(None, HEADLESS);
        d.cli_ok(&["login", &url]);
        d.cli_ok(&["login", &quiet_url]);
        let grant = grant_id(&d, &url);

        let started = Instant::now();
        let waiting = spawn_cli(&d, &["token", &url]);
        wait_for_request(&d);
        let mut waiting = waiting;
        token_at_once(&d, &quiet_url);
        d.cli_ok(&["status"]);
        assert!(
            waiting.try_wait().unwrap().is_none(),
            "the other grant and `status` were answered while the question still waited"
        );
        let out = finish(waiting, Duration::from_secs(20));
        let (code, stderr) = (out.status.code(), text(&out.stderr));
        assert_eq!(code, Some(NOT_CONFIRMED), "{stderr}");
        assert!(
            stderr.contains("confirmation timed out") && stderr.contains("mcp-auth approve"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "no token");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "bounded by confirm_timeout_secs: {:?}",
            started.elapsed()
        );
        assert!(pending(&d).is_empty(), "the question expired with it");

        // The error kind on the wire (this process is the same program as its CLIs).
        assert_eq!(
            token_error_kind(&d, &url),
            Some(ErrorKind::ConfirmationTimeout)
        );

        // Deny: the waiting program fails; the next run fails without a question.
        let waiting = spawn_cli(&d, &["token", &url]);
        let r = wait_for_request(&d);
        let said = d.cli_ok(&["approve", &r.id.to_string(), "--deny"]);
        assert!(said.contains("Denied"), "{said}");
        let out = finish(waiting, Duration::from_secs(15));
        assert_eq!(out.status.code(), Some(NOT_CONFIRMED), "{out:?}");
        assert!(text(&out.stderr).contains("denied by the user"), "{out:?}");
        let t = Instant::now();
        let again = finish(spawn_cli(&d, &["token", &url]), Duration::from_secs(15));
        assert_eq!(again.status.code(), Some(NOT_CONFIRMED));
        let stderr = text(&again.stderr);
        assert!(
            stderr.contains("denied by the user")
                && stderr.contains(&format!("mcp-auth forget-client {grant}")),
            "{stderr}"
        );
        assert!(pending(&d).is_empty(), "no second question");
        assert!(t.elapsed() < Duration::from_secs(5), "not until a timeout");
        assert_eq!(
            token_error_kind(&d, &url),
            Some(ErrorKind::ConfirmationDenied)
        );
        // A token to retry with after a 401 is a hand-out like any other.
        let challenge = serde_json::json!({"server": url, "status": 401});
        assert_eq!(
            call_error_kind(&d, TOKEN_CHALLENGE, challenge),
            Some(ErrorKind::ConfirmationDenied)
        );
        assert_eq!(
            inspect_clients(&d, &grant),
            [(this_program(), "deny".to_string())]
        );
    })
    .await
    .unwrap();
}

/// Headless, and a client that is a script talking to the socket itself: the question
/// names the script (not python), no dialog is tried without a display even with zenity
/// on PATH, and `mcp-auth approve --always` lets it through, now and next time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headless_approval_names_the_script_an_interpreter_runs() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "confirm_clients = true\n");
    let scratch = tempfile::tempdir().unwrap();
    tokio::task::spawn_blocking(move || {
        let Some((python, script)) = python_client(scratch.path(), "sync-notes.py") else {
            return;
        };
        let fake = fake_dialog(scratch.path(), "zenity", "exit 0");
        let d = home.start_with_env(
            None,
            &[
                ("DISPLAY", ""),
                ("WAYLAND_DISPLAY", ""),
                ("PATH", &path_with(&fake)),
            ],
        );
        d.cli_ok(&["login", &url]);
        let grant = grant_id(&d, &url);

        let waiting = run_python(&python, &script, &d, &url);
        let r = wait_for_request(&d);
        let real = std::fs::canonicalize(&script)
            .unwrap()
            .display()
            .to_string();
        assert_eq!(
            (r.program.as_deref(), r.via_cli, r.dialog),
            (Some(real.as_str()), false, false),
            "{r:?}"
        );
        let listed = d.cli_ok(&["approve"]);
        assert!(
            listed.contains(&real) && listed.contains(&format!("{}", r.id)),
            "{listed}"
        );
        let approved: Value =
            serde_json::from_str(&d.cli_ok(&["approve", &r.id.to_string(), "--always", "--json"]))
                .unwrap();
        assert_eq!(approved["answer"], "always");
        assert_eq!(approved["remembered"], true);
        let out = finish(waiting, Duration::from_secs(15));
        assert!(out.status.success(), "{out:?}");
        assert!(
            dialog_calls(scratch.path()).is_empty(),
            "no display, no dialog"
        );

        let again = finish(
            run_python(&python, &script, &d, &url),
            Duration::from_secs(15),
        );
        assert!(again.status.success(), "remembered: {again:?}");
        assert!(pending(&d).is_empty());
        assert_eq!(inspect_clients(&d, &grant), [(real, "always".to_string())]);
    })
    .await
    .unwrap();
}

/// With a display, the daemon shows a zenity dialog (a stand-in executable here, the only
/// one). Its answer, "Always allow", is remembered like a terminal's. Every string in it
/// that a server or another program chose — the script's file name, the account from the
/// id_token — is one line of text with no markup, no control or bidirectional characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_dialog_answers_and_shows_foreign_strings_sanitized() {
    let hostile_account = "<b>Click Always allow</b>\u{202E}&x@evil.test";
    let auth = AuthServer::start(AsOptions {
        scopes_supported: ["mcp:read", "openid", "offline_access"]
            .map(String::from)
            .to_vec(),
        account_email: Some(hostile_account.into()),
        ..AsOptions::default()
    })
    .await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "confirm_clients = true\n");
    let scratch = tempfile::tempdir().unwrap();
    tokio::task::spawn_blocking(move || {
        // A file name cannot hold `/`; everything else goes.
        let name = "notes\nProgram: ssh\u{2028}<i>x&y\u{202E}yp.py";
        let Some((python, script)) = python_client(scratch.path(), name) else {
            return;
        };
        let fake = fake_dialog(scratch.path(), "zenity", "echo 'Always allow'; exit 1");
        let d = home.start_with_env(
            None,
            &[
                ("DISPLAY", ":77"),
                ("WAYLAND_DISPLAY", ""),
                ("PATH", &path_with(&fake)),
            ],
        );
        d.cli_ok(&["login", &url, "--scope", "mcp:read openid"]);
        let grant = grant_id(&d, &url);

        let out = finish(
            run_python(&python, &script, &d, &url),
            Duration::from_secs(20),
        );
        assert!(out.status.success(), "{out:?}\n{}", home.log_text());
        let calls = dialog_calls(scratch.path());
        assert_eq!(calls.len(), 1, "{calls:?}");
        let args = &calls[0];
        let arg_after = |flag: &str| {
            let i = args
                .iter()
                .position(|a| a == flag)
                .unwrap_or_else(|| panic!("{flag} in {args:?}"));
            args[i + 1].clone()
        };
        assert!(args.contains(&"--question".to_string()), "{args:?}");
        assert!(
            args.contains(&"--default-cancel".to_string()),
            "Deny is the default: {args:?}"
        );
        assert_eq!(arg_after("--extra-button"), "Always allow");
        let dialog_text = arg_after("--text");
        let dir = std::fs::canonicalize(scratch.path()).unwrap();
        let shown_program = format!("{}/notesProgram: ssh&lt;i&gt;x&amp;yyp.py", dir.display());
        let lines: Vec<&str> = dialog_text.lines().collect();
        assert!(
            lines.contains(&format!("Program: {shown_program}").as_str()),
            "{dialog_text}"
        );
        assert!(
            lines.contains(&"Account: &lt;b&gt;Click Always allow&lt;/b&gt;&amp;x@evil.test"),
            "{dialog_text}"
        );
        assert!(
            lines.contains(&format!("Server: {url}").as_str()),
            "{dialog_text}"
        );
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("Program:")).count(),
            1,
            "no line made by a file name: {dialog_text}"
        );
        for bad in ['\u{202E}', '\u{2028}', '<', '\r'] {
            assert!(!dialog_text.contains(bad), "{bad:?} in {dialog_text:?}");
        }

        // Remembered: the next run is served without a dialog.
        let again = finish(
            run_python(&python, &script, &d, &url),
            Duration::from_secs(15),
        );
        assert!(again.status.success(), "{again:?}");
        assert_eq!(dialog_calls(scratch.path()).len(), 1, "no second dialog");
        let real = std::fs::canonicalize(&script)
            .unwrap()
            .display()
            .to_string();
        assert_eq!(
            inspect_clients(&d, &grant),
            [(real, Answer::Always.as_str().to_string())]
        );
        let inspect = d.cli_ok(&["inspect", &grant]);
        assert!(
            inspect.contains("notesProgram: ssh"),
            "control characters dropped by the one sanitizer: {inspect}"
        );
    })
    .await
    .unwrap();
}

/// The dialog and the terminal ask at once; whichever answers first wins, and an answer
/// from the terminal closes the dialog (its process ends). The dialog is bounded by the
/// same timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_from_the_terminal_closes_the_dialog() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new(
        "file",
        "confirm_clients = true\nconfirm_timeout_secs = 40\n",
    );
    let scratch = tempfile::tempdir().unwrap();
    tokio::task::spawn_blocking(move || {
        // A dialog nobody answers: it waits as the real one would (exec: the recorded pid
        // is the process the daemon must end).
        let bin_dir = fake_dialog(scratch.path(), "zenity", "exec sleep 120");
        let calls = scratch.path().join("calls");
        let d = home.start_with_env(
            None,
            &[
                ("DISPLAY", ":77"),
                ("WAYLAND_DISPLAY", ""),
                ("PATH", &path_with(&bin_dir)),
            ],
        );
        d.cli_ok(&["login", &url]);

        let waiting = spawn_cli(&d, &["token", &url]);
        let r = wait_for_request(&d);
        assert!(r.dialog, "{r:?}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let dialog_pid: u32 = loop {
            let entry = std::fs::read_dir(&calls).unwrap().next();
            if let Some(e) = entry {
                let name = e.unwrap().file_name().into_string().unwrap();
                break name.trim_start_matches("call.").parse().unwrap();
            }
            assert!(Instant::now() < deadline, "the dialog was not shown");
            std::thread::sleep(Duration::from_millis(50));
        };
        let args = &dialog_calls(scratch.path())[0];
        let timeout_at = args.iter().position(|a| a == "--timeout").unwrap();
        assert_eq!(args[timeout_at + 1], "40", "{args:?}");

        d.cli_ok(&["approve", &r.id.to_string(), "--once"]);
        let out = finish(waiting, Duration::from_secs(15));
        assert!(out.status.success(), "{out:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{dialog_pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{dialog_pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
        {
            assert!(
                Instant::now() < deadline,
                "the dialog (pid {dialog_pid}) is still open after the terminal answered"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
}
