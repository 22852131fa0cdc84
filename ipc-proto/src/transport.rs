//! Where credentials may travel: the one check of every URL the daemon fetches or sends a
//! code, token or secret to, and of the MCP server URL the proxy sends bearer tokens to.
//!
//! Bearer tokens only travel over TLS (RFC 6750 §5.3), endpoints are https unless on
//! loopback (RFC 8252 §8.3). "Loopback" is decided on the URL alone, never by resolving
//! it: the name `localhost`, or an IP literal in 127.0.0.0/8 or `::1`. Any other name —
//! also `*.localhost` and one that `/etc/hosts` maps to 127.0.0.1 — is remote, since what
//! a name resolves to can change between the check and the connection.
//!
//! A remote URL may not lead to a loopback one (a resource metadata URL, an issuer or an
//! endpoint on loopback named by a remote server): a remote server must not steer the
//! daemon at services on the user's machine.

use url::Url;

/// The per-server config setting that lets plain http through, named in every refusal.
pub const ALLOW_INSECURE_HTTP: &str = "allow_insecure_http";

/// Why a URL is refused; every message names the URL and, where it helps, the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("the {what} `{url}` is not a URL: {reason}")]
    NotUrl {
        what: String,
        url: String,
        reason: String,
    },
    #[error("the {what} `{url}` is neither https nor http")]
    Scheme { what: String, url: String },
    #[error(
        "the {what} `{url}` is plain http to a host that is not loopback: tokens and codes would travel unencrypted; use https (for a lab only: set {ALLOW_INSECURE_HTTP} = true under [servers.\"{config_key}\"] in the config file, then run: mcp-auth reload)"
    )]
    PlainHttp {
        what: String,
        url: String,
        config_key: String,
    },
    #[error(
        "the {what} `{url}` is on this machine (loopback) but was named by `{named_by}`, which is not: a remote server may not steer mcp-authd at local services; refusing"
    )]
    LoopbackFromRemote {
        what: String,
        url: String,
        named_by: String,
    },
}

/// A URL that passed [`check_url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedUrl {
    pub url: Url,
    /// Plain http to a remote host, let through by `allow_insecure_http`: the caller warns.
    pub insecure: bool,
}

/// Whether a URL's host is loopback: `localhost` by name, or an IP literal in
/// 127.0.0.0/8 or `::1`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The one transport check. `what` names the URL's role in messages (`MCP server URL`,
/// `token endpoint`…); `named_by` is the URL of whoever named this one (the MCP server for
/// its resource metadata and issuer, the issuer for its endpoints; `None` when the user
/// typed it); `config_key` is the `[servers."…"]` key a refusal tells the user to set.
pub fn check_url(
    what: &str,
    raw: &str,
    named_by: Option<&str>,
    allow_insecure_http: bool,
    config_key: &str,
) -> Result<CheckedUrl, UrlRefused> {
    let shown = || crate::text::printable(raw, crate::text::MAX_QUOTED_CHARS);
    // The URL parser would quietly drop or encode these; a URL a server sends with them is
    // kept verbatim elsewhere (an issuer is compared and shown as sent), so refuse it.
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(UrlRefused::NotUrl {
            what: what.to_string(),
            url: shown(),
            reason: "it contains spaces or control characters".into(),
        });
    }
    let url = Url::parse(raw).map_err(|e| UrlRefused::NotUrl {
        what: what.to_string(),
        url: shown(),
        reason: e.to_string(),
    })?;
    let loopback = is_loopback(&url);
    let insecure = match url.scheme() {
        "https" => false,
        "http" if loopback => false,
        "http" if allow_insecure_http => true,
        "http" => {
            return Err(UrlRefused::PlainHttp {
                what: what.to_string(),
                url: shown(),
                config_key: crate::text::printable(config_key, crate::text::MAX_QUOTED_CHARS),
            });
        }
        _ => {
            return Err(UrlRefused::Scheme {
                what: what.to_string(),
                url: shown(),
            });
        }
    };
    if loopback
        && let Some(parent) = named_by
        && !Url::parse(parent).is_ok_and(|p| is_loopback(&p))
    {
        return Err(UrlRefused::LoopbackFromRemote {
            what: what.to_string(),
            url: shown(),
            named_by: crate::text::printable(parent, crate::text::MAX_QUOTED_CHARS),
        });
    }
    Ok(CheckedUrl { url, insecure })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str, by: Option<&str>, allow: bool) -> Result<bool, UrlRefused> {
        check_url("token endpoint", raw, by, allow, "k").map(|c| c.insecure)
    }

    #[test]
    fn https_or_loopback_only() {
        assert_eq!(ok("https://as.example/token", None, false), Ok(false));
        for lo in [
            "http://127.0.0.1:8080/t",
            "http://127.3.4.5/t",
            "http://localhost/t",
            "http://LOCALHOST:9/t",
            "http://[::1]:9/t",
        ] {
            assert_eq!(ok(lo, None, false), Ok(false), "{lo}");
        }
        for remote in [
            "http://as.example/t",
            "http://10.0.0.1/t",
            "http://app.localhost/t",
            "http://localhost.example/t",
            "http://[::ffff:127.0.0.1]/t",
            "http://0.0.0.0/t",
        ] {
            let e = ok(remote, None, false).unwrap_err();
            assert!(matches!(e, UrlRefused::PlainHttp { .. }), "{remote}: {e}");
            assert!(e.to_string().contains(ALLOW_INSECURE_HTTP), "{e}");
        }
        for bad in [
            "file:///etc/passwd",
            "javascript:alert(1)",
            "not a url",
            "https://as.example/\u{1b}[2J",
            "https://as.example/a\nb",
        ] {
            assert!(ok(bad, None, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_insecure_http_lets_remote_http_through_marked() {
        assert_eq!(ok("http://lab.example/t", None, true), Ok(true));
        assert_eq!(ok("http://127.0.0.1/t", None, true), Ok(false));
    }

    #[test]
    fn a_remote_url_never_leads_to_loopback() {
        let e = ok("http://127.0.0.1:5432/t", Some("https://as.example"), false).unwrap_err();
        assert!(matches!(e, UrlRefused::LoopbackFromRemote { .. }), "{e}");
        let e = ok("https://localhost/t", Some("https://as.example"), true).unwrap_err();
        assert!(matches!(e, UrlRefused::LoopbackFromRemote { .. }), "{e}");
        assert!(ok("http://127.0.0.1/t", Some("http://localhost:9"), false).is_ok());
        assert!(ok("https://as.example/t", Some("http://127.0.0.1:9"), false).is_ok());
    }
}
