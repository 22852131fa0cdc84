//! Client credentials: which client a grant was issued to, its secret or signing key and
//! how it authenticates, the transport policy for a server, and the configured quirks.

use mcp_authd_ipc::next_step::{DOCTOR, RELOAD};
use mcp_authd_ipc::{ErrorKind, RpcError};

use super::{Broker, config_error};
use crate::config::ServerConfig;
use crate::oauth::discovery::{AsMetadata, check_endpoints};
use crate::oauth::http::UrlPolicy;
use crate::oauth::registration::{AuthMethod, ClientCredentials};
use crate::oauth::token::now;
use crate::secret::Secret;
use crate::store::db::RegistrationKind;
use crate::store::{GrantRow, RegistrationRow, keys};

impl Broker {
    /// The newest registration of `kind` at `issuer` (for one `client_id` when given).
    pub async fn find_registration(
        &self,
        issuer: &str,
        kind: &RegistrationKind,
        client_id: Option<&str>,
    ) -> Result<Option<RegistrationRow>, RpcError> {
        Ok(self.db.find_registration(issuer, kind, client_id).await?)
    }

    /// Stores a client registration, its client secret (if it has one) first: a row
    /// never names a secret the store does not hold.
    pub async fn save_registration(
        &self,
        reg: &RegistrationRow,
        client_secret: Option<&Secret>,
    ) -> Result<(), RpcError> {
        if let Some(secret) = client_secret {
            self.secrets
                .set(&keys::client_secret(&reg.id), secret)
                .await?;
        }
        self.db.insert_registration(reg).await?;
        Ok(())
    }

    /// Keeps an authorization server's metadata, for the refreshes of its grants.
    pub async fn save_as_metadata(&self, metadata: &AsMetadata) -> Result<(), RpcError> {
        Ok(self.db.save_as_metadata(metadata, now()).await?)
    }

    /// The identity-provider quirks configured for a grant's server or issuer.
    pub fn quirks(&self, grant: &GrantRow) -> crate::config::Quirks {
        self.config()
            .server(&grant.server_url, Some(&grant.issuer))
            .map(|c| c.quirks.clone())
            .unwrap_or_default()
    }

    /// The transport policy for one operation on `server_url`: its `allow_insecure_http`,
    /// read from the server's own `[servers."<url>"]` entry.
    pub fn url_policy(&self, server_url: &str) -> UrlPolicy {
        UrlPolicy::new(server_url, self.config().allow_insecure_http(server_url))
    }

    /// An MCP server URL a client gave (`login`, `token.challenge`, `token.get`): https or
    /// loopback, or plain http allowed for it; else `invalid_params` naming the setting.
    pub fn check_server_url(&self, server_url: &str) -> Result<(), RpcError> {
        self.url_policy(server_url)
            .check("MCP server URL", server_url, None)
            .map(drop)
            .map_err(|e| {
                RpcError::new(ErrorKind::InvalidParams, e.to_string()).with_server(server_url)
            })
    }

    /// The stored AS metadata and client credentials a grant was issued with, and the
    /// transport policy to use them under. The endpoints are checked again (the config
    /// may have changed since the login), and the registration must be the grant's
    /// issuer's: a client is never presented to another authorization server.
    pub async fn client_of(
        &self,
        grant: &GrantRow,
    ) -> Result<(AsMetadata, ClientCredentials, UrlPolicy), RpcError> {
        let metadata = self.db.as_metadata(&grant.issuer).await?.ok_or_else(|| {
            RpcError::authorization_required(
                &grant.server_url,
                &[],
                "the authorization server's metadata is missing",
            )
        })?;
        let policy = self.url_policy(&grant.server_url);
        check_endpoints(&policy, &metadata).map_err(|e| {
            RpcError::new(
                ErrorKind::DiscoveryFailed,
                format!(
                    "{e}; nothing was sent. Once that is fixed, run: {}",
                    mcp_authd_ipc::next_step::login_command(&grant.server_url, &[])
                ),
            )
            .with_server(&grant.server_url)
        })?;
        let registration = self
            .db
            .registration(&grant.registration_id)
            .await?
            .ok_or_else(|| {
                RpcError::authorization_required(
                    &grant.server_url,
                    &[],
                    "the client registration is missing",
                )
            })?;
        let cfg = self
            .config()
            .client(&grant.server_url, &grant.issuer)
            .map_err(|e| config_error(&grant.server_url, e))?
            .cloned();
        let credentials = self
            .credentials(&registration, &grant.issuer, cfg.as_ref())
            .await?;
        Ok((metadata, credentials, policy))
    }

    /// Client credentials of a registration for use at `issuer`: the secret from the config
    /// file for a pre-registered client (`cfg`, already bound to `issuer` by
    /// [`Config::client`]), else from the secret store. A registration stored for another
    /// issuer is refused: its client id and secret belong to that server alone.
    pub async fn credentials(
        &self,
        reg: &RegistrationRow,
        issuer: &str,
        cfg: Option<&ServerConfig>,
    ) -> Result<ClientCredentials, RpcError> {
        if reg.issuer != issuer {
            tracing::warn!(registration = %reg.id, "registration of {} offered for {issuer}; refused", reg.issuer);
            return Err(RpcError::new(
                ErrorKind::Internal,
                format!(
                    "stored registration {} belongs to the authorization server {}, not {issuer}; it is not used there (possible mix-up); run: {DOCTOR}",
                    reg.id, reg.issuer
                ),
            ));
        }
        let auth_method = AuthMethod::parse(&reg.token_endpoint_auth_method).map_err(|e| {
            RpcError::new(
                ErrorKind::Internal,
                format!("stored registration {}: {e}", reg.id),
            )
        })?;
        let client_secret = if !reg.has_client_secret {
            None
        } else if reg.kind == RegistrationKind::PreRegistered {
            cfg.filter(|c| c.client_id.as_deref() == Some(reg.client_id.as_str()))
                .and_then(|c| c.client_secret.clone())
        } else {
            self.secrets.get(&keys::client_secret(&reg.id)).await?
        };
        let signing_key = match (auth_method, cfg) {
            (AuthMethod::PrivateKeyJwt, Some(cfg))
                if reg.kind == RegistrationKind::PreRegistered =>
            {
                Some(
                    crate::machine::signing_key(self.machine_reach(), cfg)
                        .await
                        .map_err(|e| {
                            RpcError::new(
                                ErrorKind::ConfigInvalid,
                                format!("{e}; fix the config file, then run: {RELOAD}"),
                            )
                        })?,
                )
            }
            (AuthMethod::PrivateKeyJwt, _) => {
                return Err(RpcError::new(
                    ErrorKind::ConfigInvalid,
                    format!(
                        "client {} authenticates with private_key_jwt, but no private_key is configured for it",
                        reg.client_id
                    ),
                ));
            }
            _ => None,
        };
        if !matches!(auth_method, AuthMethod::None | AuthMethod::PrivateKeyJwt)
            && client_secret.is_none()
        {
            return Err(RpcError::new(
                ErrorKind::SecretStore,
                format!(
                    "the client secret of {} is missing from the secret store",
                    reg.client_id
                ),
            ));
        }
        Ok(ClientCredentials {
            client_id: reg.client_id.clone(),
            client_secret,
            auth_method,
            signing_key,
            audience: reg.issuer.clone(),
        })
    }
}
