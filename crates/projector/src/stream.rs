//! Live updates: `GET /v1/stream` and `GET /v1/calls/{call_id}/stream` push each projection
//! change as server-sent events, in the order the changes were committed, and resume from a
//! cursor.
//!
//! Every event is one change: `id` is the change's number (see `callfold_store`'s projection
//! changes), `event` is `projection`, and `data` is the call as `GET /v1/calls/{call_id}` shows
//! it. A client resumes with `Last-Event-ID` (browsers send it by themselves on reconnecting)
//! or `?after=N`, and receives every call changed after change N at its latest state: a call
//! changed twice while the client was away arrives once, as it is now. Without a cursor,
//! `/v1/stream` starts with the next change, and a call's stream starts with the call as it is
//! now.
//!
//! A stream wakes when a projector of its own process commits, and polls the store meanwhile,
//! which is how it follows projectors in other processes. Streams end, their bodies finished
//! cleanly, when the process shuts down ([`LiveChanges::ending_on`]): an endless response
//! would otherwise hold the shutdown until its timeout. A client resumes from its last id on
//! another process.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use callfold_store::{CallKey, ProjectionChange, Store};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

use crate::query::QueryError;
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

/// The cursor of a stream, as given by a user.
#[derive(Debug, Default, Deserialize)]
pub struct StreamParams {
    /// Resume after this change.
    after: Option<String>,
}

/// The change to resume after: `?after=`, else `Last-Event-ID`, else none.
fn cursor(params: &StreamParams, headers: &HeaderMap) -> Result<Option<i64>, QueryError> {
    let given = params.after.as_deref().or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|value| value.to_str().ok())
    });
    given
        .map(|text| {
            text.trim().parse().map_err(|_| QueryError::BadParameter {
                name: "after",
                problem: "must be the id of an event of this stream".to_owned(),
            })
        })
        .transpose()
}

/// `GET /v1/stream`: every call's changes.
pub async fn all_calls(
    State(live): State<LiveChanges>,
    Query(params): Query<StreamParams>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, QueryError> {
    let after = match cursor(&params, &headers)? {
        Some(after) => after,
        None => live.store.last_projection_change().await?,
    };
    Ok(stream(live, after, None))
}

/// `GET /v1/calls/{call_id}/stream`: one call's changes, from its current state unless a
/// cursor is given. The call need not exist yet.
pub async fn one_call(
    State(live): State<LiveChanges>,
    Path(call_id): Path<String>,
    Query(params): Query<StreamParams>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, QueryError> {
    let after = cursor(&params, &headers)?.unwrap_or(0);
    Ok(stream(live, after, Some(CallKey::new(call_id))))
}

fn stream(
    live: LiveChanges,
    after: i64,
    call: Option<CallKey>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (events, receiver) = mpsc::channel(BUFFERED_EVENTS);
    tokio::spawn(follow_until_stopping(live, after, call, events));
    Sse::new(ReceiverStream::new(receiver)).keep_alive(KeepAlive::default())
}

/// [`follow`] until the process stops. Dropping the sender then ends the body once the events
/// already buffered are sent.
async fn follow_until_stopping(
    live: LiveChanges,
    after: i64,
    call: Option<CallKey>,
    events: mpsc::Sender<Result<Event, Infallible>>,
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
        () = follow(live, after, call, events) => {}
        () = stopped => {}
    }
}

/// Sends every change after `after` (of `call`, or of all) to `events`, then waits for more,
/// until the client goes away.
async fn follow(
    mut live: LiveChanges,
    mut after: i64,
    call: Option<CallKey>,
    events: mpsc::Sender<Result<Event, Infallible>>,
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
            let Some(event) = event_of(&change) else {
                continue;
            };
            if events.send(Ok(event)).await.is_err() {
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
            () = events.closed() => return,
        }
    }
}

/// The event of `change`; none when its document does not parse (it cannot be shown).
fn event_of(change: &ProjectionChange) -> Option<Event> {
    let data = CallView::stored(&change.projection)
        .and_then(|call| serde_json::to_string(&call))
        .inspect_err(|error| tracing::error!(%error, "a stored call document does not parse"))
        .ok()?;
    let event = Event::default()
        .id(change.change.to_string())
        .event("projection")
        .data(data);
    Some(event)
}
