//! The read side over calls, shared by the HTTP API and the CLI so both validate and answer
//! alike: one call (now, or as of a payload time), one call's events in effective order,
//! filtered lists of calls with a stable cursor, the unlinked call events, and the counts
//! operators watch.
//!
//! Current state comes from the stored projections; a state `as_of` a past payload time and a
//! call's event history are folded or ordered from that call's own events in the log. Nothing
//! here writes. Everything that depends on arrival order is under `meta` or marked `late`.

use callfold_store::{
    CallKey, Content, EventTime, KeptRecord, Store, StoreError, StoredProjection,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::fold::{
    CallDocument, CallStatus, EffectiveKey, FoldEvent, fold, fold_events, mark_late,
};
use crate::precedence::Precedence;

/// Calls listed when no `limit` is given, and the most one page may hold.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Projections read per store round trip while filtering a list.
const SCAN_PAGE: i64 = 500;

/// Why a query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A parameter does not parse; the message names it.
    #[error("bad parameter {name}: {problem}")]
    BadParameter {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// No event of this call is known (at or before `as_of`, when given).
    #[error("no call with id {0:?}")]
    UnknownCall(String),
    /// The store failed.
    #[error("the store is unavailable")]
    Store(#[from] StoreError),
}

/// Filters and cursor of a list of calls; every field optional, all as given by a user.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ListFilter {
    /// Only calls carrying this tag.
    pub tag: Option<String>,
    /// Only calls in this status (`ringing`, `initiated`, `answered`, `completed`).
    pub status: Option<String>,
    /// Only calls whose first event is at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only calls whose first event is before this RFC 3339 time.
    pub until: Option<String>,
    /// Most calls in the answer (1 to 1000, default 100).
    pub limit: Option<String>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

/// A page of unlinked events, as given by a user.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct UnlinkedPage {
    /// Most events in the answer (1 to 1000, default 100).
    pub limit: Option<String>,
    /// The `next` position of the previous page (or the `position` of an event seen).
    pub after: Option<String>,
}

/// Queries over calls.
#[derive(Clone, Debug)]
pub struct Calls {
    store: Store,
    precedence: Precedence,
}

fn parse_limit(text: Option<&str>) -> Result<usize, QueryError> {
    let Some(text) = text else {
        return Ok(DEFAULT_LIMIT);
    };
    text.parse()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or(QueryError::BadParameter {
            name: "limit",
            problem: format!("must be a whole number from 1 to {MAX_LIMIT}"),
        })
}

fn parse_time(name: &'static str, text: Option<&str>) -> Result<Option<EventTime>, QueryError> {
    text.map(|text| {
        EventTime::parse_rfc3339(text).map_err(|error| QueryError::BadParameter {
            name,
            problem: error.to_string(),
        })
    })
    .transpose()
}

/// A stored projection as the API shows it: the document, plus `meta`.
pub(crate) fn shown(projection: &StoredProjection, document: Value) -> Value {
    with_meta(
        document,
        json!({
            "last_seq": projection.last_seq,
            "late_events": projection.late_events,
            "updated_at": projection.updated_at,
        }),
    )
}

fn with_meta(document: Value, meta: Value) -> Value {
    match document {
        Value::Object(mut fields) => {
            fields.insert("meta".to_owned(), meta);
            Value::Object(fields)
        }
        other => other,
    }
}

impl Calls {
    /// Queries over `store`, ordering ties by `precedence`.
    pub fn new(store: Store, precedence: Precedence) -> Self {
        Self { store, precedence }
    }

    /// One call: its projection, or, with `as_of` (RFC 3339), the fold of its events with a
    /// payload time at or before it.
    pub async fn show(&self, call_id: &str, as_of: Option<&str>) -> Result<Value, QueryError> {
        let call_key = CallKey::new(call_id);
        let unknown = || QueryError::UnknownCall(call_id.to_owned());
        if let Some(as_of) = parse_time("as_of", as_of)? {
            let logged = self.store.call_events(&call_key).await?;
            let events: Vec<FoldEvent> = fold_events(&self.precedence, &logged)
                .map(|(_, event)| event)
                .filter(|event| event.key.event_time <= as_of)
                .collect();
            if events.is_empty() {
                return Err(unknown());
            }
            let document = serde_json::to_value(fold(call_id, events)).unwrap_or(Value::Null);
            return Ok(with_meta(document, json!({ "as_of": as_of })));
        }
        let projection = self
            .store
            .projection(&call_key)
            .await?
            .ok_or_else(unknown)?;
        let document = serde_json::from_str(&projection.document).unwrap_or(Value::Null);
        Ok(shown(&projection, document))
    }

    /// One call's events in effective order, each marked late when it arrived after an event
    /// of the call that is later in effective order.
    pub async fn events(&self, call_id: &str) -> Result<Value, QueryError> {
        let logged = self.store.call_events(&CallKey::new(call_id)).await?;
        let mut events: Vec<(EffectiveKey, Value)> =
            mark_late(fold_events(&self.precedence, &logged))
                .map(|(record, event, late)| {
                    let shown = json!({
                        "seq": record.seq,
                        "webhook_id": record.webhook_id.as_str(),
                        "topic": event.topic,
                        "timestamp": event.key.event_time,
                        "received_at": record.received_at,
                        "late": late,
                    });
                    (event.key, shown)
                })
                .collect();
        if events.is_empty() {
            return Err(QueryError::UnknownCall(call_id.to_owned()));
        }
        events.sort_by(|a, b| a.0.cmp(&b.0));
        let events: Vec<Value> = events.into_iter().map(|(_, shown)| shown).collect();
        Ok(json!({ "call_id": call_id, "events": events }))
    }

    /// The database's counts for operators (see `StoreStats`), with the age of the
    /// longest-waiting call in seconds: `{"log": {...}, "projector": {...}}`.
    pub async fn stats(&self) -> Result<Value, QueryError> {
        let stats = self.store.stats().await?;
        let lag_seconds = stats.lag_seconds();
        Ok(json!({
            "log": {
                "events": stats.log_events,
                "quarantined": stats.quarantined,
                "unlinked": stats.unlinked,
            },
            "projector": {
                "calls_waiting": stats.calls_waiting,
                "events_waiting": stats.events_waiting,
                "lag_seconds": lag_seconds,
                "projections": stats.projections,
                "last_change": stats.last_projection_change,
            },
        }))
    }

    /// Call events that name no call the linking rules can find, after position `after` of
    /// their list, in the order they were committed: `{"events": [...], "total": N, "next":
    /// position | null}`; each gives its `position` (a cursor for `after`).
    pub async fn unlinked(&self, page: &UnlinkedPage) -> Result<Value, QueryError> {
        let limit = parse_limit(page.limit.as_deref())?;
        let after = match page.after.as_deref() {
            None => 0,
            Some(text) => text.parse().map_err(|_| QueryError::BadParameter {
                name: "after",
                problem: "must be a position given as next".to_owned(),
            })?,
        };
        let (events, total) = self.store.unlinked_events(after, limit as i64).await?;
        let next = (events.len() == limit)
            .then(|| events.last().map(|kept| kept.position))
            .flatten();
        let events: Vec<Value> = events
            .iter()
            .map(
                |KeptRecord {
                     position,
                     record: event,
                 }| {
                    let (topic, timestamp) = match &event.content {
                        Content::Usable {
                            topic, event_time, ..
                        } => (topic.as_str(), Some(*event_time)),
                        Content::Quarantined { .. } => ("", None),
                    };
                    json!({
                        "position": position,
                        "seq": event.seq,
                        "webhook_id": event.webhook_id.as_str(),
                        "topic": topic,
                        "timestamp": timestamp,
                        "received_at": event.received_at,
                    })
                },
            )
            .collect();
        Ok(json!({ "events": events, "total": total, "next": next }))
    }

    /// Calls matching `filter`, in call id order: `{"calls": [...], "next": cursor | null}`.
    pub async fn list(&self, filter: &ListFilter) -> Result<Value, QueryError> {
        let limit = parse_limit(filter.limit.as_deref())?;
        let status = filter
            .status
            .as_deref()
            .map(|text| {
                serde_json::from_value::<CallStatus>(json!(text)).map_err(|_| {
                    QueryError::BadParameter {
                        name: "status",
                        problem: "must be ringing, initiated, answered or completed".to_owned(),
                    }
                })
            })
            .transpose()?;
        let since = parse_time("since", filter.since.as_deref())?;
        let until = parse_time("until", filter.until.as_deref())?;
        let matches = |document: &CallDocument| {
            filter
                .tag
                .as_ref()
                .is_none_or(|tag| document.tags.contains(tag))
                && status.is_none_or(|status| document.status == Some(status))
                && since.is_none_or(|since| document.first_event_at.is_some_and(|t| t >= since))
                && until.is_none_or(|until| document.first_event_at.is_some_and(|t| t < until))
        };

        let mut after = filter.after.clone().map(CallKey::new);
        let mut calls = Vec::new();
        loop {
            let page = self
                .store
                .list_projections(after.as_ref(), SCAN_PAGE)
                .await?;
            let exhausted = (page.len() as i64) < SCAN_PAGE;
            for projection in &page {
                after = Some(projection.call_key.clone());
                let Ok(document) = serde_json::from_str::<CallDocument>(&projection.document)
                else {
                    continue;
                };
                if matches(&document) {
                    let value = serde_json::to_value(&document).unwrap_or(Value::Null);
                    calls.push(shown(projection, value));
                    if calls.len() == limit {
                        let next = after.as_ref().map(CallKey::as_str);
                        return Ok(json!({ "calls": calls, "next": next }));
                    }
                }
            }
            if exhausted {
                return Ok(json!({ "calls": calls, "next": null }));
            }
        }
    }
}
