//! The audit writer: a thread of its own that appends events in batches.
//! Whatever queued while a commit ran goes into the next one (group
//! commit), so under load one fsync serves many events; each caller waits
//! for the commit that holds its event.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use super::store::AuditStore;
use super::{AuditError, Event, pseudonym};
use crate::transform::HashKey;

/// Events waiting for the writer at most; beyond it callers get `Busy` (503).
const QUEUE: usize = 65_536;
/// Events per commit at most.
const BATCH: usize = 4_096;
/// A caller waits this long for its commit, then fails closed.
const WAIT: Duration = Duration::from_secs(10);

type Done = tokio::sync::oneshot::Sender<Result<u64, AuditError>>;

struct Job {
    at: crate::clock::Millis,
    body: Vec<u8>,
    done: Done,
}

/// The handle the gateway and the admin API record through.
#[derive(Debug)]
pub struct Audit {
    tx: SyncSender<Job>,
    pseudonyms: HashKey,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Audit {
    /// Starts the writer thread over `store`. Pseudonyms of subject ids are
    /// keyed with `pseudonyms` (`audit::pseudonym_key`).
    pub fn start(store: AuditStore, pseudonyms: HashKey) -> Result<Arc<Audit>, AuditError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("consentry-audit".into())
            .spawn(move || run(store, rx))
            .map_err(|e| AuditError::Store(format!("cannot start the writer: {e}")))?;
        Ok(Arc::new(Audit { tx, pseudonyms }))
    }

    /// The pseudonym of a subject id in this trail.
    pub fn pseudonym(&self, subject: &str) -> String {
        pseudonym(&self.pseudonyms, subject)
    }

    /// Records `event`; resolves once it is committed (fsync'd), with its
    /// sequence number.
    pub async fn record(&self, event: &Event) -> Result<u64, AuditError> {
        let body = serde_json::to_vec(event)
            .map_err(|e| AuditError::Store(format!("cannot encode an event: {e}")))?;
        let (done, wait) = tokio::sync::oneshot::channel();
        let job = Job {
            at: event.at,
            body,
            done,
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(AuditError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(AuditError::Stopped),
        }
        match tokio::time::timeout(WAIT, wait).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(AuditError::Stopped),
            Err(_) => Err(AuditError::Busy),
        }
    }

    /// `record`, for callers outside a runtime (the CLI). Blocking.
    pub fn record_blocking(&self, event: &Event) -> Result<u64, AuditError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| AuditError::Store(e.to_string()))?;
        rt.block_on(self.record(event))
    }
}

fn run(mut store: AuditStore, rx: Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let events: Vec<(crate::clock::Millis, &[u8])> =
            batch.iter().map(|j| (j.at, j.body.as_slice())).collect();
        let result = store.append(&events);
        if let Err(e) = &result {
            tracing::error!(error = %e, events = batch.len(), "audit events could not be stored; their responses are refused");
        }
        for (i, j) in batch.into_iter().enumerate() {
            let r = match &result {
                Ok(seqs) => seqs.get(i).copied().ok_or(AuditError::Stopped),
                Err(e) => Err(e.clone()),
            };
            let _ = j.done.send(r);
        }
    }
}
