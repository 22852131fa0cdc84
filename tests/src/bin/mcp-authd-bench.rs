//! `mcp-authd-bench`: the figures behind "one refresh per grant, tokens in microseconds".
//!
//! Runs the real `mcp-authd` (release build beside this binary) against the test
//! authorization server and MCP server on 127.0.0.1, and prints:
//! - token hand-out latency over the socket (p50/p99/p999) and throughput at 1, 16, 64 and
//!   256 concurrent clients, closed loop, and 64 clients paced at 50,000 tokens/s in all —
//!   each level against the daemon and against a floor (a minimal line server, see
//!   [`floor`]) by the same clients, taking turns, with the daemon's throughput and p99 as
//!   ratios to the floor's: absolute figures vary from machine to machine, the ratios
//!   say how much the daemon's own work costs;
//! - for N = 1, 10, 100, 1000 concurrent `token.get` calls arriving when the token has
//!   expired, the number of refresh requests the authorization server saw;
//! - a soak: 64 clients asking continuously (for the default 60 s of validity) with
//!   20-second access tokens and rotating refresh tokens, counting expired tokens handed
//!   out, failed requests and refreshes (with the shortest gap between two);
//! - the daemon's resident memory idle and under the 256-client load.
//!
//! `cargo build --release --workspace && target/release/mcp-authd-bench [--level-secs S]
//! [--rounds N] [--soak-secs S] [--soak-only] [--client-threads N]` (defaults: 5 s per
//! level and server, split into 2 rounds that alternate daemon and floor, a 600 s soak —
//! `--soak-secs 0` skips it, `--soak-only` runs nothing else —, latency clients on 2
//! threads of their own).
//! Linux only (it talks to the Unix socket directly and reads /proc).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcp_authd_tests::daemon::{Daemon, DaemonHome};
use mcp_authd_tests::procfs::rss_kib;
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Barrier;

const QUIET: &[(&str, &str)] = &[("MCP_AUTHD_LOG", "warn")];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, socket] = args.as_slice()
        && flag == floor::SERVE_ARG
    {
        floor::serve(std::path::Path::new(socket));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the bench's runtime")
        .block_on(bench(args));
}

async fn bench(args: Vec<String>) {
    let mut level_secs = 5u64;
    let mut soak_secs = 600u64;
    let mut client_threads = 2usize;
    let mut rounds = 2u32;
    let mut soak_only = false;
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse().ok())
                .expect("a number after the option")
        };
        match a.as_str() {
            "--level-secs" => level_secs = value(),
            "--soak-secs" => soak_secs = value(),
            "--client-threads" => client_threads = value() as usize,
            "--rounds" => rounds = value().max(1) as u32,
            "--soak-only" => soak_only = true,
            _ => {
                eprintln!(
                    "usage: mcp-authd-bench [--level-secs S] [--rounds N] [--soak-secs S] [--soak-only] [--client-threads N]"
                );
                std::process::exit(2);
            }
        }
    }
    println!(
        "mcp-authd-bench {} on {} cores",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    if !soak_only {
        hand_out_latency(level_secs, rounds, client_threads).await;
        refresh_storms().await;
    }
    if soak_secs > 0 {
        soak(soak_secs).await;
    }
}

/// A daemon with one logged-in grant for a fresh test server pair.
async fn daemon_with_grant(
    opts: AsOptions,
    config: &str,
) -> (AuthServer, McpServer, DaemonHome, Daemon) {
    let auth = AuthServer::start(opts).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let home = DaemonHome::new("file", config);
    let d = home.start_with_env(None, QUIET);
    d.cli_ok(&["login", mcp.url()]);
    (auth, mcp, home, d)
}

fn daemon_pid(d: &Daemon) -> u32 {
    let status: Value = serde_json::from_str(&d.cli_ok(&["status", "--json"])).unwrap();
    status["pid"].as_u64().unwrap() as u32
}

fn request_line(id: u64, server: &str, min_valid: u64) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"token.get\",\"params\":{{\"server\":\"{server}\",\"min_valid_secs\":{min_valid}}}}}\n"
    )
}

/// A `token.get` without `min_valid_secs`: the daemon's default (60 s), as `mcp-auth token`
/// and most clients ask.
fn default_request_line(id: u64, server: &str) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"token.get\",\"params\":{{\"server\":\"{server}\"}}}}\n"
    )
}

struct Conn {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    line: String,
}

impl Conn {
    async fn open(d: &Daemon) -> Conn {
        Conn::connect(d.socket()).await
    }

    async fn connect(socket: &std::path::Path) -> Conn {
        let stream = UnixStream::connect(socket).await.expect("connect");
        let (r, w) = stream.into_split();
        Conn {
            reader: BufReader::new(r),
            writer: w,
            line: String::new(),
        }
    }

    async fn send(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).await.expect("write");
    }

    async fn answer(&mut self) -> &str {
        self.line.clear();
        self.reader.read_line(&mut self.line).await.expect("read");
        &self.line
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The latency clients run on a runtime of their own, `threads` workers: the daemon's
/// figures, not how the test servers' runtime schedules them. Leaked, because a runtime
/// may not be dropped inside another.
fn client_runtime(threads: usize) -> &'static tokio::runtime::Runtime {
    Box::leak(Box::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()
            .expect("the clients' runtime"),
    ))
}

/// What clients measured against one server: every round trip, sorted, in nanoseconds.
#[derive(Default)]
struct Measured {
    samples: Vec<u64>,
    secs: f64,
    errors: u64,
}

impl Measured {
    /// Adds another round against the same server.
    fn add(&mut self, other: Measured) {
        self.samples.extend(other.samples);
        self.samples.sort_unstable();
        self.secs += other.secs;
        self.errors += other.errors;
    }

    fn micros(&self, p: f64) -> f64 {
        percentile(&self.samples, p) as f64 / 1000.0
    }

    fn per_sec(&self) -> f64 {
        self.samples.len() as f64 / self.secs.max(f64::EPSILON)
    }

    fn row(&self, clients: usize, server: &str, note: &str) {
        println!(
            "{:>8} {:>7} {:>10.1} {:>10.1} {:>10.1} {:>12.0} {:>8}{note}",
            clients,
            server,
            self.micros(0.50),
            self.micros(0.99),
            self.micros(0.999),
            self.per_sec(),
            self.errors
        );
    }
}

/// The daemon's figures as ratios to the floor's, measured by the same clients in the same
/// run: what is left to win, whatever the machine.
struct Ratio {
    clients: usize,
    paced: bool,
    throughput: f64,
    p99: f64,
}

impl Ratio {
    fn of(clients: usize, paced: bool, daemon: &Measured, floor: &Measured) -> Ratio {
        Ratio {
            clients,
            paced,
            throughput: daemon.per_sec() / floor.per_sec().max(f64::EPSILON),
            p99: daemon.micros(0.99) / floor.micros(0.99).max(f64::EPSILON),
        }
    }
}

/// Goal at 64 closed-loop clients: the daemon within this share of the floor's throughput…
const GOAL_THROUGHPUT: f64 = 0.85;
/// …and within this multiple of its p99.
const GOAL_P99: f64 = 1.25;

async fn hand_out_latency(level_secs: u64, rounds: u32, client_threads: usize) {
    let clients_rt = client_runtime(client_threads);
    let (_auth, mcp, _home, d) = daemon_with_grant(AsOptions::default(), "").await;
    let pid = daemon_pid(&d);
    let url = mcp.url().to_string();
    // One warm-up call puts everything in memory; its token is what the floor hands out.
    let mut warm = Conn::open(&d).await;
    warm.send(&request_line(0, &url, 60)).await;
    let answer: Value = serde_json::from_str(warm.answer().await).expect("a JSON answer");
    let token: floor::Token =
        serde_json::from_value(answer["result"].clone()).expect("a token.get result");
    let floor = floor::Floor::start(&token);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kib(pid);

    let round = Duration::from_secs_f64(level_secs as f64 / f64::from(rounds.max(1)));
    println!(
        "\ntoken hand-out over the socket ({level_secs} s per level and server, in {rounds} round(s) taking turns; clients on {client_threads} thread(s))"
    );
    println!(
        "floor: a minimal line server ({}): a task per connection, each request parsed with serde_json, a fixed token.get result",
        floor::SHAPE
    );
    println!(
        "{:>8} {:>7} {:>10} {:>10} {:>10} {:>12} {:>8}",
        "clients", "server", "p50 µs", "p99 µs", "p999 µs", "tokens/s", "errors"
    );
    let mut loaded = 0;
    let mut ratios = Vec::new();
    for clients in [1usize, 16, 64, 256] {
        let (mut on_daemon, mut on_floor) = (Measured::default(), Measured::default());
        for _ in 0..rounds.max(1) {
            let sampler = (clients == 256).then(|| rss_sampler(pid, round));
            on_daemon.add(measure(clients_rt, d.socket(), &url, clients, None, round).await);
            if let Some(s) = sampler {
                loaded = loaded.max(s.await.unwrap());
            }
            on_floor.add(measure(clients_rt, floor.socket(), &url, clients, None, round).await);
        }
        on_daemon.row(clients, "daemon", "");
        on_floor.row(clients, "floor", "");
        ratios.push(Ratio::of(clients, false, &on_daemon, &on_floor));
    }
    let (clients, per_sec) = (64, 50_000);
    let (mut on_daemon, mut on_floor) = (Measured::default(), Measured::default());
    for _ in 0..rounds.max(1) {
        on_daemon.add(measure(clients_rt, d.socket(), &url, clients, Some(per_sec), round).await);
        on_floor.add(
            measure(
                clients_rt,
                floor.socket(),
                &url,
                clients,
                Some(per_sec),
                round,
            )
            .await,
        );
    }
    let note = format!("   (paced at {per_sec}/s)");
    on_daemon.row(clients, "daemon", &note);
    on_floor.row(clients, "floor", &note);
    ratios.push(Ratio::of(clients, true, &on_daemon, &on_floor));

    println!("\ndaemon ÷ floor (same clients, same run)");
    println!("{:>8} {:>12} {:>8}", "clients", "throughput", "p99");
    for r in &ratios {
        let note = if r.paced {
            "   (paced)".to_string()
        } else if r.clients == 64 {
            let met = r.throughput >= GOAL_THROUGHPUT && r.p99 <= GOAL_P99;
            format!(
                "   goal ≥ {:.0} % and ≤ {GOAL_P99}×: {}",
                GOAL_THROUGHPUT * 100.0,
                if met { "met" } else { "NOT met" }
            )
        } else {
            String::new()
        };
        println!(
            "{:>8} {:>11.0} % {:>7.2}×{note}",
            r.clients,
            r.throughput * 100.0,
            r.p99
        );
    }
    println!(
        "\ndaemon RSS: idle {:.1} MiB, under 256 clients {:.1} MiB",
        idle as f64 / 1024.0,
        loaded as f64 / 1024.0
    );
}

/// The largest resident memory of `pid` over the next `span`, sampled every 100 ms.
fn rss_sampler(pid: u32, span: Duration) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let end = Instant::now() + span;
        let mut max = 0;
        while Instant::now() < end {
            max = max.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        max
    })
}

/// `clients` connections asking for tokens for `span`: each sends its next request when
/// its last answer arrives (a closed loop), or with `pace` (tokens per second, shared by
/// all) on its own schedule — the latency a token takes at that load, without the queueing
/// a closed loop of always-waiting clients adds by construction.
async fn measure(
    clients_rt: &tokio::runtime::Runtime,
    socket: &std::path::Path,
    url: &str,
    clients: usize,
    pace: Option<u64>,
    span: Duration,
) -> Measured {
    let interval = pace.map(|per_sec| Duration::from_secs_f64(clients as f64 / per_sec as f64));
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let socket = socket.to_path_buf();
        let (barrier, url) = (barrier.clone(), url.to_string());
        tasks.push(clients_rt.spawn(async move {
            let mut conn = Conn::connect(&socket).await;
            let mut samples = Vec::with_capacity(65_536);
            let mut errors = 0u64;
            barrier.wait().await;
            // Paced clients start spread over one interval.
            let mut next = tokio::time::Instant::now()
                + interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / clients as f64));
            let end = next + span;
            let mut id = (c as u64) << 32;
            loop {
                if let Some(interval) = interval {
                    if next >= end {
                        break;
                    }
                    tokio::time::sleep_until(next).await;
                    next += interval;
                } else if tokio::time::Instant::now() >= end {
                    break;
                }
                id += 1;
                let line = request_line(id, &url, 60);
                let t = Instant::now();
                conn.send(&line).await;
                if !conn.answer().await.contains("\"result\"") {
                    errors += 1;
                }
                samples.push(t.elapsed().as_nanos() as u64);
            }
            (samples, errors)
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut measured = Measured::default();
    for t in tasks {
        let (samples, errors) = t.await.unwrap();
        measured.samples.extend(samples);
        measured.errors += errors;
    }
    measured.secs = started.elapsed().as_secs_f64();
    measured.samples.sort_unstable();
    measured
}

/// N calls arrive together when the token has expired; the AS must see one refresh.
async fn refresh_storms() {
    const TTL: u64 = 2;
    let (auth, mcp, _home, d) = daemon_with_grant(
        AsOptions {
            access_token_ttl_secs: TTL,
            ..Default::default()
        },
        "background_refresh_days = 0\n",
    )
    .await;
    let url = mcp.url().to_string();
    println!("\nconcurrent token.get on an expired token");
    println!(
        "{:>6} {:>14} {:>8} {:>12}",
        "N", "AS refreshes", "errors", "all done ms"
    );
    for n in [1usize, 10, 100, 1000] {
        tokio::time::sleep(Duration::from_millis(TTL * 1000 + 1100)).await;
        let before = auth.counts().refreshes;
        // The daemon takes 512 connections and 32 requests in flight on each: 1000 calls
        // go over 250 connections, 4 pipelined on each.
        let conns = n.min(250);
        let per_conn = n.div_ceil(conns);
        let barrier = Arc::new(Barrier::new(conns + 1));
        let errors = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in 0..conns {
            let calls = n.saturating_sub(c * per_conn).min(per_conn);
            let mut conn = Conn::open(&d).await;
            let (barrier, errors, url) = (barrier.clone(), errors.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let batch: String = (0..calls)
                    .map(|i| request_line((c * per_conn + i) as u64, &url, 60))
                    .collect();
                barrier.wait().await;
                conn.send(&batch).await;
                for _ in 0..calls {
                    if !conn.answer().await.contains("\"result\"") {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        barrier.wait().await;
        let started = Instant::now();
        for t in tasks {
            t.await.unwrap();
        }
        println!(
            "{:>6} {:>14} {:>8} {:>12.1}",
            n,
            auth.counts().refreshes - before,
            errors.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// 64 clients for `secs` with 20-second tokens (shorter than the 60 s of validity they ask
/// for) and rotating refresh tokens.
async fn soak(secs: u64) {
    let (auth, mcp, _home, d) = daemon_with_grant(
        AsOptions {
            access_token_ttl_secs: 20,
            ..Default::default()
        },
        "",
    )
    .await;
    let pid = daemon_pid(&d);
    let url = mcp.url().to_string();
    let auth = Arc::new(auth);
    let (calls, expired, failed, rejected) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..64u64 {
        let mut conn = Conn::open(&d).await;
        let (url, auth) = (url.clone(), auth.clone());
        let (calls, expired, failed, rejected) = (
            calls.clone(),
            expired.clone(),
            failed.clone(),
            rejected.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut id = c << 32;
            while Instant::now() < end {
                id += 1;
                conn.send(&default_request_line(id, &url)).await;
                let answer: Value = serde_json::from_str(conn.answer().await).unwrap_or_default();
                let n = calls.fetch_add(1, Ordering::Relaxed);
                let Some(result) = answer.get("result") else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if result["expires_at"].as_i64().unwrap_or(0) <= unix_now() {
                    expired.fetch_add(1, Ordering::Relaxed);
                }
                // Every 1000th token is checked at the authorization server itself.
                if n % 1000 == 0 {
                    let token = result["access_token"].as_str().unwrap_or_default();
                    if auth.validate_access_token(token, &url).is_err() {
                        rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let times = auth.refresh_times();
    let shortest_gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .min()
        .unwrap_or_default();
    println!(
        "\nsoak: 64 clients for {secs} s asking for the default 60 s of validity, 20 s access tokens, rotating refresh tokens"
    );
    println!(
        "  token.get calls {}, expired tokens handed out {}, failed requests {}, sampled tokens the AS rejected {}, AS refreshes {} (one per {:.1} s, shortest gap {:.2} s), refresh failures {}, daemon RSS {:.1} MiB",
        calls.load(Ordering::Relaxed),
        expired.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        rejected.load(Ordering::Relaxed),
        auth.counts().refreshes,
        secs as f64 / f64::from(auth.counts().refreshes.max(1)),
        shortest_gap.as_secs_f64(),
        auth.counts().refresh_failures,
        rss_kib(pid) as f64 / 1024.0
    );
}

/// The floor the daemon is measured against: the least a server must do to answer
/// `token.get` over a Unix socket — read a line, parse it as a JSON-RPC request, write a
/// token back — in a process shaped like the daemon's (a multi-thread tokio runtime with
/// its default workers, a task per connection), with none of the daemon's own work: no
/// grant lookup, no freshness or scope checks, no audit record.
mod floor {
    use std::io::{BufRead, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Child, ChildStdin, Command, Stdio};

    use mcp_authd_ipc::{Reply, Request};
    use serde::{Deserialize, Serialize};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{UnixListener, UnixStream};

    /// The argument that makes the bench binary the floor server (over the socket path).
    pub const SERVE_ARG: &str = "--floor-server";
    pub const SHAPE: &str = "a process of its own, a tokio runtime built as the daemon's";

    /// The token the floor hands out: one the daemon handed out, so both answers are the
    /// same size.
    #[derive(Serialize, Deserialize)]
    pub struct Token {
        access_token: String,
        token_type: String,
        expires_at: i64,
        expires_in: i64,
        scopes: Vec<String>,
        grant: String,
    }

    /// The floor server, a child process; it ends when dropped (or when the bench ends:
    /// it stops at the end of its stdin).
    pub struct Floor {
        child: Child,
        _stdin: ChildStdin,
        socket: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Floor {
        pub fn start(token: &Token) -> Floor {
            let dir = tempfile::tempdir().expect("a directory for the floor's socket");
            let socket = dir.path().join("floor.sock");
            let mut child = Command::new(std::env::current_exe().expect("the bench's path"))
                .arg(SERVE_ARG)
                .arg(&socket)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("the floor server starts");
            let mut stdin = child.stdin.take().expect("its stdin");
            writeln!(stdin, "{}", serde_json::to_string(token).expect("a token"))
                .expect("the token reaches the floor server");
            let mut ready = String::new();
            std::io::BufReader::new(child.stdout.take().expect("its stdout"))
                .read_line(&mut ready)
                .expect("the floor server says it is ready");
            assert_eq!(ready.trim(), "ready", "the floor server did not start");
            Floor {
                child,
                _stdin: stdin,
                socket,
                _dir: dir,
            }
        }

        pub fn socket(&self) -> &Path {
            &self.socket
        }
    }

    impl Drop for Floor {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The floor server's `main`: the token on the first line of stdin, then it serves
    /// `socket` until stdin ends.
    pub fn serve(socket: &Path) -> ! {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .expect("the token on stdin");
        let token: &'static Token =
            Box::leak(Box::new(serde_json::from_str(&line).expect("a token")));
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(0);
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("the floor's runtime");
        runtime.block_on(async {
            let listener = UnixListener::bind(socket).expect("the floor's socket");
            println!("ready");
            let _ = std::io::stdout().flush();
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(connection(stream, token));
                }
            }
        })
    }

    async fn connection(stream: UnixStream, token: &'static Token) {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let mut line = Vec::new();
        loop {
            line.clear();
            if !matches!(read.read_until(b'\n', &mut line).await, Ok(n) if n > 0) {
                return;
            }
            let mut reply = match serde_json::from_slice::<Request>(&line) {
                Ok(request) if request.method == "token.get" => {
                    serde_json::to_vec(&Reply::new(&request.id, token)).expect("a reply")
                }
                _ => br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"the floor answers token.get only"}}"#.to_vec(),
            };
            reply.push(b'\n');
            if write.write_all(&reply).await.is_err() {
                return;
            }
        }
    }
}
