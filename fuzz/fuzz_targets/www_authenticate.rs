//! `WWW-Authenticate` values from an MCP server's 401 or 403.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_authd::oauth::www_authenticate::parse_bearer;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A NUL byte separates several header values.
    if let Some(challenge) = parse_bearer(text.split('\0')) {
        let _ = challenge.scopes();
    }
});
