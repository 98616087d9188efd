//! The traffic model: invented calls and the Allo events each produces, with payload timestamps
//! spread over the call. Deterministic for a given seed and end time.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const TAGS: &[&str] = &["sales", "support", "urgent", "follow-up", "billing"];
const RESULTS: &[&str] = &["ANSWERED", "ANSWERED", "ANSWERED", "VOICEMAIL", "FAILED"];
const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Where `callfold simulate`'s payload times end (2026-01-01T00:00:00Z): fixed, not the
/// current time, so that a second run with the same seed sends the very same bodies, which the
/// receiver answers as duplicates, instead of new bodies under the same webhook-ids.
pub const PAYLOAD_TIMES_END: DateTime<Utc> = match DateTime::from_timestamp(1_767_225_600, 0) {
    Some(end) => end,
    None => panic!("a valid time"),
};

/// One invented webhook message, before signing.
#[derive(Clone, Debug)]
pub struct SimulatedEvent {
    /// Its `webhook-id`.
    pub webhook_id: String,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// Invents `calls` calls whose events end before `until`, with the mix Allo produces: each call
/// has a start event (`call.received` without a call id, or `call.triggered` with one), a
/// `call.completed`, usually a tag added and sometimes removed, and around it SMS and contact
/// events. Events come out in payload-time order.
pub fn invent_events(calls: usize, seed: u64, until: DateTime<Utc>) -> Vec<SimulatedEvent> {
    let mut rng = StdRng::seed_from_u64(seed);
    let first_start = until - Duration::seconds(7 * calls as i64 + 3_600);
    let mut timed: Vec<(DateTime<Utc>, Value)> = Vec::with_capacity(calls * 5);
    for index in 0..calls {
        let start = first_start + Duration::seconds(7 * index as i64);
        invent_call(&mut rng, start, &mut timed);
    }
    timed.sort_by_key(|(time, _)| *time);
    timed
        .into_iter()
        .map(|(_, body)| SimulatedEvent {
            webhook_id: format!("msg_{}", random_id(&mut rng, 24)),
            body: body.to_string().into_bytes(),
        })
        .collect()
}

fn invent_call(rng: &mut StdRng, start: DateTime<Utc>, out: &mut Vec<(DateTime<Utc>, Value)>) {
    let call_id = format!("cll_{}", random_id(rng, 20));
    let caller = format!("+336{:08}", rng.random_range(0..100_000_000));
    let line = format!("+331{:08}", rng.random_range(0..100_000_000));
    let inbound = rng.random_bool(0.7);
    let user = format!("agent{}@example.com", rng.random_range(1..20));
    let length_secs = rng.random_range(5..900);
    let end = start + Duration::seconds(length_secs);

    let start_event = if inbound {
        envelope(
            "call.received",
            start,
            json!({
                "from_number": caller, "to_number": line, "started_at": iso(start),
                "user_email": user, "company": null, "deals": null,
            }),
        )
    } else {
        envelope(
            "call.triggered",
            start,
            json!({
                "call_id": call_id, "from_number": line, "to_number": caller, "started_at": iso(start),
                "user_email": user,
            }),
        )
    };
    out.push((start, start_event));

    let (from, to) = if inbound {
        (&caller, &line)
    } else {
        (&line, &caller)
    };
    out.push((
        end,
        envelope(
            "call.completed",
            end,
            json!({
                "id": call_id, "from_number": from, "to": to,
                "type": if inbound { "INBOUND" } else { "OUTBOUND" },
                "result": RESULTS.choose(rng).copied().unwrap_or("ANSWERED"),
                "start_date": iso(start), "length": length_secs, "user_email": user,
                "summary": "Simulated call.",
            }),
        ),
    ));

    invent_follow_ups(rng, &call_id, (&caller, &line), (start, end), out);
}

/// The events that may follow a call between `caller` and `line` that ran from `start` to
/// `end`: a tag (maybe removed later), a message, a contact.
fn invent_follow_ups(
    rng: &mut StdRng,
    call_id: &str,
    (caller, line): (&str, &str),
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    out: &mut Vec<(DateTime<Utc>, Value)>,
) {
    if rng.random_bool(0.8) {
        let tag = TAGS.choose(rng).copied().unwrap_or("sales");
        let added = end + Duration::milliseconds(rng.random_range(500..60_000));
        out.push((
            added,
            envelope("tag.added", added, json!({"call_id": call_id, "tag": tag})),
        ));
        if rng.random_bool(0.3) {
            let removed = added + Duration::milliseconds(rng.random_range(500..600_000));
            out.push((
                removed,
                envelope(
                    "tag.removed",
                    removed,
                    json!({"call_id": call_id, "tag": tag}),
                ),
            ));
        }
    }
    if rng.random_bool(0.4) {
        let topic = if rng.random_bool(0.5) {
            "sms.received"
        } else {
            "sms.sent"
        };
        let at = end + Duration::seconds(rng.random_range(1..3_600));
        out.push((
            at,
            envelope(
                topic,
                at,
                json!({
                    "id": format!("sms_{}", random_id(rng, 16)), "from_number": caller,
                    "to_number": line, "content": "Simulated message.",
                }),
            ),
        ));
    }
    if rng.random_bool(0.3) {
        let topic = if rng.random_bool(0.5) {
            "contact.created"
        } else {
            "contact.updated"
        };
        let at = start + Duration::seconds(rng.random_range(1..120));
        out.push((at, envelope(topic, at, json!({
            "id": format!("con_{}", random_id(rng, 16)), "name": "Simulated", "numbers": [caller],
        }))));
    }
}

fn envelope(topic: &str, at: DateTime<Utc>, data: Value) -> Value {
    json!({"topic": topic, "version": "2.0", "timestamp": iso(at), "data": data})
}

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn random_id(rng: &mut StdRng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(*ID_ALPHABET.choose(rng).unwrap_or(&b'x')))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_invents_the_same_traffic() {
        let until = Utc::now();
        let bodies = |seed| -> Vec<Vec<u8>> {
            invent_events(20, seed, until)
                .into_iter()
                .map(|e| e.body)
                .collect()
        };
        assert_eq!(bodies(7), bodies(7));
        assert_ne!(bodies(7), bodies(8));
    }

    #[test]
    fn every_call_has_a_start_and_a_completion_in_payload_time_order() {
        let events = invent_events(50, 1, Utc::now());
        let parsed: Vec<Value> = events
            .iter()
            .map(|e| serde_json::from_slice(&e.body).expect("json"))
            .collect();
        let count = |topic: &str| parsed.iter().filter(|v| v["topic"] == topic).count();
        assert_eq!(count("call.completed"), 50);
        assert_eq!(count("call.received") + count("call.triggered"), 50);
        let times: Vec<&str> = parsed
            .iter()
            .map(|v| v["timestamp"].as_str().expect("ts"))
            .collect();
        assert!(times.windows(2).all(|pair| pair[0] <= pair[1]));
    }
}
