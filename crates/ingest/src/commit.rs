//! Group commit: concurrent deliveries wait in one bounded queue and are appended by a single
//! committer task, many per transaction, so the cost of an fsync is shared.
//!
//! The queue is the receiver's only buffer between "verified" and "durable", and it is bounded.
//! A delivery that finds it full waits for room, at most the commit deadline, and is answered
//! 503 only if none comes: a commit slowed for a moment (a rebuild's swap batch, a checkpoint)
//! costs the deliveries behind it some latency, not a refusal, while a store that stays slow
//! turns them away within a bound instead of holding them. The committer stops once every
//! [`CommitQueue`] handle is dropped and the queue is drained, which is how shutdown finishes
//! the appends already accepted into the queue.
//!
//! Every commit has a deadline, so a database that stops answering without closing the
//! connection (a firewall dropping packets) costs the waiting deliveries a 503 after that
//! deadline instead of holding them, and the queue, until the kernel gives up on the socket.
//! While the queue holds no more than a batch, a delivery therefore waits at most three
//! deadlines: for room, for the batch committing ahead of it, and for its own. The latest
//! commits' health is kept for readiness checks ([`CommitHealth`]), and the deliveries waiting
//! are counted in [`WAITING_GAUGE`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callfold_store::{AppendOutcome, NewEvent, Store, StoreError};
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

/// The gauge of deliveries waiting for their commit: for room in the queue, in it, or in the
/// transaction being committed.
pub const WAITING_GAUGE: &str = "callfold_deliveries_waiting";

/// How long a failed commit keeps [`CommitHealth::failing`] reporting it when no commit has
/// succeeded since. Bounded, so that a receiver taken out of rotation for it (and so given
/// nothing more to commit) reports ready again and gets traffic that can prove it well.
const FAILURE_REPORTED_FOR: Duration = Duration::from_secs(30);

/// Why an append did not happen. Each means "try again later" to the sender.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppendError {
    /// The queue stayed at capacity for as long as a delivery may wait for room.
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
    room_wait: Duration,
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
    /// Starts the committer on `store`. At most `capacity` events wait in the queue, and a
    /// delivery waits for room in it at most `commit_timeout`; at most `max_batch` share one
    /// transaction, which must commit within `commit_timeout` too; `appended` is
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
        store.own_wal_restarts();
        let committer = tokio::spawn(run_committer(
            store,
            receiver,
            max_batch,
            commit_timeout,
            appended,
            health.clone(),
        ));
        let queue = Self {
            sender,
            room_wait: commit_timeout,
            health,
        };
        (queue, committer)
    }

    /// The health of this queue's commits.
    pub fn health(&self) -> CommitHealth {
        self.health.clone()
    }

    /// Appends `event` durably, or says why not. Returns once the transaction that holds it has
    /// committed (and so, for the stores callfold configures, been fsync'd).
    pub async fn append(&self, event: NewEvent) -> Result<AppendOutcome, AppendError> {
        let _waiting = Waiting::counted();
        let (reply, outcome) = oneshot::channel();
        self.sender
            .send_timeout(PendingAppend { event, reply }, self.room_wait)
            .await
            .map_err(|error| match error {
                SendTimeoutError::Timeout(_) => AppendError::QueueFull,
                SendTimeoutError::Closed(_) => AppendError::StoreUnavailable,
            })?;
        outcome.await.unwrap_or(Err(AppendError::StoreUnavailable))
    }
}

/// One delivery counted in [`WAITING_GAUGE`] from its creation until it is dropped, however its
/// wait ends (answered, refused, or given up by a sender that hung up).
struct Waiting;

impl Waiting {
    fn counted() -> Self {
        metrics::gauge!(WAITING_GAUGE).increment(1.0);
        Self
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!(WAITING_GAUGE).decrement(1.0);
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
