//! Resource metadata (RFC 9728) and authorization server metadata (RFC 8414) bodies, and
//! the checks the daemon makes before it trusts them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_authd::oauth::discovery::{
    AsMetadata, ResourceMetadata, as_metadata_urls, check_as_metadata, check_resource,
};
use mcp_authd::oauth::http::UrlPolicy;
use mcp_authd_ipc::text::{parse_scopes, printable};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<AsMetadata>(data) {
        // Both against the issuer it names and against an unrelated one, strict and for a
        // lab (allow_insecure_http).
        for allow in [false, true] {
            let policy = UrlPolicy::new("https://mcp.example/mcp", allow);
            let _ = check_as_metadata(&policy, &m.issuer, &m);
            let _ = check_as_metadata(&policy, "https://as.example", &m);
        }
        let _ = as_metadata_urls(&m.issuer);
        for scope in m.scopes_supported.iter().flatten() {
            let _ = m.supports_scope(scope);
        }
    }
    if let Ok(m) = serde_json::from_slice::<ResourceMetadata>(data) {
        let _ = check_resource("https://mcp.example/mcp", &m.resource);
        let _ = check_resource(&m.resource, &m.resource);
        for issuer in &m.authorization_servers {
            let _ = as_metadata_urls(issuer);
            let _ = UrlPolicy::new(&m.resource, false).check("issuer", issuer, Some(&m.resource));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let shown = printable(text, 200);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        let _ = parse_scopes(text);
    }
});
