//! `mcp-auth token`: one access token on stdout, for
//! `curl -H "Authorization: Bearer $(mcp-auth token URL)"`.

use mcp_authd_ipc::clients::{CLIENTS_CONFIRM_PENDING, PendingRequest};
use mcp_authd_ipc::methods::{TOKEN_GET, TokenGetParams, TokenGetResult, TokenType};
use mcp_authd_ipc::{Client, ClientError, ErrorKind, RpcError};

#[derive(clap::Args)]
pub struct Args {
    /// The MCP server URL (or a grant id)
    pub server: String,
    /// A scope the token must carry (repeat)
    #[arg(long = "scope", value_parser = crate::scope_value)]
    pub scopes: Vec<String>,
    /// Seconds the token must stay valid [default: 60; at most half the lifetime of the
    /// tokens the server issues]
    #[arg(long)]
    pub min_valid: Option<u64>,
    /// The account of the server whose token to use [default: the default account]
    #[arg(long, value_name = "NAME", value_parser = crate::account_arg)]
    pub account: Option<String>,
}

pub async fn run(client: &mut Client, args: Args, json: bool) -> Result<(), ClientError> {
    let token = get(client, args).await?;
    if json {
        crate::output::print_json(&token);
    } else {
        println!("{}", token.access_token);
    }
    Ok(())
}

/// `mcp-auth headers`: `{"Authorization": "Bearer …"}`, the shape Claude Code's
/// `headersHelper` (and any tool that merges JSON headers) expects.
/// A DPoP-bound token is refused: it needs a new proof per request, which a header
/// computed once cannot carry.
pub async fn headers(client: &mut Client, args: Args) -> Result<(), ClientError> {
    let server = args.server.clone();
    let token = get(client, args).await?;
    if token.token_type == TokenType::DPoP {
        return Err(ClientError::Rpc(RpcError::new(
            ErrorKind::InvalidParams,
            format!(
                "the grant for {server} is DPoP-bound (RFC 9449): each request needs a fresh proof signed by mcp-authd, so no fixed header works; run the client through `{}`, or have it call token.dpop_proof (ipc-proto/PROTOCOL.md)",
                mcp_authd_ipc::next_step::proxy_command(&server)
            ),
        )));
    }
    let headers = serde_json::json!({
        "Authorization": format!("{} {}", token.token_type, token.access_token)
    });
    println!("{headers}");
    Ok(())
}

async fn get(client: &mut Client, args: Args) -> Result<TokenGetResult, ClientError> {
    let warning = crate::plain_http_warning(&args.server, "tokens for it");
    let params = TokenGetParams {
        server: args.server,
        scopes: crate::scope_args(&args.scopes),
        min_valid_secs: args.min_valid,
        account: args.account,
    };
    // With `confirm_clients`, the daemon may ask the user first: say what is waited for.
    let token = client
        .call_with_notifications(TOKEN_GET, &params, |n| {
            if n.method == CLIENTS_CONFIRM_PENDING
                && let Ok(r) = serde_json::from_value::<PendingRequest>(n.params)
            {
                eprintln!("{}", crate::clients::waiting_notice(&r));
            }
        })
        .await?;
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    Ok(token)
}
