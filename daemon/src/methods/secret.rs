//! `secret.set`, `secret.delete`: secrets the config file references by name
//! (`private_key = { keychain = "name" }`), kept in the daemon's secret store so that a
//! private key need not lie in a file.

use std::sync::Arc;

use mcp_authd_ipc::methods::{SecretRef, SecretResult, SecretSetParams};
use mcp_authd_ipc::{ErrorKind, RpcError};
use serde_json::Value;

use crate::broker::Broker;
use crate::secret::Secret;
use crate::store::keys;

/// Longest value accepted: a 4096-bit RSA key in PEM is about 3.3 kB.
const MAX_VALUE_BYTES: usize = 16 * 1024;

pub async fn set(broker: &Arc<Broker>, p: SecretSetParams) -> Result<Value, RpcError> {
    check_name(&p.name)?;
    let value = Secret::new(p.value);
    if value.expose().trim().is_empty() || value.expose().len() > MAX_VALUE_BYTES {
        return Err(RpcError::new(
            ErrorKind::InvalidParams,
            format!(
                "the value of secret `{}` must be 1 to {MAX_VALUE_BYTES} bytes",
                p.name
            ),
        ));
    }
    broker
        .store_secret(&keys::config_secret(&p.name), &value)
        .await?;
    tracing::info!(name = %p.name, "stored a secret for the config file");
    super::to_value(SecretResult {
        name: p.name,
        secret_store: broker.secret_store_backend(),
        existed: None,
    })
}

pub async fn delete(broker: &Arc<Broker>, p: SecretRef) -> Result<Value, RpcError> {
    check_name(&p.name)?;
    let key = keys::config_secret(&p.name);
    let existed = broker.stored_secret(&key).await?.is_some();
    broker.delete_secret(&key).await?;
    super::to_value(SecretResult {
        name: p.name,
        secret_store: broker.secret_store_backend(),
        existed: Some(existed),
    })
}

fn check_name(name: &str) -> Result<(), RpcError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RpcError::new(
            ErrorKind::InvalidParams,
            format!(
                "secret name `{}` must be 1 to 64 characters of A-Z a-z 0-9 . _ -",
                crate::oauth::printable(name, 64)
            ),
        ))
    }
}
