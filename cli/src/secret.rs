//! `mcp-auth secret set|delete <name>`: secrets the config file references as
//! `{ keychain = "name" }` (a `private_key_jwt` key, an ID token), kept by the daemon in
//! its secret store. The value is read from standard input, never from the command line,
//! where other users' `ps` and the shell history would see it.

use std::io::Read;

use clap::Subcommand;
use mcp_authd_ipc::methods::{SECRET_DELETE, SECRET_SET, SecretRef, SecretResult, SecretSetParams};
use mcp_authd_ipc::{Client, ClientError};

#[derive(Subcommand)]
pub enum Action {
    /// Store the value read from standard input as <name> (e.g. mcp-auth secret set my-key < key.pem)
    Set { name: String },
    /// Remove <name> from the secret store
    Delete { name: String },
}

/// The value `secret set` stores, read from standard input before the daemon is asked.
pub fn read_value() -> Result<String, String> {
    let mut value = String::new();
    std::io::stdin()
        .read_to_string(&mut value)
        .map_err(|e| format!("cannot read the secret from standard input: {e}"))?;
    Ok(value)
}

pub async fn run(
    client: &mut Client,
    action: Action,
    value: String,
    json: bool,
) -> Result<(), ClientError> {
    let result: SecretResult = match action {
        Action::Set { name } => {
            client
                .call(SECRET_SET, &SecretSetParams { name, value })
                .await?
        }
        Action::Delete { name } => client.call(SECRET_DELETE, &SecretRef { name }).await?,
    };
    if json {
        crate::output::print_json(&result);
    } else if result.existed == Some(false) {
        println!("no secret `{}` was stored", result.name);
    } else if result.existed == Some(true) {
        println!(
            "deleted secret `{}` from the {}",
            result.name, result.secret_store
        );
    } else {
        println!(
            "stored secret `{}` in the {}; reference it in the config file as {{ keychain = \"{}\" }}",
            result.name, result.secret_store, result.name
        );
    }
    Ok(())
}
