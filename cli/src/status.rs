//! `mcp-auth status` and `mcp-auth reload`.

use mcp_authd_ipc::methods::{CONFIG_RELOAD, ReloadResult, STATUS, StatusResult};
use mcp_authd_ipc::{Client, ClientError};

pub async fn run(client: &mut Client, json: bool) -> Result<(), ClientError> {
    let s: StatusResult = client.call(STATUS, &serde_json::json!({})).await?;
    if json {
        crate::output::print_json(&s);
        return Ok(());
    }
    println!(
        "mcp-authd {} (pid {}, up {}, protocol {})",
        s.version,
        s.pid,
        crate::output::span(s.uptime_secs),
        s.protocol_version
    );
    println!("  socket:       {}", s.socket);
    println!(
        "  data:         {} (schema {})",
        s.data_dir, s.database_schema
    );
    println!("  config:       {}", s.config_file);
    println!(
        "  secret store: {} ({})",
        s.secret_store.backend, s.secret_store.detail
    );
    println!("  grants:       {}", s.grants);
    if let Some(w) = &s.secret_store.warning {
        println!("\nWARNING: {w}");
    }
    for grant in &s.secret_store.refresh_tokens_not_stored {
        println!(
            "\nWARNING: the newest refresh token of grant {grant} is not yet stored (the secret store did not take it; kept in memory and retried). Unlock the keychain; stopping mcp-authd now would lose it."
        );
    }
    Ok(())
}

pub async fn reload(client: &mut Client, json: bool) -> Result<(), ClientError> {
    let r: ReloadResult = client.call(CONFIG_RELOAD, &serde_json::json!({})).await?;
    if json {
        crate::output::print_json(&r);
        return Ok(());
    }
    println!(
        "reloaded {} ({} server entr{})",
        r.config_file,
        r.servers,
        if r.servers == 1 { "y" } else { "ies" }
    );
    for key in &r.restart_needed {
        println!("note: `{key}` changed; it applies when mcp-authd restarts");
    }
    Ok(())
}
