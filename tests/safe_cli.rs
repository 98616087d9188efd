//! The command line is safe to run anywhere, through the real executable: commands that only
//! read never create or migrate a database, a connection failure says its cause once with
//! where and what to check, listen addresses take the forms operators write, the database
//! driver's notices stay out of the output, a closed pipe ends a command quietly, and the
//! unlinked events are listed beside the quarantine.

mod support;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use support::{CALLFOLD, SECRET, TestDb, envelope};

/// Runs `callfold ARGS` in `folder` with `env`, `RUST_LOG` unset (the default log filter).
async fn callfold(folder: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(CALLFOLD)
        .args(args)
        .current_dir(folder)
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env("CALLFOLD_WEBHOOK_SECRETS", SECRET)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("callfold runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every command that only reads, as a user would type it.
const READ_ONLY_COMMANDS: &[&[&str]] = &[
    &["calls", "list"],
    &["calls", "show", "cll_1"],
    &["calls", "events", "cll_1"],
    &["quarantine", "list"],
    &["quarantine", "show", "1"],
    &["unlinked", "list"],
    &["stats"],
];

#[tokio::test]
async fn read_only_commands_in_a_folder_without_a_database_create_nothing() {
    let folder = tempfile::tempdir().expect("temp dir");
    for args in READ_ONLY_COMMANDS {
        let output = callfold(folder.path(), args, &[]).await;
        let said = stderr(&output);
        assert!(!output.status.success(), "{args:?}: {said}");
        assert!(
            said.contains("no database at ./callfold.db")
                && said.contains("set DATABASE_URL or --database-url"),
            "{args:?}: {said}"
        );
        let left: Vec<_> = std::fs::read_dir(folder.path()).expect("list").collect();
        assert!(left.is_empty(), "{args:?} created {left:?}");
    }
}

#[tokio::test]
async fn an_unmigrated_sqlite_database_is_named_with_the_way_to_migrate_it() {
    let folder = tempfile::tempdir().expect("temp dir");
    let path = folder.path().join("empty.db");
    std::fs::write(&path, b"").expect("an empty SQLite file");
    let url = format!("sqlite:{}", path.display());
    assert_unmigrated_and_left_so(folder.path(), &url).await;
}

#[tokio::test]
async fn an_unmigrated_postgres_database_is_named_with_the_way_to_migrate_it() {
    let folder = tempfile::tempdir().expect("temp dir");
    let url = TestDb::unmigrated_postgres_url().await;
    assert_unmigrated_and_left_so(folder.path(), &url).await;
}

/// Every read-only command refuses the unmigrated database at `url`, saying how to migrate
/// it; and none migrates it (each run finds it unmigrated still).
async fn assert_unmigrated_and_left_so(folder: &Path, url: &str) {
    for args in READ_ONLY_COMMANDS {
        let args: Vec<&str> = args
            .iter()
            .copied()
            .chain(["--database-url", url])
            .collect();
        let output = callfold(folder, &args, &[]).await;
        let said = stderr(&output);
        assert!(!output.status.success(), "{args:?}: {said}");
        assert!(
            said.contains("is not migrated (0 of") && said.contains("run `callfold migrate`"),
            "{args:?}: {said}"
        );
    }
    let migrated = callfold(folder, &["migrate", "--database-url", url], &[]).await;
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let listed = callfold(folder, &["calls", "list", "--database-url", url], &[]).await;
    assert!(listed.status.success(), "{}", stderr(&listed));
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test]
async fn a_postgres_on_a_wrong_port_is_reported_at_once_with_its_cause() {
    let folder = tempfile::tempdir().expect("temp dir");
    let port = closed_port();
    let url = format!("postgres://app:hunter2-secret@127.0.0.1:{port}/calls");
    let acquire_timeout_ms = "20000";
    for args in [
        &["calls", "list"][..],
        &["migrate"][..],
        &["serve", "--listen", "127.0.0.1:0"][..],
    ] {
        let args: Vec<&str> = args
            .iter()
            .copied()
            .chain(["--database-url", &url])
            .chain(["--db-acquire-timeout-ms", acquire_timeout_ms])
            .collect();
        let started = Instant::now();
        let output = callfold(folder.path(), &args, &[]).await;
        let waited = started.elapsed();
        let said = stderr(&output);
        assert!(!output.status.success(), "{args:?}: {said}");
        assert!(
            waited < Duration::from_secs(10),
            "{args:?} waited {waited:?}, as for the pool's timeout: {said}"
        );
        assert!(
            said.contains(&format!("127.0.0.1:{port}"))
                && said.contains("is PostgreSQL running")
                && !said.contains("pool timed out"),
            "{args:?}: {said}"
        );
        assert_eq!(
            said.to_lowercase().matches("connection refused").count(),
            1,
            "the cause once: {said}"
        );
        assert!(!said.contains("hunter2"), "{args:?}: {said}");
    }
}

#[tokio::test]
async fn a_sqlite_path_in_a_missing_folder_names_the_path_and_the_folder() {
    let folder = tempfile::tempdir().expect("temp dir");
    let missing = folder.path().join("not-made-yet");
    let path = missing.join("callfold.db");
    let url = format!("sqlite:{}", path.display());
    for args in [&["migrate"][..], &["serve", "--listen", "127.0.0.1:0"][..]] {
        let args: Vec<&str> = args
            .iter()
            .copied()
            .chain(["--database-url", &url])
            .collect();
        let output = callfold(folder.path(), &args, &[]).await;
        let said = stderr(&output);
        assert!(!output.status.success(), "{args:?}: {said}");
        assert!(
            said.contains(&path.display().to_string())
                && said.contains(&format!("the folder {} does not exist", missing.display())),
            "{args:?}: {said}"
        );
    }
    assert!(!missing.exists());
}

/// Starts `callfold serve --listen LISTEN` and returns the address it reports listening on,
/// or everything it said if it exited first.
async fn listening_address(listen: &str, env: &[(&str, &str)]) -> Result<String, String> {
    let db = TestDb::sqlite().await;
    let mut child = tokio::process::Command::new(CALLFOLD)
        .args(["serve", "--listen", listen, "--database-url", &db.url])
        .env("CALLFOLD_WEBHOOK_SECRETS", SECRET)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("callfold starts");
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let mut said = String::new();
    while let Some(line) = lines.next_line().await.expect("stderr readable") {
        if let Some(rest) = line
            .split(" addr=")
            .nth(1)
            .filter(|_| line.contains("listening"))
        {
            return Ok(rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned());
        }
        said.push_str(&line);
        said.push('\n');
    }
    Err(said)
}

#[tokio::test]
async fn listen_addresses_take_the_usual_forms() {
    let local = listening_address("localhost:0", &[])
        .await
        .expect("listens");
    assert!(local.starts_with("127.0.0.1:"), "{local}");

    // `:PORT` is every interface, so the secure default applies: refused without a token...
    let refused = listening_address(":0", &[]).await.expect_err("refused");
    assert!(
        refused.contains("refusing to serve") && refused.contains("0.0.0.0:0"),
        "{refused}"
    );
    // ...and served with one.
    let token = [("CALLFOLD_API_TOKEN", "a-test-token")];
    let everywhere = listening_address(":0", &token).await.expect("listens");
    assert!(everywhere.starts_with("0.0.0.0:"), "{everywhere}");

    let folder = tempfile::tempdir().expect("temp dir");
    for (bad, says) in [("8080", "no port"), ("example.com:80", "not an IP address")] {
        for flag in ["--listen", "--admin-listen"] {
            let output = callfold(folder.path(), &["serve", flag, bad], &[]).await;
            let said = stderr(&output);
            assert!(!output.status.success(), "{flag} {bad}: {said}");
            assert!(said.contains(says) && said.contains(":8080"), "{said}");
        }
    }
}

#[tokio::test]
async fn commands_on_postgres_print_no_driver_notice() {
    let db = TestDb::postgres().await;
    let folder = tempfile::tempdir().expect("temp dir");
    // Migrating an already migrated database is where the server sends notices.
    let migrated = callfold(folder.path(), &["migrate", "--database-url", &db.url], &[]).await;
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let said = stderr(&migrated);
    assert!(
        !said.contains("sqlx") && !said.contains("already exists"),
        "{said}"
    );
    for args in READ_ONLY_COMMANDS
        .iter()
        .filter(|args| !args.contains(&"show") && !args.contains(&"events"))
    {
        let args: Vec<&str> = args
            .iter()
            .copied()
            .chain(["--database-url", &db.url])
            .collect();
        let output = callfold(folder.path(), &args, &[]).await;
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        assert_eq!(stderr(&output), "", "{args:?}");
    }
}

/// Runs `callfold ARGS` with its stdout a pipe whose reader is already gone.
async fn into_a_closed_pipe(args: &[&str]) -> std::process::ExitStatus {
    let (writer, reader) = tokio::net::unix::pipe::pipe().expect("a pipe");
    drop(reader);
    let writer = writer.into_blocking_fd().expect("the pipe's write end");
    tokio::process::Command::new(CALLFOLD)
        .args(args)
        .env("CALLFOLD_WEBHOOK_SECRETS", SECRET)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::null())
        .status()
        .await
        .expect("callfold runs")
}

#[tokio::test]
async fn a_closed_pipe_ends_every_printing_command_quietly() {
    let db = TestDb::sqlite().await;
    let url = db.url.as_str();
    let commands: &[&[&str]] = &[
        &["calls", "list", "--database-url", url],
        &["quarantine", "list", "--database-url", url],
        &["unlinked", "list", "--database-url", url],
        &["stats", "--database-url", url],
        &["config", "check", "serve", "--database-url", url],
    ];
    for args in commands {
        let status = into_a_closed_pipe(args).await;
        assert!(status.success(), "{args:?}: {status}");
    }
}

#[tokio::test]
async fn unlinked_events_are_listed_page_by_page() {
    let (db, service) = support::serve_on_sqlite().await;
    list_unlinked(&db, &service).await;
}

#[tokio::test]
async fn unlinked_events_are_listed_page_by_page_on_postgres() {
    let db = TestDb::postgres().await;
    let service = support::start_service("serve", &db.url, &[]).await;
    list_unlinked(&db, &service).await;
}

async fn list_unlinked(db: &TestDb, service: &support::RunningService) {
    let receiver = service.receiver();
    let mut seqs = Vec::new();
    for n in 0..3 {
        let tag = envelope(
            "tag.added",
            "2026-02-10T09:18:00Z",
            json!({"conversation": {"call_id": format!("cll_u{n}")}, "tag": "vip"}),
        );
        seqs.push(receiver.deliver(&format!("msg_u_{n}"), &tag).await.seq());
    }
    let linked = envelope(
        "call.completed",
        "2026-02-10T09:19:00Z",
        json!({"id": "cll_linked"}),
    );
    assert_eq!(receiver.deliver("msg_u_linked", &linked).await.status, 200);

    let folder = tempfile::tempdir().expect("temp dir");
    let page = |after: Option<String>| {
        let mut args = vec![
            "unlinked".to_owned(),
            "list".to_owned(),
            "--limit".to_owned(),
            "2".to_owned(),
            "--database-url".to_owned(),
            db.url.clone(),
        ];
        args.extend(
            after
                .into_iter()
                .flat_map(|after| ["--after".to_owned(), after]),
        );
        let folder = folder.path().to_owned();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = callfold(&folder, &args, &[]).await;
            assert!(output.status.success(), "{}", stderr(&output));
            serde_json::from_slice::<Value>(&output.stdout).expect("JSON")
        }
    };
    let first = page(None).await;
    assert_eq!(first["total"], 3, "{first}");
    let next = first["next"].to_string();
    let second = page(Some(next)).await;
    let listed: Vec<i64> = [&first, &second]
        .iter()
        .flat_map(|page| page["events"].as_array().expect("events").clone())
        .map(|event| event["seq"].as_i64().expect("a seq"))
        .collect();
    assert_eq!(listed, seqs);
    assert_eq!(second["next"], Value::Null);
}
