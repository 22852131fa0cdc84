//! `mcp-auth approve` and `mcp-auth forget-client`: the terminal's side of
//! `confirm_clients`.

use mcp_authd_ipc::clients::{
    Answer, AnswerParams, AnswerResult, CLIENTS_ANSWER, CLIENTS_FORGET, CLIENTS_PENDING,
    ForgetParams, ForgetResult, PendingList, PendingRequest,
};
use mcp_authd_ipc::{Client, ClientError, next_step};

use crate::output::{now, print_json, span};
use crate::table::{Cell, Column, Table};

#[derive(clap::Args)]
pub struct ApproveArgs {
    /// The request to answer (see them without it); without it, list the waiting requests
    pub request: Option<u64>,
    /// Allow it this time: the program's current connection (the default)
    #[arg(long, group = "answer")]
    pub once: bool,
    /// Allow the program this grant's tokens from now on (remembered)
    #[arg(long, group = "answer")]
    pub always: bool,
    /// Refuse it (remembered: it is not asked again until forget-client)
    #[arg(long, group = "answer")]
    pub deny: bool,
}

pub async fn approve(
    client: &mut Client,
    args: ApproveArgs,
    json: bool,
) -> Result<(), ClientError> {
    let Some(id) = args.request else {
        let list: PendingList = client.call(CLIENTS_PENDING, &serde_json::json!({})).await?;
        if json {
            print_json(&list);
        } else {
            print_pending(&list.requests);
        }
        return Ok(());
    };
    let answer = if args.always {
        Answer::Always
    } else if args.deny {
        Answer::Deny
    } else {
        Answer::Once
    };
    let r: AnswerResult = client
        .call(CLIENTS_ANSWER, &AnswerParams { id, answer })
        .await?;
    if json {
        print_json(&r);
        return Ok(());
    }
    let who = program_of(&r.request);
    let what = format!("grant {} ({})", r.request.grant, shown(&r.request.server));
    match (r.answer, r.remembered) {
        (Answer::Once, _) => println!("Allowed {who} {what}, this time."),
        (Answer::Always, true) => println!(
            "Allowed {who} {what} from now on; undo with: {}",
            forget_command(&r.request)
        ),
        (Answer::Always, false) => println!(
            "Allowed {who} {what}, this time only: the program cannot be told apart from others"
        ),
        (Answer::Deny, true) => println!(
            "Denied {who} {what}; it will not be asked again until: {}",
            forget_command(&r.request)
        ),
        (Answer::Deny, false) => println!("Denied {who} {what}."),
    }
    Ok(())
}

fn print_pending(requests: &[PendingRequest]) {
    if requests.is_empty() {
        println!("No program waits for approval.");
        return;
    }
    let column = |title, shrinkable| Column { title, shrinkable };
    let mut table = Table::new(vec![
        column("REQUEST", false),
        column("PROGRAM", true),
        column("PID", false),
        column("SERVER", true),
        column("GRANT", false),
        column("WAITS", false),
    ]);
    let now = now();
    for r in requests {
        table.push(vec![
            Cell::new(r.id.to_string()),
            Cell::new(program_of(r)),
            Cell::new(r.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into())),
            Cell::new(&r.server),
            Cell::new(&r.grant),
            Cell::new(format!(
                "{} more",
                span(r.expires_at.saturating_sub(now).max(0) as u64)
            )),
        ]);
    }
    print!("{}", table.render(crate::table::stdout_width(), false));
    println!("\nAnswer one: {}", next_step::approve_choices("<REQUEST>"));
}

pub async fn forget(
    client: &mut Client,
    grant: &str,
    program: &str,
    account: Option<String>,
    json: bool,
) -> Result<(), ClientError> {
    let r: ForgetResult = client
        .call(
            CLIENTS_FORGET,
            &ForgetParams {
                grant: grant.into(),
                program: program.into(),
                account,
            },
        )
        .await?;
    if json {
        print_json(&r);
        return Ok(());
    }
    println!(
        "Forgot `{}` ({}) for grant {}; it is asked again next time.",
        shown(&r.forgotten.program),
        r.forgotten.decision.as_str(),
        r.grant
    );
    Ok(())
}

/// Printed on stderr while `mcp-auth token` (or `headers`) waits for the user's answer.
pub fn waiting_notice(r: &PendingRequest) -> String {
    let dialog = if r.dialog {
        "answer the dialog, or "
    } else {
        ""
    };
    let account = r
        .account_name
        .as_deref()
        .map(|a| format!(", account {a}"))
        .unwrap_or_default();
    format!(
        "mcp-auth: waiting up to {} for the user to allow {} grant {} ({}{account}): {dialog}run in another terminal: {}",
        span(r.expires_at.saturating_sub(r.asked_at).max(0) as u64),
        program_of(r),
        r.grant,
        shown(&r.server),
        next_step::approve_choices(&r.id.to_string())
    )
}

fn program_of(r: &PendingRequest) -> String {
    let program = r
        .program
        .as_deref()
        .map(shown)
        .unwrap_or_else(|| "an unknown program".into());
    if r.via_cli {
        format!("{program} (through mcp-auth)")
    } else {
        program
    }
}

/// A path or URL from elsewhere on one terminal line: through the one sanitizer.
pub fn shown(s: &str) -> String {
    mcp_authd_ipc::text::printable(s, mcp_authd_ipc::text::MAX_QUOTED_CHARS)
}

/// The `mcp-auth forget-client` command that undoes a remembered answer.
fn forget_command(r: &PendingRequest) -> String {
    let program = shown(r.program.as_deref().unwrap_or_default());
    mcp_authd_ipc::next_step::forget_client_command(&r.grant, &program)
}
