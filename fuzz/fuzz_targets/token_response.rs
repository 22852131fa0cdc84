//! Token endpoint response bodies (RFC 6749 §5.1) and error bodies (§5.2).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_authd::oauth::OAuthErrorBody;
use mcp_authd::oauth::token::parse_token_response;

/// A fixed "now", near the end of what an i64 holds, so that overflow shows.
const NOW: i64 = i64::MAX - 1000;

fuzz_target!(|data: &[u8]| {
    match parse_token_response("https://as.example/token", data, NOW) {
        Ok(tokens) => {
            assert!(!tokens.access_token.expose().is_empty());
            assert!(tokens.expires_at > NOW, "a token already expired");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(e) = serde_json::from_slice::<OAuthErrorBody>(data) {
        let _ = e.to_string();
    }
    let _ = parse_token_response("https://as.example/token", data, 1_700_000_000);
});
