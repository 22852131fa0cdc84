//! `mcp-authd-bench`: the figures behind "one refresh per grant, tokens in microseconds".
//!
//! Runs the real `mcp-authd` (release build beside this binary) against the test
//! authorization server and MCP server on 127.0.0.1, and prints:
//! - token hand-out latency over the socket (p50/p99/p999) and throughput at 1, 16, 64 and
//!   256 concurrent clients;
//! - for N = 1, 10, 100, 1000 concurrent `token.get` calls arriving when the token has
//!   expired, the number of refresh requests the authorization server saw;
//! - a soak: 64 clients asking continuously (for the default 60 s of validity) with
//!   20-second access tokens and rotating refresh tokens, counting expired tokens handed
//!   out, failed requests and refreshes (with the shortest gap between two);
//! - the daemon's resident memory idle and under the 256-client load.
//!
//! `cargo build --release --workspace && target/release/mcp-authd-bench [--level-secs S]
//! [--soak-secs S] [--soak-only] [--client-threads N]` (defaults: 5 s per level, a 600 s
//! soak — `--soak-secs 0` skips it, `--soak-only` runs nothing else —, latency clients on 2
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

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut level_secs = 5u64;
    let mut soak_secs = 600u64;
    let mut client_threads = 2usize;
    let mut soak_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse().ok())
                .expect("a number of seconds")
        };
        match a.as_str() {
            "--level-secs" => level_secs = value(),
            "--soak-secs" => soak_secs = value(),
            "--client-threads" => client_threads = value() as usize,
            "--soak-only" => soak_only = true,
            _ => {
                eprintln!(
                    "usage: mcp-authd-bench [--level-secs S] [--soak-secs S] [--soak-only] [--client-threads N]"
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
        hand_out_latency(level_secs, client_threads).await;
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

async fn hand_out_latency(level_secs: u64, client_threads: usize) {
    let clients_rt = client_runtime(client_threads);
    let (_auth, mcp, _home, d) = daemon_with_grant(AsOptions::default(), "").await;
    let pid = daemon_pid(&d);
    let url = mcp.url().to_string();
    // One warm-up call puts everything in memory.
    let mut warm = Conn::open(&d).await;
    warm.send(&request_line(0, &url, 60)).await;
    assert!(warm.answer().await.contains("\"result\""));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kib(pid);

    println!(
        "\ntoken hand-out over the socket ({level_secs} s per level, clients on {client_threads} thread(s))"
    );
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>12} {:>8}",
        "clients", "p50 µs", "p99 µs", "p999 µs", "tokens/s", "errors"
    );
    let mut loaded = 0;
    for clients in [1usize, 16, 64, 256] {
        let barrier = Arc::new(Barrier::new(clients + 1));
        let errors = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let socket = d.socket().to_path_buf();
            let (barrier, errors, url) = (barrier.clone(), errors.clone(), url.clone());
            tasks.push(clients_rt.spawn(async move {
                let mut conn = Conn::connect(&socket).await;
                let mut samples = Vec::with_capacity(65_536);
                barrier.wait().await;
                let end = Instant::now() + Duration::from_secs(level_secs);
                let mut id = (c as u64) << 32;
                while Instant::now() < end {
                    id += 1;
                    let line = request_line(id, &url, 60);
                    let t = Instant::now();
                    conn.send(&line).await;
                    if !conn.answer().await.contains("\"result\"") {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    samples.push(t.elapsed().as_nanos() as u64);
                }
                samples
            }));
        }
        let sampler = (clients == 256).then(|| {
            tokio::spawn(async move {
                let mut max = 0;
                for _ in 0..(level_secs * 10) {
                    max = max.max(rss_kib(pid));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                max
            })
        });
        barrier.wait().await;
        let started = Instant::now();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let elapsed = started.elapsed().as_secs_f64();
        if let Some(s) = sampler {
            loaded = s.await.unwrap();
        }
        all.sort_unstable();
        println!(
            "{:>8} {:>10.1} {:>10.1} {:>10.1} {:>12.0} {:>8}",
            clients,
            percentile(&all, 0.50) as f64 / 1000.0,
            percentile(&all, 0.99) as f64 / 1000.0,
            percentile(&all, 0.999) as f64 / 1000.0,
            all.len() as f64 / elapsed,
            errors.load(Ordering::Relaxed)
        );
    }
    paced(clients_rt, &d, &url, 64, 50_000, level_secs).await;
    println!(
        "\ndaemon RSS: idle {:.1} MiB, under 256 clients {:.1} MiB",
        idle as f64 / 1024.0,
        loaded as f64 / 1024.0
    );
}

/// `clients` connections sharing a fixed total rate (each sends on its own schedule, not
/// when its last answer arrives): the latency a token takes at that load, without the
/// queueing a closed loop of always-waiting clients adds by construction.
async fn paced(
    clients_rt: &tokio::runtime::Runtime,
    d: &Daemon,
    url: &str,
    clients: usize,
    per_sec: u64,
    secs: u64,
) {
    let interval = Duration::from_secs_f64(clients as f64 / per_sec as f64);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let socket = d.socket().to_path_buf();
        let (barrier, url) = (barrier.clone(), url.to_string());
        tasks.push(clients_rt.spawn(async move {
            let mut conn = Conn::connect(&socket).await;
            let mut samples = Vec::new();
            let mut errors = 0u64;
            barrier.wait().await;
            let start = tokio::time::Instant::now() + interval.mul_f64(c as f64 / clients as f64);
            let end = start + Duration::from_secs(secs);
            let mut next = start;
            let mut id = (c as u64) << 32;
            while next < end {
                tokio::time::sleep_until(next).await;
                id += 1;
                let t = Instant::now();
                conn.send(&request_line(id, &url, 60)).await;
                if !conn.answer().await.contains("\"result\"") {
                    errors += 1;
                }
                samples.push(t.elapsed().as_nanos() as u64);
                next += interval;
            }
            (samples, errors)
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (s, e) = t.await.unwrap();
        all.extend(s);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    println!(
        "{:>8} {:>10.1} {:>10.1} {:>10.1} {:>12.0} {:>8}   (paced at {per_sec}/s)",
        clients,
        percentile(&all, 0.50) as f64 / 1000.0,
        percentile(&all, 0.99) as f64 / 1000.0,
        percentile(&all, 0.999) as f64 / 1000.0,
        all.len() as f64 / elapsed,
        errors
    );
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
        secs as f64 / auth.counts().refreshes.max(1) as f64,
        shortest_gap.as_secs_f64(),
        auth.counts().refresh_failures,
        rss_kib(pid) as f64 / 1024.0
    );
}
