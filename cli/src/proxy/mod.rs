//! `mcp-auth proxy <url>`: a stdio ↔ Streamable HTTP bridge for MCP clients that only speak
//! stdio. One JSON-RPC message per line on stdin is POSTed to the server with a token from
//! mcp-authd; JSON and SSE answers go to stdout, one message per line. A 401 or 403 is
//! reported to the daemon (`token.challenge`), which refreshes, steps up or logs in; the
//! request is then retried with the new token. stdout carries protocol messages only.
//!
//! Servers that only speak the older HTTP+SSE transport (protocol 2024-11-05: a GET opens
//! an event stream whose `endpoint` event names where to POST; answers come back on the
//! stream) are reached too: `--transport` chooses, and the default tries Streamable HTTP
//! first and falls back when the server refuses it with 404 or 405, as mcp-remote does.
//!
//! The layers, each its own module: [`args`] (flags and extra headers), [`stdio`] (the
//! client's lines in and out), [`daemon`] (the token source), [`http`] (the session with
//! the server and its transports). Data flows stdin → session → server → stdout; only the
//! session asks the daemon.
//!
//! What bounds each buffer: a line of stdin ([`stdio::STDIN_LINE_MAX`]); messages in
//! flight to the server ([`MAX_IN_FLIGHT`]); an answer or an event from the server
//! ([`http::MAX_MESSAGE_BYTES`]); lines waiting for stdout (a byte budget and a count).

mod args;
mod daemon;
mod http;
mod stdio;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mcp_authd_ipc::outbound;
use reqwest::Url;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use args::Args;
use args::parse_header_args;
use daemon::TokenSource;
use http::Session;
use stdio::{
    INVALID_REQUEST, Line, PARSE_ERROR, STDIN_LINE_MAX, Stdin, Stdout, error_response, log,
};

/// Messages forwarded at once at most: stdin is not read further while this many wait
/// for the server (each holds a task, and perhaps an open event stream).
const MAX_IN_FLIGHT: usize = 256;

pub async fn run(socket: PathBuf, args: Args) -> anyhow::Result<()> {
    let tokens = TokenSource::new(socket, &args);
    tokens.check_transport().await?;
    let server_url = Url::parse(&args.server)
        .map_err(|e| anyhow::anyhow!("`{}` is not a URL: {e}", args.server))?;
    let cli_headers = parse_header_args(&args.headers)?;
    let mut extra_headers = args::config_headers(&args.server, &tokens.config_headers().await?)?;
    extra_headers.extend(cli_headers);
    // Proxies from HTTPS_PROXY / HTTP_PROXY / NO_PROXY, loopback always direct.
    let builder = outbound::configure(
        reqwest::Client::builder(),
        args.ca_file.as_deref().map(|path| outbound::CaFile {
            path,
            setting: args::CA_SETTING,
        }),
    )?;
    let http = builder
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let (out, writer) = Stdout::spawn(tokio::io::stdout());
    let session = Session::new(
        http,
        args.server.clone(),
        server_url,
        args.transport,
        tokens,
        out.clone(),
        extra_headers,
    );

    let mut in_flight = JoinSet::new();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut listener: Option<tokio::task::JoinHandle<()>> = None;
    let mut stdin = Stdin::new(tokio::io::stdin());
    while let Some(line) = stdin.next().await? {
        let message = match line {
            Line::Message(m) => m,
            Line::NotJson(why) => {
                log(&format!("ignoring a line of stdin that is not JSON: {why}"));
                out.emit(&error_response(
                    &Value::Null,
                    PARSE_ERROR,
                    "parse error: not JSON",
                ))
                .await;
                continue;
            }
            Line::TooLong => {
                let why = format!("a line of stdin over {STDIN_LINE_MAX} bytes was dropped");
                log(&why);
                out.emit(&error_response(&Value::Null, INVALID_REQUEST, &why))
                    .await;
                continue;
            }
        };
        // The first message settles the transport; the rest may then go concurrently.
        if !session.settled() {
            session.forward(message).await;
            continue;
        }
        let slot = slots.clone().acquire_owned().await?;
        let s = session.clone();
        in_flight.spawn(async move {
            s.forward(message).await;
            drop(slot);
        });
        while let Some(done) = in_flight.try_join_next() {
            done?;
        }
        if listener.is_none() && session.has_session_id() {
            let s = session.clone();
            listener = Some(tokio::spawn(async move { s.listen().await }));
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done?;
    }
    if let Some(l) = listener {
        l.abort();
    }
    session.close().await;
    // The writer ends when the last sender is gone, after writing what is queued.
    drop(session);
    drop(out);
    let _ = writer.await;
    Ok(())
}
