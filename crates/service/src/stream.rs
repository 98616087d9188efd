//! The live streams over HTTP: `GET /v1/stream` and `GET /v1/calls/{call_id}/stream` send
//! `callfold_projector`'s projection changes as server-sent events.
//!
//! Every event is one change: `id` is the change's number, `event` is `projection`, and `data`
//! is the call as `GET /v1/calls/{call_id}` shows it. A client resumes with `Last-Event-ID`
//! (browsers send it by themselves on reconnecting) or `?after=N`. Without a cursor,
//! `/v1/stream` starts with the next change, and a call's stream starts with the call as it is
//! now. A stream's body ends cleanly when the process shuts down.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use callfold_projector::{LiveChange, LiveChanges, QueryError};
use callfold_store::CallKey;
use serde::Deserialize;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};

use crate::query_api::ApiError;

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
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = match cursor(&params, &headers)? {
        Some(after) => after,
        None => live.latest_change().await.map_err(QueryError::from)?,
    };
    Ok(events(live, after, None))
}

/// `GET /v1/calls/{call_id}/stream`: one call's changes, from its current state unless a
/// cursor is given. The call need not exist yet.
pub async fn one_call(
    State(live): State<LiveChanges>,
    Path(call_id): Path<String>,
    Query(params): Query<StreamParams>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = cursor(&params, &headers)?.unwrap_or(0);
    Ok(events(live, after, Some(CallKey::new(call_id))))
}

fn events(
    live: LiveChanges,
    after: i64,
    call: Option<CallKey>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = ReceiverStream::new(live.follow(after, call));
    Sse::new(changes.filter_map(|change| event_of(&change).map(Ok)))
        .keep_alive(KeepAlive::default())
}

/// The event of `change`; none if its call cannot be written as JSON (logged).
fn event_of(change: &LiveChange) -> Option<Event> {
    let data = serde_json::to_string(&change.call)
        .inspect_err(|error| tracing::error!(%error, "a call cannot be written as JSON"))
        .ok()?;
    let event = Event::default()
        .id(change.change.to_string())
        .event("projection")
        .data(data);
    Some(event)
}
