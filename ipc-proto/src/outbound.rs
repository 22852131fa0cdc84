//! How the daemon and `mcp-auth proxy` reach servers (feature `http`): the proxy named by
//! the environment, with loopback always reached directly; the OS trust store plus extra
//! CA certificates; and certificate errors that say which setting fixes them.
//!
//! It lives here rather than in either binary because both build the same client and must
//! explain the same failures the same way.

use std::path::{Path, PathBuf};

use reqwest::{ClientBuilder, NoProxy, Proxy, Url};

/// Destinations never sent through a proxy, whatever `NO_PROXY` says: servers on this
/// machine (the loopback redirect, local MCP servers), which a proxy elsewhere cannot
/// reach — its `127.0.0.1` is not ours.
const ALWAYS_DIRECT: &str = "localhost,127.0.0.0/8,::1";

/// A proxy variable or CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    // The value is not shown: a proxy URL may carry a password.
    #[error("the environment variable {var} is not a usable proxy URL ({reason}); fix or unset it")]
    BadProxy { var: &'static str, reason: String },
    #[error("cannot use the CA certificates in {} ({setting}): {reason}", path.display())]
    BadCaFile {
        path: PathBuf,
        setting: &'static str,
        reason: String,
    },
}

/// Where extra CA certificates come from, and the setting that names them (for messages).
#[derive(Debug, Clone, Copy)]
pub struct CaFile<'a> {
    pub path: &'a Path,
    pub setting: &'static str,
}

/// Applies the environment's proxies and the extra CA certificates to `builder`.
///
/// `HTTPS_PROXY` / `https_proxy` for https URLs, `HTTP_PROXY` / `http_proxy` for http
/// URLs, `ALL_PROXY` / `all_proxy` for both when the specific one is unset; `NO_PROXY` /
/// `no_proxy` (comma-separated names, which also match their subdomains, IP addresses,
/// CIDR ranges, `*`) bypasses them, and so does loopback always. The uppercase name wins
/// when both are set, as in curl. Server certificates are checked against the OS trust
/// store (`SSL_CERT_FILE` / `SSL_CERT_DIR` replace it, as in OpenSSL) plus `ca_file`.
pub fn configure(
    builder: ClientBuilder,
    ca_file: Option<CaFile<'_>>,
) -> Result<ClientBuilder, SetupError> {
    let mut builder = with_env_proxies(builder, &|name| std::env::var(name).ok())?;
    if let Some(ca) = ca_file {
        let bad = |reason: String| SetupError::BadCaFile {
            path: ca.path.to_path_buf(),
            setting: ca.setting,
            reason,
        };
        let pem = std::fs::read(ca.path).map_err(|e| bad(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(chain(&e)))?;
        if certs.is_empty() {
            return Err(bad(
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
            ));
        }
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder)
}

/// The proxies `env` names (a function so tests need not change the process environment).
fn with_env_proxies(
    builder: ClientBuilder,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ClientBuilder, SetupError> {
    let first = |names: &[&'static str]| {
        names.iter().find_map(|name| {
            env(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (*name, v))
        })
    };
    let bypass = match first(&["NO_PROXY", "no_proxy"]) {
        Some((_, list)) => format!("{list},{ALWAYS_DIRECT}"),
        None => ALWAYS_DIRECT.to_string(),
    };
    let all = first(&["ALL_PROXY", "all_proxy"]);
    // reqwest would read the environment itself, but without the loopback exception.
    let mut builder = builder.no_proxy();
    for (https, names) in [
        (false, ["HTTP_PROXY", "http_proxy"]),
        (true, ["HTTPS_PROXY", "https_proxy"]),
    ] {
        let Some((var, value)) = first(&names).or_else(|| all.clone()) else {
            continue;
        };
        let url = proxy_url(value.trim()).map_err(|reason| SetupError::BadProxy { var, reason })?;
        let proxy = if https {
            Proxy::https(url)
        } else {
            Proxy::http(url)
        }
        .map_err(|e| SetupError::BadProxy {
            var,
            reason: chain(&e),
        })?;
        builder = builder.proxy(proxy.no_proxy(NoProxy::from_string(&bypass)));
    }
    Ok(builder)
}

/// A proxy URL as curl reads one: `host:port` means `http://host:port`.
fn proxy_url(value: &str) -> Result<Url, String> {
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| e.to_string())?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some() => Ok(url),
        "http" | "https" => Err("no host in it".into()),
        other => Err(format!(
            "scheme `{other}` is not supported; use an http:// or https:// proxy"
        )),
    }
}

/// When `error` is a server certificate this machine does not trust: a sentence naming the
/// host, the reason and the setting that makes it trusted.
pub fn certificate_problem(
    error: &(dyn std::error::Error + 'static),
    host: &str,
    ca_setting: &str,
) -> Option<String> {
    let refused = rustls_error(error)?;
    let reason = match refused {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            "it is signed by a certificate authority this machine does not trust".to_string()
        }
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        ) => "it is not issued for this host name".to_string(),
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. },
        ) => "it has expired".to_string(),
        other => other.to_string(),
    };
    Some(format!(
        "the TLS certificate of {host} is not trusted: {reason} ({refused}). If a TLS-inspecting proxy or your organisation's own CA signs it, point {ca_setting} or the SSL_CERT_FILE environment variable at that CA's PEM file"
    ))
}

/// The rustls error somewhere in `error`'s causes. An `io::Error` hides its payload from
/// `source()`, so it is opened explicitly.
fn rustls_error<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| rustls_error(inner))
        {
            return Some(found);
        }
        cause = e.source();
    }
    None
}

/// An error with its causes, `a: b: c`.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let next = e.to_string();
        // hyper and reqwest often repeat their cause in their own message.
        if !text.ends_with(&next) {
            text = format!("{text}: {next}");
        }
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn proxy_urls_as_curl_reads_them() {
        assert_eq!(
            proxy_url("proxy.corp:3128").unwrap().as_str(),
            "http://proxy.corp:3128/"
        );
        assert!(proxy_url("https://proxy.corp").is_ok());
        assert!(
            proxy_url("socks5://proxy.corp:1080")
                .unwrap_err()
                .contains("socks5")
        );
        assert!(proxy_url("http://").is_err());
    }

    #[test]
    fn a_bad_proxy_variable_is_named_without_its_value() {
        let err = with_env_proxies(
            reqwest::Client::builder(),
            &env(&[("https_proxy", "http://user:hunter2@[bad")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("https_proxy"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_missing_or_empty_ca_file_names_the_setting() {
        let dir = std::env::temp_dir().join(format!("outbound-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for path in [dir.join("missing.pem"), empty] {
            let err = configure(
                reqwest::Client::builder(),
                Some(CaFile {
                    path: &path,
                    setting: "ca_file in config.toml",
                }),
            )
            .expect_err("refused")
            .to_string();
            assert!(err.contains("ca_file in config.toml"), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_rustls_error_is_found_inside_an_io_error() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let text = certificate_problem(&io, "as.corp.example", "ca_file").expect("recognised");
        assert!(text.contains("as.corp.example"), "{text}");
        assert!(text.contains("does not trust"), "{text}");
        assert!(
            text.contains("ca_file") && text.contains("SSL_CERT_FILE"),
            "{text}"
        );
        let other = std::io::Error::other("connection refused");
        assert!(certificate_problem(&other, "h", "ca_file").is_none());
    }
}
