//! `token.challenge`: what the daemon does when an MCP server refuses a request.
//!
//! 401: the token is missing, expired or revoked. If the server's resource metadata still
//! names the grant's authorization server, the grant is renewed (refresh); otherwise, or
//! when no refresh is possible, a new login is needed.
//!
//! 403 `insufficient_scope`: step-up (SEP-2350). The new authorization asks for the union
//! of the granted and the challenged scopes, never through a refresh (a refresh cannot
//! widen a grant). The broker's step-up cap (`broker::step_up_limit`) limits the
//! re-authorizations per server so a server that keeps challenging cannot drive the user
//! through a loop of logins.

use std::sync::Arc;

use mcp_authd_ipc::methods::{
    ChallengeParams, LoginParams, LoginPending, TokenGetParams, TokenGetResult,
};
use mcp_authd_ipc::next_step::{RELOAD, login_command};
use mcp_authd_ipc::text::{MAX_QUOTED_CHARS, printable};
use mcp_authd_ipc::{ErrorKind, RpcError};

use crate::broker::{Broker, Recipient};
use crate::oauth::discovery::{authorization_servers_of, normalize_server_url};
use crate::oauth::www_authenticate::{BearerChallenge, parse_bearer};
use crate::peer::Peer;
use crate::reply::Notifier;
use crate::store::GrantRow;
use crate::store::db::{GrantState, GrantType};

/// Who reported the refusal: the token goes to them, once `confirm_clients` lets them
/// have the grant's tokens.
#[derive(Clone, Copy)]
struct Caller<'a> {
    peer: &'a Arc<Peer>,
    notifier: &'a Notifier,
    /// The grant `confirm_clients` already let the caller have, if any.
    confirmed: Option<&'a str>,
}

impl Caller<'_> {
    /// `confirm_clients` for a grant not confirmed yet (a grant of another authorization
    /// server, or one a login just made).
    async fn may_have(&self, broker: &Arc<Broker>, grant: &GrantRow) -> Result<(), RpcError> {
        if broker.confirms_clients() && self.confirmed != Some(grant.id.as_str()) {
            broker.confirm(grant, self.peer, self.notifier).await?;
        }
        Ok(())
    }

    fn recipient<'a>(&'a self, p: &'a ChallengeParams) -> Recipient<'a> {
        Recipient {
            peer: self.peer,
            asked_for: &p.server,
        }
    }
}

/// A refusal being answered: by whom, for which server (normalized), as reported.
#[derive(Clone, Copy)]
struct Refused<'a> {
    broker: &'a Arc<Broker>,
    server: &'a str,
    p: &'a ChallengeParams,
    caller: Caller<'a>,
}

/// Answers a refusal `peer` reports: a token to retry with (a hand-out like any other:
/// the broker records it), renewed or from a new login; `account` is the checked
/// `p.account`.
pub async fn handle(
    broker: &Arc<Broker>,
    p: &ChallengeParams,
    account: Option<&str>,
    peer: &Arc<Peer>,
    notifier: &Notifier,
    on_pending: impl Fn(&LoginPending),
) -> Result<TokenGetResult, RpcError> {
    // `confirm_clients`: asked before the renewal when the grant is known, and in any case
    // for the grant the token is of (a login may have made a new one: `Caller::may_have`).
    let known = match broker.find_grant(&p.server, account).await {
        Ok(grant) if broker.confirms_clients() => {
            broker.confirm(&grant, peer, notifier).await?;
            Some(grant.id)
        }
        _ => None,
    };
    let caller = Caller {
        peer,
        notifier,
        confirmed: known.as_deref(),
    };
    answer(broker, p, caller, on_pending)
        .await
        .map_err(|e| e.for_account(account))
}

async fn answer(
    broker: &Arc<Broker>,
    p: &ChallengeParams,
    caller: Caller<'_>,
    on_pending: impl Fn(&LoginPending),
) -> Result<TokenGetResult, RpcError> {
    let server = normalize_server_url(&p.server)
        .map_err(|e| RpcError::new(ErrorKind::InvalidParams, e.to_string()))?;
    broker.check_server_url(&server)?;
    let challenge = p
        .www_authenticate
        .as_deref()
        .and_then(|h| parse_bearer([h]));
    if let Some(c) = &challenge {
        // A scope that is not a scope token is refused here, before it can reach a
        // message, a suggested command or an authorization request.
        c.check_scopes(&server).map_err(|e| {
            RpcError::new(ErrorKind::ServerError, e.to_string()).with_server(&server)
        })?;
    }
    let account = p.account.clone().unwrap_or_default();
    let grant = broker
        .grants_of_server(&server, &account)
        .await?
        .into_iter()
        .next();
    let says_invalid_token = challenge
        .as_ref()
        .is_some_and(|c| c.error.as_deref() == Some("invalid_token"))
        || p.body
            .as_deref()
            .is_some_and(|b| b.contains("invalid_token"));
    let status = match p.status {
        400 | 403 if says_invalid_token => {
            let quirks = match &grant {
                Some(g) => broker.quirks(g),
                None => broker
                    .config()
                    .server(&server, None)
                    .map(|c| c.quirks.clone())
                    .unwrap_or_default(),
            };
            if !quirks.invalid_token_as_401 {
                return Err(RpcError::new(
                    ErrorKind::ServerError,
                    format!(
                        "{server} answered HTTP {} `invalid_token` instead of 401; if it means an expired token, set invalid_token_as_401 = true under [servers.\"{}\"] in the config file, then run: {RELOAD}",
                        p.status,
                        printable(&server, MAX_QUOTED_CHARS)
                    ),
                )
                .with_server(&server));
            }
            401
        }
        other => other,
    };
    let refused = Refused {
        broker,
        server: &server,
        p,
        caller,
    };
    match status {
        401 => on_unauthorized(refused, grant, challenge, on_pending).await,
        403 => on_forbidden(refused, grant, challenge, on_pending).await,
        other => Err(RpcError::new(
            ErrorKind::InvalidParams,
            format!("`status` must be 401, 403, or 400 with `invalid_token`, not {other}"),
        )),
    }
}

async fn on_unauthorized(
    refused: Refused<'_>,
    grant: Option<GrantRow>,
    challenge: Option<BearerChallenge>,
    on_pending: impl Fn(&LoginPending),
) -> Result<TokenGetResult, RpcError> {
    let Refused {
        broker,
        server,
        p,
        caller,
    } = refused;
    let mut scopes = challenge.as_ref().map(|c| c.scopes()).unwrap_or_default();
    // A grant without a browser that was refused (now, or before) is not run again by a
    // client's request: only a login the user asks for tries it again.
    let without_browser = |grant: &GrantRow| grant.grant_type != GrantType::AuthorizationCode;
    let why = match grant {
        None => "not logged in to this server".to_string(),
        Some(grant) => {
            scopes = union(&grant.scope_list(), &scopes);
            if grant.state != GrantState::Active {
                let why = grant
                    .needs_login_reason
                    .clone()
                    .unwrap_or_else(|| "the grant needs a new login".into());
                if without_browser(&grant) {
                    return Err(RpcError::authorization_required(server, &[], &why));
                }
                why
            } else if let Some(moved_to) = moved(broker, server, &grant, challenge.as_ref()).await {
                format!(
                    "the server now uses the authorization server {} instead of {}",
                    printable(&moved_to, MAX_QUOTED_CHARS),
                    grant.issuer
                )
            } else {
                caller.may_have(broker, &grant).await?;
                match broker
                    .renew_rejected(
                        grant.clone(),
                        p.rejected_token.as_deref(),
                        caller.recipient(p),
                    )
                    .await
                {
                    Ok(token) => return Ok(token),
                    Err(e) if e.kind() == Some(ErrorKind::AuthorizationRequired) => {
                        if without_browser(&grant) {
                            return Err(e);
                        }
                        e.message
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    };
    login_or_explain(refused, scopes, challenge, &why, on_pending).await
}

async fn on_forbidden(
    refused: Refused<'_>,
    grant: Option<GrantRow>,
    challenge: Option<BearerChallenge>,
    on_pending: impl Fn(&LoginPending),
) -> Result<TokenGetResult, RpcError> {
    let Refused {
        broker, server, p, ..
    } = refused;
    let Some(challenge) = challenge.filter(|c| c.error.as_deref() == Some("insufficient_scope"))
    else {
        return Err(RpcError::new(
            ErrorKind::ServerError,
            format!(
                "{server} refused the request (HTTP 403) without asking for more scope; a new login would not change that"
            ),
        )
        .with_server(server));
    };
    let granted = grant.map(|g| g.scope_list()).unwrap_or_default();
    let scopes = union(&granted, &challenge.scopes());
    let why = format!(
        "the server needs scope {}",
        printable(&scopes.join(" "), MAX_QUOTED_CHARS)
    );
    if p.interactive.unwrap_or(false)
        && let Err(refused) =
            broker.admit_step_up(&step_up_key(server, p.account.as_deref()), &scopes)
    {
        tracing::warn!(server = %server, "not stepping up again: {refused}");
        return Err(RpcError::new(
            ErrorKind::InsufficientScope,
            format!(
                "{server} still refuses for lack of scope ({refused}); giving up instead of asking you to log in again. Check that your account may use scope {}, then run: {}",
                printable(challenge.scope.as_deref().unwrap_or(""), MAX_QUOTED_CHARS),
                login_command(server, &scopes)
            ),
        )
        .with_server(server));
    }
    login_or_explain(refused, scopes, Some(challenge), &why, on_pending).await
}

/// A browser login for `scopes` when the caller allows one, else `authorization_required`.
async fn login_or_explain(
    refused: Refused<'_>,
    scopes: Vec<String>,
    challenge: Option<BearerChallenge>,
    why: &str,
    on_pending: impl Fn(&LoginPending),
) -> Result<TokenGetResult, RpcError> {
    let Refused {
        broker,
        server,
        p,
        caller,
    } = refused;
    if !p.interactive.unwrap_or(false) {
        return Err(RpcError::authorization_required(server, &scopes, why));
    }
    tracing::info!(server = %server, "{why}: starting a login");
    let params = LoginParams {
        server: server.to_string(),
        scopes: (!scopes.is_empty()).then_some(scopes),
        open_browser: p.open_browser,
        timeout_secs: p.timeout_secs,
        flow: None,
        account: p.account.clone(),
        login_hint: None,
        redirect_uri: p.redirect_uri.clone(),
    };
    let login = crate::login::login(broker, params, challenge, on_pending).await?;
    caller
        .may_have(broker, &broker.find_grant(&login.id, None).await?)
        .await?;
    let ask = TokenGetParams {
        server: server.to_string(),
        account: p.account.clone(),
        ..Default::default()
    };
    broker.token_get(&ask, caller.recipient(p)).await
}

/// Step-ups are counted per account of a server: one account's refusals do not use up
/// another's.
fn step_up_key(server: &str, account: Option<&str>) -> String {
    match account {
        None => server.to_string(),
        Some(account) => format!("{server} {account}"),
    }
}

/// The authorization server the resource moved to, when its metadata no longer lists the
/// grant's issuer. Errors reaching the metadata are logged and read as "not moved": the
/// refresh that follows will say what is wrong.
async fn moved(
    broker: &Broker,
    server: &str,
    grant: &GrantRow,
    challenge: Option<&BearerChallenge>,
) -> Option<String> {
    let policy = broker.url_policy(server);
    match authorization_servers_of(broker.http(), &policy, server, challenge).await {
        Ok(Some(servers)) if !servers.contains(&grant.issuer) => {
            Some(servers.first().cloned().unwrap_or_default())
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(server = %server, "cannot re-read the resource metadata: {e}");
            None
        }
    }
}

/// `a` then what `b` adds, without duplicates; `offline_access` is left to the login,
/// which adds it only when the authorization server supports it.
fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in a.iter().chain(b) {
        if s != "offline_access" && !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn union_keeps_granted_scopes_first() {
        assert_eq!(
            union(&v("mcp:basic offline_access"), &v("mcp:write mcp:basic")),
            v("mcp:basic mcp:write")
        );
    }
}
