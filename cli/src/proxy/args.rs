//! What `mcp-auth proxy` is given: its flags, and the extra headers (from `--header` and
//! the config file) checked once, before anything is sent. Also the names of the headers
//! the transport sets itself, since those are the ones a user may not set.

use std::collections::BTreeMap;
use std::path::PathBuf;

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The Streamable HTTP session id a server hands out on `initialize`.
pub(super) const SESSION_HEADER: &str = "mcp-session-id";
/// The negotiated protocol version, sent on every request after `initialize`.
pub(super) const VERSION_HEADER: &str = "mcp-protocol-version";
/// RFC 9449: the proof header, and the header a server's nonce comes in.
pub(super) const DPOP_HEADER: &str = "dpop";
pub(super) const DPOP_NONCE_HEADER: &str = "dpop-nonce";

/// The setting a certificate error points to.
pub(super) const CA_SETTING: &str = "--ca-file (or MCP_AUTH_CA_FILE)";

#[derive(clap::Args)]
pub struct Args {
    /// The MCP server URL (Streamable HTTP), e.g. https://mcp.example.com/mcp
    pub server: String,
    /// Never start a browser login: answer requests that need one with an error instead
    #[arg(long)]
    pub no_login: bool,
    /// Do not open a browser for a login; the URL is printed on stderr
    #[arg(long)]
    pub no_browser: bool,
    /// Seconds to wait for a browser login [default: the daemon's login_timeout_secs]
    #[arg(long)]
    pub login_timeout: Option<u64>,
    /// A PEM file of CA certificates to trust besides the OS trust store when talking to
    /// the server (a TLS-inspecting proxy's CA, a company CA)
    #[arg(long, env = "MCP_AUTH_CA_FILE", value_name = "PEM_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The account of the server to use (and to log in as) [default: the default account]
    #[arg(long, value_name = "NAME", value_parser = crate::account_arg)]
    pub account: Option<String>,
    /// An extra HTTP header for every request to the server, as 'Name: value' (repeat);
    /// `${VAR}` in the value is replaced by that environment variable. Added to the
    /// server's `headers` in the config file, replacing one of the same name
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Which MCP transport to use: Streamable HTTP, the older HTTP+SSE (2024-11-05), or
    /// one then the other when the server refuses the first (HTTP 404 or 405)
    #[arg(long, value_enum, default_value_t = Transport::HttpFirst)]
    pub transport: Transport,
    #[command(flatten)]
    pub callback: crate::login::Callback,
}

/// The transport strategies of mcp-remote's `--transport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    HttpFirst,
    SseFirst,
    HttpOnly,
    SseOnly,
}

/// Parses `--header` values (`Name: value`, `${VAR}` expanded); why not, naming the flag.
pub fn parse_header_args(args: &[String]) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for arg in args {
        let Some((name, value)) = arg.split_once(':') else {
            // Not echoed: what was meant as a value may be a credential.
            anyhow::bail!("a --header argument is not `Name: value` (it has no `:`)");
        };
        let (name, value) = (name.trim(), expand_env(value.trim())?);
        insert_header(&mut headers, name, &value)
            .map_err(|why| anyhow::anyhow!("--header `{name}`: {why}"))?;
    }
    Ok(headers)
}

/// The config file's headers for `server` (as the daemon read them), checked as
/// `--header` values are; why not, naming the file.
pub(super) fn config_headers(
    server: &str,
    configured: &BTreeMap<String, String>,
) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for (name, value) in configured {
        insert_header(&mut headers, name, value)
            .map_err(|why| anyhow::anyhow!("config file, headers of {server}: `{name}`: {why}"))?;
    }
    Ok(headers)
}

/// Adds one header; why not: an invalid name or value, or one the proxy owns.
fn insert_header(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), String> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
    if parsed == header::AUTHORIZATION {
        return Err(
            "Authorization cannot be set: mcp-authd sends the access token itself; to use a fixed credential instead of a login, give it another header name if the server accepts one".into(),
        );
    }
    if [SESSION_HEADER, VERSION_HEADER].contains(&parsed.as_str()) {
        return Err(format!("{name} cannot be set: the transport sets it"));
    }
    let value = HeaderValue::from_str(value)
        .map_err(|_| "the value holds a line break or a control character".to_string())?;
    headers.insert(parsed, value);
    Ok(())
}

/// Replaces `${NAME}` with the environment variable NAME: MCP clients start the proxy
/// without a shell, but can set its environment, and not every client expands `${…}` in
/// arguments itself. An unset variable is an error rather than an empty header.
fn expand_env(value: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        let name = &rest[start + 2..start + 2 + len];
        let Ok(found) = std::env::var(name) else {
            anyhow::bail!("--header: the environment variable `{name}` is not set");
        };
        out.push_str(&rest[..start]);
        out.push_str(&found);
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_expand_environment_variables() {
        // SAFETY: no other thread of this test reads or writes the environment.
        unsafe { std::env::set_var("MCP_AUTH_PROXY_TEST_VAR", "v1") };
        assert_eq!(
            expand_env("a ${MCP_AUTH_PROXY_TEST_VAR}-${MCP_AUTH_PROXY_TEST_VAR} $x ${").unwrap(),
            "a v1-v1 $x ${"
        );
        assert!(expand_env("${MCP_AUTH_PROXY_TEST_UNSET}").is_err());
        let h = parse_header_args(&["X-A:  b: c ".into()]).unwrap();
        assert_eq!(h["x-a"], "b: c");
    }

    #[test]
    fn headers_the_proxy_sets_itself_are_refused_from_either_source() {
        for name in ["Authorization", "Mcp-Session-Id", "MCP-Protocol-Version"] {
            let flag = parse_header_args(&[format!("{name}: x")]).err().unwrap();
            assert!(flag.to_string().starts_with("--header"), "{flag}");
            let configured = BTreeMap::from([(name.to_string(), "x".to_string())]);
            let file = config_headers("https://mcp.example", &configured)
                .err()
                .unwrap();
            assert!(
                file.to_string()
                    .starts_with("config file, headers of https://mcp.example:"),
                "{file}"
            );
        }
        // A value that would split the request is refused, and not echoed.
        let e = parse_header_args(&["X-Token: a\u{1}secret".into()])
            .err()
            .unwrap();
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = parse_header_args(&["no colon secret".into()])
            .err()
            .unwrap();
        assert!(!e.to_string().contains("secret"), "{e}");
        // The flag replaces the config's header of the same name (run extends in that order).
        let mut merged = config_headers(
            "s",
            &BTreeMap::from([("X-Team".to_string(), "red".to_string())]),
        )
        .unwrap();
        merged.extend(parse_header_args(&["x-team: blue".into()]).unwrap());
        assert_eq!(merged.get_all("x-team").iter().count(), 1);
        assert_eq!(merged["x-team"], "blue");
    }
}
