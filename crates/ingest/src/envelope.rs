//! Reading an authentic body: the envelope fields the log indexes on (topic, payload time, call
//! key), or the reason the body is quarantined.
//!
//! A topic or call key the store could not hold (U+0000 anywhere, or longer than
//! [`MAX_KEY_BYTES`]) quarantines the body here, so that such a delivery gets the same answer
//! on both backends and never reaches a commit it would fail.
//!
//! The linking rules that find a call key live here, in one table: topic -> JSON pointers into
//! the envelope, tried in order. They encode the defaults of Allo's spec, where Allo documents a
//! call id for `call.completed` only and the rest are our assumptions.

use callfold_store::{CallKey, CallLink, Content, EventTime, MAX_KEY_BYTES, Topic};
use serde_json::Value;

/// Topic -> JSON pointers (into the whole envelope) that may hold the call id, first match wins.
/// Topics not listed (`sms.*`, `contact.*`, unknown ones) belong to no call.
const DEFAULT_LINKING_RULES: &[(&str, &[&str])] = &[
    ("call.completed", &["/data/id"]),
    ("call.received", &["/data/call_id", "/data/id"]),
    ("call.triggered", &["/data/call_id", "/data/id"]),
    ("call.answered", &["/data/call_id", "/data/id"]),
    ("summary.updated", &["/data/call_id", "/data/id"]),
    ("tag.added", &["/data/call_id", "/data/call/id"]),
    ("tag.removed", &["/data/call_id", "/data/call/id"]),
];

/// Every topic Allo's catalog lists (see `docs/allo-webhooks.md`): the call topics above, and
/// those that belong to no call. Allo adds topics over time, so a topic not listed here is
/// still accepted and stored; the list is what configuration is checked against for typos.
pub const ALLO_TOPICS: &[&str] = &[
    "call.answered",
    "call.completed",
    "call.received",
    "call.triggered",
    "contact.created",
    "contact.updated",
    "sms.received",
    "sms.sent",
    "summary.updated",
    "tag.added",
    "tag.removed",
];

/// Where each topic keeps the id of its call.
#[derive(Clone, Debug)]
pub struct LinkingRules {
    rules: Vec<(String, Vec<String>)>,
}

impl Default for LinkingRules {
    /// The spec's defaults.
    fn default() -> Self {
        let rules = DEFAULT_LINKING_RULES
            .iter()
            .map(|(topic, pointers)| {
                let pointers = pointers.iter().map(|p| (*p).to_owned()).collect();
                ((*topic).to_owned(), pointers)
            })
            .collect();
        Self { rules }
    }
}

impl LinkingRules {
    /// These rules with `topic`'s call id looked up at `pointers` (JSON pointers into the
    /// envelope, tried in order) instead of where they looked before.
    pub fn with_rule(mut self, topic: &str, pointers: &[&str]) -> Self {
        let pointers: Vec<String> = pointers.iter().map(|p| (*p).to_owned()).collect();
        match self
            .rules
            .iter_mut()
            .find(|(rule_topic, _)| rule_topic == topic)
        {
            Some((_, existing)) => *existing = pointers,
            None => self.rules.push((topic.to_owned(), pointers)),
        }
        self
    }

    /// Each topic that has a rule, in topic order, with its pointers in the order they are
    /// tried.
    pub fn rules(&self) -> Vec<(&str, &[String])> {
        let mut rules: Vec<(&str, &[String])> = self
            .rules
            .iter()
            .map(|(topic, pointers)| (topic.as_str(), pointers.as_slice()))
            .collect();
        rules.sort_unstable();
        rules
    }

    /// The rules as JSON, `[[topic, [pointer, ...]], ...]` in topic order: the whole of what
    /// linking takes from them, so two sets of rules with the same text link alike.
    pub fn canonical_text(&self) -> String {
        serde_json::to_string(&self.rules()).expect("strings serialize")
    }

    /// The call of an envelope with `topic`: not a call when no rule names the topic; else
    /// the first listed pointer that holds a non-empty string (or an integer, kept as its
    /// decimal text), or unlinked when none does.
    pub fn link(&self, topic: &str, envelope: &Value) -> CallLink {
        let Some((_, pointers)) = self
            .rules
            .iter()
            .find(|(rule_topic, _)| rule_topic == topic)
        else {
            return CallLink::NotACall;
        };
        let found = pointers
            .iter()
            .find_map(|pointer| match envelope.pointer(pointer)? {
                Value::String(id) if !id.is_empty() => Some(CallKey::new(id.clone())),
                Value::Number(id) if id.is_i64() || id.is_u64() => {
                    Some(CallKey::new(id.to_string()))
                }
                _ => None,
            });
        found.map_or(CallLink::Unlinked, CallLink::Linked)
    }

    /// Reads the envelope of an authentic body. Never fails: what cannot be used becomes
    /// [`Content::Quarantined`] with the reason, so the raw bytes are still kept.
    pub fn read(&self, body: &[u8]) -> Content {
        let quarantined = |reason: String| Content::Quarantined { reason };
        let envelope: Value = match serde_json::from_slice(body) {
            Ok(envelope) => envelope,
            Err(error) => return quarantined(format!("body is not JSON: {error}")),
        };
        let topic = match envelope.get("topic") {
            Some(Value::String(topic)) if !topic.is_empty() => topic,
            _ => return quarantined("body has no non-empty string `topic`".to_owned()),
        };
        let event_time = match envelope.get("timestamp").map(|t| t.as_str()) {
            Some(Some(text)) => match EventTime::parse_rfc3339(text) {
                Ok(time) => time,
                Err(error) => return quarantined(format!("`timestamp` does not parse: {error}")),
            },
            Some(None) => return quarantined("`timestamp` is not a string".to_owned()),
            None => return quarantined("body has no `timestamp`".to_owned()),
        };
        let call = self.link(topic, &envelope);
        let unstorable = unstorable_text("`topic`", topic).or_else(|| {
            let call_key = call.call_key()?;
            unstorable_text("the call id", call_key.as_str())
        });
        if let Some(reason) = unstorable {
            return quarantined(reason);
        }
        Content::Usable {
            call,
            topic: Topic::new(topic.clone()),
            event_time,
        }
    }
}

/// Why the store could not hold `value` as the text `what`, if it could not. The reason
/// describes the value without quoting it.
fn unstorable_text(what: &str, value: &str) -> Option<String> {
    if value.contains('\0') {
        return Some(format!(
            "{what} contains U+0000, which the store cannot hold"
        ));
    }
    (value.len() > MAX_KEY_BYTES).then(|| {
        format!(
            "{what} is {} bytes long; the store holds at most {MAX_KEY_BYTES}",
            value.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &str) -> Content {
        LinkingRules::default().read(body.as_bytes())
    }

    fn link_of(body: &str) -> CallLink {
        match read(body) {
            Content::Usable { call, .. } => call,
            Content::Quarantined { reason } => panic!("quarantined: {reason}"),
        }
    }

    #[test]
    fn calls_are_linked_by_the_spec_defaults() {
        let ts = r#""timestamp":"2026-02-10T09:17:42.318Z""#;
        let linked = |id: &str| CallLink::Linked(CallKey::new(id));
        let cases = [
            (r#""call.completed","data":{"id":"cll_1"}"#, linked("cll_1")),
            (
                r#""tag.added","data":{"call_id":"cll_2","id":"x"}"#,
                linked("cll_2"),
            ),
            (
                r#""tag.removed","data":{"call":{"id":"cll_3"}}"#,
                linked("cll_3"),
            ),
            (r#""call.triggered","data":{"id":4}"#, linked("4")),
            (
                r#""call.received","data":{"from_number":"+33"}"#,
                CallLink::Unlinked,
            ),
            (r#""call.completed","data":{"id":""}"#, CallLink::Unlinked),
            (
                r#""sms.received","data":{"id":"sms_1"}"#,
                CallLink::NotACall,
            ),
            (r#""brand.new.topic","data":{"id":"z"}"#, CallLink::NotACall),
        ];
        for (topic_and_data, expected) in cases {
            let body = format!(r#"{{"topic":{topic_and_data},{ts}}}"#);
            assert_eq!(link_of(&body), expected, "{body}");
        }
    }

    #[test]
    fn unusable_bodies_are_quarantined_with_a_reason() {
        let cases = [
            ("not json", "not JSON"),
            (r#"["topic"]"#, "topic"),
            (r#"{"timestamp":"2026-02-10T09:17:42Z"}"#, "topic"),
            (r#"{"topic":"call.completed"}"#, "timestamp"),
            (r#"{"topic":"call.completed","timestamp":17}"#, "timestamp"),
            (
                r#"{"topic":"call.completed","timestamp":"2026-02-10T09:17:42"}"#,
                "timestamp",
            ),
            (
                r#"{"topic":"call.completed","timestamp":"yesterday"}"#,
                "timestamp",
            ),
        ];
        for (body, mentioned) in cases {
            match read(body) {
                Content::Quarantined { reason } => {
                    assert!(reason.contains(mentioned), "{body}: {reason}");
                }
                usable => panic!("{body} was read as {usable:?}"),
            }
        }
    }

    #[test]
    fn topics_and_call_ids_the_store_cannot_hold_are_quarantined_without_quoting_them() {
        let ts = r#""timestamp":"2026-02-10T09:17:42.318Z""#;
        let long = "x".repeat(MAX_KEY_BYTES + 1);
        let cases = [
            (
                r#""call.completed\u0000","data":{"id":"cll_1"}"#.to_owned(),
                "`topic` contains U+0000",
            ),
            (
                r#""call.completed","data":{"id":"cll\u0000_1"}"#.to_owned(),
                "call id contains U+0000",
            ),
            (format!(r#""{long}","data":{{}}"#), "`topic` is 1025 bytes"),
            (
                format!(r#""tag.added","data":{{"call_id":"{long}"}}"#),
                "call id is 1025 bytes",
            ),
        ];
        for (topic_and_data, mentioned) in cases {
            let body = format!(r#"{{"topic":{topic_and_data},{ts}}}"#);
            match read(&body) {
                Content::Quarantined { reason } => {
                    assert!(reason.contains(mentioned), "{reason}");
                    assert!(
                        !reason.contains('\0') && !reason.contains("xxx"),
                        "{reason}"
                    );
                }
                usable => panic!("{body} was read as {usable:?}"),
            }
        }
        let longest = "x".repeat(MAX_KEY_BYTES);
        let body = format!(r#"{{"topic":"call.completed","data":{{"id":"{longest}"}},{ts}}}"#);
        assert_eq!(link_of(&body), CallLink::Linked(CallKey::new(longest)));
    }

    #[test]
    fn deeply_nested_json_is_quarantined_not_a_crash() {
        let body = format!(
            r#"{{"topic":"x","timestamp":"2026-02-10T09:17:42Z","data":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(matches!(read(&body), Content::Quarantined { .. }));
    }
}
