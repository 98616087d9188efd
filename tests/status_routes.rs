//! The status page's routes over HTTP, on in-process apps of every role, with and without an
//! admin listener: `/` redirects to the status page where it is served and stays a 404 on a
//! webhook-only listener. The browser's view is `status_page.rs`'s.

mod support;

use callfold_service::Roles;
use reqwest::redirect::Policy;
use serde_json::Value;
use support::{TestDb, spawn_app_on, test_settings};

const ROLES: [Roles; 3] = [Roles::All, Roles::Ingest, Roles::Projector];

async fn page(url: &str) -> String {
    let response = reqwest::get(url).await.expect("the page answers");
    assert_eq!(response.status(), 200, "{url}");
    response.text().await.expect("HTML")
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
