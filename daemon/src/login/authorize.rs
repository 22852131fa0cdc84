//! What the authorization request asks for and what its response must show: the URL
//! (PKCE, `state`, `resource`, scopes, `prompt`, `login_hint`), the scopes chosen, the
//! `iss` check.

use mcp_authd_ipc::{ErrorKind, RpcError};
use url::Url;

use super::errors::discovery_error;
use crate::config::{Quirks, ServerConfig};
use crate::oauth::OAuthError;
use crate::oauth::discovery::Discovery;
use crate::oauth::pkce::Pkce;
use crate::secret::Secret;

/// Longest `login_hint` sent (an email or user name; anything longer is a mistake).
const MAX_LOGIN_HINT_LEN: usize = 256;

/// Scopes as the MCP spec chooses them: explicit ones (caller, then config), else the
/// challenge's, else everything the PRM lists, else none; plus `offline_access` when the
/// AS advertises it (SEP-2207), so a refresh token is issued.
pub(super) fn choose_scopes(
    requested: Option<Vec<String>>,
    cfg: Option<&ServerConfig>,
    d: &Discovery,
) -> Vec<String> {
    let mut scopes = requested
        .filter(|s| !s.is_empty())
        .or_else(|| cfg.and_then(|c| c.scopes.clone()))
        .or_else(|| {
            d.challenge
                .as_ref()
                .map(|c| c.scopes())
                .filter(|s| !s.is_empty())
        })
        .or_else(|| d.resource_metadata.scopes_supported.clone())
        .unwrap_or_default();
    if !scopes.is_empty()
        && d.metadata.supports_scope("offline_access")
        && !scopes.iter().any(|s| s == "offline_access")
    {
        scopes.push("offline_access".into());
    }
    scopes
}

/// Scopes a client asked for: each an RFC 6749 scope token.
pub(super) fn check_requested_scopes(scopes: &[String]) -> Result<(), RpcError> {
    for scope in scopes {
        mcp_authd_ipc::text::check_scope(scope)
            .map_err(|e| RpcError::new(ErrorKind::InvalidParams, e.to_string()))?;
    }
    Ok(())
}

/// What one authorization request asks for, beyond the discovered endpoints.
pub(super) struct AuthorizationRequest<'a> {
    pub(super) client_id: &'a str,
    pub(super) redirect_uri: &'a str,
    pub(super) state: &'a Secret,
    pub(super) pkce: &'a Pkce,
    pub(super) scopes: &'a [String],
    /// Add `prompt=consent` (see [`crate::oauth::discovery::AsMetadata::wants_prompt_consent`]).
    pub(super) prompt_consent: bool,
}

/// The authorization endpoint's URL with the request's parameters (RFC 6749 §4.1.1,
/// PKCE, RFC 8707 `resource`), then the config's extra ones.
pub(super) fn authorization_url(
    d: &Discovery,
    r: AuthorizationRequest<'_>,
    quirks: &Quirks,
) -> Result<String, RpcError> {
    let AuthorizationRequest {
        client_id,
        redirect_uri,
        state,
        pkce,
        scopes,
        prompt_consent,
    } = r;
    // Checked by the transport policy at discovery (discovery::check_endpoints).
    let mut url = Url::parse(&d.metadata.authorization_endpoint)
        .map_err(|e| discovery_error(&d.server_url, OAuthError::Untrusted(e.to_string())))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state.expose())
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256");
        if !quirks.omit_resource {
            q.append_pair("resource", &d.resource);
        }
        if !scopes.is_empty() {
            q.append_pair("scope", &scopes.join(" "));
        }
        if prompt_consent {
            q.append_pair("prompt", "consent");
        }
        for (name, value) in &quirks.authorization_params {
            q.append_pair(name, value);
        }
    }
    Ok(url.to_string())
}

/// The quirks with the login's `login_hint` among the extra authorization parameters: the
/// user's hint (or the account's) replaces one the config file sets for every login.
pub(super) fn with_login_hint(quirks: &Quirks, login_hint: Option<&str>) -> Quirks {
    let mut quirks = quirks.clone();
    if let Some(hint) = login_hint {
        quirks
            .authorization_params
            .insert("login_hint".to_string(), hint.to_string());
    }
    quirks
}

/// The `login_hint` an account name implies: the name itself when it looks like an email
/// (`jane@example.com`), since that is what identity providers pre-fill; else none (a
/// name like `work` means nothing to the authorization server).
pub(super) fn hint_of_account(name: &str) -> Option<String> {
    let (user, domain) = name.split_once('@')?;
    (!user.is_empty() && domain.contains('.') && !domain.contains('@')).then(|| name.to_string())
}

/// A `login_hint` from the user: printable, at most [`MAX_LOGIN_HINT_LEN`] bytes.
pub(super) fn check_login_hint(hint: &str) -> Result<(), String> {
    if hint.trim().is_empty() {
        return Err("`login_hint` is empty; omit it to send none".into());
    }
    if hint.len() > MAX_LOGIN_HINT_LEN {
        return Err(format!(
            "`login_hint` is longer than {MAX_LOGIN_HINT_LEN} bytes"
        ));
    }
    if hint.chars().any(char::is_control) {
        return Err("`login_hint` holds a control character".into());
    }
    Ok(())
}

/// RFC 9207 §2.4: compare `iss` exactly when present; require it when the AS advertises
/// it, or when `required` (a client id shared by several authorization servers).
pub(super) fn check_issuer(d: &Discovery, iss: Option<&str>, required: bool) -> Result<(), String> {
    let expected = &d.metadata.issuer;
    match (
        iss,
        required
            || d.metadata
                .authorization_response_iss_parameter_supported
                .unwrap_or(false),
    ) {
        (Some(got), _) if got == expected => Ok(()),
        (Some(got), _) => Err(format!(
            "the authorization response came from issuer `{}`, not `{expected}` (possible mix-up attack); nothing was redeemed",
            crate::oauth::printable(got, 200)
        )),
        (None, true) => Err(format!(
            "the authorization response carries no `iss` parameter, which {expected} must send (it promises RFC 9207, or mcp-authd's client id is shared by several servers); nothing was redeemed"
        )),
        (None, false) => Ok(()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::oauth::discovery::ResourceMetadata;
    use crate::oauth::www_authenticate::BearerChallenge;

    /// An MCP server at `h.example` whose authorization server is `as.example`, with
    /// `metadata` (JSON) over the AS's required fields.
    pub(in crate::login) fn discovery_with(metadata: serde_json::Value) -> Discovery {
        let mut as_metadata = serde_json::json!({
            "issuer": "https://as.example",
            "authorization_endpoint": "https://as.example/authorize",
            "token_endpoint": "https://as.example/token",
        });
        as_metadata
            .as_object_mut()
            .unwrap()
            .extend(metadata.as_object().unwrap().clone());
        Discovery {
            server_url: "https://h.example/mcp".into(),
            resource: "https://h.example/mcp".into(),
            resource_metadata: ResourceMetadata {
                resource: "https://h.example/mcp".into(),
                authorization_servers: vec!["https://as.example".into()],
                scopes_supported: None,
                ..Default::default()
            },
            challenge: None,
            metadata: serde_json::from_value(as_metadata).unwrap(),
            legacy: false,
        }
    }

    fn discovery(iss_supported: Option<bool>) -> Discovery {
        discovery_with(serde_json::json!({
            "authorization_response_iss_parameter_supported": iss_supported,
        }))
    }

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    /// With a client id shared by several servers (a Client ID Metadata Document) `iss` is
    /// required even from a server that does not promise it; a wrong one is always refused.
    #[test]
    fn iss_is_required_for_a_shared_client_id() {
        let d = discovery(None);
        assert!(check_issuer(&d, None, false).is_ok());
        let e = check_issuer(&d, None, true).unwrap_err();
        assert!(e.contains("no `iss`"), "{e}");
        assert!(check_issuer(&d, Some("https://as.example"), true).is_ok());
        let e = check_issuer(&d, Some("https://evil.example"), false).unwrap_err();
        assert!(e.contains("mix-up"), "{e}");
        assert!(check_issuer(&discovery(Some(true)), None, false).is_err());
    }

    /// A server-controlled issuer in the refusal is made printable.
    #[test]
    fn a_foreign_issuer_is_quoted_printable() {
        let e = check_issuer(
            &discovery(None),
            Some("https://evil.example/\u{1b}[2J"),
            false,
        )
        .unwrap_err();
        assert!(!e.contains('\u{1b}'), "{e:?}");
    }

    #[test]
    fn only_an_email_like_account_name_is_a_login_hint() {
        assert_eq!(
            hint_of_account("jane@corp.example").as_deref(),
            Some("jane@corp.example")
        );
        for not_a_hint in ["work", "@corp.example", "jane@corp", "a@b@c.example"] {
            assert_eq!(hint_of_account(not_a_hint), None, "{not_a_hint}");
        }
    }

    #[test]
    fn a_login_hint_is_printable_and_short() {
        assert!(check_login_hint("jane@corp.example").is_ok());
        assert!(check_login_hint("Jane Doe").is_ok());
        for bad in ["", "  ", "a\nb", &"x".repeat(MAX_LOGIN_HINT_LEN + 1)] {
            assert!(check_login_hint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requested_scopes_are_scope_tokens() {
        assert!(check_requested_scopes(&strings(&["read", "mcp:tools"])).is_ok());
        for bad in ["two words", "quote\"d", ""] {
            let e = check_requested_scopes(&strings(&["read", bad])).unwrap_err();
            assert_eq!(e.kind(), Some(ErrorKind::InvalidParams), "{bad:?}");
        }
    }

    /// The query the authorization server sees: every parameter once, the config's extra
    /// ones after ours, the login's hint over the config's.
    #[test]
    fn the_authorization_url_carries_the_request() {
        let d = discovery_with(serde_json::json!({
            "authorization_endpoint": "https://as.example/authorize?tenant=t1",
        }));
        let (state, pkce) = (Secret::new("st"), Pkce::new());
        let mut quirks = Quirks::default();
        quirks
            .authorization_params
            .insert("login_hint".into(), "config@corp.example".into());
        quirks
            .authorization_params
            .insert("access_type".into(), "offline".into());
        let quirks = with_login_hint(&quirks, Some("jane@corp.example"));
        let request = |scopes, prompt_consent| AuthorizationRequest {
            client_id: "c 1",
            redirect_uri: "http://127.0.0.1:9/callback",
            state: &state,
            pkce: &pkce,
            scopes,
            prompt_consent,
        };
        let scopes = strings(&["read", "offline_access"]);
        let url = authorization_url(&d, request(&scopes, true), &quirks).unwrap();
        let url = Url::parse(&url).unwrap();
        assert_eq!(url.path(), "/authorize");
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let want = [
            ("tenant", "t1"),
            ("response_type", "code"),
            ("client_id", "c 1"),
            ("redirect_uri", "http://127.0.0.1:9/callback"),
            ("state", "st"),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("resource", "https://h.example/mcp"),
            ("scope", "read offline_access"),
            ("prompt", "consent"),
            ("access_type", "offline"),
            ("login_hint", "jane@corp.example"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(pairs, want);

        // No scopes, no prompt, and `omit_resource`: none of the three is sent.
        let quirks = Quirks {
            omit_resource: true,
            ..Quirks::default()
        };
        let url = authorization_url(&d, request(&[], false), &quirks).unwrap();
        let names: Vec<String> = Url::parse(&url)
            .unwrap()
            .query_pairs()
            .map(|(k, _)| k.into_owned())
            .collect();
        for absent in ["resource", "scope", "prompt", "login_hint"] {
            assert!(!names.iter().any(|n| n == absent), "{absent} in {url}");
        }
    }

    /// The MCP spec's order: the caller's, the config's, the challenge's, the PRM's; and
    /// `offline_access` added once where the authorization server lists it.
    #[test]
    fn scopes_are_chosen_in_the_specs_order() {
        let mut d = discovery_with(serde_json::json!({
            "scopes_supported": ["read", "write", "offline_access"],
        }));
        d.resource_metadata.scopes_supported = Some(strings(&["prm"]));
        let cfg = ServerConfig {
            scopes: Some(strings(&["configured"])),
            ..ServerConfig::default()
        };
        d.challenge = Some(BearerChallenge {
            scope: Some("challenged more".into()),
            ..BearerChallenge::default()
        });
        let chosen = |requested: Option<&[&str]>, cfg: Option<&ServerConfig>, d: &Discovery| {
            choose_scopes(requested.map(strings), cfg, d)
        };
        assert_eq!(
            chosen(Some(&["asked"]), Some(&cfg), &d),
            strings(&["asked", "offline_access"])
        );
        // An empty request is no request.
        assert_eq!(
            chosen(Some(&[]), Some(&cfg), &d),
            strings(&["configured", "offline_access"])
        );
        assert_eq!(
            chosen(None, None, &d),
            strings(&["challenged", "more", "offline_access"])
        );
        d.challenge = None;
        assert_eq!(chosen(None, None, &d), strings(&["prm", "offline_access"]));
        // Asked for already: not twice.
        assert_eq!(
            chosen(Some(&["offline_access", "read"]), None, &d),
            strings(&["offline_access", "read"])
        );
        // No scope at all: none, not `offline_access` alone.
        d.resource_metadata.scopes_supported = None;
        assert!(chosen(None, None, &d).is_empty());
        // A server that does not list `offline_access` is not asked for it.
        let plain = discovery_with(serde_json::json!({ "scopes_supported": ["read"] }));
        assert_eq!(chosen(Some(&["read"]), None, &plain), strings(&["read"]));
    }
}
