//! `mcp-auth list | inspect | revoke | logout`.

use mcp_authd_ipc::audit::{AuditParams, AuditResult, GRANTS_AUDIT, HandOut};
use mcp_authd_ipc::methods::{
    GRANTS_GET, GRANTS_LIST, GRANTS_REVOKE, GrantInfo, GrantRef, GrantsList, RevokeParams,
    RevokeResult,
};
use mcp_authd_ipc::{Client, ClientError};

use crate::output::{ago, duration, now, print_json};

pub async fn list(client: &mut Client, json: bool) -> Result<(), ClientError> {
    let list: GrantsList = client.call(GRANTS_LIST, &serde_json::json!({})).await?;
    if json {
        print_json(&list);
        return Ok(());
    }
    if list.grants.is_empty() {
        println!("No grants yet. Log in with: mcp-auth login <MCP server URL>");
        return Ok(());
    }
    let rows: Vec<[String; 6]> = list
        .grants
        .iter()
        .map(|g| {
            [
                g.server.clone(),
                g.id.clone(),
                g.scopes.join(" "),
                g.access_token_expires_at
                    .map(|t| duration(t - now()))
                    .unwrap_or_else(|| "-".into()),
                ago(g.last_used_at),
                g.state.clone(),
            ]
        })
        .collect();
    let header = [
        "SERVER",
        "GRANT",
        "SCOPES",
        "EXPIRES IN",
        "LAST USED",
        "STATE",
    ];
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: [&str; 6]| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
    }
    for g in list.grants.iter().filter(|g| g.state != "active") {
        println!(
            "\n{} needs a new login: {}\n  run: mcp-auth login {}",
            g.server,
            g.needs_login_reason.as_deref().unwrap_or("-"),
            g.server
        );
    }
    Ok(())
}

pub async fn inspect(client: &mut Client, grant: &str, json: bool) -> Result<(), ClientError> {
    let g: GrantInfo = client
        .call(
            GRANTS_GET,
            &GrantRef {
                grant: grant.into(),
            },
        )
        .await?;
    let audit: AuditResult = client
        .call(
            GRANTS_AUDIT,
            &AuditParams {
                grant: g.id.clone(),
                limit: Some(10),
            },
        )
        .await?;
    if json {
        print_json(&Inspected {
            grant: &g,
            hand_outs: &audit.hand_outs,
        });
        return Ok(());
    }
    let fields = [
        ("grant", g.id.clone()),
        ("server", g.server.clone()),
        ("resource", g.resource.clone()),
        ("issuer", g.issuer.clone()),
        ("client id", format!("{} ({})", g.client_id, g.registration)),
        ("scopes", g.scopes.join(" ")),
        (
            "state",
            match &g.needs_login_reason {
                Some(r) => format!("{} ({r})", g.state),
                None => g.state.clone(),
            },
        ),
        (
            "refresh token",
            if g.has_refresh_token {
                "held in the secret store".into()
            } else {
                "none".into()
            },
        ),
        (
            "access token",
            g.access_token_expires_at
                .map(|t| format!("in memory, expires in {}", duration(t - now())))
                .unwrap_or_else(|| "none in memory".into()),
        ),
        ("last used", ago(g.last_used_at)),
        ("last refresh", ago(g.last_refresh_at)),
    ];
    for (k, v) in fields {
        println!("{k:>14}: {v}");
    }
    if audit.hand_outs.is_empty() {
        println!("\nNo access token handed out yet.");
    } else {
        println!("\nLast access tokens handed out (newest first):");
        for h in &audit.hand_outs {
            let pid = h
                .peer_pid
                .map(|p| format!("pid {p}"))
                .unwrap_or_else(|| "pid ?".into());
            let times = if h.count > 1 {
                format!("{}×", h.count)
            } else {
                String::new()
            };
            println!(
                "  {:>10}  {times:>7}  {pid:<10}  {}",
                ago(Some(h.at)),
                h.peer_exe.as_deref().unwrap_or("(executable unknown)")
            );
        }
    }
    Ok(())
}

/// `inspect --json`: the grant's fields plus its recent hand-outs.
#[derive(serde::Serialize)]
struct Inspected<'a> {
    #[serde(flatten)]
    grant: &'a GrantInfo,
    hand_outs: &'a [HandOut],
}

pub async fn revoke(
    client: &mut Client,
    grant: &str,
    remote: bool,
    json: bool,
) -> Result<(), ClientError> {
    let r: RevokeResult = client
        .call(
            GRANTS_REVOKE,
            &RevokeParams {
                grant: grant.into(),
                remote: Some(remote),
            },
        )
        .await?;
    if json {
        print_json(&r);
        return Ok(());
    }
    let at_server = match r.remote.as_str() {
        "revoked" => "revoked at the authorization server".to_string(),
        "not_supported" => {
            "the authorization server offers no revocation; the tokens expire on their own"
                .to_string()
        }
        "skipped" => "not revoked at the authorization server (logout)".to_string(),
        other => format!("revocation at the authorization server {other}"),
    };
    println!(
        "Forgot grant {} for {}; {at_server}.",
        r.grant.id, r.grant.server
    );
    Ok(())
}
