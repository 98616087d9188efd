//! Group commit: concurrent deliveries wait in one bounded queue and are appended by a single
//! committer task, many per transaction, so the cost of an fsync is shared.
//!
//! The queue is the receiver's only buffer between "verified" and "durable": when it is full the
//! caller is told at once (and answers 503) instead of queueing without bound. The committer
//! stops once every [`CommitQueue`] handle is dropped and the queue is drained, which is how
//! shutdown finishes the appends already accepted into the queue.

use std::sync::Arc;

use callfold_store::{AppendOutcome, NewEvent, Store};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Why an append did not happen. Both mean "try again later" to the sender.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppendError {
    /// The queue is at capacity.
    #[error("the commit queue is full")]
    QueueFull,
    /// The transaction holding the event failed; nothing of it was written.
    #[error("the event store is unavailable")]
    StoreUnavailable,
}

struct PendingAppend {
    event: NewEvent,
    reply: oneshot::Sender<Result<AppendOutcome, AppendError>>,
}

/// A handle to submit events to the committer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CommitQueue {
    sender: mpsc::Sender<PendingAppend>,
}

impl std::fmt::Debug for PendingAppend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAppend")
            .field("webhook_id", &self.event.webhook_id)
            .finish_non_exhaustive()
    }
}

impl CommitQueue {
    /// Starts the committer on `store`. At most `capacity` events wait; at most `max_batch`
    /// share one transaction; `appended` is notified after each commit that wrote something
    /// (an in-process projector waits on it). The returned task ends when all handles are
    /// dropped and the queue is empty.
    pub fn start(
        store: Store,
        capacity: usize,
        max_batch: usize,
        appended: Arc<Notify>,
    ) -> (Self, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(capacity);
        let committer = tokio::spawn(run_committer(store, receiver, max_batch, appended));
        (Self { sender }, committer)
    }

    /// Appends `event` durably, or says why not. Returns once the transaction that holds it has
    /// committed (and so, for the stores callfold configures, been fsync'd).
    pub async fn append(&self, event: NewEvent) -> Result<AppendOutcome, AppendError> {
        let (reply, outcome) = oneshot::channel();
        self.sender
            .try_send(PendingAppend { event, reply })
            .map_err(|_| AppendError::QueueFull)?;
        outcome.await.unwrap_or(Err(AppendError::StoreUnavailable))
    }
}

async fn run_committer(
    store: Store,
    mut queue: mpsc::Receiver<PendingAppend>,
    max_batch: usize,
    appended: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut batch, max_batch).await > 0 {
        let (events, replies): (Vec<NewEvent>, Vec<_>) = batch
            .drain(..)
            .map(|pending| (pending.event, pending.reply))
            .unzip();
        metrics::histogram!("callfold_commit_batch_size").record(events.len() as f64);
        match store.append_batch(&events).await {
            Ok(outcomes) => {
                if outcomes
                    .iter()
                    .any(|o| matches!(o, AppendOutcome::Appended { .. }))
                {
                    appended.notify_one();
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A sender that hung up will retry; its event is durable either way.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                tracing::error!(%error, batch = events.len(), "append failed; nothing in this batch was stored");
                for reply in replies {
                    let _ = reply.send(Err(AppendError::StoreUnavailable));
                }
            }
        }
    }
}
