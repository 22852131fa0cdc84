//! The code of mcp-authd that reads what remote servers send: `WWW-Authenticate`
//! challenges, resource and authorization server metadata, token responses.
//!
//! A library only so that the fuzz targets in `fuzz/` run the daemon's own parsers; the
//! binary (`main.rs`) uses these modules from here and owns everything else.

// The package's other dependencies are the binary's (`main.rs` is checked for unused ones).
#![allow(unused_crate_dependencies)]

pub mod oauth;
pub mod secret;
