//! `confirm_clients`, as `ssh-agent -c`: the first time a program asks for a grant's token,
//! the user is asked — a desktop dialog where there is one, and in any case a pending
//! request that `mcp-auth approve` answers. `once` allows the asking connection,
//! `always` and `deny` are remembered per grant and program (SQLite, and memory for the
//! hot path).
//!
//! Cost when off: one relaxed atomic load per hand-out. When on and the program was
//! allowed: a short lock and two hash lookups, no syscall after the connection's first
//! request. Only an unanswered question leaves memory: the asking request waits in its
//! own task (bounded by `confirm_timeout_secs`) and nothing else waits for it.

mod dialog;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_authd_ipc::clients::{
    Answer, AnswerResult, CLIENTS_CONFIRM_PENDING, ClientDecision, PendingRequest,
};
use mcp_authd_ipc::next_step::{APPROVE, approve_command};
use mcp_authd_ipc::{ErrorKind, Notification, RpcError};
use tokio::sync::watch;

use crate::config::Config;
use crate::oauth::token::now;
use crate::peer::Peer;
use crate::peer::program::Program;
use crate::reply::{Notifier, Outgoing};
use crate::store::{Db, GrantRow};
use dialog::{Dialog, Question};

/// Questions waiting at once, over every grant; more are refused (`limit_exceeded`), so
/// a program cannot pile up dialogs or memory.
const MAX_PENDING: usize = 32;

/// What `confirm_clients` remembers and asks; the broker holds it and lends it the
/// config in force when a grant's token is asked for.
pub struct Confirmations {
    /// Where `always` and `deny` are remembered.
    db: Db,
    /// Whether any grant may ask (the global switch or one server's); read on every hand-out.
    enabled: AtomicBool,
    timeout: Mutex<Duration>,
    state: Mutex<State>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Whether a grant's config asks, as found on the slow path; emptied by a reload.
    grant_asks: HashMap<String, bool>,
    /// Remembered decisions by grant, then program.
    decided: HashMap<String, HashMap<String, ClientDecision>>,
    pending: Vec<Waiting>,
}

struct Waiting {
    request: PendingRequest,
    /// Dropped without an answer when the request expires.
    answer: watch::Sender<Option<Answer>>,
}

/// What memory says about a program and a grant.
enum Known {
    Allowed,
    Denied,
    Ask,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Confirmations {
    pub fn new(config: &Config, db: Db) -> Confirmations {
        let c = Confirmations {
            db,
            enabled: AtomicBool::new(false),
            timeout: Mutex::new(Duration::ZERO),
            state: Mutex::default(),
            next_id: AtomicU64::new(1),
        };
        c.configure(config);
        c
    }

    /// Takes a (re)loaded config into account.
    pub fn configure(&self, config: &Config) {
        *lock(&self.timeout) = Duration::from_secs(config.confirm_timeout_secs);
        lock(&self.state).grant_asks.clear();
        self.enabled
            .store(config.confirms_any_client(), Ordering::Release);
    }

    /// Whether any grant may ask (one atomic load).
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Loads the remembered decisions (at start).
    pub async fn load(&self) -> Result<(), crate::store::DbError> {
        let rows = self.db.all_client_decisions().await?;
        let mut state = lock(&self.state);
        for (grant, d) in rows {
            state
                .decided
                .entry(grant)
                .or_default()
                .insert(d.program.clone(), d);
        }
        Ok(())
    }

    /// The hot path: whether memory alone allows `peer` the grant's token. `false` sends
    /// the request the slow way ([`check`]), which may ask.
    pub fn allows_at_once(&self, grant_id: &str, peer: &Peer) -> bool {
        if !self.enabled.load(Ordering::Relaxed) {
            return true;
        }
        match lock(&self.state).grant_asks.get(grant_id) {
            Some(false) => return true,
            None => return false,
            Some(true) => {}
        }
        matches!(self.known(grant_id, peer), Known::Allowed)
    }

    fn known(&self, grant_id: &str, peer: &Peer) -> Known {
        if peer.allowed_once(grant_id) {
            return Known::Allowed;
        }
        let Some(program) = peer.program() else {
            return Known::Ask;
        };
        let state = lock(&self.state);
        match state
            .decided
            .get(grant_id)
            .and_then(|d| d.get(&program.path))
            .map(|d| d.decision)
        {
            Some(Answer::Always) => Known::Allowed,
            Some(Answer::Deny) => Known::Denied,
            _ => Known::Ask,
        }
    }

    /// The decisions remembered for a grant, programs in order.
    pub fn decisions(&self, grant_id: &str) -> Vec<ClientDecision> {
        let mut all: Vec<ClientDecision> = lock(&self.state)
            .decided
            .get(grant_id)
            .map(|d| d.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.program.cmp(&b.program));
        all
    }

    /// The questions waiting, oldest first.
    pub fn pending(&self) -> Vec<PendingRequest> {
        lock(&self.state)
            .pending
            .iter()
            .map(|w| w.request.clone())
            .collect()
    }

    /// Forgets a remembered decision: the program is asked again next time.
    pub async fn forget(
        &self,
        grant_id: &str,
        program: &str,
    ) -> Result<Option<ClientDecision>, RpcError> {
        let known = lock(&self.state)
            .decided
            .get(grant_id)
            .and_then(|d| d.get(program).cloned());
        let stored = self.db.delete_client_decision(grant_id, program).await?;
        let mut state = lock(&self.state);
        if let Some(d) = state.decided.get_mut(grant_id) {
            d.remove(program);
        }
        Ok(known.filter(|_| stored))
    }

    /// Answers a waiting question (from `mcp-auth approve` or the dialog): `always` and
    /// `deny` are stored before the waiting program hears of it.
    pub async fn answer(&self, id: u64, answer: Answer) -> Result<AnswerResult, RpcError> {
        let Some(waiting) = ({
            let mut state = lock(&self.state);
            let at = state.pending.iter().position(|w| w.request.id == id);
            at.map(|i| state.pending.remove(i))
        }) else {
            return Err(RpcError::new(
                ErrorKind::NotFound,
                format!(
                    "no program waits under request {id} (it was answered, or it timed out); see the waiting ones: {APPROVE}"
                ),
            ));
        };
        let request = waiting.request.clone();
        let remembered = answer != Answer::Once && request.program.is_some();
        if let (true, Some(program)) = (remembered, &request.program) {
            let decision = ClientDecision {
                program: program.clone(),
                decision: answer,
                decided_at: now(),
            };
            if let Err(e) = self
                .db
                .save_client_decision(&request.grant, &decision)
                .await
            {
                lock(&self.state).pending.push(waiting);
                return Err(e.into());
            }
            lock(&self.state)
                .decided
                .entry(request.grant.clone())
                .or_default()
                .insert(program.clone(), decision);
        }
        tracing::info!(
            grant = %request.grant,
            program = ?request.program,
            answer = answer.as_str(),
            "confirm_clients: answered"
        );
        let _ = waiting.answer.send(Some(answer));
        Ok(AnswerResult {
            request,
            answer,
            remembered,
        })
    }

    fn expire(&self, id: u64) {
        lock(&self.state).pending.retain(|w| w.request.id != id);
    }

    /// The slow path: lets `peer` have `grant`'s token if `config` does not ask for its
    /// server, memory allows it, or the user says so now; else `confirmation_denied` or
    /// `confirmation_timeout`.
    pub async fn check(
        self: &Arc<Self>,
        config: &Config,
        grant: &GrantRow,
        peer: &Peer,
        notifier: &Notifier,
    ) -> Result<(), RpcError> {
        if !self.is_enabled() {
            return Ok(());
        }
        let asks = config.confirm_clients_for(&grant.server_url, &grant.issuer);
        lock(&self.state).grant_asks.insert(grant.id.clone(), asks);
        if !asks {
            return Ok(());
        }
        match self.known(&grant.id, peer) {
            Known::Allowed => Ok(()),
            Known::Denied => Err(denied(grant, peer.program(), true)),
            Known::Ask => ask(self, grant, peer, notifier).await,
        }
    }
}

async fn ask(
    c: &Arc<Confirmations>,
    grant: &GrantRow,
    peer: &Peer,
    notifier: &Notifier,
) -> Result<(), RpcError> {
    let program = peer.program().cloned();
    let timeout = *lock(&c.timeout);
    let dialog = Dialog::available();
    // One question per grant and program: a program's concurrent requests share it.
    let (request, mut answer, new) = {
        let mut state = lock(&c.state);
        let same = state.pending.iter().find(|w| {
            w.request.grant == grant.id
                && program.is_some()
                && w.request.program == program.as_ref().map(|p| p.path.clone())
        });
        match same {
            Some(w) => (w.request.clone(), w.answer.subscribe(), false),
            None if state.pending.len() >= MAX_PENDING => {
                return Err(RpcError::new(
                    ErrorKind::LimitExceeded,
                    format!(
                        "{MAX_PENDING} programs already wait for the user's approval; answer them first: {APPROVE}"
                    ),
                ));
            }
            None => {
                let asked_at = now();
                let request = PendingRequest {
                    id: c.next_id.fetch_add(1, Ordering::Relaxed),
                    grant: grant.id.clone(),
                    server: grant.server_url.clone(),
                    account_name: grant.account_name().map(str::to_string),
                    program: program.as_ref().map(|p| p.path.clone()),
                    pid: peer.pid,
                    via_cli: program.as_ref().is_some_and(|p| p.via_cli),
                    asked_at,
                    expires_at: asked_at + timeout.as_secs() as i64,
                    dialog: dialog.is_some(),
                };
                let (tx, rx) = watch::channel(None);
                state.pending.push(Waiting {
                    request: request.clone(),
                    answer: tx,
                });
                (request, rx, true)
            }
        }
    };
    if let Ok(params) = serde_json::to_value(&request) {
        let _ = notifier.try_send(Outgoing::Notification(Notification::new(
            CLIENTS_CONFIRM_PENDING,
            params,
        )));
    }
    if new {
        tracing::warn!(
            grant = %grant.id,
            program = ?request.program,
            pid = ?request.pid,
            "confirm_clients: a program asks for a token; answer with: {}",
            approve_command(request.id)
        );
        if let Some(dialog) = dialog {
            show_dialog(c.clone(), dialog, request.clone(), grant, timeout);
        }
    }
    let left = Duration::from_secs((request.expires_at - now()).max(0) as u64);
    let waited = tokio::time::timeout(left, async {
        loop {
            if let Some(a) = *answer.borrow_and_update() {
                return Some(a);
            }
            if answer.changed().await.is_err() {
                return *answer.borrow();
            }
        }
    })
    .await;
    match waited {
        Ok(Some(allowed @ (Answer::Once | Answer::Always))) => {
            // `always` for a program that cannot be told apart is only `once`.
            if allowed == Answer::Once || program.is_none() {
                peer.allow_once(&grant.id);
            }
            Ok(())
        }
        Ok(Some(Answer::Deny)) => Err(denied(grant, program.as_ref(), program.is_some())),
        Ok(None) | Err(_) => {
            c.expire(request.id);
            tracing::warn!(grant = %grant.id, program = ?request.program, "confirm_clients: no answer in time");
            Err(RpcError::new(
                ErrorKind::ConfirmationTimeout,
                format!(
                    "confirmation timed out: nobody allowed {} to use grant {} ({}) within {} s; run it again and answer the dialog, or from another terminal: {APPROVE}",
                    describe(program.as_ref()),
                    grant.id,
                    grant.server_url,
                    timeout.as_secs()
                ),
            )
            .with_server(&grant.server_url))
        }
    }
}

/// Shows the dialog while the question waits; its answer is one like `mcp-auth approve`'s.
/// An answer from elsewhere, or the question's expiry, closes it.
fn show_dialog(
    confirmations: Arc<Confirmations>,
    dialog: Dialog,
    request: PendingRequest,
    grant: &GrantRow,
    timeout: Duration,
) {
    // The account the user named, with who the authorization server says it is.
    let account = match (grant.account_name(), &grant.account) {
        (Some(name), Some(who)) => Some(format!("{name} ({who})")),
        (Some(name), None) => Some(name.to_string()),
        (None, who) => who.clone(),
    };
    let mut answered = {
        let state = lock(&confirmations.state);
        match state.pending.iter().find(|w| w.request.id == request.id) {
            Some(w) => w.answer.subscribe(),
            None => return,
        }
    };
    tokio::spawn(async move {
        let question = Question {
            program: request.program.as_deref().unwrap_or("an unknown program"),
            via_cli: request.via_cli,
            pid: request.pid,
            server: &request.server,
            account: account.as_deref(),
            grant: &request.grant,
            request: request.id,
        };
        tokio::select! {
            answer = dialog.ask(&question, timeout) => {
                if let Some(answer) = answer
                    && let Err(e) = confirmations.answer(request.id, answer).await
                    && e.kind() != Some(ErrorKind::NotFound)
                {
                    tracing::warn!("cannot record the dialog's answer: {e}");
                }
            }
            _ = answered.changed() => {}
        }
    });
}

fn describe(program: Option<&Program>) -> String {
    match program {
        Some(p) if p.via_cli => format!("{} (through mcp-auth)", shown(&p.path)),
        Some(p) => shown(&p.path),
        None => "this program".into(),
    }
}

fn denied(grant: &GrantRow, program: Option<&Program>, remembered: bool) -> RpcError {
    let mut message = format!(
        "denied by the user: {} may not use grant {} ({})",
        describe(program),
        grant.id,
        grant.server_url
    );
    if let (true, Some(p)) = (remembered, program) {
        message.push_str(&format!(
            "; the answer is remembered; to be asked again: {}",
            mcp_authd_ipc::next_step::forget_client_command(&grant.id, &shown(&p.path))
        ));
    }
    RpcError::new(ErrorKind::ConfirmationDenied, message).with_server(&grant.server_url)
}

/// A program's path in a message: through the one sanitizer.
fn shown(path: &str) -> String {
    crate::oauth::printable(path, 500)
}
