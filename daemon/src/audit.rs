//! The audit log of token hand-outs, written off the hot path: `token.get` queues a record
//! (waiting only when thousands are queued) and one writer task stores the queue in
//! batches gathered over 20 ms, one SQLite transaction each. A token answers in
//! microseconds instead of after a synced disk write; a crash loses at most the last 20 ms
//! of records. Reads flush first,
//! so `grants.audit` shows every hand-out answered before it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::peer::Peer;
use crate::store::Db;
use crate::store::db::HandOutRecord;

/// Records queued before `record` waits for the writer.
const QUEUE: usize = 16_384;
/// How long the writer gathers hand-outs into one transaction.
const GATHER: Duration = Duration::from_millis(20);
/// Hand-outs taken from the queue per transaction, at most.
const BATCH: usize = 8192;

enum Entry {
    HandOut(HandOutRecord),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<Entry>,
}

impl AuditLog {
    /// Starts the writer; it ends once every `AuditLog` clone is dropped and the queue is
    /// written.
    pub fn start(db: Db) -> (AuditLog, tokio::task::JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        (AuditLog { queue }, tokio::spawn(write(db, rx)))
    }

    pub async fn record(&self, grant_id: &str, server: &str, peer: &Arc<Peer>, at: i64) {
        let entry = Entry::HandOut(HandOutRecord {
            at,
            count: 1,
            grant_id: grant_id.to_string(),
            server: server.to_string(),
            peer: peer.clone(),
        });
        if self.queue.send(entry).await.is_err() {
            tracing::error!("the audit log writer has stopped; a token hand-out was not recorded");
        }
    }

    /// `record` without waiting: false when the queue is full (the caller then takes the
    /// path that waits).
    pub fn try_record(&self, grant_id: &str, server: &str, peer: &Arc<Peer>, at: i64) -> bool {
        self.queue
            .try_send(Entry::HandOut(HandOutRecord {
                at,
                count: 1,
                grant_id: grant_id.to_string(),
                server: server.to_string(),
                peer: peer.clone(),
            }))
            .is_ok()
    }

    /// Returns once everything recorded before the call is in SQLite.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Entry::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Adds a hand-out to the batch, counting it into an identical one (same grant, server
/// and process) when there is one.
fn merge(batch: &mut Vec<HandOutRecord>, h: HandOutRecord) {
    let same = batch.iter_mut().rev().take(64).find(|b| {
        b.grant_id == h.grant_id
            && b.server == h.server
            && (Arc::ptr_eq(&b.peer, &h.peer)
                || (b.peer.pid, b.peer.uid, &b.peer.exe) == (h.peer.pid, h.peer.uid, &h.peer.exe))
    });
    match same {
        Some(b) => {
            b.count += h.count;
            b.at = b.at.max(h.at);
        }
        None => batch.push(h),
    }
}

async fn write(db: Db, mut rx: mpsc::Receiver<Entry>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        // Gather for a moment: one transaction (one fsync) for everything handed out in
        // it. A flush ends the gathering at once.
        let deadline = tokio::time::Instant::now() + GATHER;
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(entry) = next.take() {
            match entry {
                Entry::HandOut(h) => merge(&mut batch, h),
                Entry::Flush(done) => flushes.push(done),
            }
            taken += 1;
            if taken < BATCH && flushes.is_empty() {
                next = tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .ok()
                    .flatten();
            }
        }
        if !batch.is_empty() {
            let mut tries = 0;
            while let Err(e) = db.record_hand_outs(&batch).await {
                tries += 1;
                tracing::error!(
                    "cannot write {} audit records (try {tries}): {e}",
                    batch.len()
                );
                if tries == 3 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 * tries)).await;
            }
            batch.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hand_out(grant: &str, peer: &Arc<Peer>, at: i64) -> HandOutRecord {
        HandOutRecord {
            at,
            count: 1,
            grant_id: grant.into(),
            server: "https://h/mcp".into(),
            peer: peer.clone(),
        }
    }

    #[test]
    fn identical_hand_outs_in_a_batch_share_a_row() {
        let a = Arc::new(Peer {
            pid: Some(1),
            uid: Some(1000),
            exe: Some("/bin/a".into()),
        });
        let b = Arc::new(Peer {
            pid: Some(2),
            ..(*a).clone()
        });
        let mut batch = Vec::new();
        for (grant, peer, at) in [("g1", &a, 5), ("g1", &a, 7), ("g1", &b, 7), ("g2", &a, 8)] {
            merge(&mut batch, hand_out(grant, peer, at));
        }
        let rows: Vec<(&str, Option<u32>, u64, i64)> = batch
            .iter()
            .map(|h| (h.grant_id.as_str(), h.peer.pid, h.count, h.at))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("g1", Some(1), 2, 7),
                ("g1", Some(2), 1, 7),
                ("g2", Some(1), 1, 8)
            ]
        );
    }
}
