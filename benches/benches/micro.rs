//! Micro-benchmarks (criterion) of the hot paths, so that a regression shows before the
//! end-to-end numbers move: verifying a signature, reading an envelope, folding one call.

use callfold_ingest::{LinkingRules, SignedHeaders, Verifier, WebhookSecrets, sign};
use callfold_projector::{EventData, FoldEvent, Precedence, fold};
use callfold_simulate::invent_events;
use callfold_store::{EventTime, WebhookId};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

const SECRET: &str = "whsec_ZGVtby1zZWNyZXQtY2hhbmdlLW1l";

/// A `call.completed` body as the traffic model invents it.
fn completed_body() -> Vec<u8> {
    invent_events(20, 1, chrono::Utc::now())
        .into_iter()
        .find(|event| String::from_utf8_lossy(&event.body).contains("call.completed"))
        .expect("the traffic model completes calls")
        .body
}

fn signature_verification(c: &mut Criterion) {
    let secrets = WebhookSecrets::parse(SECRET).expect("secret");
    let secret = secrets.iter().next().expect("one").clone();
    let body = completed_body();
    let id = WebhookId::parse("msg_2mVZkXvA1s0Q7c0m4T3pYq").expect("id");
    let now = chrono::Utc::now().timestamp();
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("webhook-id", id.as_str().parse().expect("header"));
    headers.insert(
        "webhook-timestamp",
        now.to_string().parse().expect("header"),
    );
    let signature = sign(&secret, &id, now, &body);
    headers.insert("webhook-signature", signature.parse().expect("header"));
    let verifier = Verifier::new(secrets, 300);
    c.bench_function("parse headers and verify a v1 signature", |b| {
        b.iter(|| {
            let parsed = SignedHeaders::parse(black_box(&headers)).expect("headers");
            verifier
                .verify(&parsed, black_box(&body), now)
                .expect("valid")
        })
    });
}

fn envelope_reading(c: &mut Criterion) {
    let rules = LinkingRules::default();
    let body = completed_body();
    c.bench_function("read an envelope and link its call", |b| {
        b.iter(|| rules.read(black_box(&body)))
    });
}

fn folding_one_call(c: &mut Criterion) {
    let precedence = Precedence::default();
    let at = |second: i64| EventTime::from_unix_micros(1_770_715_000_000_000 + second * 1_000_000);
    let data: EventData = serde_json::from_value(serde_json::json!({"id": "cll_1",
        "call_id": "cll_1", "type": "INBOUND", "result": "ANSWERED", "tag": "vip",
        "from_number": "+33612345678"}))
    .expect("any JSON is event data");
    let topics = [
        "call.triggered",
        "call.answered",
        "call.completed",
        "tag.added",
        "tag.removed",
    ];
    let events: Vec<FoldEvent> = topics
        .iter()
        .enumerate()
        .map(|(n, topic)| {
            FoldEvent::new(
                &precedence,
                &format!("msg_{n}"),
                topic,
                at(n as i64),
                data.clone(),
            )
        })
        .rev()
        .collect();
    c.bench_function("fold a five-event call arriving in reverse order", |b| {
        b.iter(|| fold("cll_1", black_box(events.clone())))
    });
}

criterion_group!(
    benches,
    signature_verification,
    envelope_reading,
    folding_one_call
);
criterion_main!(benches);
