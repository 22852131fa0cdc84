//! The last step of every login: the grant stored, its tokens in place. The broker owns
//! grants, so it does the storing (`Broker::save_login`); this step names what to store.

use std::sync::Arc;

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::methods::GrantInfo;

pub(super) use crate::broker::Obtained;
use crate::broker::{Broker, NewLogin};
use crate::oauth::discovery::Discovery;
use crate::store::RegistrationRow;

/// Stores what a login obtained: the grant row (new or replacing the last login's), its
/// refresh token and DPoP key, and the access token in memory.
pub(super) async fn save_grant(
    broker: &Arc<Broker>,
    server_url: &str,
    discovery: &Discovery,
    registration: &RegistrationRow,
    obtained: Obtained,
) -> Result<GrantInfo, RpcError> {
    broker
        .save_login(NewLogin {
            server_url,
            resource: &discovery.resource,
            issuer: &discovery.metadata.issuer,
            registration_id: &registration.id,
            obtained,
        })
        .await
}
