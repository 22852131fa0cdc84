//! `config.reload`, and SIGHUP: re-reads the config file. A file that cannot be used is
//! refused with its line and reason, and the config in force stays.

use std::sync::Arc;

use mcp_authd_ipc::methods::ReloadResult;
use mcp_authd_ipc::{ErrorKind, RpcError};
use serde_json::Value;

use crate::broker::Broker;
use crate::config::Config;

pub async fn apply(broker: &Arc<Broker>) -> Result<Value, RpcError> {
    super::to_value(reload(broker)?)
}

/// Loads the config file and, when it is valid, puts it in force for every request from
/// now on (requests already running finish with the config they started with).
pub fn reload(broker: &Broker) -> Result<ReloadResult, RpcError> {
    let path = broker.config_file();
    let new = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            let message = format!(
                "{e:#}\nthe previous config stays in force; fix the file, then run: {}",
                mcp_authd_ipc::next_step::RELOAD
            );
            tracing::error!("config reload refused: {message}");
            return Err(RpcError::new(ErrorKind::ConfigInvalid, message));
        }
    };
    let old = broker.config();
    let mut restart_needed = Vec::new();
    if new.secret_store != old.secret_store {
        restart_needed.push("secret_store".to_string());
    }
    // The HTTP client, with its trusted CAs, is built once at start.
    if new.ca_file != old.ca_file {
        restart_needed.push("ca_file".to_string());
    }
    let servers = new.servers.len() as u32;
    broker.replace_config(new);
    tracing::info!(
        config_file = %path.display(),
        servers,
        ?restart_needed,
        "config reloaded"
    );
    Ok(ReloadResult {
        config_file: path.display().to_string(),
        servers,
        restart_needed,
    })
}
