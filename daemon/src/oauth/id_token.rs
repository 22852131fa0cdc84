//! The account an OpenID Connect `id_token` names, for `mcp-auth list` to show.
//!
//! The signature is not verified: the token arrives straight from the token endpoint, and
//! the name read from it is only displayed, never used to decide anything. No network
//! request is made for it (no JWKS, no userinfo).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Longest account name kept; a longer claim is cut (it is only for display).
const MAX_ACCOUNT_CHARS: usize = 128;

/// `email`, else `preferred_username`, else `sub` from a JWS-compact id_token's payload;
/// `None` when the token cannot be read (encrypted, malformed) or names nobody.
pub fn account(id_token: &str) -> Option<String> {
    let mut parts = id_token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None; // five parts: an encrypted (JWE) token, unreadable without its key
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes).ok()?;
    ["email", "preferred_username", "sub"]
        .iter()
        .filter_map(|k| claims.get(*k)?.as_str())
        .map(|v| super::printable(v.trim(), MAX_ACCOUNT_CHARS))
        .find(|v| !v.is_empty())
}

/// The `exp` claim (Unix seconds) of a JWS-compact token, unverified: when a stored ID
/// token must be replaced.
pub fn expires_at(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: serde_json::Value) -> String {
        let enc = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.c2lnbmF0dXJl",
            enc(&serde_json::json!({"alg": "RS256", "kid": "k1"})),
            enc(&claims)
        )
    }

    #[test]
    fn email_then_preferred_username_then_sub() {
        let all = serde_json::json!({"sub": "248289761001", "preferred_username": "jane", "email": "jane@example.com"});
        assert_eq!(account(&token(all)).as_deref(), Some("jane@example.com"));
        let no_email = serde_json::json!({"sub": "248289761001", "preferred_username": "jane"});
        assert_eq!(account(&token(no_email)).as_deref(), Some("jane"));
        let sub_only = serde_json::json!({"sub": "248289761001", "email": ""});
        assert_eq!(account(&token(sub_only)).as_deref(), Some("248289761001"));
    }

    #[test]
    fn unreadable_tokens_name_nobody() {
        for t in [
            "",
            "not-a-jwt",
            "a.b",
            "eyJhbGciOiJub25lIn0.!!!.x",
            &token(serde_json::json!({"aud": "client"})),
            &token(serde_json::json!({"sub": 42})),
            "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d",
        ] {
            assert_eq!(account(t), None, "{t}");
        }
    }

    #[test]
    fn control_characters_and_long_names_are_made_harmless() {
        let hostile = format!("evil\u{1b}[31m{}", "x".repeat(500));
        let got = account(&token(serde_json::json!({"sub": hostile}))).unwrap();
        assert!(!got.contains('\u{1b}'), "{got:?}");
        assert!(got.chars().count() <= MAX_ACCOUNT_CHARS + 1, "{got:?}");
    }

    #[test]
    fn a_padded_payload_is_read_too() {
        let payload = base64::engine::general_purpose::URL_SAFE.encode(r#"{"sub":"ab"}"#);
        assert_eq!(account(&format!("e30.{payload}.")).as_deref(), Some("ab"));
    }
}
