//! Which configuration folded the projections: every projection records the fingerprint of the
//! linking rules and precedence graph it was folded with, and a process started with another
//! configuration says so (log, `/readyz`, `config check`) until `callfold rebuild` refolds them.

mod support;

use std::path::Path;
use std::process::Output;

use callfold_store::{
    CallKey, ConfigFingerprint, EventTime, ProjectionsBuiltWith, QueueSweep, StoredProjection,
};
use serde_json::{Value, json};
use support::{CALLFOLD, SECRET, TestDb, envelope, start_service, wait_until};

/// A linking rule other than the default one for `tag.added`.
const CHANGED_RULE: &str =
    "[linking_rules]\n\"tag.added\" = [\"/data/call_id\", \"/data/conversation/call_id\"]\n";

/// Runs `callfold ARGS` in `folder` against `database_url`, with the configuration file
/// `config` if any.
async fn callfold(
    folder: &Path,
    args: &[&str],
    database_url: &str,
    config: Option<&Path>,
) -> Output {
    let mut command = tokio::process::Command::new(CALLFOLD);
    command
        .args(args)
        .current_dir(folder)
        .env("CALLFOLD_WEBHOOK_SECRETS", SECRET)
        .env("DATABASE_URL", database_url);
    if let Some(config) = config {
        command.env("CALLFOLD_CONFIG", config);
    }
    command.output().await.expect("callfold runs")
}

fn text(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

async fn readyz(base_url: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base_url}/readyz"))
        .await
        .expect("readyz answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_linking_rule_is_reported_until_a_rebuild() {
    let db = TestDb::sqlite().await;
    let folder = tempfile::tempdir().expect("temp dir");
    let first = start_service("serve", &db.url, &[]).await;
    let completed = envelope(
        "call.completed",
        "2026-02-10T09:17:42Z",
        json!({"id": "cll_cfg", "type": "INBOUND", "result": "ANSWERED"}),
    );
    assert_eq!(
        first.receiver().deliver("msg_cfg", &completed).await.status,
        200
    );
    wait_until("the call is projected", 30, || async {
        let projection = db.store.projection(&CallKey::new("cll_cfg")).await;
        projection.expect("read").is_some()
    })
    .await;
    assert_eq!(
        readyz(first.private_url()).await,
        (200, json!({"status": "ready"}))
    );
    let checked = callfold(folder.path(), &["config", "check"], &db.url, None).await;
    assert!(
        text(&checked).contains("projections: folded with this configuration"),
        "{}",
        text(&checked)
    );
    drop(first);

    let config = folder.path().join("changed.toml");
    std::fs::write(&config, CHANGED_RULE).expect("write");
    let config_env = config.to_str().expect("utf-8 path");
    let changed = start_service("serve", &db.url, &[("CALLFOLD_CONFIG", config_env)]).await;
    let (status, ready) = readyz(changed.private_url()).await;
    assert_eq!(
        status, 200,
        "stale projections do not make a process unready"
    );
    let advice = ready["configuration"]["advice"]
        .as_str()
        .unwrap_or_default();
    assert!(advice.contains("callfold rebuild"), "{ready}");
    assert!(
        changed
            .output()
            .contains("projections were folded with another configuration"),
        "{}",
        changed.output()
    );
    let checked = callfold(folder.path(), &["config", "check"], &db.url, Some(&config)).await;
    assert!(checked.status.success(), "{}", text(&checked));
    assert!(
        text(&checked).contains("warning:") && text(&checked).contains("callfold rebuild"),
        "{}",
        text(&checked)
    );

    let rebuilt = callfold(folder.path(), &["rebuild"], &db.url, Some(&config)).await;
    assert!(rebuilt.status.success(), "{}", text(&rebuilt));
    assert_eq!(
        readyz(changed.private_url()).await,
        (200, json!({"status": "ready"}))
    );
    let checked = callfold(folder.path(), &["config", "check"], &db.url, Some(&config)).await;
    assert!(
        text(&checked).contains("projections: folded with this configuration"),
        "{}",
        text(&checked)
    );
}

fn projection(call: &str, built_with: Option<&str>) -> StoredProjection {
    StoredProjection {
        call_key: CallKey::new(call),
        document: "{}".to_owned(),
        last_seq: 1,
        late_events: 0,
        events_folded: 1,
        updated_at: EventTime::from_unix_micros(2),
        built_with: built_with.map(ConfigFingerprint::new),
    }
}

/// Writes `projections` as a settle does: marks their calls, claims them and settles.
async fn write(db: &TestDb, projections: &[StoredProjection]) {
    for projection in projections {
        db.store
            .mark_call(&projection.call_key)
            .await
            .expect("mark");
    }
    let lease = std::time::Duration::from_secs(600);
    let claimed = db
        .store
        .claim_calls(&QueueSweep::default(), 100, lease)
        .await
        .expect("claim");
    db.store
        .settle_claims(&claimed, projections)
        .await
        .expect("settle");
}

async fn projections_tell_which_configuration_folded_them(db: TestDb) {
    let [a, b] = ["a".repeat(64), "b".repeat(64)].map(ConfigFingerprint::new);
    let built_with = |fingerprint| db.store.projections_built_with(fingerprint);
    assert_eq!(
        built_with(&a).await.expect("check"),
        ProjectionsBuiltWith::That
    );
    write(&db, &[projection("cll_1", Some(a.as_str()))]).await;
    assert_eq!(
        built_with(&a).await.expect("check"),
        ProjectionsBuiltWith::That
    );
    assert_eq!(
        built_with(&b).await.expect("check"),
        ProjectionsBuiltWith::Another(Some(a.clone()))
    );
    write(&db, &[projection("cll_2", Some(b.as_str()))]).await;
    assert_eq!(
        built_with(&a).await.expect("check"),
        ProjectionsBuiltWith::Another(Some(b.clone()))
    );
    write(
        &db,
        &[
            projection("cll_1", Some(b.as_str())),
            projection("cll_3", None),
        ],
    )
    .await;
    assert_eq!(
        built_with(&b).await.expect("check"),
        ProjectionsBuiltWith::Another(None),
        "a projection of unknown configuration is another one"
    );
}

on_both_stores!(projections_tell_which_configuration_folded_them);
