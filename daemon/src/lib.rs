//! The code of mcp-authd that reads what remote servers send: `WWW-Authenticate`
//! challenges, resource and authorization server metadata, token responses.
//!
//! A library only so that the fuzz targets in `fuzz/` run the daemon's own parsers; the
//! binary (`main.rs`) uses these modules from here and owns everything else.

pub mod oauth;
pub mod secret;
