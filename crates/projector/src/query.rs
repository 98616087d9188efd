//! The read side over calls, shared by the HTTP API and the CLI so both validate and answer
//! alike: one call (now, or as of a payload time), one call's events in effective order,
//! filtered lists of calls with a stable cursor, the unlinked call events, and the counts
//! operators watch.
//!
//! Parameters arrive as text and are parsed once, at the edge, into typed values
//! ([`ListParams::parse`], [`parse_time`], `callfold_store::PageQuery`); the answers are the
//! typed views of [`crate::view`].
//!
//! Current state comes from the stored projections; a state `as_of` a past payload time and a
//! call's event history are folded or ordered from that call's own events in the log. Nothing
//! here writes. Everything that depends on arrival order is under `meta` or marked `late`.

use callfold_store::{
    BadParameter, CallKey, Content, EventTime, KeptPosition, KeptRecord, LoggedEvent, Page,
    PageParams, Store, StoreError,
};
use serde::Deserialize;

use crate::fold::{CallDocument, CallStatus, EffectiveKey, fold, fold_events, mark_late};
use crate::precedence::Precedence;
use crate::view::{
    CallMeta, CallView, EventsHistory, HistoryEvent, LogCounts, ProjectorCounts, StatsView,
    UnlinkedEvent,
};

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
    /// The stored projection of this call holds a document that does not parse.
    #[error("the stored document of call {0:?} does not parse")]
    UnreadableDocument(String),
    /// The store failed.
    #[error("the store is unavailable")]
    Store(#[from] StoreError),
}

impl From<BadParameter> for QueryError {
    fn from(BadParameter { name, problem }: BadParameter) -> Self {
        QueryError::BadParameter { name, problem }
    }
}

/// The filters and page of a list of calls as a user gives them, every field optional; see
/// [`ListParams::parse`].
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ListParams {
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

impl ListParams {
    /// The filter and the page these parameters ask for.
    pub fn parse(&self) -> Result<(CallFilter, PageParams<CallKey>), BadParameter> {
        let status = self
            .status
            .as_deref()
            .map(|text| {
                CallStatus::parse(text).ok_or_else(|| BadParameter {
                    name: "status",
                    problem: "must be ringing, initiated, answered or completed".to_owned(),
                })
            })
            .transpose()?;
        let filter = CallFilter {
            tag: self.tag.clone(),
            status,
            since: parse_time("since", self.since.as_deref())?,
            until: parse_time("until", self.until.as_deref())?,
        };
        let page = PageParams::parse(self.limit.as_deref(), self.after.as_deref())?;
        Ok((filter, page))
    }
}

/// Which calls a list holds: those matching every filter given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Only calls carrying this tag.
    pub tag: Option<String>,
    /// Only calls in this status.
    pub status: Option<CallStatus>,
    /// Only calls whose first event is at or after this time.
    pub since: Option<EventTime>,
    /// Only calls whose first event is before this time.
    pub until: Option<EventTime>,
}

impl CallFilter {
    fn matches(&self, document: &CallDocument) -> bool {
        let first = document.first_event_at;
        self.tag
            .as_ref()
            .is_none_or(|tag| document.tags.contains(tag))
            && self
                .status
                .is_none_or(|status| document.status == Some(status))
            && self
                .since
                .is_none_or(|since| first.is_some_and(|t| t >= since))
            && self
                .until
                .is_none_or(|until| first.is_some_and(|t| t < until))
    }
}

/// The RFC 3339 time of parameter `name`, as given by a user.
pub fn parse_time(
    name: &'static str,
    text: Option<&str>,
) -> Result<Option<EventTime>, BadParameter> {
    text.map(|text| {
        EventTime::parse_rfc3339(text).map_err(|error| BadParameter {
            name,
            problem: error.to_string(),
        })
    })
    .transpose()
}

/// Queries over calls.
#[derive(Clone, Debug)]
pub struct Calls {
    store: Store,
    precedence: Precedence,
}

impl Calls {
    /// Queries over `store`, ordering ties by `precedence`.
    pub fn new(store: Store, precedence: Precedence) -> Self {
        Self { store, precedence }
    }

    /// One call: its projection, or, with `as_of`, the fold of its events with a payload time
    /// at or before it.
    pub async fn show(
        &self,
        call_id: &str,
        as_of: Option<EventTime>,
    ) -> Result<CallView, QueryError> {
        let call_key = CallKey::new(call_id);
        let unknown = || QueryError::UnknownCall(call_id.to_owned());
        if let Some(as_of) = as_of {
            let logged = self.store.call_events(&call_key).await?;
            let events: Vec<_> = fold_events(&self.precedence, &logged)
                .map(|(_, event)| event)
                .filter(|event| event.key.event_time <= as_of)
                .collect();
            if events.is_empty() {
                return Err(unknown());
            }
            return Ok(CallView {
                document: fold(call_id, events),
                meta: CallMeta::AsOf { as_of },
            });
        }
        let projection = self
            .store
            .projection(&call_key)
            .await?
            .ok_or_else(unknown)?;
        CallView::stored(&projection).map_err(|error| {
            tracing::error!(%error, call_id, "a stored call document does not parse");
            QueryError::UnreadableDocument(call_id.to_owned())
        })
    }

    /// One call's events in effective order, each marked late when it arrived after an event
    /// of the call that is later in effective order.
    pub async fn events(&self, call_id: &str) -> Result<EventsHistory, QueryError> {
        let (history, _) = self.events_and_records(call_id).await?;
        Ok(history)
    }

    /// [`Calls::events`], with the call's records as the log keeps them (headers' values and
    /// raw body), in arrival (seq) order: one read of the log for pages that show both.
    pub async fn events_and_records(
        &self,
        call_id: &str,
    ) -> Result<(EventsHistory, Vec<LoggedEvent>), QueryError> {
        let logged = self.store.call_events(&CallKey::new(call_id)).await?;
        let mut events: Vec<(EffectiveKey, HistoryEvent)> =
            mark_late(fold_events(&self.precedence, &logged))
                .map(|(record, event, late)| {
                    let shown = HistoryEvent {
                        late,
                        received_at: record.received_at,
                        seq: record.seq,
                        timestamp: event.key.event_time,
                        topic: event.topic,
                        webhook_id: record.webhook_id.as_str().to_owned(),
                    };
                    (event.key, shown)
                })
                .collect();
        if events.is_empty() {
            return Err(QueryError::UnknownCall(call_id.to_owned()));
        }
        events.sort_by(|a, b| a.0.cmp(&b.0));
        let history = EventsHistory {
            call_id: call_id.to_owned(),
            events: events.into_iter().map(|(_, shown)| shown).collect(),
        };
        Ok((history, logged))
    }

    /// The database's counts for operators (see `StoreStats`), with the age of the
    /// longest-waiting call in seconds.
    pub async fn stats(&self) -> Result<StatsView, QueryError> {
        let stats = self.store.stats().await?;
        let lag_seconds = stats.lag_seconds();
        Ok(StatsView {
            log: LogCounts {
                events: stats.log_events,
                quarantined: stats.quarantined,
                unlinked: stats.unlinked,
            },
            projector: ProjectorCounts {
                calls_waiting: stats.calls_waiting,
                events_waiting: stats.events_waiting,
                lag_seconds,
                last_change: stats.last_projection_change,
                projections: stats.projections,
            },
        })
    }

    /// Call events that name no call the linking rules can find, after position `after` of
    /// their list, in the order they were committed, with how many there are; each gives its
    /// `position` (a cursor for `after`).
    pub async fn unlinked(
        &self,
        page: &PageParams<KeptPosition>,
    ) -> Result<Page<UnlinkedEvent>, QueryError> {
        let after = page.after.map_or(0, |KeptPosition(position)| position);
        let limit = page.limit.get() as i64;
        let (events, total) = self.store.unlinked_events(after, limit).await?;
        let events = events
            .into_iter()
            .map(|KeptRecord { position, record }| {
                let (topic, timestamp) = match &record.content {
                    Content::Usable {
                        topic, event_time, ..
                    } => (topic.as_str().to_owned(), Some(*event_time)),
                    Content::Quarantined { .. } => (String::new(), None),
                };
                UnlinkedEvent {
                    position,
                    received_at: record.received_at,
                    seq: record.seq,
                    timestamp,
                    topic,
                    webhook_id: record.webhook_id.as_str().to_owned(),
                }
            })
            .collect();
        Ok(Page::new(events, page.limit, Some(total)))
    }

    /// Calls matching `filter`, in call id order, after `page.after`.
    pub async fn list(
        &self,
        filter: &CallFilter,
        page: &PageParams<CallKey>,
    ) -> Result<Page<CallView>, QueryError> {
        let limit = page.limit.get();
        let mut after = page.after.clone();
        let mut calls = Vec::new();
        loop {
            let scanned = self
                .store
                .list_projections(after.as_ref(), SCAN_PAGE)
                .await?;
            let exhausted = (scanned.len() as i64) < SCAN_PAGE;
            for projection in &scanned {
                after = Some(projection.call_key.clone());
                let Ok(call) = CallView::stored(projection) else {
                    continue;
                };
                if filter.matches(&call.document) {
                    calls.push(call);
                    if calls.len() == limit {
                        return Ok(Page::new(calls, page.limit, None));
                    }
                }
            }
            if exhausted {
                return Ok(Page::new(calls, page.limit, None));
            }
        }
    }
}
