//! Live updates: the projection changes, in the order they were committed, from a cursor on,
//! for every call or one, as a channel of [`LiveChange`]s (`callfold-service` serves them as
//! server-sent events on `GET /v1/stream` and `GET /v1/calls/{call_id}/stream`).
//!
//! Every item is one change: its number (see `callfold_store`'s projection changes) and the
//! call as `GET /v1/calls/{call_id}` shows it. Following from change N gives every call changed
//! after N at its latest state: a call changed twice while the client was away arrives once,
//! as it is now.
//!
//! A stream wakes when a projector of its own process commits, and polls the store meanwhile,
//! which is how it follows projectors in other processes. Streams end, their bodies finished
//! cleanly, when the process shuts down ([`LiveChanges::ending_on`]): an endless response
//! would otherwise hold the shutdown until its timeout. A client resumes from its last id on
//! another process.

use std::time::Duration;

use callfold_store::{CallKey, ProjectionChange, Store, StoreError};
use tokio::sync::{mpsc, watch};

use crate::view::CallView;

/// Changes read per store round trip.
const PAGE: i64 = 256;
/// Events a slow client may have waiting before its stream stops reading the store.
const BUFFERED_EVENTS: usize = 64;

/// What the streams read changes from, and how they learn of new ones.
#[derive(Clone, Debug)]
pub struct LiveChanges {
    store: Store,
    projected: watch::Receiver<u64>,
    poll: Duration,
    stopping: Option<watch::Receiver<bool>>,
}

impl LiveChanges {
    /// Streams over `store`, woken by `projected` (see `Projector::projected`) and polling
    /// every `poll` for projectors in other processes.
    pub fn new(store: Store, projected: watch::Receiver<u64>, poll: Duration) -> Self {
        Self {
            store,
            projected,
            poll,
            stopping: None,
        }
    }

    /// The same streams, each ending once `stopping` turns true (or its sender is gone).
    pub fn ending_on(self, stopping: watch::Receiver<bool>) -> Self {
        Self {
            stopping: Some(stopping),
            ..self
        }
    }
}

/// One projection change, as a live stream shows it.
#[derive(Clone, Debug)]
pub struct LiveChange {
    /// The change's number: the cursor to resume after.
    pub change: i64,
    /// The call as `GET /v1/calls/{call_id}` shows it after the change.
    pub call: CallView,
}

impl LiveChanges {
    /// The number of the latest change committed so far: where a stream of every call that is
    /// given no cursor starts.
    pub async fn latest_change(&self) -> Result<i64, StoreError> {
        self.store.last_projection_change().await
    }

    /// Every change after `after`, of `call` or of all calls, then each one as it comes, until
    /// the receiver is dropped or the process stops (the channel then closes once the changes
    /// already buffered are taken).
    pub fn follow(self, after: i64, call: Option<CallKey>) -> mpsc::Receiver<LiveChange> {
        let (changes, receiver) = mpsc::channel(BUFFERED_EVENTS);
        tokio::spawn(follow_until_stopping(self, after, call, changes));
        receiver
    }
}

/// [`follow`] until the process stops. Dropping the sender then closes the channel once the
/// changes already buffered are taken.
async fn follow_until_stopping(
    live: LiveChanges,
    after: i64,
    call: Option<CallKey>,
    changes: mpsc::Sender<LiveChange>,
) {
    let stopping = live.stopping.clone();
    let stopped = async move {
        match stopping {
            Some(mut stopping) => {
                let _ = stopping.wait_for(|stop| *stop).await;
            }
            None => std::future::pending().await,
        }
    };
    // `follow` only reads, so it may stop at any await.
    tokio::select! {
        () = follow(live, after, call, changes) => {}
        () = stopped => {}
    }
}

/// Sends every change after `after` (of `call`, or of all) to `changes`, then waits for more,
/// until the client goes away.
async fn follow(
    mut live: LiveChanges,
    mut after: i64,
    call: Option<CallKey>,
    changes: mpsc::Sender<LiveChange>,
) {
    loop {
        let page = match live
            .store
            .projection_changes(after, call.as_ref(), PAGE)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "a live stream cannot read changes; retrying");
                Vec::new()
            }
        };
        let full = page.len() as i64 == PAGE;
        for change in page {
            after = change.change;
            let Some(live) = live_change(&change) else {
                continue;
            };
            if changes.send(live).await.is_err() {
                return;
            }
        }
        if full {
            continue;
        }
        let woken = async {
            // Without a projector in this process, only polling finds changes.
            if live.projected.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep(live.poll) => {}
            () = changes.closed() => return,
        }
    }
}

/// `change` as a stream shows it; none when its document does not parse (it cannot be shown,
/// and the error is logged).
fn live_change(change: &ProjectionChange) -> Option<LiveChange> {
    let call = CallView::stored(&change.projection)
        .inspect_err(|error| tracing::error!(%error, "a stored call document does not parse"))
        .ok()?;
    Some(LiveChange {
        change: change.change,
        call,
    })
}
