//! The audit log of token hand-outs, written off the hot path: `token.get` queues a record
//! (waiting only when thousands are queued) and one writer task stores the queue in
//! batches, one SQLite transaction each. A token answers in microseconds instead of after
//! a synced disk write; a crash loses at most the batch being written. Reads flush first,
//! so `grants.audit` shows every hand-out answered before it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::peer::Peer;
use crate::store::Db;
use crate::store::db::HandOutRecord;

/// Records queued before `record` waits for the writer.
const QUEUE: usize = 8192;
/// Records per transaction, at most.
const BATCH: usize = 1024;

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
            grant_id: grant_id.to_string(),
            server: server.to_string(),
            peer: peer.clone(),
        });
        if self.queue.send(entry).await.is_err() {
            tracing::error!("the audit log writer has stopped; a token hand-out was not recorded");
        }
    }

    /// Returns once everything recorded before the call is in SQLite.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Entry::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write(db: Db, mut rx: mpsc::Receiver<Entry>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(entry) = next.take() {
            match entry {
                Entry::HandOut(h) => batch.push(h),
                Entry::Flush(done) => flushes.push(done),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
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
