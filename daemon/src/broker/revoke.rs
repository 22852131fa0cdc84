//! Revoking a grant: at the authorization server (RFC 7009) when asked and offered, then
//! here, whatever the server said. The outcome per token and its one-word summary go back
//! to the caller with any token the server echoed cut out.

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::methods::{
    HeldToken, RemoteRevocation, RevocationOutcome, RevokeResult, TokenRevocation,
};

use super::Broker;
use crate::oauth::OAuthError;
use crate::oauth::token::revoke as revoke_at_as;
use crate::store::{GrantRow, keys};

impl Broker {
    /// Revokes at the authorization server (RFC 7009) when `remote` and offered, then
    /// forgets the grant locally whatever the server said: the user wants it gone from
    /// this machine. Under the grant's refresh lock: a refresh in flight finishes first, so
    /// the newest refresh token is the one revoked and none is stored after the grant is
    /// forgotten.
    pub async fn revoke(
        &self,
        grant: &str,
        account: Option<&str>,
        remote: bool,
    ) -> Result<RevokeResult, RpcError> {
        let found = self.find_grant(grant, account).await?;
        let lock = self.lock_grant(&found.id).await;
        // Read again under the lock: the refresh it waited for may have changed the row.
        let row = self.find_grant(&found.id, None).await?;
        let info = self.grant_info(&row).await?;
        let (remote, tokens) = if !remote {
            (RemoteRevocation::Skipped, Vec::new())
        } else {
            match self.revoke_remotely(&row).await {
                Ok(Some(tokens)) => (summary(&tokens), tokens),
                Ok(None) => (RemoteRevocation::NotSupported, Vec::new()),
                Err(why) => {
                    tracing::warn!(grant = %row.id, "revocation at the authorization server failed: {why}");
                    (RemoteRevocation::Failed(why), Vec::new())
                }
            }
        };
        self.forget_grant(&row, &lock).await?;
        tracing::info!(grant = %row.id, remote = %remote, "grant revoked");
        Ok(RevokeResult {
            grant: info,
            remote,
            tokens,
        })
    }

    /// The refresh token first (RFC 7009 §2.1: most servers then end the whole grant), then
    /// the access token in memory. `None`: the server has no revocation endpoint.
    async fn revoke_remotely(
        &self,
        row: &GrantRow,
    ) -> Result<Option<Vec<TokenRevocation>>, String> {
        let (metadata, credentials, policy) = self.client_of(row).await.map_err(|e| e.message)?;
        let Some(endpoint) = metadata.revocation_endpoint.as_deref() else {
            return Ok(None);
        };
        let refresh_token = self
            .refresh_tokens
            .get(&keys::refresh_token(&row.id))
            .await
            .map_err(|e| e.to_string())?;
        let access_token = self.cached_access_token(&row.id).map(|a| a.token);
        let mut tokens = Vec::new();
        for (token, kind) in [
            (refresh_token, HeldToken::RefreshToken),
            (access_token, HeldToken::AccessToken),
        ] {
            let (outcome, detail) = match token {
                None => (RevocationOutcome::NotHeld, None),
                Some(token) => {
                    let (outcome, detail) = match revoke_at_as(
                        &self.http,
                        &policy,
                        &row.issuer,
                        endpoint,
                        &credentials,
                        &token,
                        &kind,
                    )
                    .await
                    {
                        Ok(()) => (RevocationOutcome::Revoked, None),
                        Err(OAuthError::TokenError(e)) if e.error == "unsupported_token_type" => {
                            (RevocationOutcome::NotSupported, Some(e.to_string()))
                        }
                        Err(OAuthError::TokenError(e)) => {
                            (RevocationOutcome::Failed, Some(e.to_string()))
                        }
                        Err(e) => (RevocationOutcome::Failed, Some(e.to_string())),
                    };
                    (outcome, detail.map(|d| without_secret(d, &token)))
                }
            };
            tokens.push(TokenRevocation {
                token: kind,
                outcome,
                detail,
            });
        }
        Ok(Some(tokens))
    }
}

/// The one-word `remote` of a revocation that reached the server: a failure of either
/// token is a failure; a token type the server does not revoke is not.
fn summary(tokens: &[TokenRevocation]) -> RemoteRevocation {
    let failed: Vec<String> = tokens
        .iter()
        .filter(|t| t.outcome == RevocationOutcome::Failed)
        .map(|t| format!("{}: {}", t.token, t.detail.as_deref().unwrap_or("")))
        .collect();
    if !failed.is_empty() {
        RemoteRevocation::Failed(failed.join("; "))
    } else if tokens
        .iter()
        .any(|t| t.outcome == RevocationOutcome::Revoked)
    {
        RemoteRevocation::Revoked
    } else {
        RemoteRevocation::NothingToRevoke
    }
}

/// A server's answer with the token it was sent cut out: it goes to the log and the
/// user's terminal, where no token may appear, and a hostile server may echo it.
fn without_secret(detail: String, token: &crate::secret::Secret) -> String {
    let token = token.expose();
    if token.is_empty() {
        return detail;
    }
    detail.replace(token, "[token]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn an_echoed_token_is_cut_from_the_answer() {
        let token = Secret::new("rt_s3cr3t");
        assert_eq!(
            without_secret(
                "HTTP 400 invalid_request (bad token rt_s3cr3t)".into(),
                &token
            ),
            "HTTP 400 invalid_request (bad token [token])"
        );
    }
}
