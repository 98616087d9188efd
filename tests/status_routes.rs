//! The status page's routes over HTTP, on in-process apps of every role, with and without an
//! admin listener: each page links only to what its role serves (every link it renders is
//! followed), `/` redirects to the status page where it is served and stays a 404 on a
//! webhook-only listener, every error answer is JSON, a call's page shows each record's
//! headers, escaped body (cut at 64 KiB) and the command that prints it whole, and the search
//! box leads to the call's page. The browser's view is `status_page.rs`'s.

mod support;

use callfold_service::Roles;
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{TestApp, TestDb, TestReceiver, envelope, spawn_app_on, test_settings};

const ROLES: [Roles; 3] = [Roles::All, Roles::Ingest, Roles::Projector];

/// An app of `roles` on `db` (an admin listener when `admin`), and a receiver writing to the
/// same store: its own, or, for a projector alone, an ingest app beside it.
async fn app_and_receiver(roles: Roles, db: &TestDb, admin: bool) -> (TestApp, TestReceiver) {
    let app = spawn_app_on(roles, test_settings(), &db.store, admin).await;
    let receiver = match roles {
        Roles::Projector => support::start_receiver(&db.store, test_settings()).await,
        Roles::All | Roles::Ingest => app.receiver(),
    };
    (app, receiver)
}

/// A `call.completed` of `call` whose data carries `note`.
fn completed(call: &str, note: &str) -> Vec<u8> {
    let data = json!({"id": call, "type": "INBOUND", "result": "ANSWERED", "note": note});
    envelope("call.completed", "2026-02-10T09:17:42Z", data)
}

/// Delivers `body` as `webhook_id` and returns its seq.
async fn deliver(receiver: &TestReceiver, webhook_id: &str, body: &[u8]) -> i64 {
    let answer = receiver.deliver(webhook_id, body).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.seq()
}

async fn page(url: &str) -> String {
    let response = reqwest::get(url).await.expect("the page answers");
    assert_eq!(response.status(), 200, "{url}");
    response.text().await.expect("HTML")
}

/// The values of every `attribute="..."` in `html`, unescaped.
fn attribute_values(html: &str, attribute: &str) -> Vec<String> {
    let marker = format!("{attribute}=\"");
    html.match_indices(&marker)
        .map(|(at, _)| {
            let rest = &html[at + marker.len()..];
            let value = &rest[..rest.find('"').expect("a closed attribute")];
            value.replace("&amp;", "&")
        })
        .collect()
}

/// Every URL a page leads to: its links (in-page anchors aside) and its forms, each filled
/// with `search`.
fn destinations(html: &str, search: &str) -> Vec<String> {
    let mut urls: Vec<String> = attribute_values(html, "href")
        .into_iter()
        .filter(|href| !href.starts_with('#'))
        .collect();
    let inputs = attribute_values(html, "name");
    for action in attribute_values(html, "action") {
        let query = inputs
            .iter()
            .map(|name| format!("{name}={search}"))
            .collect::<Vec<_>>();
        urls.push(format!("{action}?{}", query.join("&")));
    }
    urls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_links_only_to_what_it_serves() {
    for roles in ROLES {
        for admin in [false, true] {
            let db = TestDb::sqlite().await;
            let (app, receiver) = app_and_receiver(roles, &db, admin).await;
            deliver(&receiver, "msg_links_1", &completed("cll_links", "")).await;
            if roles != Roles::Ingest {
                support::wait_for_queue(&db.store, "the call is folded", 30, |calls| calls == 0)
                    .await;
            }
            let private = app.private_url();
            let overview = page(&format!("{private}/status")).await;
            let call = page(&format!("{private}/status/calls/cll_links")).await;
            let mut followed = Vec::new();
            for path in destinations(&overview, "cll_links")
                .into_iter()
                .chain(destinations(&call, "cll_links"))
            {
                let response = reqwest::get(format!("{private}{path}")).await;
                let status = response.expect("the link answers").status();
                assert_eq!(status, 200, "{roles:?} (admin: {admin}) links to {path}");
                followed.push(path);
            }
            for expected in [
                "/metrics",
                "/v1/quarantine",
                "/status",
                "/status/calls?id=cll_links",
            ] {
                assert!(
                    followed.iter().any(|path| path == expected),
                    "{roles:?} links to {expected}: {followed:?}"
                );
            }
            let query_api = roles != Roles::Ingest;
            let linked = |path: &str| followed.iter().any(|followed| followed == path);
            assert_eq!(linked("/v1/unlinked"), query_api, "{roles:?}: {followed:?}");
            assert_eq!(linked("/v1/calls/cll_links"), query_api, "{followed:?}");
            let receives = roles != Roles::Projector;
            assert_eq!(
                linked("/v1/rejections"),
                receives,
                "{roles:?}: {followed:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_redirects_to_the_status_page_but_not_on_a_webhook_only_listener() {
    let client = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("a client");
    for roles in ROLES {
        for admin in [false, true] {
            let db = TestDb::sqlite().await;
            let app = spawn_app_on(roles, test_settings(), &db.store, admin).await;
            let private = app.private_url();
            let root = client.get(format!("{private}/")).send().await;
            let root = root.expect("/ answers");
            assert_eq!(root.status(), 303, "{roles:?} (admin: {admin})");
            let location = root.headers()["location"].to_str().expect("ASCII");
            let overview = page(&format!("{private}{location}")).await;
            assert!(overview.contains("<h1>callfold status</h1>"), "{overview}");
            if admin {
                let public_root = reqwest::get(format!("{}/", app.base_url)).await;
                let public_root = public_root.expect("/ answers");
                assert_eq!(public_root.status(), 404, "{roles:?}");
                let error: Value = public_root.json().await.expect("a JSON 404");
                assert!(error["error"].is_string(), "{error}");
            }
        }
    }
}

/// Sends `method path` to `base`, checks the answer is `status` with a JSON error body, and
/// returns its `Allow` header, if any.
async fn assert_json_error(base: &str, method: &str, path: &str, status: u16) -> Option<String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let response = reqwest::Client::new()
        .request(method.clone(), format!("{base}{path}"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), status, "{method} {base}{path}");
    let header = |name: &str| {
        let value = response.headers().get(name);
        value.map(|value| value.to_str().expect("ASCII").to_owned())
    };
    let (content_type, allow) = (header("content-type"), header("allow"));
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "{method} {path}"
    );
    let error: Value = response.json().await.expect("a JSON body");
    let message = error["error"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{method} {path}: {error}");
    allow
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_answer_is_json_on_every_listener_and_role() {
    for roles in ROLES {
        for admin in [false, true] {
            let db = TestDb::sqlite().await;
            let app = spawn_app_on(roles, test_settings(), &db.store, admin).await;
            let (public, private) = (app.base_url.as_str(), app.private_url());
            assert_json_error(public, "GET", "/no/such/path", 404).await;
            assert_json_error(private, "GET", "/no/such/path", 404).await;
            assert_json_error(private, "GET", "/status/nope", 404).await;
            assert_json_error(private, "GET", "/status/calls/cll_unknown", 404).await;
            assert_json_error(private, "GET", "/status/calls?id=cll_unknown", 404).await;
            assert_json_error(private, "GET", "/status/calls", 400).await;
            assert_json_error(private, "GET", "/v1/quarantine/not-a-seq", 400).await;
            assert_json_error(private, "GET", "/v1/quarantine/999", 404).await;
            let allow = assert_json_error(private, "POST", "/status", 405).await;
            assert!(allow.is_some_and(|allow| allow.contains("GET")));
            assert_json_error(private, "DELETE", "/v1/quarantine", 405).await;
            assert_json_error(private, "PUT", "/", 405).await;
            if roles != Roles::Projector {
                let allow = assert_json_error(public, "GET", "/webhooks/allo", 405).await;
                assert_eq!(allow.as_deref(), Some("POST"));
            }
            if roles != Roles::Ingest {
                assert_json_error(private, "GET", "/v1/calls/cll_unknown", 404).await;
                assert_json_error(private, "GET", "/v1/calls?limit=zero", 400).await;
            }
            if admin {
                assert_json_error(public, "GET", "/status", 404).await;
                assert_json_error(public, "GET", "/", 404).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_box_leads_to_the_call_whatever_its_id_holds() {
    let db = TestDb::sqlite().await;
    let (app, receiver) = app_and_receiver(Roles::All, &db, false).await;
    let odd_id = "cll_a/b?c#d é";
    deliver(&receiver, "msg_search_1", &completed(odd_id, "")).await;
    support::wait_for_queue(&db.store, "the call is folded", 30, |calls| calls == 0).await;
    let base = app.private_url();
    let overview = page(&format!("{base}/status")).await;
    let (actions, inputs) = (
        attribute_values(&overview, "action"),
        attribute_values(&overview, "name"),
    );
    let [action] = &actions[..] else {
        panic!("one form on the overview: {overview}")
    };
    let [input] = &inputs[..] else {
        panic!("one input in the form: {overview}")
    };
    assert!(overview.contains("method=\"get\""), "{overview}");
    assert!(!overview.contains("<script"), "no script: {overview}");

    let pasted = format!("  {odd_id} ");
    let found = reqwest::Client::new()
        .get(format!("{base}{action}"))
        .query(&[(input.as_str(), pasted.as_str())])
        .send()
        .await
        .expect("the search answers");
    assert_eq!(found.status(), 200);
    let call = found.text().await.expect("HTML");
    assert!(call.contains("<h1>Call cll_a/b?c#d é</h1>"), "{call}");
    assert!(call.contains("msg_search_1"), "{call}");

    let listed = overview.contains("href=\"/status/calls/cll_a%2Fb%3Fc%23d%20%C3%A9\"");
    assert!(listed, "the overview links to the call's page: {overview}");
}

async fn a_calls_page_shows_each_record_with_headers_body_and_command(db: TestDb) {
    let (app, receiver) = app_and_receiver(Roles::All, &db, false).await;
    let small = completed("cll_records", "</td><script>alert(1)</script>");
    let padding = format!("{}TAIL_BEYOND_THE_CUT", "x".repeat(70 * 1024));
    let large = envelope(
        "call.answered",
        "2026-02-10T09:17:40Z",
        json!({"id": "cll_records", "padding": padding}),
    );
    let small_seq = deliver(&receiver, "msg_records_small", &small).await;
    let large_seq = deliver(&receiver, "msg_records_large", &large).await;

    let html = page(&format!("{}/status/calls/cll_records", app.private_url())).await;
    for (seq, webhook_id, body) in [
        (small_seq, "msg_records_small", &small),
        (large_seq, "msg_records_large", &large),
    ] {
        for shown in [
            format!("id=\"record-{seq}\""),
            format!("href=\"#record-{seq}\""),
            webhook_id.to_owned(),
            format!("callfold quarantine show {seq}"),
            format!("{} bytes, SHA-256 {:x}", body.len(), Sha256::digest(body)),
        ] {
            assert!(html.contains(&shown), "{shown} on the page: {html}");
        }
        let whole = reqwest::get(format!("{}/v1/quarantine/{seq}", app.private_url()));
        let whole: Value = whole.await.expect("answers").json().await.expect("JSON");
        assert_eq!(whole["body"].as_str().map(str::as_bytes), Some(&body[..]));
    }
    assert!(
        html.contains("&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        !html.contains("<script>"),
        "the body cannot open markup: {html}"
    );
    let truncated = format!("truncated, {} bytes", large.len());
    assert!(html.contains(&truncated), "{html}");
    assert!(
        !html.contains("TAIL_BEYOND_THE_CUT"),
        "only 64 KiB are shown"
    );
    assert!(
        html.contains(&"x".repeat(60 * 1024)),
        "the first 64 KiB are shown"
    );
    assert!(html.contains("webhook-signature"), "{html}");
    let secret = support::SECRET.trim_start_matches("whsec_");
    assert!(!html.contains(secret), "no secret shown");
}

on_both_stores!(a_calls_page_shows_each_record_with_headers_body_and_command);
