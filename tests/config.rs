//! `callfold.toml` and the other ways operators configure callfold, through the real
//! executable: the file, the environment and the command line in that order of strength,
//! keys the file may not hold, linking rules and precedence from the file, `config check`, and
//! JSON logs.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use support::{CALLFOLD, SECRET, TestDb, envelope, start_service};

/// Runs `callfold ARGS` in `folder` with `env`.
async fn callfold(folder: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(CALLFOLD)
        .args(args)
        .current_dir(folder)
        .env("CALLFOLD_WEBHOOK_SECRETS", SECRET)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("callfold runs")
}

fn text(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

#[tokio::test]
async fn the_environment_overrides_the_file_which_overrides_the_defaults() {
    let folder = tempfile::tempdir().expect("temp dir");
    let file = "tolerance = 100\nmax_body = 2048\ndatabase_url = \"postgres://app:pw@db/x\"\n";
    std::fs::write(folder.path().join("callfold.toml"), file).expect("write");
    let checked = callfold(
        folder.path(),
        &["config", "check"],
        &[("CALLFOLD_MAX_BODY", "4096")],
    )
    .await;
    let report = text(&checked);
    assert!(checked.status.success(), "{report}");
    assert!(
        report.contains("configuration file: callfold.toml"),
        "{report}"
    );
    assert!(report.contains("tolerance = 100 (file)"), "{report}");
    assert!(report.contains("max_body = 4096 (environment)"), "{report}");
    assert!(report.contains("commit_queue = 128 (default)"), "{report}");
    assert!(report.contains("postgres://app:***@db/x"), "{report}");
    assert!(
        !report.contains(":pw@"),
        "a password in a URL is not printed"
    );
}

#[tokio::test]
async fn a_service_runs_with_the_file_and_the_command_line_wins_over_it() {
    let db = TestDb::sqlite().await;
    let folder = tempfile::tempdir().expect("temp dir");
    let file = folder.path().join("small-bodies.toml");
    // The command line's --database-url (given by start_service) wins over the file's.
    let file_text = "max_body = 50\ndatabase_url = \"sqlite:/no/such/folder/x.db\"\n";
    std::fs::write(&file, file_text).expect("write");
    let path = file.to_str().expect("utf-8 path");
    let body = envelope(
        "call.completed",
        "2026-02-10T09:17:00Z",
        json!({"id": "cll_c"}),
    );
    assert!(body.len() > 50);

    let service = start_service("serve", &db.url, &[("CALLFOLD_CONFIG", path)]).await;
    let receiver = service.receiver();
    assert_eq!(receiver.deliver("msg_c_1", &body).await.status, 413);
    drop(service);

    let env = [("CALLFOLD_CONFIG", path), ("CALLFOLD_MAX_BODY", "100000")];
    let service = start_service("serve", &db.url, &env).await;
    let receiver = service.receiver();
    assert_eq!(receiver.deliver("msg_c_2", &body).await.status, 200);

    let output = callfold(
        folder.path(),
        &["config", "check", "--config", path],
        &[("CALLFOLD_MAX_BODY", "7")],
    )
    .await;
    assert!(text(&output).contains("max_body = 7 (environment)"));
}

#[tokio::test]
async fn bad_files_are_refused_with_the_reason_and_never_their_values() {
    let folder = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "webhook_secrets = \"whsec_c2VjcmV0\"\n",
            "from the environment only",
        ),
        ("listen = \"not an address\"\n", "listen"),
        ("no_such_option = 1\n", "unknown key `no_such_option`"),
        (
            "tolerance = [1, 2]\n",
            "must be a string, a number or a boolean",
        ),
        ("precedence = [[\"a\", \"b\"], [\"b\", \"a\"]]\n", "cycle"),
        ("listen = \"unterminated\n", "line 1"),
    ];
    for (file, says) in cases {
        std::fs::write(folder.path().join("callfold.toml"), file).expect("write");
        let output = callfold(folder.path(), &["config", "check"], &[]).await;
        let report = text(&output);
        assert!(!output.status.success(), "{file}: {report}");
        assert!(report.contains(says), "{file}: {report}");
        assert!(!report.contains("whsec_c2VjcmV0"), "{file}: {report}");
    }
}

#[tokio::test]
async fn linking_rules_from_the_file_let_a_kept_record_be_redriven() {
    let (db, service) = support::serve_on_sqlite().await;
    let receiver = service.receiver();
    let tag = envelope(
        "tag.added",
        "2026-02-10T09:18:00Z",
        json!({"conversation": {"call_id": "cll_f"}, "tag": "vip"}),
    );
    let seq = receiver.deliver("msg_f_1", &tag).await.seq().to_string();

    let folder = tempfile::tempdir().expect("temp dir");
    let redrive = ["quarantine", "redrive", &seq, "--database-url", &db.url];
    let before = callfold(folder.path(), &redrive, &[]).await;
    assert!(!before.status.success(), "{}", text(&before));
    assert!(
        text(&before).contains("still unusable"),
        "{}",
        text(&before)
    );

    let rule =
        "[linking_rules]\n\"tag.added\" = [\"/data/call_id\", \"/data/conversation/call_id\"]\n";
    std::fs::write(folder.path().join("callfold.toml"), rule).expect("write");
    let after = callfold(folder.path(), &redrive, &[]).await;
    assert!(after.status.success(), "{}", text(&after));
    let answer: Value = serde_json::from_slice(&after.stdout).expect("JSON");
    assert_eq!(answer["status"], "redriven");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let db = TestDb::sqlite().await;
    let folder = tempfile::tempdir().expect("temp dir");
    let args = ["migrate", "--log-format", "json", "--database-url", &db.url];
    let output = callfold(folder.path(), &args, &[]).await;
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(
        lines.iter().any(
            |line| line["fields"]["message"] == "migrations applied" && line["level"] == "INFO"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_documented_example_names_every_option_and_passes_the_check() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/callfold.toml");
    let example = example.to_str().expect("utf-8 path");
    let folder = tempfile::tempdir().expect("temp dir");
    let output = callfold(
        folder.path(),
        &["config", "check", "--config", example],
        &[],
    )
    .await;
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    let documented = std::fs::read_to_string(example).expect("read the example");
    let options = report
        .lines()
        .filter_map(|line| line.split_once(" = ").map(|(key, _)| key));
    for key in options {
        assert!(
            documented.contains(&format!("\n{key} = "))
                || documented.contains(&format!("# {key} = ")),
            "docs/callfold.toml does not document `{key}`"
        );
    }
}

#[tokio::test]
async fn config_check_takes_the_options_of_the_service_it_checks() {
    let folder = tempfile::tempdir().expect("temp dir");
    let checked = callfold(
        folder.path(),
        &[
            "config",
            "check",
            "serve",
            "--listen",
            ":8080",
            "--allow-public-api",
            "--tolerance",
            "60",
        ],
        &[],
    )
    .await;
    let report = text(&checked);
    assert!(checked.status.success(), "{report}");
    assert!(report.contains("tolerance = 60 (command line)"), "{report}");
    assert!(report.contains("listener: 0.0.0.0:8080"), "{report}");

    // A projector-only host needs no signing secret; a receiver does.
    let without_secrets = |service: &'static str| {
        tokio::process::Command::new(support::CALLFOLD)
            .args(["config", "check", service])
            .current_dir(folder.path())
            .env_remove("CALLFOLD_WEBHOOK_SECRETS")
            .output()
    };
    let projector = without_secrets("projector").await.expect("runs");
    assert!(projector.status.success(), "{}", text(&projector));
    assert!(text(&projector).contains("webhook secrets: not needed"));
    let ingest = without_secrets("ingest").await.expect("runs");
    assert!(!ingest.status.success(), "{}", text(&ingest));
    assert!(text(&ingest).contains("CALLFOLD_WEBHOOK_SECRETS"));

    // Each service's own options only: a projector has no --tolerance.
    let refused = callfold(
        folder.path(),
        &["config", "check", "projector", "--tolerance", "60"],
        &[],
    )
    .await;
    assert!(!refused.status.success(), "{}", text(&refused));
    // The same mistakes the service refuses at start: a public API without a token.
    let exposed = callfold(
        folder.path(),
        &["config", "check", "serve", "--listen", ":8080"],
        &[],
    )
    .await;
    assert!(!exposed.status.success(), "{}", text(&exposed));
    assert!(
        text(&exposed).contains("CALLFOLD_API_TOKEN"),
        "{}",
        text(&exposed)
    );
}

#[tokio::test]
async fn config_check_prints_the_effective_configuration_readably() {
    let folder = tempfile::tempdir().expect("temp dir");
    let rule =
        "[linking_rules]\n\"tag.added\" = [\"/data/call_id\", \"/data/conversation/call_id\"]\n";
    std::fs::write(folder.path().join("callfold.toml"), rule).expect("write");
    let token = "a-token-never-printed";
    let checked = callfold(
        folder.path(),
        &[
            "config",
            "check",
            "ingest",
            "--admin-listen",
            "127.0.0.1:9090",
            "--database-url",
            "postgres://app:pw-never-printed@127.0.0.1:1/calls",
        ],
        &[("CALLFOLD_API_TOKEN", token)],
    )
    .await;
    let report = text(&checked);
    assert!(checked.status.success(), "{report}");
    assert!(
        report.contains("API token (CALLFOLD_API_TOKEN): set"),
        "{report}"
    );
    assert!(
        report.contains("admin listener: 127.0.0.1:9090"),
        "{report}"
    );
    assert!(
        report.contains("database: PostgreSQL database calls at 127.0.0.1:1 as app"),
        "{report}"
    );
    let rule_row = report
        .lines()
        .find(|line| line.trim_start().starts_with("tag.added "))
        .unwrap_or_else(|| panic!("no row of tag.added: {report}"));
    assert!(
        rule_row.ends_with("/data/call_id, /data/conversation/call_id"),
        "{rule_row}"
    );
    let rank_row = report
        .lines()
        .find(|line| line.contains("call.answered") && line.contains("call.completed"))
        .unwrap_or_else(|| panic!("no row of the precedence graph: {report}"));
    assert!(
        rank_row
            .split_whitespace()
            .next()
            .is_some_and(|rank| rank.parse::<u32>().is_ok()),
        "{rank_row}"
    );
    assert!(
        !report.contains(token) && !report.contains("pw-never-printed"),
        "{report}"
    );
    assert!(
        !report.contains("LinkingRules"),
        "no debug output: {report}"
    );
}

#[tokio::test]
async fn mistaken_rules_are_refused_by_the_check_and_by_the_service() {
    let db = TestDb::sqlite().await;
    let folder = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "[linking_rules]\n\"tag.added\" = [\"data/call_id\"]\n",
            "callfold.toml, line 2: the linking rule of `tag.added` has the pointer \
             `data/call_id`, which does not start with `/`",
            "write `/data/call_id`",
        ),
        (
            "\n[linking_rules]\n\"call.complete\" = [\"/data/id\"]\n",
            "callfold.toml, line 3: the linking rules name the topic `call.complete`",
            "did you mean `call.completed`?",
        ),
        (
            "precedence = [[\"call.recieved\", \"call.answered\"]]\n",
            "the precedence graph names the topic `call.recieved`",
            "did you mean `call.received`?",
        ),
        (
            "tolerance = 300\n[linking_rules]\n\"tag.added\" = \"/data/call_id\"\n",
            "callfold.toml is not a valid configuration: line 3, key `linking_rules.\"tag.added\"`",
            "expected a list",
        ),
        (
            "tolerance = \"five minutes\"\n",
            "callfold.toml, line 1: `tolerance` is not a valid --tolerance",
            "invalid digit",
        ),
    ];
    for (file, says, fix) in cases {
        std::fs::write(folder.path().join("callfold.toml"), file).expect("write");
        for args in [
            &["config", "check"][..],
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &db.url,
            ][..],
        ] {
            let output = callfold(folder.path(), args, &[]).await;
            let report = text(&output);
            assert!(!output.status.success(), "{args:?} {file}: {report}");
            assert!(
                report.contains(says) && report.contains(fix),
                "{args:?} {file}: {report}"
            );
        }
    }
    let far = "[linking_rules]\n\"voicemail.left\" = [\"/data/call_id\"]\n";
    std::fs::write(folder.path().join("callfold.toml"), far).expect("write");
    let output = callfold(folder.path(), &["config", "check"], &[]).await;
    assert!(
        output.status.success(),
        "a new topic is accepted: {}",
        text(&output)
    );
    assert!(
        text(&output).contains("note: `voicemail.left`"),
        "{}",
        text(&output)
    );
}
