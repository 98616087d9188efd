//! Group commit: concurrent deliveries wait in one bounded queue and are appended by a single
//! committer task, many per transaction, so the cost of an fsync is shared.
//!
//! The queue is the receiver's only buffer between "verified" and "durable": when it is full the
//! caller is told at once (and answers 503) instead of queueing without bound. The committer
//! stops once every [`CommitQueue`] handle is dropped and the queue is drained, which is how
//! shutdown finishes the appends already accepted into the queue.
//!
//! Every commit has a deadline, so a database that stops answering without closing the
//! connection (a firewall dropping packets) costs the waiting deliveries a 503 after that
//! deadline instead of holding them, and the queue, until the kernel gives up on the socket.
//! The latest commits' health is kept for readiness checks ([`CommitHealth`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callfold_store::{AppendOutcome, NewEvent, Store, StoreError};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long a failed commit keeps [`CommitHealth::failing`] reporting it when no commit has
/// succeeded since. Bounded, so that a receiver taken out of rotation for it (and so given
/// nothing more to commit) reports ready again and gets traffic that can prove it well.
const FAILURE_REPORTED_FOR: Duration = Duration::from_secs(30);

/// Why an append did not happen. Each means "try again later" to the sender.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppendError {
    /// The queue is at capacity.
    #[error("the commit queue is full")]
    QueueFull,
    /// The transaction holding the event failed. The event may have been stored all the same
    /// (in a part of its batch committed before the failure, or by a COMMIT whose answer was
    /// lost); a retry is then answered duplicate.
    #[error("the event store is unavailable")]
    StoreUnavailable,
    /// The store did not commit within the commit deadline. The event may have been stored
    /// all the same (a COMMIT that reached the server before the deadline, or a part of its
    /// batch committed before it); a retry is then answered duplicate.
    #[error("the event store did not answer in time")]
    CommitTimedOut,
}

/// What the committer's latest commits said of the store, for readiness checks. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct CommitHealth {
    latest_failure: Arc<Mutex<Option<(Instant, AppendError)>>>,
}

impl CommitHealth {
    /// Why commits are failing: the latest commit failed, and did so less than 30 s ago. `None`
    /// once a commit succeeds.
    pub fn failing(&self) -> Option<AppendError> {
        let latest_failure = *self.latest_failure.lock().expect("commit health lock");
        latest_failure
            .filter(|(at, _)| at.elapsed() < FAILURE_REPORTED_FOR)
            .map(|(_, error)| error)
    }

    fn record(&self, failure: Option<AppendError>) {
        *self.latest_failure.lock().expect("commit health lock") =
            failure.map(|error| (Instant::now(), error));
    }
}

struct PendingAppend {
    event: NewEvent,
    reply: oneshot::Sender<Result<AppendOutcome, AppendError>>,
}

/// A handle to submit events to the committer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CommitQueue {
    sender: mpsc::Sender<PendingAppend>,
    health: CommitHealth,
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
    /// share one transaction, which must commit within `commit_timeout`; `appended` is
    /// notified after each commit that wrote something, and after each failed one, which may
    /// have (an in-process projector waits on it).
    /// The returned task ends when all handles are dropped and the queue is empty.
    pub fn start(
        store: Store,
        capacity: usize,
        max_batch: usize,
        commit_timeout: Duration,
        appended: Arc<Notify>,
    ) -> (Self, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(capacity);
        let health = CommitHealth::default();
        let committer = tokio::spawn(run_committer(
            store,
            receiver,
            max_batch,
            commit_timeout,
            appended,
            health.clone(),
        ));
        (Self { sender, health }, committer)
    }

    /// The health of this queue's commits.
    pub fn health(&self) -> CommitHealth {
        self.health.clone()
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
    commit_timeout: Duration,
    appended: Arc<Notify>,
    health: CommitHealth,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut batch, max_batch).await > 0 {
        let (events, replies): (Vec<NewEvent>, Vec<_>) = batch
            .drain(..)
            .map(|pending| (pending.event, pending.reply))
            .unzip();
        metrics::histogram!("callfold_commit_batch_size").record(events.len() as f64);
        match store.append_batch_within(&events, commit_timeout).await {
            Ok(outcomes) => {
                health.record(None);
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
                tracing::error!(
                    %error,
                    batch = events.len(),
                    "append failed; some of this batch may have been stored, and a retry of those is answered duplicate"
                );
                let failure = match error {
                    StoreError::TimedOut { .. } => AppendError::CommitTimedOut,
                    _ => AppendError::StoreUnavailable,
                };
                health.record(Some(failure));
                // Which parts, if any, were stored is unknown here (a split's parts committed
                // before the failure, or a COMMIT whose answer was lost): wake the projector as
                // after a commit. A wake-up that finds nothing to fold costs one claim query.
                appended.notify_one();
                for reply in replies {
                    let _ = reply.send(Err(failure));
                }
            }
        }
    }
}
