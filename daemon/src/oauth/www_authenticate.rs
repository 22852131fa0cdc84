//! `WWW-Authenticate` parsing (RFC 9110 §11.6.1, RFC 6750 §3, RFC 9728 §5.1).

use std::collections::HashMap;

/// The parameters of a `Bearer` challenge that matter to an MCP client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BearerChallenge {
    pub resource_metadata: Option<String>,
    pub scope: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// The server also (or only) challenged with the `DPoP` scheme (RFC 9449 §7.1): it
    /// takes DPoP-bound tokens.
    pub dpop_offered: bool,
}

impl BearerChallenge {
    /// The challenged scopes, split on spaces.
    pub fn scopes(&self) -> Vec<String> {
        self.scope.as_deref().map(split_scopes).unwrap_or_default()
    }

    /// Every challenged scope must be an RFC 6749 §3.3 scope token: a server's `scope` is
    /// shown to the user and put in a suggested command, so it is checked where it enters.
    pub fn check_scopes(&self, server_url: &str) -> Result<(), super::OAuthError> {
        match &self.scope {
            Some(list) => mcp_authd_ipc::text::parse_scopes(list).map(drop).map_err(|e| {
                super::OAuthError::Untrusted(format!(
                    "{server_url} challenged for an invalid scope: {e}; refusing to log in with it"
                ))
            }),
            None => Ok(()),
        }
    }
}

pub fn split_scopes(s: &str) -> Vec<String> {
    s.split_ascii_whitespace().map(str::to_string).collect()
}

/// Finds the `Bearer` challenge among the header values (a header may carry several
/// challenges, and several headers may be sent), else a `DPoP` one (RFC 9449 §7.1: same
/// parameters, and RFC 9728's `resource_metadata` is scheme-independent). `None` when
/// there is neither.
pub fn parse_bearer<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<BearerChallenge> {
    let all: Vec<_> = values.into_iter().flat_map(parse_challenges).collect();
    let scheme = |name: &str| all.iter().position(|(s, _)| s.eq_ignore_ascii_case(name));
    let dpop_offered = scheme("dpop").is_some();
    let found = scheme("bearer").or_else(|| scheme("dpop"))?;
    all.into_iter()
        .nth(found)
        .map(|(_, mut params)| BearerChallenge {
            resource_metadata: params.remove("resource_metadata"),
            scope: params.remove("scope"),
            error: params.remove("error"),
            error_description: params.remove("error_description"),
            dpop_offered,
        })
}

/// Splits one header value into `(scheme, params)` pairs. Lenient: skips what it cannot
/// read instead of failing, since a partly odd header may still carry `resource_metadata`.
fn parse_challenges(header: &str) -> Vec<(String, HashMap<String, String>)> {
    let mut out: Vec<(String, HashMap<String, String>)> = Vec::new();
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    loop {
        p.skip_ws_and_commas();
        let Some(token) = p.token() else { break };
        p.skip_ws();
        if p.peek() == Some(b'=') {
            // `name=value`: a parameter of the current challenge.
            p.i += 1;
            p.skip_ws();
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token68()
            };
            if let Some((_, params)) = out.last_mut() {
                params.entry(token.to_ascii_lowercase()).or_insert(value);
            }
        } else {
            // A new scheme; a token68 may follow it (not used by Bearer).
            out.push((token, HashMap::new()));
        }
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    /// The next token, skipping bytes that cannot start one. A loop, not recursion: a
    /// hostile header of a million such bytes must not exhaust the stack.
    fn token(&mut self) -> Option<String> {
        while self.peek().is_some_and(|c| !is_tchar(c)) {
            self.i += 1;
        }
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn token68(&mut self) -> String {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| is_tchar(c) || c == b'/' || c == b'=')
        {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    fn quoted(&mut self) -> String {
        self.i += 1; // opening quote
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_quoted_and_bare_params() {
        let c = parse_bearer([
            r#"Bearer resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp", scope="a b", error=invalid_token"#,
        ])
        .unwrap();
        assert_eq!(
            c.resource_metadata.as_deref(),
            Some("https://mcp.example/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(c.scopes(), vec!["a", "b"]);
        assert_eq!(c.error.as_deref(), Some("invalid_token"));
    }

    #[test]
    fn finds_bearer_among_several_challenges_and_headers() {
        let c = parse_bearer([
            r#"Basic realm="x""#,
            r#"DPoP algs="ES256", bearer scope="files:read", error_description="say \"hi\"""#,
        ])
        .unwrap();
        assert_eq!(c.scope.as_deref(), Some("files:read"));
        assert_eq!(c.error_description.as_deref(), Some(r#"say "hi""#));
        assert_eq!(c.resource_metadata, None);
    }

    #[test]
    fn bare_bearer_and_garbage() {
        assert_eq!(
            parse_bearer(["Bearer"]).unwrap(),
            BearerChallenge::default()
        );
        assert_eq!(parse_bearer(["Basic realm=x"]), None);
        let dpop =
            parse_bearer([r#"DPoP error="use_dpop_nonce", resource_metadata="https://r/m""#])
                .unwrap();
        assert_eq!(dpop.resource_metadata.as_deref(), Some("https://r/m"));
        assert!(dpop.dpop_offered);
        assert!(!parse_bearer(["Bearer scope=\"a\""]).unwrap().dpop_offered);
        let both = parse_bearer([r#"DPoP algs="ES256", Bearer scope="a""#]).unwrap();
        assert!(
            both.dpop_offered,
            "a DPoP challenge beside the Bearer one counts"
        );
        assert_eq!(
            both.scope.as_deref(),
            Some("a"),
            "Bearer wins when both are offered"
        );
        assert_eq!(parse_bearer([""]), None);
        // Unterminated quote and stray bytes never panic or loop.
        let c = parse_bearer([r#"Bearer ,,, =, scope="unterminated"#]).unwrap();
        assert_eq!(c.scope.as_deref(), Some("unterminated"));
        assert!(parse_bearer(["\u{1F600} Bearer scope=x"]).is_some());
    }

    /// Megabytes of bytes that start no token, and of parameters, in a thread with a small
    /// stack: parsing is a loop (no recursion a header can deepen), in debug builds too,
    /// and linear in time.
    #[test]
    fn a_huge_hostile_header_neither_exhausts_the_stack_nor_hangs() {
        let started = std::time::Instant::now();
        let parsed = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| {
                let junk = "(".repeat(4 << 20);
                assert_eq!(parse_bearer([junk.as_str()]), None);
                let tail = format!("{} Bearer scope=\"a\"", "\u{1F600}=".repeat(1 << 20));
                let c = parse_bearer([tail.as_str()]).unwrap();
                assert_eq!(c.scope.as_deref(), Some("a"));
                let params = format!("Bearer {}", "x=y, ".repeat(1 << 20));
                parse_bearer([params.as_str()]).unwrap()
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert_eq!(parsed, BearerChallenge::default());
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }
}
