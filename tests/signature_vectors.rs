//! Every Standard Webhooks vector in `tests/fixtures/standard-webhooks-vectors.json` (published
//! vectors plus callfold's own) verifies or fails exactly as marked, and a signature made by an
//! independent implementation verifies.

use axum::http::{HeaderMap, HeaderValue};
use callfold_ingest::{SignedHeaders, Verifier, WebhookSecrets};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    secret: String,
    msg_id: String,
    timestamp: i64,
    payload: String,
    signature: String,
    now: i64,
    valid: bool,
}

fn load_vectors() -> Vectors {
    serde_json::from_str(include_str!("fixtures/standard-webhooks-vectors.json"))
        .expect("the fixture parses")
}

fn verdict(secret: &str, id: &str, timestamp: i64, signature: &str, body: &[u8], now: i64) -> bool {
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", HeaderValue::from_str(id).expect("ascii id"));
    headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
    headers.insert(
        "webhook-signature",
        HeaderValue::from_str(signature).expect("ascii sig"),
    );
    let verifier = Verifier::new(WebhookSecrets::parse(secret).expect("vector secret"), 300);
    SignedHeaders::parse(&headers).is_ok_and(|signed| verifier.verify(&signed, body, now).is_ok())
}

#[test]
fn every_vector_verifies_exactly_as_marked() {
    let vectors = load_vectors();
    assert!(vectors.vectors.len() >= 13, "the fixture lost vectors");
    let wrong: Vec<&str> = vectors
        .vectors
        .iter()
        .filter(|v| {
            let body = v.payload.as_bytes();
            verdict(&v.secret, &v.msg_id, v.timestamp, &v.signature, body, v.now) != v.valid
        })
        .map(|v| v.name.as_str())
        .collect();
    assert!(wrong.is_empty(), "wrong verdict for {wrong:?}");
}

#[test]
fn a_signature_from_the_standardwebhooks_crate_verifies() {
    let vectors = load_vectors();
    let secret = &vectors.vectors[0].secret;
    let body = br#"{"topic":"call.completed","version":"2.0","timestamp":"2026-02-10T09:17:42.318Z","data":{"id":"cll_1"}}"#;
    let signature = standardwebhooks::Webhook::new(secret)
        .expect("independent signer")
        .sign("msg_interop", 1_770_715_062, body)
        .expect("signs");
    assert!(verdict(
        secret,
        "msg_interop",
        1_770_715_062,
        &signature,
        body,
        1_770_715_062
    ));
    assert!(!verdict(
        secret,
        "msg_interop2",
        1_770_715_062,
        &signature,
        body,
        1_770_715_062
    ));
}
