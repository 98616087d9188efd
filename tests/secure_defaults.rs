//! Secure by default, through the real executable: a service refuses to serve its private
//! routes (query API, quarantine, `/status`, `/metrics`) beyond loopback without a token unless
//! told so explicitly, and with a token `/status` needs it like `/v1`.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{CALLFOLD, SECRET, TestDb, start_service};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Longest a refusal or a start may take: a bound on failure, not a pause.
const STARTUP: Duration = Duration::from_secs(30);

/// `callfold serve ARGS` on a new SQLite database, with `env` and no API token unless `env`
/// sets one.
fn serve(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(CALLFOLD);
    command
        .args(["serve", "--database-url", &db.url])
        .args(args)
        .env("CALLFOLD_WEBHOOK_SECRETS", SECRET)
        .env_remove("CALLFOLD_API_TOKEN")
        .env_remove("CALLFOLD_ALLOW_PUBLIC_API")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    command
}

/// Runs `command` to its end and returns what it wrote to stderr; fails if it was still
/// running after [`STARTUP`] (it started instead of refusing).
async fn refusal(mut command: Command) -> String {
    let output = tokio::time::timeout(STARTUP, command.output())
        .await
        .expect("callfold refused to start instead of serving")
        .expect("callfold runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{stderr}");
    stderr
}

fn assert_names_the_risk_and_the_ways_out(stderr: &str) {
    for words in [
        "refusing to serve the query API",
        "CALLFOLD_API_TOKEN",
        "--admin-listen",
        "--allow-public-api",
        "CALLFOLD_ALLOW_PUBLIC_API",
    ] {
        assert!(stderr.contains(words), "{words:?} missing from: {stderr}");
    }
}

/// Starts `command` and waits until it says it listens.
async fn starts(mut command: Command) {
    let mut child = command
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("callfold runs");
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut seen = String::new();
    let listening = tokio::time::timeout(STARTUP, async {
        while let Some(line) = lines.next_line().await.expect("stderr") {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("listening") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(listening, Ok(true), "callfold did not start: {seen}");
}

#[tokio::test]
async fn a_listener_beyond_loopback_without_a_token_refuses_to_start_and_says_why() {
    let db = TestDb::sqlite().await;
    let stderr = refusal(serve(&db, &["--listen", "0.0.0.0:0"], &[])).await;
    assert_names_the_risk_and_the_ways_out(&stderr);
    assert!(stderr.contains("0.0.0.0:0 (--listen)"), "{stderr}");
}

#[tokio::test]
async fn an_admin_listener_on_every_interface_without_a_token_refuses_to_start() {
    let db = TestDb::sqlite().await;
    let args = ["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"];
    let stderr = refusal(serve(&db, &args, &[])).await;
    assert_names_the_risk_and_the_ways_out(&stderr);
    assert!(stderr.contains("(--admin-listen)"), "{stderr}");
}

#[tokio::test]
async fn the_explicit_flag_or_a_token_lets_a_listener_beyond_loopback_start() {
    let db = TestDb::sqlite().await;
    starts(serve(
        &db,
        &["--listen", "0.0.0.0:0", "--allow-public-api"],
        &[],
    ))
    .await;
    let allowed = [("CALLFOLD_ALLOW_PUBLIC_API", "true")];
    starts(serve(&db, &["--listen", "0.0.0.0:0"], &allowed)).await;
    let token = [("CALLFOLD_API_TOKEN", "a-made-up-token")];
    starts(serve(&db, &["--listen", "0.0.0.0:0"], &token)).await;
}

#[tokio::test]
async fn with_a_token_the_status_page_answers_401_without_it() {
    let db = TestDb::sqlite().await;
    let token = "a-made-up-token";
    let service = start_service("serve", &db.url, &[("CALLFOLD_API_TOKEN", token)]).await;
    let client = reqwest::Client::new();
    for path in ["/status", "/status/calls/cll_1", "/status/calls?id=cll_1"] {
        let url = format!("{}{path}", service.base_url);
        let without = client.get(&url).send().await.expect("answer");
        assert_eq!(without.status(), 401, "{path}");
        let wrong = client.get(&url).bearer_auth("not-it").send().await;
        assert_eq!(wrong.expect("answer").status(), 401, "{path}");
    }
    let with = client
        .get(format!("{}/status", service.base_url))
        .bearer_auth(token)
        .send()
        .await
        .expect("answer");
    assert_eq!(with.status(), 200);
}
