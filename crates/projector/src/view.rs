//! What the read side over calls answers, as typed views the HTTP API and the CLI serialize
//! and the status page reads: a call with its `meta` ([`CallView`]), a call's events in
//! effective order ([`EventsHistory`]), the unlinked call events ([`UnlinkedEvent`]) and the
//! operators' counts ([`StatsView`]). Lists of them are `callfold_store::Page`s.
//!
//! The JSON of these views is a public contract (see the README): every object's keys are in
//! alphabetical order, the order they have always had, which is why each struct declares its
//! fields alphabetically.

use callfold_store::{CallKey, EventTime, KeptPosition, Listed, StoredProjection};
use serde::ser::{Error as _, Serialize, Serializer};
use serde_json::Value;

use crate::fold::CallDocument;

/// What a shown call depends on besides its events.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum CallMeta {
    /// The call as projected.
    Stored {
        /// Highest log seq folded into it.
        last_seq: i64,
        /// Its events that arrived after a later one.
        late_events: i64,
        /// When the projector last changed it.
        updated_at: EventTime,
    },
    /// The call folded from its events with a payload time at or before `as_of`.
    AsOf {
        /// The time asked for.
        as_of: EventTime,
    },
}

/// One call as the API shows it: its document, plus `meta`.
#[derive(Clone, Debug, PartialEq)]
pub struct CallView {
    /// The call's state.
    pub document: CallDocument,
    /// Where that state comes from.
    pub meta: CallMeta,
}

impl CallView {
    /// The view of a stored projection; an error when its document does not parse.
    pub fn stored(projection: &StoredProjection) -> Result<Self, serde_json::Error> {
        Ok(Self {
            document: serde_json::from_str(&projection.document)?,
            meta: CallMeta::Stored {
                last_seq: projection.last_seq,
                late_events: projection.late_events,
                updated_at: projection.updated_at,
            },
        })
    }
}

/// The document's keys with `meta` among them, every object's keys sorted: a JSON map sorts
/// its keys, and the document nests objects (`completed`) whose fields are not declared in
/// alphabetical order.
impl Serialize for CallView {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Value::Object(mut fields) =
            serde_json::to_value(&self.document).map_err(S::Error::custom)?
        else {
            return Err(S::Error::custom("a call document is a JSON object"));
        };
        let meta = serde_json::to_value(&self.meta).map_err(S::Error::custom)?;
        fields.insert("meta".to_owned(), meta);
        fields.serialize(serializer)
    }
}

impl Listed for CallView {
    const ITEMS: &'static str = "calls";
    type Cursor = CallKey;

    fn cursor(&self) -> CallKey {
        CallKey::new(self.document.call_id.as_str())
    }
}

/// One call's events in effective order.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EventsHistory {
    /// The call.
    pub call_id: String,
    /// Its events, in effective order.
    pub events: Vec<HistoryEvent>,
}

/// One event of a call's history.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct HistoryEvent {
    /// Whether it arrived after an event of the call that is later in effective order.
    pub late: bool,
    /// When the receiver got it.
    pub received_at: EventTime,
    /// Its place in the log.
    pub seq: i64,
    /// Its payload time.
    pub timestamp: EventTime,
    /// Its topic.
    pub topic: String,
    /// Its webhook-id.
    pub webhook_id: String,
}

/// A call event that names no call the linking rules can find.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct UnlinkedEvent {
    /// Its place in the list of unlinked events: a cursor for `after`.
    pub position: i64,
    /// When the receiver got it.
    pub received_at: EventTime,
    /// Its place in the log.
    pub seq: i64,
    /// Its payload time.
    pub timestamp: Option<EventTime>,
    /// Its topic.
    pub topic: String,
    /// Its webhook-id.
    pub webhook_id: String,
}

impl Listed for UnlinkedEvent {
    const ITEMS: &'static str = "events";
    type Cursor = KeptPosition;

    fn cursor(&self) -> KeptPosition {
        KeptPosition(self.position)
    }
}

/// The database's counts for operators (see `callfold_store::StoreStats`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StatsView {
    /// What the log holds.
    pub log: LogCounts,
    /// How far the projections are behind the log.
    pub projector: ProjectorCounts,
}

/// What the log holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LogCounts {
    /// Records in the log.
    pub events: i64,
    /// Records kept raw because their authentic body could not be used.
    pub quarantined: i64,
    /// Call events that name no call the linking rules can find.
    pub unlinked: i64,
}

/// How far the projections are behind the log.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ProjectorCounts {
    /// Calls whose projection is behind the log.
    pub calls_waiting: i64,
    /// Logged events of those calls that their projections do not count yet.
    pub events_waiting: i64,
    /// How long the longest-waiting call has waited, in seconds (0 when none waits).
    pub lag_seconds: f64,
    /// The number of the latest projection change.
    pub last_change: i64,
    /// Calls with a projection.
    pub projections: i64,
}
