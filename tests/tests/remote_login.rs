//! Logging in where no local browser can reach the user, against the real binaries: the
//! RFC 8628 device login (code shown, polling at the server's pace, denied, expired, the
//! automatic choice in a remote session) and the paste-back (`--manual`) login, whose
//! pasted response passes the same state, `iss` and PKCE checks as the loopback one.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mcp_authd_ipc::methods::{
    LOGIN_PASTE, LoginFlow, LoginParams, LoginPasteParams, LoginPasteResult, TOKEN_GET,
    TokenGetParams, TokenGetResult,
};
use mcp_authd_ipc::{Client, ClientError, ErrorKind};
use mcp_authd_tests::daemon::{Daemon, DaemonHome, bin, fast_clock};
use mcp_authd_tests::{AsOptions, AuthServer, DeviceOptions, McpOptions, McpServer};

/// A browser stand-in that never approves: any login that finishes did so another way.
const NO_BROWSER: &str = "/bin/true";
/// Long enough for a loaded machine.
const WAIT: Duration = Duration::from_secs(40);

/// `mcp-auth login` running in the background, its stderr read line by line.
struct LoginRun {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl LoginRun {
    fn start(d: &Daemon, args: &[&str], env: &[(&str, &str)], remove: &[&str]) -> LoginRun {
        let mut cmd = Command::new(bin("mcp-auth"));
        cmd.arg("--socket")
            .arg(d.socket())
            .arg("login")
            .args(args)
            .env_remove("MCP_AUTHD_SOCKET")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The developer's own session must not decide the flow.
        for name in [
            "SSH_CONNECTION",
            "SSH_CLIENT",
            "SSH_TTY",
            "DISPLAY",
            "WAYLAND_DISPLAY",
        ] {
            cmd.env_remove(name);
        }
        for name in remove {
            cmd.env_remove(name);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("run mcp-auth login");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LoginRun {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (from now on) for which `pick` gives something.
    fn wait_for<T>(&mut self, what: &str, pick: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let got = pick(&line);
                    self.seen.push(line);
                    if let Some(got) = got {
                        return got;
                    }
                }
                Err(e) => panic!("no {what} in the output ({e}):\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The next URL printed on a line of its own.
    fn next_url(&mut self) -> String {
        self.wait_for("URL", |l| {
            let l = l.trim();
            l.starts_with("http").then(|| l.to_string())
        })
    }

    fn paste(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{text}").expect("write to mcp-auth");
        stdin.flush().unwrap();
    }

    /// Waits for the exit; returns it with everything printed on stderr.
    fn finish(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "mcp-auth login did not end:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status, self.seen.join("\n"))
    }
}

impl Drop for LoginRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An authorization server, an MCP server behind it, and a daemon with `browser`.
async fn setup(
    opts: AsOptions,
    browser: Option<&str>,
) -> (AuthServer, McpServer, String, DaemonHome, Daemon) {
    let auth = AuthServer::start(opts).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start(browser);
    (auth, mcp, url, home, d)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

/// The test "user" on the verification page: approves the code, or denies it.
async fn decide(verification_uri_complete: &str, approve: bool) {
    let url = if approve {
        verification_uri_complete.to_string()
    } else {
        format!("{verification_uri_complete}&decision=deny")
    };
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

fn device_server(device: DeviceOptions, ttl: u64) -> AsOptions {
    AsOptions {
        device: Some(device),
        access_token_ttl_secs: ttl,
        ..Default::default()
    }
}

/// Reads the device login's instructions: (user code, verification_uri_complete).
fn device_instructions(run: &mut LoginRun, auth: &AuthServer) -> (String, String) {
    let verification = run.next_url();
    assert_eq!(verification, format!("{}/device", auth.issuer()));
    let code = run.wait_for("user code", |l| {
        let l = l.trim();
        (l.len() == 9 && l.as_bytes()[4] == b'-').then(|| l.to_string())
    });
    let complete = run.next_url();
    assert_eq!(
        complete,
        format!("{}/device?user_code={code}", auth.issuer())
    );
    (code, complete)
}

fn assert_no_secret_in(log: &str, auth: &AuthServer) {
    for secret in auth.issued_secrets() {
        assert!(
            !log.contains(secret.as_str()),
            "a secret leaked: {}…",
            &secret[..6]
        );
    }
}

/// What the user sees and what the daemon asks for; the polling pace and the grant's
/// renewal are the daemon's own timers, proved on a fast clock in
/// `a_device_login_polls_at_the_interval_and_the_grant_refreshes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_login_shows_the_code_and_asks_for_the_resource_and_scopes() {
    let (auth, _mcp, url, home, d) = setup(
        device_server(DeviceOptions::default(), 3600),
        Some(NO_BROWSER),
    )
    .await;

    let mut run = LoginRun::start(&d, &[&url, "--device"], &[], &[]);
    let (_, complete) = device_instructions(&mut run, &auth);
    decide(&complete, true).await;
    let (status, out) = run.finish();
    assert!(status.success(), "{out}");
    let answers: Vec<String> = auth.device_polls().into_iter().map(|p| p.answer).collect();
    assert_eq!(
        answers.last().map(String::as_str),
        Some("granted"),
        "{answers:?}"
    );

    // The same resource indicator and scopes as the browser login.
    let asked = auth.last_device_params().unwrap();
    assert_eq!(asked.get("resource"), Some(&url));
    let scope = asked.get("scope").expect("scope");
    assert!(scope.split(' ').any(|s| s == "offline_access"), "{scope}");
    let redeemed = auth.last_token_params().unwrap();
    assert_eq!(redeemed.get("resource"), Some(&url), "{redeemed:?}");
    let token = d.cli_ok(&["token", &url]);
    assert!(auth.validate_access_token(token.trim(), &url).is_ok());
    assert_no_secret_in(&home.log_text(), &auth);
}

/// The daemon runs in this process with tokio's clock 10 times as fast; the authorization
/// server keeps its device codes and polls on the same clock. The user takes 2.5 s to
/// approve (a quarter of a second of real time): the daemon keeps asking, never faster
/// than the interval; then the grant, with 3 s tokens, is renewed like any other.
#[tokio::test]
async fn a_device_login_polls_at_the_interval_and_the_grant_refreshes() {
    let auth = AuthServer::start(device_server(DeviceOptions::default(), 3)).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start_in_process().await;
    let _clock = fast_clock(10);

    let params = LoginParams {
        server: url.clone(),
        flow: Some(LoginFlow::Device),
        open_browser: Some(false),
        ..Default::default()
    };
    let done = d
        .login_with(params, |complete| async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            decide(&complete, true).await;
        })
        .await;
    assert!(done.is_ok(), "{done:?}");

    let polls = auth.device_polls();
    let answers: Vec<&str> = polls.iter().map(|p| p.answer.as_str()).collect();
    assert!(
        answers.contains(&"authorization_pending") && answers.last() == Some(&"granted"),
        "{answers:?}"
    );
    assert!(
        !answers.contains(&"slow_down"),
        "polled too fast: {answers:?}"
    );
    for pair in polls.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_secs(1), "polled after {gap:?}");
    }

    // The grant is like any other: it refreshes (TTL 3 s, refreshed before expiry).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(auth.counts().refreshes >= 1, "{:?}", auth.counts());
    let mut client = Client::connect(d.socket()).await.unwrap();
    let params = TokenGetParams {
        server: url.clone(),
        ..Default::default()
    };
    let token: TokenGetResult = client.call(TOKEN_GET, &params).await.unwrap();
    assert!(
        auth.validate_access_token(&token.access_token, &url)
            .is_ok()
    );
}

/// The daemon runs in this process with tokio's clock running 10 times as fast (a clock
/// paused outright would jump over the polls' own HTTP and SQLite limits), and the
/// authorization server keeps its device codes on the same clock: the 6 s between the
/// polls take about 0.6 s.
#[tokio::test]
async fn slow_down_lengthens_the_interval_by_five_seconds() {
    let device = DeviceOptions {
        slow_down_polls: 1,
        ..Default::default()
    };
    let auth = AuthServer::start(device_server(device, 3600)).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "background_refresh_days = 0\n");
    let d = home.start_in_process().await;
    let _clock = fast_clock(10);

    let params = LoginParams {
        server: url.clone(),
        flow: Some(LoginFlow::Device),
        open_browser: Some(false),
        ..Default::default()
    };
    let done = d
        .login_with(
            params,
            |complete| async move { decide(&complete, true).await },
        )
        .await;
    assert!(done.is_ok(), "{done:?}");

    let polls = auth.device_polls();
    let answers: Vec<&str> = polls.iter().map(|p| p.answer.as_str()).collect();
    assert_eq!(answers, ["slow_down", "granted"], "{answers:?}");
    let gap = polls[1].at.duration_since(polls[0].at);
    eprintln!("measured poll gap after slow_down: {gap:?}");
    assert!(
        gap >= Duration::from_secs(6),
        "interval 1 s + 5 s after slow_down, but polled again after {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_or_expired_device_login_says_what_to_run() {
    let expiring = DeviceOptions {
        code_ttl_secs: 2,
        ..Default::default()
    };
    let (auth, _mcp, url, _home, d) = setup(device_server(expiring, 3600), Some(NO_BROWSER)).await;

    // Nobody approves: the server's expired_token ends it.
    let mut run = LoginRun::start(&d, &[&url, "--device"], &[], &[]);
    device_instructions(&mut run, &auth);
    let (status, out) = run.finish();
    assert_eq!(status.code(), Some(5), "{out}");
    assert!(out.contains("expired_token"), "{out}");
    assert!(
        out.contains(&format!("mcp-auth login {url} --device")),
        "{out}"
    );
    assert_eq!(
        auth.device_polls().last().map(|p| p.answer.clone()),
        Some("expired_token".into())
    );

    // The user says no.
    let mut run = LoginRun::start(&d, &[&url, "--device"], &[], &[]);
    let (_, complete) = device_instructions(&mut run, &auth);
    decide(&complete, false).await;
    let (status, out) = run.finish();
    assert_eq!(status.code(), Some(5), "{out}");
    assert!(out.contains("denied (access_denied)"), "{out}");
    assert!(
        out.contains(&format!("mcp-auth login {url} --device")),
        "{out}"
    );
    // The daemon serves on.
    d.cli_ok(&["status"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_session_without_a_display_chooses_the_device_login() {
    // The browser stand-in approves every browser login it is given.
    let (auth, _mcp, url, _home, d) =
        setup(device_server(DeviceOptions::default(), 3600), None).await;
    let ssh = [("SSH_CONNECTION", "10.1.2.3 51000 10.1.2.4 22")];

    let mut run = LoginRun::start(&d, &[&url], &ssh, &[]);
    let (_, complete) = device_instructions(&mut run, &auth);
    decide(&complete, true).await;
    let (status, out) = run.finish();
    assert!(status.success(), "{out}");
    assert_eq!(auth.counts().authorizations, 0, "no browser login ran");
    let device_polls = auth.device_polls().len();
    assert!(device_polls >= 1);

    // `--browser` forces the loopback flow; so does a display (X11 forwarding).
    for (args, env) in [
        (vec![url.as_str(), "--browser"], ssh.to_vec()),
        (
            vec![url.as_str()],
            vec![ssh[0], ("DISPLAY", "localhost:10.0")],
        ),
    ] {
        let run = LoginRun::start(&d, &args, &env, &[]);
        let (status, out) = run.finish();
        assert!(status.success(), "{args:?}: {out}");
        assert!(out.contains("this URL to log in"), "{out}");
    }
    assert_eq!(auth.counts().authorizations, 2);
    assert_eq!(auth.device_polls().len(), device_polls, "no device login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_device_endpoint_a_remote_session_gets_the_url_and_device_is_refused() {
    let (auth, _mcp, url, _home, d) = setup(AsOptions::default(), None).await;

    let run = LoginRun::start(&d, &[&url, "--device"], &[], &[]);
    let (status, out) = run.finish();
    assert_eq!(status.code(), Some(5), "{out}");
    assert!(out.contains("offers no device login"), "{out}");
    assert!(
        out.contains(&format!("mcp-auth login {url} --manual")),
        "{out}"
    );

    // Remote and headless, no device grant: the URL is shown and no browser is started
    // (the stand-in would have approved), so the login waits until its timeout.
    let run = LoginRun::start(
        &d,
        &[&url, "--timeout", "2"],
        &[("SSH_TTY", "/dev/pts/7")],
        &[],
    );
    let (status, out) = run.finish();
    assert_eq!(status.code(), Some(5), "{out}");
    assert!(out.contains("Open this URL to log in"), "{out}");
    assert_eq!(auth.counts().authorizations, 0);
}

/// The test "user" opens the authorization URL somewhere else: the address the browser
/// ends on (the loopback redirect, which does not load there).
async fn ended_on(authorization_url: &str) -> String {
    let r = http().get(authorization_url).send().await.unwrap();
    assert_eq!(r.status(), 302);
    r.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_string()
}

/// `url` with query parameter `name` replaced (or removed with `None`).
fn with_param(url: &str, name: &str, value: Option<&str>) -> String {
    let mut u = reqwest::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = u.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        if let Some(v) = value {
            q.append_pair(name, v);
        }
    }
    u.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_login_takes_the_pasted_url_after_refusing_wrong_ones() {
    let (auth, _mcp, url, home, d) = setup(AsOptions::default(), Some(NO_BROWSER)).await;

    let mut run = LoginRun::start(&d, &[&url, "--manual"], &[], &[]);
    let authorization_url = run.next_url();
    let location = ended_on(&authorization_url).await;
    assert!(location.starts_with("http://127.0.0.1:"), "{location}");
    let code = reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();

    // Each refused with the reason; the login keeps waiting.
    for (pasted, reason) in [
        (
            with_param(&location, "state", Some("forged-state")),
            "`state` differs",
        ),
        (
            authorization_url.clone(),
            "not the address the browser ended on",
        ),
        (code.clone(), "paste the whole URL"),
    ] {
        run.paste(&pasted);
        run.wait_for(reason, |l| {
            (l.starts_with("Not taken") && l.contains(reason)).then_some(())
        });
    }
    run.paste(&location);
    let (status, out) = run.finish();
    assert!(status.success(), "{out}");
    assert_eq!(auth.counts().code_exchanges, 1);
    let token = d.cli_ok(&["token", &url]);
    assert!(auth.validate_access_token(token.trim(), &url).is_ok());
    assert_no_secret_in(&home.log_text(), &auth);

    // No manual login waits any more: a late paste (a replay) is told so.
    let mut client = Client::connect(d.socket()).await.unwrap();
    let late: Result<LoginPasteResult, ClientError> = client
        .call(
            LOGIN_PASTE,
            &LoginPasteParams {
                server: url.clone(),
                response: location,
                account: None,
            },
        )
        .await;
    match late {
        Err(ClientError::Rpc(e)) => {
            assert_eq!(e.kind(), Some(ErrorKind::NotFound), "{e:?}");
            assert!(e.message.contains("--manual"), "{}", e.message);
        }
        other => panic!("a late paste was taken: {other:?}"),
    }
    assert_eq!(auth.counts().code_exchanges, 1);
}

/// Each account's manual login has its own door: a paste for another account of the
/// server (or for the default one) is not taken; the CLI's own, which names the account,
/// is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_response_goes_to_its_accounts_manual_login() {
    let (auth, _mcp, url, _home, d) = setup(AsOptions::default(), Some(NO_BROWSER)).await;

    let mut run = LoginRun::start(&d, &[&url, "--manual", "--account", "work"], &[], &[]);
    let location = ended_on(&run.next_url()).await;
    let mut client = Client::connect(d.socket()).await.unwrap();
    for account in [None, Some("home")] {
        let taken: Result<LoginPasteResult, ClientError> = client
            .call(
                LOGIN_PASTE,
                &LoginPasteParams {
                    server: url.clone(),
                    response: location.clone(),
                    account: account.map(str::to_string),
                },
            )
            .await;
        match taken {
            Err(ClientError::Rpc(e)) => {
                assert_eq!(e.kind(), Some(ErrorKind::NotFound), "{e:?}");
                let again = account.map_or("--manual".into(), |a| format!("--account {a}"));
                assert!(e.message.contains(&again), "{}", e.message);
            }
            other => panic!("another account's login took the paste: {other:?}"),
        }
    }
    assert_eq!(auth.counts().code_exchanges, 0);
    run.paste(&location);
    let (status, out) = run.finish();
    assert!(status.success(), "{out}");
    assert_eq!(auth.counts().code_exchanges, 1);
    d.cli_ok(&["token", &url, "--account", "work"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_response_with_a_wrong_issuer_or_no_code_redeems_nothing() {
    let (auth, _mcp, url, _home, d) = setup(AsOptions::default(), Some(NO_BROWSER)).await;

    for (name, value, reason) in [
        (
            "iss",
            Some("https://evil.example"),
            "possible mix-up attack",
        ),
        ("iss", None, "carries no `iss` parameter"),
        ("code", None, "carried no code"),
    ] {
        let mut run = LoginRun::start(&d, &[&url, "--manual"], &[], &[]);
        let authorization_url = run.next_url();
        let location = ended_on(&authorization_url).await;
        run.paste(&with_param(&location, name, value));
        let (status, out) = run.finish();
        assert_eq!(status.code(), Some(5), "{out}");
        assert!(out.contains(reason), "{reason}: {out}");
        assert!(
            out.contains(&format!("mcp-auth login {url} --manual")),
            "{out}"
        );
    }
    assert_eq!(auth.counts().code_exchanges, 0, "nothing was redeemed");
    d.cli_ok(&["status"]);
}
