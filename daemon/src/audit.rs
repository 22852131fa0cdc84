//! The audit log of token hand-outs, written off the hot path. `token.get` counts a
//! hand-out into an in-memory table (one short lock; no allocation when the same
//! connection already took a token of that grant since the last write; the writer task is
//! woken only by the first hand-out after a write). The writer then gathers for `GATHER`
//! and stores the whole table in one SQLite transaction (one fsync), so a token
//! is answered without waiting for a synced disk write, and an idle daemon writes nothing.
//! A crash (not a stop: a stop flushes) loses what was not committed yet — the hand-outs
//! of the window being gathered and of a write still running; a batch that fails three
//! writes in a row is dropped with an error in the log. A shorter window costs the
//! latency of every token while it writes (the write takes a core for a moment each
//! time); a longer one loses more to a crash. Reads flush first, so `grants.audit` shows
//! every hand-out answered before it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use crate::peer::Peer;
use crate::store::Db;
use crate::store::db::HandOutRecord;

/// How long the writer gathers hand-outs into one transaction, from the first hand-out
/// after the last write (or until a flush asks).
const GATHER: Duration = Duration::from_millis(250);

/// Hand-outs not yet written, by connection (its `Peer`, shared by every request on it):
/// each connection's few grants in a short list, so counting one more is a pointer lookup
/// and a string comparison or two.
/// Each row carries the sequence number of its latest hand-out, so rows are written (and
/// listed, newest first) in the order their last tokens went out.
#[derive(Default)]
struct Pending {
    by_peer: HashMap<usize, Vec<(HandOutRecord, u64)>>,
    seq: u64,
}

impl Pending {
    /// True when this is the first hand-out since the last write (the writer is woken).
    fn count(&mut self, grant_id: &str, server: &str, peer: &Arc<Peer>, at: i64) -> bool {
        let first = self.by_peer.is_empty();
        self.seq += 1;
        let rows = self.by_peer.entry(Arc::as_ptr(peer) as usize).or_default();
        match rows
            .iter_mut()
            .find(|(r, _)| r.grant_id == grant_id && r.server == server)
        {
            Some((row, seq)) => {
                row.count += 1;
                row.at = row.at.max(at);
                *seq = self.seq;
            }
            None => rows.push((
                HandOutRecord {
                    at,
                    count: 1,
                    grant_id: grant_id.to_string(),
                    server: server.to_string(),
                    peer: peer.clone(),
                },
                self.seq,
            )),
        }
        first
    }

    fn take(&mut self) -> Vec<HandOutRecord> {
        let mut rows: Vec<(HandOutRecord, u64)> =
            self.by_peer.drain().flat_map(|(_, r)| r).collect();
        rows.sort_by_key(|(_, seq)| *seq);
        rows.into_iter().map(|(row, _)| row).collect()
    }
}

#[derive(Clone)]
pub struct AuditLog {
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
    flushes: mpsc::Sender<oneshot::Sender<()>>,
}

impl AuditLog {
    /// Starts the writer; it ends once every `AuditLog` clone is dropped and the pending
    /// hand-outs are written.
    pub fn start(db: Db) -> (AuditLog, tokio::task::JoinHandle<()>) {
        let (flushes, flush_rx) = mpsc::channel(64);
        let log = AuditLog {
            pending: Arc::default(),
            wake: Arc::default(),
            flushes,
        };
        let writer = Writer {
            db,
            pending: log.pending.clone(),
            wake: log.wake.clone(),
            flush_rx,
        };
        (log, tokio::spawn(writer.run()))
    }

    /// Counts one hand-out; never waits.
    pub fn record(&self, grant_id: &str, server: &str, peer: &Arc<Peer>, at: i64) {
        let first = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .count(grant_id, server, peer, at);
        if first {
            self.wake.notify_one();
        }
    }

    /// Returns once everything recorded before the call is in SQLite.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.flushes.send(done).await.is_ok() {
            let _ = wait.await;
        }
    }
}

struct Writer {
    db: Db,
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
    flush_rx: mpsc::Receiver<oneshot::Sender<()>>,
}

impl Writer {
    async fn run(mut self) {
        let mut flushes = Vec::new();
        let mut open = true;
        while open {
            tokio::select! {
                _ = self.wake.notified() => {
                    // Gather for a moment: one transaction (one fsync) for everything
                    // handed out in it. A flush ends the gathering at once.
                    tokio::select! {
                        _ = tokio::time::sleep(GATHER) => {}
                        done = self.flush_rx.recv() => match done {
                            Some(done) => flushes.push(done),
                            None => open = false,
                        },
                    }
                }
                done = self.flush_rx.recv() => match done {
                    Some(done) => flushes.push(done),
                    None => open = false,
                },
            }
            while let Ok(done) = self.flush_rx.try_recv() {
                flushes.push(done);
            }
            let batch = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            self.write(&batch).await;
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }

    async fn write(&self, batch: &[HandOutRecord]) {
        if batch.is_empty() {
            return;
        }
        let mut tries = 0;
        while let Err(e) = self.db.record_hand_outs(batch).await {
            tries += 1;
            tracing::error!(
                "cannot write {} audit records (try {tries}): {e}",
                batch.len()
            );
            if tries == 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100 * tries)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_outs_of_one_process_and_grant_share_a_row() {
        let a = Arc::new(Peer {
            pid: Some(1),
            uid: Some(1000),
            exe: Some("/bin/a".into()),
            ..Peer::default()
        });
        let b = Arc::new(Peer {
            pid: Some(2),
            ..(*a).clone()
        });
        let mut pending = Pending::default();
        let mut firsts = Vec::new();
        for (grant, peer, at) in [("g1", &a, 5), ("g1", &b, 7), ("g1", &a, 7), ("g2", &a, 8)] {
            firsts.push(pending.count(grant, "https://h/mcp", peer, at));
        }
        assert_eq!(
            firsts,
            [true, false, false, false],
            "only the first wakes the writer"
        );
        let rows: Vec<(String, Option<u32>, u64, i64)> = pending
            .take()
            .iter()
            .map(|h| (h.grant_id.clone(), h.peer.pid, h.count, h.at))
            .collect();
        // In the order of each row's latest hand-out: b's, then a's second g1, then g2.
        assert_eq!(
            rows,
            vec![
                ("g1".into(), Some(2), 1, 7),
                ("g1".into(), Some(1), 2, 7),
                ("g2".into(), Some(1), 1, 8)
            ]
        );
        assert!(
            pending.count("g1", "https://h/mcp", &a, 9),
            "empty again after take"
        );
    }
}
