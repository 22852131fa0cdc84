//! Resource metadata (RFC 9728) and authorization server metadata (RFC 8414) bodies, and
//! the checks the daemon makes before it trusts them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_authd::oauth::discovery::{
    AsMetadata, ResourceMetadata, as_metadata_urls, check_as_metadata, check_resource,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<AsMetadata>(data) {
        // Both against the issuer it names and against an unrelated one.
        let _ = check_as_metadata(&m.issuer, &m);
        let _ = check_as_metadata("https://as.example", &m);
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
        }
    }
});
