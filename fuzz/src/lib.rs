//! The checks the fuzz targets run on arbitrary bytes, one per target. A check returns normally
//! when the code under test behaved, and panics (which libFuzzer reports as a crash) when it
//! did not. The same checks replay the committed corpus and crash reproducers in `cargo test`
//! (`tests/corpus.rs`), so a finding stays fixed.
//!
//! - [`signature_header`]: the `webhook-*` header grammar and verification.
//! - [`envelope`]: reading an authentic body, and the RFC 3339 payload timestamp.
//! - [`fold`]: folding an arbitrary set of one call's events.

use arbitrary::{Arbitrary, Unstructured};
use axum::http::{HeaderMap, HeaderValue};
use callfold_ingest::{LinkingRules, SignedHeaders, Verifier, VerifyError, WebhookSecrets, sign};
use callfold_projector::{CALL_TOPICS, CallDocument, EventData, FoldEvent, Precedence};
use callfold_store::{CallLink, Content, EventTime};
use serde_json::{Map, Value, json};

/// The tolerance, in seconds, the signature check verifies with.
const TOLERANCE_SECS: u64 = 300;

/// Input: `id \n timestamp \n signature \n body`, each header left out when its bytes cannot
/// be a header value. Checks that parsing never panics, and that once the headers parse, a
/// correct `v1` entry added among the arbitrary ones verifies, and only within the tolerance.
pub fn signature_header(data: &[u8]) {
    let mut parts = data.splitn(4, |byte| *byte == b'\n');
    let (id, timestamp, signature) = (parts.next(), parts.next(), parts.next());
    let body = parts.next().unwrap_or_default();
    let headers = webhook_headers(id, timestamp, signature.unwrap_or_default());
    let Ok(parsed) = SignedHeaders::parse(&headers) else {
        return;
    };
    let secrets = WebhookSecrets::parse("whsec_ZnV6ei1zZWNyZXQ=").expect("a valid fixed secret");
    let secret = secrets.iter().next().expect("one secret").clone();
    let verifier = Verifier::new(secrets, TOLERANCE_SECS);
    // Arbitrary entries verify or not, but never panic, whatever the clock says.
    for now in [parsed.timestamp, 0, i64::MAX, i64::MIN] {
        let _ = verifier.verify(&parsed, body, now);
    }

    let correct = sign(&secret, &parsed.webhook_id, parsed.timestamp, body);
    let mixed = [signature.unwrap_or_default(), b" ", correct.as_bytes()].concat();
    let headers = webhook_headers(id, timestamp, &mixed);
    // Too many entries is a parse error; otherwise the correct entry must be found.
    let Ok(with_correct) = SignedHeaders::parse(&headers) else {
        return;
    };
    assert_eq!(
        verifier.verify(&with_correct, body, parsed.timestamp),
        Ok(()),
        "a correct v1 entry among others must verify"
    );
    let too_late = parsed.timestamp.saturating_add(TOLERANCE_SECS as i64 + 1);
    if too_late > parsed.timestamp {
        assert!(matches!(
            verifier.verify(&with_correct, body, too_late),
            Err(VerifyError::OutsideTolerance { .. })
        ));
    }
}

fn webhook_headers(id: Option<&[u8]>, timestamp: Option<&[u8]>, signature: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let named = [
        ("webhook-id", id),
        ("webhook-timestamp", timestamp),
        ("webhook-signature", Some(signature)),
    ];
    for (name, bytes) in named {
        if let Some(value) = bytes.and_then(|bytes| HeaderValue::from_bytes(bytes).ok()) {
            headers.insert(name, value);
        }
    }
    headers
}

/// Input: a body. Checks that reading it never panics and that a linked call key is never
/// empty; then, with the input as the payload `timestamp` of an otherwise valid envelope, that
/// the envelope is usable exactly when the timestamp parses, and that the parsed time prints as
/// RFC 3339 text that parses back to the same instant.
pub fn envelope(data: &[u8]) {
    let rules = LinkingRules::default();
    if let Content::Usable {
        call: CallLink::Linked(call),
        ..
    } = rules.read(data)
    {
        assert!(
            !call.as_str().is_empty(),
            "a linked call key is never empty"
        );
    }
    // The fold's reading of the same body never panics either.
    EventData::of_envelope(data);

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let body = json!({"topic": "call.completed", "timestamp": text, "data": {"id": "cll_1"}});
    let body = serde_json::to_vec(&body).expect("a JSON value serializes");
    match rules.read(&body) {
        Content::Usable { event_time, .. } => {
            let printed = event_time.to_string();
            let reparsed = EventTime::parse_rfc3339(&printed)
                .unwrap_or_else(|error| panic!("{printed:?} does not parse back: {error}"));
            assert_eq!(reparsed, event_time, "{text:?} printed as {printed:?}");
        }
        Content::Quarantined { reason } => assert!(
            EventTime::parse_rfc3339(text).is_err(),
            "{text:?} parses, yet the envelope was quarantined: {reason}"
        ),
    }
}

/// The `data` fields the fold reads, and so the ones worth drawing.
const FIELDS: &[&str] = &[
    "call_id",
    "id",
    "type",
    "from_number",
    "to_number",
    "to",
    "started_at",
    "start_date",
    "summary",
    "result",
    "recording_url",
    "length",
    "length_in_minutes",
    "transcriptions",
    "user_email",
    "tag",
    "tags",
    "person",
    "company",
    "deals",
];

/// A `data` value: one of a few shapes the fold treats differently.
#[derive(Arbitrary, Debug)]
enum DrawnValue {
    Null,
    Bool(bool),
    Number(i64),
    Text(String),
    /// A tag name from a small set, so that adds and removes meet.
    TagName(u8),
    /// `{"name": tag}`, the other tag shape.
    TagObject(u8),
    /// An array of tag names.
    Tags(Vec<u8>),
}

impl DrawnValue {
    fn into_json(self) -> Value {
        let tag = |index: u8| format!("tag{}", index % 4);
        match self {
            DrawnValue::Null => Value::Null,
            DrawnValue::Bool(value) => json!(value),
            DrawnValue::Number(value) => json!(value),
            DrawnValue::Text(value) => json!(value),
            DrawnValue::TagName(index) => json!(tag(index)),
            DrawnValue::TagObject(index) => json!({ "name": tag(index) }),
            DrawnValue::Tags(indexes) => indexes.into_iter().map(tag).collect(),
        }
    }
}

/// One drawn event of the call.
#[derive(Arbitrary, Debug)]
struct DrawnEvent {
    /// One of the call topics, or any string (a topic the fold only counts).
    topic: Result<u8, String>,
    /// Seconds into a short window, so equal timestamps are common...
    second: u8,
    /// ...or, when set, any instant at all.
    instant: Option<i64>,
    fields: Vec<(u8, DrawnValue)>,
}

impl DrawnEvent {
    fn into_fold_event(self, index: usize, precedence: &Precedence) -> FoldEvent {
        let topic = match self.topic {
            Ok(choice) => CALL_TOPICS[usize::from(choice) % CALL_TOPICS.len()].to_owned(),
            Err(other) => other,
        };
        let micros = self
            .instant
            .unwrap_or(1_770_000_000_000_000 + i64::from(self.second % 4) * 1_000_000);
        let data: Map<String, Value> = self
            .fields
            .into_iter()
            .map(|(field, value)| {
                let name = FIELDS[usize::from(field) % FIELDS.len()].to_owned();
                (name, value.into_json())
            })
            .collect();
        FoldEvent::new(
            precedence,
            &format!("msg_{index}"),
            &topic,
            EventTime::from_unix_micros(micros),
            EventData::of_envelope(&envelope_bytes(&topic, data)),
        )
    }
}

/// The body of an envelope of `topic` around `data`.
fn envelope_bytes(topic: &str, data: Map<String, Value>) -> Vec<u8> {
    let body = json!({"topic": topic, "version": "2.0", "data": data});
    serde_json::to_vec(&body).expect("a JSON value serializes")
}

/// Input: an arbitrary set of one call's events (distinct webhook-ids, as in the log) and a
/// permutation of it. Checks that folding never panics and that the document does not depend
/// on the order the events are given in.
pub fn fold(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let Ok(drawn) = input.arbitrary::<Vec<DrawnEvent>>() else {
        return;
    };
    let precedence = Precedence::default();
    let events: Vec<FoldEvent> = drawn
        .into_iter()
        .enumerate()
        .map(|(index, event)| event.into_fold_event(index, &precedence))
        .collect();
    let mut shuffled = events.clone();
    for last in (1..shuffled.len()).rev() {
        let Ok(other) = input.int_in_range(0..=last) else {
            break;
        };
        shuffled.swap(last, other);
    }

    let as_json = |document: &CallDocument| serde_json::to_string(document).expect("serializes");
    assert_eq!(
        as_json(&callfold_projector::fold("cll_1", events)),
        as_json(&callfold_projector::fold("cll_1", shuffled)),
        "the fold depends on the order its events are given in"
    );
}
