//! The status page in a real browser: headless Chromium (Debian's `chromium`, which `.ci/test`
//! installs) opens `/` of a `callfold serve` that received traffic from `callfold simulate`,
//! lands on the overview and finds the call there; then fills the search box the way a browser
//! submits a GET form, lands on that call's page and finds its timeline and its records
//! (headers, body, the command that prints each). Screenshots of both pages are written to the
//! test's output folder. The routes' other behaviours are tested over HTTP in
//! `status_routes.rs`.

mod support;

use std::path::{Path, PathBuf};

use support::{CALLFOLD, SECRET};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs headless Chromium on `url` with `action` (`--dump-dom`, or `--screenshot=PATH`);
/// what it printed on stdout.
async fn chromium(url: &str, action: &str, profile: &Path) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium package (.ci/test does)"
    );
    let output = tokio::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(action)
        .arg(url)
        .output()
        .await
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The value of `attribute` on the first `element` of `html`.
fn attribute(html: &str, element: &str, attribute: &str) -> String {
    let start = html
        .find(&format!("<{element} "))
        .unwrap_or_else(|| panic!("a <{element}> in {html}"));
    let tag = &html[start..start + html[start..].find('>').expect("a closed tag")];
    let marker = format!("{attribute}=\"");
    let value = &tag[tag
        .find(&marker)
        .unwrap_or_else(|| panic!("{attribute} in {tag}"))
        + marker.len()..];
    value[..value.find('"').expect("a closed value")].to_owned()
}

/// Where the screenshots go: a folder of the test build's own.
fn output_folder() -> PathBuf {
    let folder = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&folder).expect("the output folder");
    folder
}

#[tokio::test]
async fn the_status_page_shows_a_call_sent_through_simulate() {
    let (db, service) = support::serve_on_sqlite().await;
    let simulated = tokio::process::Command::new(CALLFOLD)
        .args(["simulate", "--calls", "10", "--shuffle", "--url"])
        .arg(format!("{}/webhooks/allo", service.base_url))
        .env("CALLFOLD_WEBHOOK_SECRETS", SECRET)
        .output()
        .await
        .expect("callfold simulate runs");
    assert!(simulated.status.success());
    let report = String::from_utf8_lossy(&simulated.stdout);
    let call = report
        .split_whitespace()
        .find(|word| word.starts_with("cll_"))
        .unwrap_or_else(|| panic!("simulate names a call: {report}"))
        .to_owned();
    support::wait_for_queue(&db.store, "every call is folded", 30, |calls| calls == 0).await;

    let profile = tempfile::tempdir().expect("a browser profile");
    let root = format!("{}/", service.base_url);
    let rendered = chromium(&root, "--dump-dom", profile.path()).await;
    assert!(
        rendered.contains("Deliveries stored, last hour"),
        "/ leads to the overview: {rendered}"
    );
    assert!(rendered.contains("<svg"), "the chart is there");
    assert!(
        rendered.contains(&format!("href=\"/status/calls/{call}\"")),
        "the simulated call {call} is listed: {rendered}"
    );

    // What a browser requests when the search box is submitted: the form's action, with each
    // of its inputs as a query parameter.
    let action = attribute(&rendered, "form", "action");
    let input = attribute(&rendered, "input", "name");
    assert_eq!(attribute(&rendered, "form", "method"), "get");
    let timeline = format!("{}{action}?{input}={call}", service.base_url);
    let rendered = chromium(&timeline, "--dump-dom", profile.path()).await;
    for shown in [
        "Arrival order",
        "Effective order",
        "call.completed",
        call.as_str(),
        "Records, in arrival order",
        "webhook-id",
        "webhook-timestamp",
        "callfold quarantine show ",
        "<pre>{\"data\":{",
        &format!("\"id\":\"{call}\""),
    ] {
        assert!(
            rendered.contains(shown),
            "{shown} on the call's page: {rendered}"
        );
    }

    let overview = format!("{}/status", service.base_url);
    let folder = output_folder();
    for (name, url) in [("status.png", &overview), ("call.png", &timeline)] {
        let path = folder.join(name);
        let _ = std::fs::remove_file(&path);
        let action = format!("--screenshot={}", path.display());
        chromium(url, &action, profile.path()).await;
        let written = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(written > 10_000, "{} holds a rendered page", path.display());
        eprintln!("screenshot: {}", path.display());
    }
}
