//! The vocabulary of the event log: parsed newtypes for what a delivery carries, the record
//! appended, the record read back, and the outcome of an append.
//!
//! Values are parsed once, at the edge, into these types; nothing here touches the database.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};

/// The longest `webhook-id` accepted. Standard Webhooks ids are about 30 characters; the bound
/// keeps a hostile header from becoming a huge unique-index key.
const MAX_WEBHOOK_ID_LEN: usize = 256;

/// The longest topic or call key the store holds, in bytes of UTF-8. The call key is indexed
/// (the log's `events_by_call`, and the key of the fold queue and of the projections), and
/// PostgreSQL refuses a B-tree entry over about 2.7 kB; migration 0013 puts this limit in both
/// schemas, and the receiver quarantines a longer value before it reaches the store. Allo's ids
/// and topics are a few dozen characters.
pub const MAX_KEY_BYTES: usize = 1024;

/// The largest body the store takes, in bytes (256 MiB): well under PostgreSQL's 1 GB limits on
/// a `bytea` value and on a protocol message, and SQLite's default limit of 1,000,000,000 bytes
/// on a value, so that no body the receiver accepts can fail its commit by its size. The
/// receiver's `--max-body` cannot be set above it.
pub const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// A Standard Webhooks message id (`webhook-id` header): 1 to 256 printable ASCII characters
/// (no spaces or control characters). Stable across retries of one message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WebhookId(String);

/// Why a string is not a [`WebhookId`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("must be 1 to {MAX_WEBHOOK_ID_LEN} printable ASCII characters without spaces")]
pub struct InvalidWebhookId;

impl WebhookId {
    /// Parses a header value; see the type's documentation for the grammar.
    pub fn parse(value: &str) -> Result<Self, InvalidWebhookId> {
        let printable = value.bytes().all(|b| b.is_ascii_graphic());
        if value.is_empty() || value.len() > MAX_WEBHOOK_ID_LEN || !printable {
            return Err(InvalidWebhookId);
        }
        Ok(Self(value.to_owned()))
    }

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WebhookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An envelope topic such as `call.completed`. Open: unknown topics are kept as they are.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Topic(String);

impl Topic {
    /// Wraps a topic read from an envelope.
    pub fn new(topic: impl Into<String>) -> Self {
        Self(topic.into())
    }

    /// The topic as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id of the call an event belongs to (Allo's `cll_...`), found by the linking rules.
/// Serialized as the id itself.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct CallKey(String);

impl CallKey {
    /// Wraps a call id read from a payload.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A UTC instant with microsecond precision, stored as microseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(i64);

/// Why a string is not an RFC 3339 instant. The message quotes chrono's, which is therefore
/// not also the source: a chain of causes (`{:#}`) says it once.
#[derive(Debug, thiserror::Error)]
#[error("not an RFC 3339 date-time with an offset or Z: {0}")]
pub struct InvalidEventTime(chrono::ParseError);

impl EventTime {
    /// Parses an RFC 3339 date-time (`2026-02-10T09:17:42.318Z`; 0 to 9 fractional digits;
    /// `Z` or a numeric offset). Digits below the microsecond are truncated.
    pub fn parse_rfc3339(value: &str) -> Result<Self, InvalidEventTime> {
        let instant = DateTime::parse_from_rfc3339(value).map_err(InvalidEventTime)?;
        Ok(Self(instant.timestamp_micros()))
    }

    /// The current time.
    pub fn now() -> Self {
        Self(Utc::now().timestamp_micros())
    }

    /// An instant given as microseconds since the Unix epoch.
    pub fn from_unix_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        self.0
    }

    /// Seconds from `earlier` to this instant; 0 when `earlier` is not earlier.
    pub fn seconds_after(self, earlier: EventTime) -> f64 {
        self.0.saturating_sub(earlier.0).max(0) as f64 / 1e6
    }
}

impl fmt::Display for EventTime {
    /// RFC 3339 in UTC with exactly six fractional digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match DateTime::<Utc>::from_timestamp_micros(self.0) {
            Some(instant) => f.write_str(&instant.to_rfc3339_opts(SecondsFormat::Micros, true)),
            None => write!(f, "{}us", self.0),
        }
    }
}

impl serde::Serialize for EventTime {
    /// As its RFC 3339 text (see `Display`).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EventTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        EventTime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// Which call an event belongs to, by the linking rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallLink {
    /// A call event whose call id was found.
    Linked(CallKey),
    /// A call event that carries no call id the rules can find: kept, counted and listed.
    Unlinked,
    /// Not about a call (`sms.*`, `contact.*`, unknown topics).
    NotACall,
}

impl CallLink {
    /// The call's id, when linked.
    pub fn call_key(&self) -> Option<&CallKey> {
        match self {
            CallLink::Linked(call_key) => Some(call_key),
            CallLink::Unlinked | CallLink::NotACall => None,
        }
    }
}

/// What callfold could make of an authentic body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A usable envelope: what later stages index on.
    Usable {
        /// The envelope's `topic`.
        topic: Topic,
        /// The envelope's `timestamp`: the time to order by.
        event_time: EventTime,
        /// The call it belongs to, by the linking rules.
        call: CallLink,
    },
    /// Authentic but unusable; kept raw with the reason, for operators.
    Quarantined {
        /// What was wrong with the body, in words.
        reason: String,
    },
}

impl Content {
    /// The call a usable, linked event belongs to.
    pub fn call_key(&self) -> Option<&CallKey> {
        match self {
            Content::Usable { call, .. } => call.call_key(),
            Content::Quarantined { .. } => None,
        }
    }

    /// Whether this is a call event whose call the linking rules could not find.
    pub fn is_unlinked(&self) -> bool {
        matches!(
            self,
            Content::Usable {
                call: CallLink::Unlinked,
                ..
            }
        )
    }

    /// Why the body is quarantined; `None` for a usable one.
    pub fn quarantine_reason(&self) -> Option<&str> {
        match self {
            Content::Quarantined { reason } => Some(reason),
            Content::Usable { .. } => None,
        }
    }
}

/// One verified delivery, ready to append.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// The dedup key.
    pub webhook_id: WebhookId,
    /// The `webhook-timestamp` header, Unix seconds.
    pub webhook_timestamp: i64,
    /// When the delivery arrived.
    pub received_at: EventTime,
    /// The exact body bytes that were signed.
    pub body: Vec<u8>,
    /// SHA-256 of `body`.
    pub body_sha256: [u8; 32],
    /// What the body says.
    pub content: Content,
}

/// What the log did with one appended event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Newly written at `seq`, as it was given.
    Appended {
        /// The new record's position in the log.
        seq: i64,
    },
    /// Newly written at `seq`, but quarantined: the database refused the record's content (see
    /// `StoreError::refused_content`), so the log keeps its raw body with the database's error
    /// code as the reason instead of what it was given.
    Quarantined {
        /// The new record's position in the log.
        seq: i64,
    },
    /// The webhook-id was already in the log at `seq`; nothing was written.
    Duplicate {
        /// The first copy's position.
        seq: i64,
        /// True when the first copy's body differs from this one (same id, other bytes).
        conflicting: bool,
    },
}

/// A record of the log as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Position in the log.
    pub seq: i64,
    /// The dedup key.
    pub webhook_id: WebhookId,
    /// The `webhook-timestamp` header of the stored attempt.
    pub webhook_timestamp: i64,
    /// When the stored attempt arrived.
    pub received_at: EventTime,
    /// The exact body bytes.
    pub body: Vec<u8>,
    /// SHA-256 of `body`.
    pub body_sha256: Vec<u8>,
    /// Usable envelope fields, or the quarantine reason.
    pub content: Content,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_accepts_zero_to_nine_fraction_digits_and_keeps_microseconds() {
        let cases = [
            ("2026-02-10T09:17:42Z", 0),
            ("2026-02-10T09:17:42.3Z", 300_000),
            ("2026-02-10T09:17:42.318Z", 318_000),
            ("2026-02-10T09:17:42.318123Z", 318_123),
            ("2026-02-10T09:17:42.318123999Z", 318_123),
        ];
        let whole_second = EventTime::parse_rfc3339(cases[0].0)
            .expect("parses")
            .unix_micros();
        for (text, micros) in cases {
            let parsed = EventTime::parse_rfc3339(text).expect(text);
            assert_eq!(parsed.unix_micros() - whole_second, micros, "{text}");
        }
    }

    #[test]
    fn event_time_without_offset_is_refused() {
        assert!(EventTime::parse_rfc3339("2026-04-30T00:00:00").is_err());
    }

    #[test]
    fn event_time_displays_as_utc_with_microseconds() {
        let time = EventTime::parse_rfc3339("2026-02-10T10:17:42.318+01:00").expect("parses");
        assert_eq!(time.to_string(), "2026-02-10T09:17:42.318000Z");
    }

    #[test]
    fn webhook_id_refuses_empty_spaced_long_and_non_ascii_values() {
        assert!(WebhookId::parse("msg_2NfDK").is_ok());
        for bad in ["", "msg 1", "msg_é", &"x".repeat(MAX_WEBHOOK_ID_LEN + 1)] {
            assert_eq!(WebhookId::parse(bad), Err(InvalidWebhookId), "{bad:?}");
        }
    }
}
