//! `mcp-auth list | inspect | revoke | logout`.

use mcp_authd_ipc::audit::{AuditParams, AuditResult, GRANTS_AUDIT, HandOut};
use mcp_authd_ipc::clients::{Answer, CLIENTS_LIST, ClientDecision, ClientsResult};
use mcp_authd_ipc::methods::{
    GRANTS_GET, GRANTS_LIST, GRANTS_REVOKE, GrantInfo, GrantRef, GrantState, GrantType, GrantsList,
    HeldToken, NoRefreshToken, RemoteRevocation, RevocationOutcome, RevokeParams, RevokeResult,
    TokenRevocation,
};
use mcp_authd_ipc::next_step::{FORGET_ANY_CLIENT, LOGIN_ANY_SERVER, login_command_as};
use mcp_authd_ipc::{Client, ClientError};

use crate::color::Paint;
use crate::output::{ago, now, print_json, until};
use crate::table::{Cell, Column, Table};

/// Shown where a value is unknown (no id_token, no token in memory, no scope).
const UNKNOWN: &str = "—";

pub async fn list(client: &mut Client, json: bool, color: bool) -> Result<(), ClientError> {
    let list: GrantsList = client.call(GRANTS_LIST, &serde_json::json!({})).await?;
    if json {
        print_json(&list);
        return Ok(());
    }
    if list.grants.is_empty() {
        println!("No grants yet. Log in with: {LOGIN_ANY_SERVER}");
        return Ok(());
    }
    let now = now();
    print!(
        "{}",
        grants_table(&list.grants, now).render(crate::table::stdout_width(), color)
    );
    for g in &list.grants {
        if let Some(why) = needs_login(g, now) {
            println!(
                "\n{} needs a new login: {}\n  run: {}",
                g.server,
                mcp_authd_ipc::text::printable(&why, 400),
                login_command_as(&g.server, &[], g.account_name.as_deref())
            );
        } else if let Some(n) = &g.no_refresh_token {
            println!("\n{} has no refresh token: {}.", g.server, n.reason);
        } else {
            continue;
        }
        if let Some(n) = &g.no_refresh_token {
            println!("  {}", login_again(g, n, now));
            if let Some(fix) = &n.fix {
                println!("  may fix it: {fix}");
            }
        }
    }
    Ok(())
}

/// When a grant without a refresh token needs the browser again.
pub fn login_again(g: &GrantInfo, n: &NoRefreshToken, now: i64) -> String {
    match n.login_again_at {
        Some(at) if at > now => format!(
            "A new browser login will be needed {}, when the access token expires (sooner if mcp-authd restarts: it keeps access tokens in memory only).",
            until(at, now)
        ),
        _ => format!(
            "A new browser login is needed now: {}",
            login_command_as(&g.server, &[], g.account_name.as_deref())
        ),
    }
}

fn grants_table(grants: &[GrantInfo], now: i64) -> Table {
    let column = |title, shrinkable| Column { title, shrinkable };
    let mut table = Table::new(vec![
        column("SERVER", true),
        column("ACCOUNT", true),
        column("SCOPES", true),
        column("EXPIRES", false),
        column("LAST USED", false),
        column("STATE", false),
        column("KIND", false),
        column("GRANT", false),
    ]);
    for g in grants {
        let (state, paint) = state(g, now);
        table.push(vec![
            Cell::new(&g.server),
            Cell::new(account(g)),
            Cell::new(if g.scopes.is_empty() {
                UNKNOWN.to_string()
            } else {
                g.scopes.join(" ")
            }),
            Cell::new(
                g.access_token_expires_at
                    .map(|t| until(t, now))
                    .unwrap_or_else(|| UNKNOWN.into()),
            ),
            Cell::new(ago(g.last_used_at, now)),
            Cell::painted(state, paint),
            Cell::new(g.grant_type.as_str()),
            Cell::new(&g.id),
        ]);
    }
    table
}

/// The account column: the name the user gave, with who the id_token says it is beside
/// it (`work (jane@corp.example)`); for the default account the identity alone, as before
/// accounts had names; `—` when neither is known.
fn account(g: &GrantInfo) -> String {
    match (&g.account_name, &g.account) {
        (Some(name), Some(who)) if name != who => format!("{name} ({who})"),
        (Some(name), _) => name.clone(),
        (None, Some(who)) => who.clone(),
        (None, None) => UNKNOWN.into(),
    }
}

/// Why a grant cannot hand out a token without a new login, if it cannot: the daemon
/// said so, or it holds neither a refresh token nor a live access token.
fn needs_login(g: &GrantInfo, now: i64) -> Option<String> {
    if g.state != GrantState::Active {
        // A state newer than this mcp-auth is no usable one either: name it.
        return Some(
            g.needs_login_reason
                .clone()
                .unwrap_or_else(|| g.state.to_string()),
        );
    }
    let live = g.access_token_expires_at.is_some_and(|t| t > now);
    (!renewable(g) && !live).then(|| {
        "the access token expired and the authorization server gave no refresh token".into()
    })
}

/// Whether the daemon can get a new access token without the user: a refresh token, or
/// a grant without a browser (which is simply granted again).
fn renewable(g: &GrantInfo) -> bool {
    g.has_refresh_token || g.grant_type != GrantType::AuthorizationCode
}

/// `ok`; `ok, no refresh` (works until the access token expires); `needs login`.
fn state(g: &GrantInfo, now: i64) -> (&'static str, Paint) {
    if needs_login(g, now).is_some() {
        ("needs login", Paint::Red)
    } else if !renewable(g) {
        ("ok, no refresh", Paint::Yellow)
    } else {
        ("ok", Paint::Green)
    }
}

pub async fn inspect(
    client: &mut Client,
    grant: &str,
    account_name: Option<String>,
    json: bool,
    color: bool,
) -> Result<(), ClientError> {
    let g: GrantInfo = client
        .call(
            GRANTS_GET,
            &GrantRef {
                grant: grant.into(),
                account: account_name,
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
    let clients: ClientsResult = client
        .call(
            CLIENTS_LIST,
            &GrantRef {
                grant: g.id.clone(),
                account: None,
            },
        )
        .await?;
    if json {
        print_json(&Inspected {
            grant: &g,
            hand_outs: &audit.hand_outs,
            clients: &clients.clients,
        });
        return Ok(());
    }
    let now = now();
    let paint = |g: &GrantInfo| {
        let (text, paint) = state(g, now);
        paint.apply(text, color)
    };
    let fields = [
        ("grant", g.id.clone()),
        ("server", g.server.clone()),
        ("resource", g.resource.clone()),
        ("issuer", g.issuer.clone()),
        ("client id", format!("{} ({})", g.client_id, g.registration)),
        ("grant type", g.grant_type.to_string()),
        ("scopes", g.scopes.join(" ")),
        ("account", account(&g)),
        (
            "state",
            match needs_login(&g, now) {
                Some(why) => format!("{} ({why})", paint(&g)),
                None => paint(&g),
            },
        ),
        (
            "refresh token",
            match &g.no_refresh_token {
                None => "held in the secret store".into(),
                Some(n) => format!("none: {}", n.reason),
            },
        ),
        (
            "access token",
            g.access_token_expires_at
                .map(|t| match until(t, now) {
                    left if t > now => format!("in memory, expires {left}"),
                    gone => format!("in memory, {gone}"),
                })
                .unwrap_or_else(|| "none in memory".into()),
        ),
        ("last used", ago(g.last_used_at, now)),
        ("last refresh", ago(g.last_refresh_at, now)),
    ];
    for (k, v) in fields {
        println!("{k:>14}: {v}");
    }
    if let Some(n) = &g.no_refresh_token {
        println!("{:>14}: {}", "log in again", login_again(&g, n, now));
        if let Some(fix) = &n.fix {
            println!("{:>14}: {fix}", "may fix it");
        }
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
                "  {:>14}  {times:>7}  {pid:<10}  {}",
                ago(Some(h.at), now),
                h.peer_exe.as_deref().unwrap_or("(executable unknown)")
            );
        }
    }
    print_decisions(&clients.clients, now);
    Ok(())
}

/// The programs `confirm_clients` remembers for the grant.
fn print_decisions(clients: &[ClientDecision], now: i64) {
    if clients.is_empty() {
        return;
    }
    println!("\nPrograms (confirm_clients):");
    for d in clients {
        let decision = match d.decision {
            Answer::Always => "allowed",
            Answer::Deny => "denied",
            Answer::Once => "allowed once",
        };
        println!(
            "  {decision:<8}  {:>14}  {}",
            ago(Some(d.decided_at), now),
            crate::clients::shown(&d.program)
        );
    }
    println!("  (forget one: {FORGET_ANY_CLIENT})");
}

/// `inspect --json`: the grant's fields plus its recent hand-outs and the programs
/// `confirm_clients` remembers.
#[derive(serde::Serialize)]
struct Inspected<'a> {
    #[serde(flatten)]
    grant: &'a GrantInfo,
    hand_outs: &'a [HandOut],
    clients: &'a [ClientDecision],
}

pub async fn revoke(
    client: &mut Client,
    grant: &str,
    account_name: Option<String>,
    remote: bool,
    json: bool,
) -> Result<(), ClientError> {
    let r: RevokeResult = client
        .call(
            GRANTS_REVOKE,
            &RevokeParams {
                grant: grant.into(),
                remote: Some(remote),
                account: account_name,
            },
        )
        .await?;
    if json {
        print_json(&r);
        return Ok(());
    }
    println!("{}", revoke_report(&r, now()));
    Ok(())
}

/// `Forgot grant …; ` then what the authorization server did with each token.
fn revoke_report(r: &RevokeResult, now: i64) -> String {
    let at_server = match &r.remote {
        RemoteRevocation::NotSupported => {
            "the authorization server offers no revocation; the tokens expire on their own"
                .to_string()
        }
        RemoteRevocation::Skipped => "not revoked at the authorization server (logout)".to_string(),
        _ if !r.tokens.is_empty() => {
            let each: Vec<String> = r
                .tokens
                .iter()
                .map(|t| token_revocation(t, r.grant.access_token_expires_at, now))
                .collect();
            format!("at the authorization server: {}", each.join("; "))
        }
        other => format!("revocation at the authorization server {other}"),
    };
    let of_account = r
        .grant
        .account_name
        .as_deref()
        .map(|a| format!(" (account {a})"))
        .unwrap_or_default();
    format!(
        "Forgot grant {} for {}{of_account}; {at_server}.",
        r.grant.id, r.grant.server
    )
}

fn token_revocation(t: &TokenRevocation, access_expires_at: Option<i64>, now: i64) -> String {
    let name = t.token.as_str().replace('_', " ");
    let detail = t.detail.as_deref().unwrap_or("no detail");
    let access = t.token == HeldToken::AccessToken;
    match &t.outcome {
        RevocationOutcome::Revoked => format!("{name} revoked"),
        RevocationOutcome::NotHeld if access => "no access token was held".into(),
        RevocationOutcome::NotHeld => format!("no {name} was held"),
        RevocationOutcome::NotSupported => {
            let expiry = match access_expires_at {
                Some(at) if access && at > now => {
                    format!(" ({})", until(at, now))
                }
                _ => String::new(),
            };
            format!(
                "{name} not revocable there ({detail}): it stays valid until it expires{expiry}"
            )
        }
        // An outcome newer than this mcp-auth is not known to have worked.
        RevocationOutcome::Failed | RevocationOutcome::Other(_) => {
            format!("{name} revocation FAILED ({detail})")
        }
    }
}

#[cfg(test)]
mod tests {
    use mcp_authd_ipc::methods::RegistrationKind;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn grant(server: &str) -> GrantInfo {
        GrantInfo {
            id: "g_aaaaaaaaaa".into(),
            server: server.into(),
            resource: server.into(),
            issuer: "https://as.example".into(),
            client_id: "c".into(),
            registration: RegistrationKind::Dynamic,
            scopes: vec!["mcp:read".into(), "offline_access".into()],
            state: GrantState::Active,
            needs_login_reason: None,
            has_refresh_token: true,
            access_token_expires_at: Some(NOW + 42 * 60),
            created_at: NOW - 86_400,
            last_used_at: Some(NOW - 120),
            last_refresh_at: None,
            account: Some("jane@example.com".into()),
            no_refresh_token: None,
            grant_type: GrantType::AuthorizationCode,
            account_name: None,
        }
    }

    #[test]
    fn the_list_shows_every_column_humanised() {
        let ok = grant("https://a.example/mcp");
        let dead = GrantInfo {
            id: "g_bbbbbbbbbb".into(),
            state: GrantState::NeedsLogin,
            needs_login_reason: Some("the refresh token was rejected".into()),
            access_token_expires_at: None,
            last_used_at: None,
            account: None,
            scopes: vec![],
            ..grant("https://b.example/mcp")
        };
        let short = GrantInfo {
            id: "g_cccccccccc".into(),
            has_refresh_token: false,
            state: GrantState::NeedsLogin,
            grant_type: GrantType::ClientCredentials,
            access_token_expires_at: Some(NOW - 3 * 3600),
            ..grant("https://c.example/mcp")
        };
        let text = grants_table(&[ok, dead, short], NOW).render(None, false);
        assert_eq!(
            text,
            "SERVER                 ACCOUNT           SCOPES                   EXPIRES          LAST USED  STATE        KIND                GRANT\n\
             https://a.example/mcp  jane@example.com  mcp:read offline_access  in 42 min        2 min ago  ok           authorization_code  g_aaaaaaaaaa\n\
             https://b.example/mcp  —                 —                        —                never      needs login  authorization_code  g_bbbbbbbbbb\n\
             https://c.example/mcp  jane@example.com  mcp:read offline_access  expired 3 h ago  2 min ago  needs login  client_credentials  g_cccccccccc\n"
        );
    }

    #[test]
    fn a_grant_without_refresh_token_is_fine_while_its_access_token_lives() {
        let g = GrantInfo {
            has_refresh_token: false,
            ..grant("https://a.example/mcp")
        };
        assert_eq!(state(&g, NOW), ("ok, no refresh", Paint::Yellow));
        assert!(needs_login(&g, NOW + 43 * 60).is_some());
        let machine = GrantInfo {
            grant_type: GrantType::ClientCredentials,
            ..g
        };
        assert_eq!(state(&machine, NOW + 43 * 60), ("ok", Paint::Green));
    }

    #[test]
    fn revoke_says_what_happened_to_each_token() {
        use HeldToken::{AccessToken, RefreshToken};
        let t = |token, outcome, detail: Option<&str>| TokenRevocation {
            token,
            outcome,
            detail: detail.map(String::from),
        };
        let r = RevokeResult {
            grant: grant("https://a.example/mcp"),
            remote: RemoteRevocation::Revoked,
            tokens: vec![
                t(RefreshToken, RevocationOutcome::Revoked, None),
                t(
                    AccessToken,
                    RevocationOutcome::NotSupported,
                    Some("HTTP 400 unsupported_token_type"),
                ),
            ],
        };
        assert_eq!(
            revoke_report(&r, NOW),
            "Forgot grant g_aaaaaaaaaa for https://a.example/mcp; at the authorization server: \
             refresh token revoked; access token not revocable there (HTTP 400 unsupported_token_type): \
             it stays valid until it expires (in 42 min)."
        );
        let failed = RevokeResult {
            remote: RemoteRevocation::Failed("refresh_token: HTTP 503".into()),
            tokens: vec![
                t(RefreshToken, RevocationOutcome::Failed, Some("HTTP 503")),
                t(AccessToken, RevocationOutcome::NotHeld, None),
            ],
            ..r
        };
        let text = revoke_report(&failed, NOW);
        assert!(
            text.contains("refresh token revocation FAILED (HTTP 503); no access token was held"),
            "{text}"
        );
        let skipped = RevokeResult {
            remote: RemoteRevocation::Skipped,
            tokens: vec![],
            ..failed
        };
        assert!(
            revoke_report(&skipped, NOW)
                .ends_with("; not revoked at the authorization server (logout)."),
            "{}",
            revoke_report(&skipped, NOW)
        );
        let unreachable = RevokeResult {
            remote: RemoteRevocation::Failed("HTTP 502".into()),
            ..skipped
        };
        assert!(
            revoke_report(&unreachable, NOW)
                .ends_with("; revocation at the authorization server failed: HTTP 502."),
            "{}",
            revoke_report(&unreachable, NOW)
        );
    }

    /// What a newer daemon may send — a state, an outcome, a summary this mcp-auth does not
    /// know — is decided on safely: the grant reads as needing a login (it is not known to
    /// be usable), the token as not revoked, and the word itself is shown.
    #[test]
    fn words_from_a_newer_daemon_are_shown_and_not_trusted() {
        let json = serde_json::to_value(grant("https://a.example/mcp")).unwrap();
        let mut newer = json.clone();
        newer["state"] = "suspended".into();
        newer["registration"] = "software-statement".into();
        let g: GrantInfo = serde_json::from_value(newer).unwrap();
        assert_eq!(needs_login(&g, NOW).as_deref(), Some("suspended"));
        assert_eq!(state(&g, NOW), ("needs login", Paint::Red));
        assert_eq!(
            serde_json::to_value(&g).unwrap()["registration"],
            "software-statement",
            "--json passes it through"
        );
        let reply = serde_json::json!({
            "grant": json,
            "remote": "queued",
            "tokens": [{"token": "refresh_token", "outcome": "deferred", "detail": "later"}],
        });
        let r: RevokeResult = serde_json::from_value(reply.clone()).unwrap();
        assert_eq!(
            revoke_report(&r, NOW),
            "Forgot grant g_aaaaaaaaaa for https://a.example/mcp; at the authorization server: \
             refresh token revocation FAILED (later)."
        );
        assert_eq!(serde_json::to_value(&r).unwrap(), reply);
        let r = RevokeResult {
            tokens: vec![],
            ..r
        };
        assert!(
            revoke_report(&r, NOW).ends_with("revocation at the authorization server queued."),
            "{}",
            revoke_report(&r, NOW)
        );
    }
}
