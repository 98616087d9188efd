//! The fold: a call's document as a pure function of the set of its events, applied in
//! effective order = (payload timestamp, topic precedence rank, webhook-id).
//!
//! [`fold`] sorts a call's events into effective order and applies each, with
//! [`CallDocument::apply`], to a new document. Nothing applies an event to a stored document:
//! the projector folds a call from every one of its logged events each time it folds it (see
//! `worker`), and a query `as_of` a payload time folds the call's events up to it. So the
//! document does not depend on the order events arrived in, and a late event costs what an
//! on-time one does. [`mark_late`] tells which events arrived after one that is later in
//! effective order, for the `late` marks and counts. [`EventData`] is what the fold reads of an
//! event's body: the fields [`CallDocument::apply`] uses, parsed without building the rest.

use std::collections::BTreeSet;
use std::marker::PhantomData;

use callfold_store::{CallLink, Content, EventTime, LoggedEvent};
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::precedence::Precedence;

/// Where an event stands in its call's effective order. Unique per event (webhook-ids are).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EffectiveKey {
    /// The payload `timestamp`.
    pub event_time: EventTime,
    /// The topic's precedence rank, for equal timestamps.
    pub rank: u32,
    /// The webhook-id, for equal timestamps and ranks.
    pub webhook_id: String,
}

/// One event of a call, as the fold needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldEvent {
    /// Its place in effective order.
    pub key: EffectiveKey,
    /// The envelope topic.
    pub topic: String,
    /// What the fold reads of the envelope's `data` object.
    pub data: EventData,
}

impl FoldEvent {
    /// Builds a fold event from envelope fields; `precedence` gives the rank of `topic`.
    pub fn new(
        precedence: &Precedence,
        webhook_id: &str,
        topic: &str,
        event_time: EventTime,
        data: EventData,
    ) -> Self {
        Self {
            key: EffectiveKey {
                event_time,
                rank: precedence.rank(topic),
                webhook_id: webhook_id.to_owned(),
            },
            topic: topic.to_owned(),
            data,
        }
    }

    /// The fold event of a logged record of a call; `None` for quarantined records and records
    /// of no call.
    pub fn from_logged(precedence: &Precedence, event: &LoggedEvent) -> Option<Self> {
        let Content::Usable {
            topic,
            event_time,
            call: CallLink::Linked(_),
        } = &event.content
        else {
            return None;
        };
        let data = EventData::of_envelope(&event.body);
        let webhook_id = event.webhook_id.as_str();
        Some(Self::new(
            precedence,
            webhook_id,
            topic.as_str(),
            *event_time,
            data,
        ))
    }
}

/// The fields of an event's `data` object that [`CallDocument::apply`] reads, each `None` when
/// absent or `null`, and as the last of them says when the object names one twice (as a parse
/// into a [`Value`] would keep it). Every other field is skipped unbuilt, and data that is not an
/// object holds none of them.
///
/// A skipped value is checked only for its JSON structure: a string in it holding a lone
/// surrogate escape (`"\ud800"`), which a whole parse refuses, is skipped like any other. The
/// fold never meets such a body: a body is logged as usable only once it parsed whole when it
/// was received, so on every body the fold reads, this reading and a whole parse agree.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventData {
    from_number: Option<Value>,
    to_number: Option<Value>,
    started_at: Option<Value>,
    /// `type`: `INBOUND` or `OUTBOUND` in `call.completed`.
    kind: Option<Value>,
    to: Option<Value>,
    start_date: Option<Value>,
    summary: Option<Value>,
    result: Option<Value>,
    recording_url: Option<Value>,
    length: Option<Value>,
    length_in_minutes: Option<Value>,
    transcriptions: Option<Value>,
    user_email: Option<Value>,
    tags: Option<Value>,
    tag: Option<Value>,
    person: Option<Value>,
    company: Option<Value>,
    deals: Option<Value>,
}

/// The name of a field of an event's `data` object, as [`EventData`] reads it.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum DataField {
    FromNumber,
    ToNumber,
    StartedAt,
    #[serde(rename = "type")]
    Kind,
    To,
    StartDate,
    Summary,
    Result,
    RecordingUrl,
    Length,
    LengthInMinutes,
    Transcriptions,
    UserEmail,
    Tags,
    Tag,
    Person,
    Company,
    Deals,
    #[serde(other)]
    Unread,
}

/// The name of a field of an envelope, as [`EventData::of_envelope`] reads it.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum EnvelopeField {
    Data,
    #[serde(other)]
    Unread,
}

impl EventData {
    /// What the fold reads of the `data` object of the envelope `body`: nothing when the body
    /// is not a JSON object or has no `data` object.
    pub fn of_envelope(body: &[u8]) -> Self {
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let envelope: Result<Envelope, _> = deserializer
            .deserialize_any(FieldsVisitor(PhantomData))
            .and_then(|envelope| deserializer.end().map(|()| envelope));
        envelope.map(|Envelope(data)| data).unwrap_or_default()
    }

    fn slot(&mut self, field: DataField) -> Option<&mut Option<Value>> {
        Some(match field {
            DataField::FromNumber => &mut self.from_number,
            DataField::ToNumber => &mut self.to_number,
            DataField::StartedAt => &mut self.started_at,
            DataField::Kind => &mut self.kind,
            DataField::To => &mut self.to,
            DataField::StartDate => &mut self.start_date,
            DataField::Summary => &mut self.summary,
            DataField::Result => &mut self.result,
            DataField::RecordingUrl => &mut self.recording_url,
            DataField::Length => &mut self.length,
            DataField::LengthInMinutes => &mut self.length_in_minutes,
            DataField::Transcriptions => &mut self.transcriptions,
            DataField::UserEmail => &mut self.user_email,
            DataField::Tags => &mut self.tags,
            DataField::Tag => &mut self.tag,
            DataField::Person => &mut self.person,
            DataField::Company => &mut self.company,
            DataField::Deals => &mut self.deals,
            DataField::Unread => return None,
        })
    }
}

/// A value read from the fields of a JSON object, as the last of each field names it; the
/// default when the JSON is not an object.
trait ReadFields: Default {
    /// What the value's fields say: `self` updated with the remaining fields of `map`.
    fn read_fields<'de, A: MapAccess<'de>>(&mut self, map: A) -> Result<(), A::Error>;
}

/// The envelope around an event's data, of which the fold reads only `data`.
#[derive(Default)]
struct Envelope(EventData);

impl ReadFields for Envelope {
    fn read_fields<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(field) = map.next_key::<EnvelopeField>()? {
            match field {
                EnvelopeField::Data => self.0 = map.next_value()?,
                EnvelopeField::Unread => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok(())
    }
}

impl ReadFields for EventData {
    fn read_fields<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(field) = map.next_key::<DataField>()? {
            match self.slot(field) {
                Some(slot) => *slot = map.next_value()?,
                None => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok(())
    }
}

/// Reads a [`ReadFields`] value from any JSON value.
struct FieldsVisitor<T>(PhantomData<T>);

impl<'de, T: ReadFields> Visitor<'de> for FieldsVisitor<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        let mut read = T::default();
        read.read_fields(map)?;
        Ok(read)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<T, A::Error> {
        while items.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::default())
    }

    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_str<E>(self, _: &str) -> Result<T, E> {
        Ok(T::default())
    }
}

impl<'de> Deserialize<'de> for EventData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldsVisitor(PhantomData))
    }
}

/// The topics whose events change a call's document (see [`CallDocument::apply`]); an event of
/// any other topic only counts.
pub const CALL_TOPICS: &[&str] = &[
    "call.received",
    "call.triggered",
    "call.answered",
    "call.completed",
    "summary.updated",
    "tag.added",
    "tag.removed",
];

/// How far a call has got. Ordered: a later stage is more advanced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Inbound, ringing (`call.received`).
    Ringing,
    /// Outbound, started (`call.triggered`).
    Initiated,
    /// The remote side answered (`call.answered`).
    Answered,
    /// Over (`call.completed`).
    Completed,
}

impl CallStatus {
    /// Every status, from the least advanced.
    pub const ALL: [CallStatus; 4] = [
        CallStatus::Ringing,
        CallStatus::Initiated,
        CallStatus::Answered,
        CallStatus::Completed,
    ];

    /// The status as documents and filters spell it: `ringing`, `initiated`, `answered`,
    /// `completed`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Ringing => "ringing",
            CallStatus::Initiated => "initiated",
            CallStatus::Answered => "answered",
            CallStatus::Completed => "completed",
        }
    }

    /// The status spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

/// What `call.completed` tells about the finished call. Open values are kept as sent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// `ANSWERED`, `VOICEMAIL`, ... (open enum).
    pub result: Option<Value>,
    /// Where the recording is.
    pub recording_url: Option<Value>,
    /// Duration as Allo sends it (`length`, else `length_in_minutes`).
    pub duration: Option<Value>,
    /// The `transcriptions` array.
    pub transcript: Option<Value>,
    /// The Allo user who handled the call (`user_email`).
    pub user: Option<Value>,
}

/// The state of one call: everything here depends only on the set of its events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallDocument {
    /// The call's id.
    pub call_id: String,
    /// The most advanced stage seen.
    pub status: Option<CallStatus>,
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
    /// The calling number.
    pub from_number: Option<Value>,
    /// The called number.
    pub to_number: Option<Value>,
    /// When the call started, as sent.
    pub started_at: Option<Value>,
    /// The latest summary (`call.completed` or `summary.updated`).
    pub summary: Option<Value>,
    /// The finished call's data, once `call.completed` is seen.
    pub completed: Option<Completion>,
    /// Contact context (`person`, `company`, `deals`) when an event carried it.
    pub contact: Option<Map<String, Value>>,
    /// The call's tags, sorted.
    pub tags: BTreeSet<String>,
    /// Distinct events folded.
    pub event_count: u64,
    /// Earliest payload time folded.
    pub first_event_at: Option<EventTime>,
    /// Latest payload time folded.
    pub last_event_at: Option<EventTime>,
}

/// The tag a tag event names: `data.tag` as a string, else `data.tag.key`, else `data.tag.name`.
fn tag_name(tag: &Value) -> Option<String> {
    match tag {
        Value::String(name) => Some(name.clone()),
        Value::Object(object) => ["key", "name"]
            .iter()
            .find_map(|k| object.get(*k)?.as_str().map(str::to_owned)),
        _ => None,
    }
}

impl CallDocument {
    /// The document of a call before any event.
    pub fn new(call_id: &str) -> Self {
        Self {
            call_id: call_id.to_owned(),
            status: None,
            direction: None,
            from_number: None,
            to_number: None,
            started_at: None,
            summary: None,
            completed: None,
            contact: None,
            tags: BTreeSet::new(),
            event_count: 0,
            first_event_at: None,
            last_event_at: None,
        }
    }

    /// Folds one more event in. Correct only when `event` is later, in effective order, than
    /// every event already folded; callers re-fold from scratch otherwise.
    pub fn apply(&mut self, event: &FoldEvent) {
        let data = &event.data;
        let set = |slot: &mut Option<Value>, value: &Option<Value>| {
            if value.is_some() {
                slot.clone_from(value);
            }
        };
        match event.topic.as_str() {
            "call.received" | "call.triggered" => {
                let inbound = event.topic == "call.received";
                self.advance(if inbound {
                    CallStatus::Ringing
                } else {
                    CallStatus::Initiated
                });
                self.direction = Some(if inbound { "inbound" } else { "outbound" }.to_owned());
                set(&mut self.from_number, &data.from_number);
                set(&mut self.to_number, &data.to_number);
                set(&mut self.started_at, &data.started_at);
                self.absorb_contact(data);
            }
            "call.answered" => self.advance(CallStatus::Answered),
            "call.completed" => {
                self.advance(CallStatus::Completed);
                if let Some(kind) = data.kind.as_ref().and_then(Value::as_str) {
                    self.direction = Some(kind.to_ascii_lowercase());
                }
                set(&mut self.from_number, &data.from_number);
                set(&mut self.to_number, &data.to);
                set(&mut self.started_at, &data.start_date);
                set(&mut self.summary, &data.summary);
                self.completed = Some(Completion {
                    result: data.result.clone(),
                    recording_url: data.recording_url.clone(),
                    duration: data
                        .length
                        .clone()
                        .or_else(|| data.length_in_minutes.clone()),
                    transcript: data.transcriptions.clone(),
                    user: data.user_email.clone(),
                });
                if let Some(Value::Array(tags)) = &data.tags {
                    self.tags = tags.iter().filter_map(tag_name).collect();
                }
                self.absorb_contact(data);
            }
            "summary.updated" => set(&mut self.summary, &data.summary),
            "tag.added" => {
                if let Some(tag) = data.tag.as_ref().and_then(tag_name) {
                    self.tags.insert(tag);
                }
            }
            "tag.removed" => {
                if let Some(tag) = data.tag.as_ref().and_then(tag_name) {
                    self.tags.remove(&tag);
                }
            }
            _ => {}
        }
        self.event_count += 1;
        let at = event.key.event_time;
        self.first_event_at = Some(self.first_event_at.map_or(at, |first| first.min(at)));
        self.last_event_at = Some(self.last_event_at.map_or(at, |last| last.max(at)));
    }

    fn advance(&mut self, status: CallStatus) {
        self.status = Some(self.status.map_or(status, |current| current.max(status)));
    }

    fn absorb_contact(&mut self, data: &EventData) {
        let contact = [
            ("person", &data.person),
            ("company", &data.company),
            ("deals", &data.deals),
        ];
        for (key, value) in contact {
            if let Some(value) = value {
                self.contact
                    .get_or_insert_with(Map::new)
                    .insert(key.to_owned(), value.clone());
            }
        }
    }
}

/// The fold events of one call's logged records, each beside its record (records of no call
/// are skipped).
pub fn fold_events<'a>(
    precedence: &'a Precedence,
    logged: &'a [LoggedEvent],
) -> impl Iterator<Item = (&'a LoggedEvent, FoldEvent)> + 'a {
    logged
        .iter()
        .filter_map(|record| FoldEvent::from_logged(precedence, record).map(|e| (record, e)))
}

/// Marks each of one call's events, given in arrival (seq) order, as late when an event that
/// arrived before it is later in effective order.
pub fn mark_late<T>(
    arrivals: impl IntoIterator<Item = (T, FoldEvent)>,
) -> impl Iterator<Item = (T, FoldEvent, bool)> {
    let mut latest: Option<EffectiveKey> = None;
    arrivals.into_iter().map(move |(with, event)| {
        let late = latest.as_ref().is_some_and(|latest| event.key < *latest);
        if !late {
            latest = Some(event.key.clone());
        }
        (with, event, late)
    })
}

/// Folds `events` (any order, no two with the same webhook-id) into the call's document.
pub fn fold(call_id: &str, mut events: Vec<FoldEvent>) -> CallDocument {
    events.sort_by(|a, b| a.key.cmp(&b.key));
    let mut document = CallDocument::new(call_id);
    for event in &events {
        document.apply(event);
    }
    document
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_status_is_spelled_as_its_documents_spell_it() {
        for status in CallStatus::ALL {
            let serialized = serde_json::to_value(status).expect("serializes");
            assert_eq!(serialized, json!(status.as_str()));
            assert_eq!(CallStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(CallStatus::parse("Ringing"), None);
    }

    /// The call topics, and one the fold only counts.
    fn topic(index: usize) -> &'static str {
        CALL_TOPICS.get(index).copied().unwrap_or("sms.received")
    }
    const TAGS: &[&str] = &["sales", "support", "urgent"];

    fn event(index: usize, topic: &str, second: i64, tag: &str, snapshot: bool) -> FoldEvent {
        let data = match topic {
            "call.completed" if snapshot => json!({"id": "cll_1", "type": "INBOUND",
                "result": "ANSWERED", "to": "+331", "summary": format!("s{index}"), "tags": [tag]}),
            "call.completed" => json!({"id": "cll_1", "type": "OUTBOUND", "result": "VOICEMAIL"}),
            "tag.added" | "tag.removed" => json!({"call_id": "cll_1", "tag": tag}),
            "summary.updated" => json!({"call_id": "cll_1", "summary": format!("s{index}")}),
            _ => json!({"from_number": format!("+33{index}"), "to_number": "+331",
                "person": {"id": format!("con_{index}")}}),
        };
        let at = EventTime::from_unix_micros(1_770_000_000_000_000 + second * 1_000_000);
        FoldEvent::new(
            &Precedence::default(),
            &format!("msg_{index:03}"),
            topic,
            at,
            serde_json::from_value(data).expect("any JSON is event data"),
        )
    }

    fn history() -> impl Strategy<Value = Vec<FoldEvent>> {
        // Few distinct seconds, so equal timestamps are common.
        prop::collection::vec(
            (0..=CALL_TOPICS.len(), 0..4i64, 0..TAGS.len(), any::<bool>()),
            1..30,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (t, second, tag, snap))| event(i, topic(t), second, TAGS[tag], snap))
                .collect()
        })
    }

    fn json_of(document: &CallDocument) -> String {
        serde_json::to_string(document).expect("documents serialize")
    }

    /// An incremental fold: apply on-time events, re-fold the call on a late one, and ignore a
    /// webhook-id already folded (the log never holds one twice). The projector folds from
    /// scratch; this checks that [`CallDocument::apply`] is a step of the fold, so that a
    /// document folded so far is the fold of the events seen so far.
    fn incremental(arrivals: &[FoldEvent]) -> CallDocument {
        let mut seen: Vec<FoldEvent> = Vec::new();
        let mut document = CallDocument::new("cll_1");
        for event in arrivals {
            if seen
                .iter()
                .any(|e| e.key.webhook_id == event.key.webhook_id)
            {
                continue;
            }
            let on_time = seen.iter().all(|e| e.key < event.key);
            seen.push(event.clone());
            if on_time {
                document.apply(event);
            } else {
                document = fold("cll_1", seen.clone());
            }
        }
        document
    }

    proptest! {
        #[test]
        fn any_arrival_order_gives_a_byte_identical_document(
            (events, shuffled) in history().prop_flat_map(|events| {
                let shuffled = Just(events.clone()).prop_shuffle();
                (Just(events), shuffled)
            })
        ) {
            prop_assert_eq!(json_of(&fold("cll_1", events)), json_of(&fold("cll_1", shuffled)));
        }

        #[test]
        fn incremental_folding_with_duplicates_equals_a_fold_from_scratch(
            (events, arrivals) in history().prop_flat_map(|events| {
                let len = events.len();
                let repeats = prop::collection::vec(0..len, 0..len);
                (Just(events), repeats).prop_flat_map(|(events, repeats)| {
                    let mut arrivals = events.clone();
                    arrivals.extend(repeats.into_iter().map(|i| events[i].clone()));
                    (Just(events), Just(arrivals).prop_shuffle())
                })
            })
        ) {
            let expected = fold("cll_1", events);
            prop_assert_eq!(json_of(&incremental(&arrivals)), json_of(&expected));
        }
    }

    /// What the fold read of `body` before [`EventData`]: the body parsed whole into a
    /// [`Value`], its `data` taken, `null` when either is missing.
    fn data_of_a_whole_parse(body: &str) -> EventData {
        let data = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|mut envelope| envelope.get_mut("data").map(Value::take))
            .unwrap_or(Value::Null);
        serde_json::from_value(data).expect("any JSON is event data")
    }

    #[test]
    fn event_data_reads_a_body_as_a_whole_parse_would() {
        let bodies = [
            r#"{"topic": "call.completed", "data": {"summary": "kept", "id": "cll_1"}}"#,
            r#"{"data": {"summary": "first", "summary": null}}"#,
            r#"{"data": {"summary": null, "summary": "last"}}"#,
            r#"{"data": {"summary": "dropped"}, "data": {"to": "+331"}}"#,
            r#"{"data": {"from_number": "+33612", "tag": {"key": "vip"}}}"#,
            r#"{"data": {"person": {"id": "con_1", "deep": [[{"a": [1, 2.5, -3]}]]}}}"#,
            r#"{"data": {"tags": [{"name": "sales"}, "urgent", 7], "type": "INBOUND"}}"#,
            r#"{"data": ["not", "an", "object"]}"#,
            r#"{"data": "text"}"#,
            r#"{"data": null}"#,
            r#"{"data": 12}"#,
            r#"{"topic": "call.completed"}"#,
            r#"["data", {"summary": "in an array"}]"#,
            r#"{"data": {"summary": "then garbage"}} trailing"#,
            r#"{"data": {"summary": "cut short""#,
            "",
        ];
        for body in bodies {
            assert_eq!(
                EventData::of_envelope(body.as_bytes()),
                data_of_a_whole_parse(body),
                "{body}"
            );
        }
    }

    #[test]
    fn event_data_keeps_the_last_of_a_repeated_field_and_skips_nulls() {
        let data = EventData::of_envelope(
            br#"{"data": {"summary": "first", "summary": "last", "result": null, "x": 1}}"#,
        );
        assert_eq!(data.summary, Some(json!("last")));
        assert_eq!(data.result, None);
        let escaped = EventData::of_envelope(br#"{"data": {"from_number": "+33612"}}"#);
        assert_eq!(escaped.from_number, Some(json!("+33612")));
        assert_eq!(
            EventData::of_envelope(br#"{"data": "text"}"#),
            EventData::default()
        );
    }

    #[test]
    fn tag_added_before_call_completed_yields_a_tagged_completed_call() {
        let completed = event(0, "call.completed", 0, "sales", false);
        let tagged = event(1, "tag.added", 1, "urgent", false);
        let document = incremental(&[tagged, completed]);
        assert_eq!(document.status, Some(CallStatus::Completed));
        assert_eq!(document.tags.iter().collect::<Vec<_>>(), ["urgent"]);
    }

    #[test]
    fn a_tag_snapshot_in_call_completed_sets_the_whole_set_as_of_its_time() {
        let before = event(0, "tag.added", 0, "support", false);
        let snapshot = event(1, "call.completed", 1, "sales", true);
        let after = event(2, "tag.added", 2, "urgent", false);
        let document = fold("cll_1", vec![after, snapshot, before]);
        assert_eq!(
            document.tags.iter().collect::<Vec<_>>(),
            ["sales", "urgent"]
        );
    }

    #[test]
    fn equal_timestamps_follow_the_precedence_graph() {
        let completed = event(0, "call.completed", 0, "sales", false);
        let received = event(1, "call.received", 0, "sales", false);
        assert!(received.key < completed.key);
        let document = fold("cll_1", vec![completed, received]);
        assert_eq!(document.status, Some(CallStatus::Completed));
        assert_eq!(document.direction.as_deref(), Some("outbound"));
    }
}
