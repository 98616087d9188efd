//! Rebuilding every projection while workers fold, on SQLite and PostgreSQL. Most tests drive a
//! rebuild step by step (read and fold a page of the log, then swap its projections in):
//! settling folds in between, at the point where a swap could overwrite them with the older
//! rebuilt projections, and reading the log while another connection holds the write lock that
//! appends need. A whole rebuild (its steps overlapped, on a SQLite file no other process has
//! open) rebuilds a log of many pages and reports a swap that fails. On SQLite alone, a rebuild
//! writes no temporary file, and leaves the write lock free between its swap batches only while
//! another process has the database open.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use callfold_projector::{Precedence, Projector, Rebuild};
use callfold_simulate::invent_events;
use callfold_store::{CallKey, ConfigFingerprint, NewEvent, Store};
use serde_json::json;
use support::{
    CALLFOLD, LEASE, TestDb, TestReceiver, as_received,
    assert_projections_equal_a_fold_from_scratch, envelope, start_receiver, start_service,
    test_settings,
};

/// Runs `projector` until it has folded every marked call.
async fn catch_up(projector: &Projector) {
    while projector.fold_next_batch().await.expect("fold a batch") > 0 {}
}

/// An event of call `call` with `topic` at payload time `at`.
fn call_event(topic: &str, at: &str, call: &str) -> Vec<u8> {
    envelope(
        topic,
        at,
        json!({"id": call, "call_id": call, "type": "INBOUND", "tag": "vip"}),
    )
}

/// Delivers the first events of the calls the scenario rebuilds: two of `cll_grown`, one each of
/// `cll_queued` and `cll_steady`.
async fn deliver_before_the_read(receiver: &TestReceiver) {
    let at = "2026-02-10T09:00:00Z";
    receiver
        .deliver("msg_grown_1", &call_event("call.received", at, "cll_grown"))
        .await;
    receiver
        .deliver(
            "msg_grown_2",
            &call_event("call.answered", "2026-02-10T09:00:05Z", "cll_grown"),
        )
        .await;
    receiver
        .deliver(
            "msg_queued_1",
            &call_event("call.received", at, "cll_queued"),
        )
        .await;
    receiver
        .deliver(
            "msg_steady_1",
            &call_event("call.received", at, "cll_steady"),
        )
        .await;
}

/// After the rebuild read the log: a call grows and is folded, a new call arrives and is
/// folded, and a third grows but stays queued until after the swap.
async fn change_the_calls_after_the_read(receiver: &TestReceiver, projector: &Projector) {
    let later = "2026-02-10T09:03:00Z";
    receiver
        .deliver(
            "msg_grown_3",
            &call_event("call.completed", later, "cll_grown"),
        )
        .await;
    receiver
        .deliver("msg_new_1", &call_event("call.received", later, "cll_new"))
        .await;
    catch_up(projector).await;
    receiver
        .deliver(
            "msg_queued_2",
            &call_event("call.completed", later, "cll_queued"),
        )
        .await;
}

/// Checks, right after the swap, that it kept what was settled after the read and left
/// the queued call marked.
async fn assert_the_swap_undid_nothing_settled_after_the_read(db: &TestDb) {
    let grown = support::stored_projection(&db.store, "cll_grown").await;
    assert_eq!(
        grown.expect("still projected").events_folded,
        3,
        "the swap kept the fold settled after the rebuild read the call"
    );
    assert!(
        support::stored_projection(&db.store, "cll_new")
            .await
            .is_some(),
        "a call first folded during the rebuild is still there"
    );
    assert_eq!(
        db.store.queue_depth().await.expect("depth").calls,
        1,
        "the call appended to after the read keeps its mark through the swap"
    );
}

async fn folds_settled_between_a_rebuilds_read_and_its_swap_are_never_undone(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let projector = Projector::new(db.store.clone(), Precedence::default(), 100, LEASE);
    deliver_before_the_read(&receiver).await;
    catch_up(&projector).await;

    let mut rebuild = projector.start_rebuild();
    let folded = projector
        .fold_rebuild_page(&mut rebuild)
        .await
        .expect("read a page")
        .expect("the log holds calls");
    assert_eq!(folded.len(), 3);
    change_the_calls_after_the_read(&receiver, &projector).await;
    projector
        .swap_rebuilt(&mut rebuild, folded)
        .await
        .expect("swap");
    assert_eq!(finish_reading(&projector, &mut rebuild).await, 3);

    assert_the_swap_undid_nothing_settled_after_the_read(&db).await;
    catch_up(&projector).await;
    assert_each_event_folded_once(
        &db,
        &["cll_grown", "cll_new", "cll_queued", "cll_steady"],
        7,
    )
    .await;
}

/// Reads and swaps what is left of `rebuild`, which has read every call already, and returns the
/// number of calls it rebuilt.
async fn finish_reading(projector: &Projector, rebuild: &mut Rebuild) -> u64 {
    let page = projector.fold_rebuild_page(rebuild).await.expect("read");
    assert!(page.is_none(), "every call was on the first page");
    projector.finish_rebuild(rebuild).await.expect("swap")
}

/// Longer than the read of a page of a few events takes, and much shorter than the time SQLite's
/// busy handler waits for a write lock (the store's statement timeout, 30 s).
const READ_PAGE_BOUND: Duration = Duration::from_secs(10);

async fn a_rebuilds_read_does_not_wait_for_the_write_lock(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let projector = Projector::new(db.store.clone(), Precedence::default(), 100, LEASE);
    let at = "2026-02-10T09:00:00Z";
    for call in ["cll_first", "cll_second"] {
        receiver
            .deliver(
                &format!("msg_{call}"),
                &call_event("call.received", at, call),
            )
            .await;
    }
    catch_up(&projector).await;

    // Another writer (on SQLite, the committer of `callfold serve` beside the rebuild's
    // process) holds the lock while the rebuild reads and folds.
    let lock = db.hold_write_lock().await;
    let mut rebuild = projector.start_rebuild();
    let folded = tokio::time::timeout(READ_PAGE_BOUND, projector.fold_rebuild_page(&mut rebuild))
        .await
        .expect("the read finished while another writer held the lock")
        .expect("read a page")
        .expect("the log holds calls");
    assert_eq!(folded.len(), 2);
    lock.release().await;

    projector
        .swap_rebuilt(&mut rebuild, folded)
        .await
        .expect("swap");
    assert_eq!(finish_reading(&projector, &mut rebuild).await, 2);
    assert_each_event_folded_once(&db, &["cll_first", "cll_second"], 2).await;
}

/// Appends the events of `calls` invented calls straight to the log of `db`, in batches, and
/// returns the calls they link to.
async fn append_invented_calls(db: &TestDb, calls: usize) -> BTreeSet<CallKey> {
    let events: Vec<NewEvent> = invent_events(calls, 21, chrono::Utc::now())
        .iter()
        .map(|event| as_received(&event.webhook_id, &event.body))
        .collect();
    for batch in events.chunks(500) {
        db.store.append_batch(batch).await.expect("append");
    }
    events
        .iter()
        .filter_map(|event| event.content.call_key().cloned())
        .collect()
}

/// The calls of `calls` whose live projection was folded with `configuration`.
async fn built_with(db: &TestDb, calls: &BTreeSet<CallKey>, configuration: &str) -> usize {
    let mut built = 0;
    for call in calls {
        let projection = db.store.projection(call).await.expect("read");
        let recorded = projection.expect("projected").built_with;
        built += usize::from(recorded.is_some_and(|it| it.as_str() == configuration));
    }
    built
}

async fn a_rebuild_of_many_pages_swaps_while_it_reads_and_refolds_cut_calls_whole(db: TestDb) {
    let calls = append_invented_calls(&db, 1200).await;
    let worker = Projector::new(db.store.clone(), Precedence::default(), 100, LEASE);
    catch_up(&worker).await;
    // Folded with another configuration, every projection differs from the live one.
    let projector = worker.recording(ConfigFingerprint::new("rebuilt"));

    let mut rebuild = projector.start_rebuild();
    let first_page = projector
        .fold_rebuild_page(&mut rebuild)
        .await
        .expect("read a page")
        .expect("the log holds calls");
    assert!(
        first_page.len() < calls.len(),
        "the log spans several pages"
    );
    projector
        .swap_rebuilt(&mut rebuild, first_page)
        .await
        .expect("swap");
    let swapped_while_reading = built_with(&db, &calls, "rebuilt").await;
    assert!(
        swapped_while_reading > 0,
        "the first page's projections are swapped in before the rest of the log is read"
    );
    while let Some(page) = projector
        .fold_rebuild_page(&mut rebuild)
        .await
        .expect("read a page")
    {
        projector
            .swap_rebuilt(&mut rebuild, page)
            .await
            .expect("swap");
    }
    let rebuilt = projector.finish_rebuild(&mut rebuild).await.expect("swap");

    assert_eq!(rebuilt, calls.len() as u64);
    // A call cut short by a page's end and folded from part of its events would have folded
    // fewer than the live projection, and the swap would have left that one in place.
    assert_eq!(built_with(&db, &calls, "rebuilt").await, calls.len());
    assert_projections_equal_a_fold_from_scratch(&db.store, &calls).await;
    assert_eq!(db.store.queue_depth().await.expect("depth").calls, 0);
}

async fn a_whole_rebuild_reads_folds_and_swaps_every_page(db: TestDb) {
    let calls = append_invented_calls(&db, 1200).await;
    let worker = Projector::new(db.store.clone(), Precedence::default(), 100, LEASE);
    catch_up(&worker).await;
    let projector = worker.recording(ConfigFingerprint::new("rebuilt"));

    let mut progress = Vec::new();
    let rebuilt = projector
        .rebuild(|read, _| progress.push(read))
        .await
        .expect("rebuilt");

    assert!(progress.len() > 1, "the log spans several pages");
    assert_eq!(rebuilt.calls, calls.len() as u64);
    assert_eq!(built_with(&db, &calls, "rebuilt").await, calls.len());
    assert_projections_equal_a_fold_from_scratch(&db.store, &calls).await;
    assert_eq!(db.store.queue_depth().await.expect("depth").calls, 0);
}

/// Makes every write of a projection to the store of `db` fail with `message`.
async fn refuse_projections(db: &TestDb, message: &str) {
    match &db.store {
        Store::Sqlite(pools) => {
            for (name, verb) in [("refuse_insert", "INSERT"), ("refuse_update", "UPDATE")] {
                let trigger = format!(
                    "CREATE TRIGGER {name} BEFORE {verb} ON call_projections \
                     BEGIN SELECT RAISE(ABORT, '{message}'); END"
                );
                sqlx::raw_sql(&trigger)
                    .execute(&pools.writer)
                    .await
                    .expect("trigger");
            }
        }
        Store::Postgres(pools) => {
            let trigger = format!(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION '{message}'; END $$; \
                 CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON call_projections \
                 FOR EACH ROW EXECUTE FUNCTION refuse()"
            );
            sqlx::raw_sql(&trigger)
                .execute(&pools.writer)
                .await
                .expect("trigger");
        }
    }
}

async fn a_whole_rebuild_whose_swap_fails_reports_the_failure(db: TestDb) {
    append_invented_calls(&db, 1200).await;
    refuse_projections(&db, "projections refused").await;
    let projector = Projector::new(db.store.clone(), Precedence::default(), 100, LEASE);

    let rebuild = projector.rebuild(|_, _| {});
    let failed = tokio::time::timeout(READ_PAGE_BOUND, rebuild)
        .await
        .expect("the rebuild ends")
        .expect_err("the swap fails");

    assert!(
        failed.to_string().contains("projections refused"),
        "the swap's failure is reported: {failed}"
    );
    assert_eq!(db.store.stats().await.expect("stats").projections, 0);
}

/// Sets the last-modified time of `folder` to a second after the epoch, and returns it.
fn reset_modified(folder: &Path) -> SystemTime {
    let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
    let handle = std::fs::File::open(folder).expect("the folder opens");
    handle.set_modified(long_ago).expect("its time is set");
    long_ago
}

fn modified(folder: &Path) -> SystemTime {
    let metadata = std::fs::metadata(folder).expect("the folder's metadata");
    metadata.modified().expect("a modification time")
}

/// A SQLite rebuild that replaces every projection keeps its statement journals in memory: a
/// temporary file would go to the first writable folder of `SQLITE_TMPDIR`, `TMPDIR`,
/// `/var/tmp`, `/usr/tmp` and `/tmp`, which a container that lets its database's folder alone be
/// written does not have. The folder named by `SQLITE_TMPDIR` shows whether SQLite created
/// (and at once deleted) a file there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_rebuild_writes_no_temporary_file() {
    let db = TestDb::sqlite().await;
    let calls = append_invented_calls(&db, 1200).await;
    let worker = Projector::new(db.store.clone(), Precedence::default(), 100, LEASE)
        .recording(ConfigFingerprint::new("older"));
    catch_up(&worker).await;
    let temporary = tempfile::tempdir().expect("a folder");
    let untouched = reset_modified(temporary.path());

    let rebuilt = tokio::process::Command::new(CALLFOLD)
        .args(["rebuild", "--database-url", &db.url])
        .env("SQLITE_TMPDIR", temporary.path())
        .output()
        .await
        .expect("callfold runs");

    assert!(rebuilt.status.success(), "{rebuilt:?}");
    assert_eq!(
        built_with(&db, &calls, "older").await,
        0,
        "the rebuild replaced every projection"
    );
    assert_eq!(
        modified(temporary.path()),
        untouched,
        "SQLite created a file in its temporary folder"
    );
}

/// What `callfold rebuild` on `database_url` with the configuration file `config`, which must
/// succeed, says of its pauses: the number in its last line, "N pauses while another process
/// had the database open".
async fn rebuild_pauses(database_url: &str, config: &Path) -> u64 {
    let rebuilt = tokio::process::Command::new(CALLFOLD)
        .args(["rebuild", "--database-url", database_url])
        .env("CALLFOLD_CONFIG", config)
        .output()
        .await
        .expect("callfold runs");
    assert!(rebuilt.status.success(), "{rebuilt:?}");
    let said = String::from_utf8_lossy(&rebuilt.stderr);
    let last = said.lines().last().unwrap_or_default();
    let pauses = last.split(", ").last().and_then(|it| it.split(' ').next());
    pauses
        .and_then(|it| it.parse().ok())
        .unwrap_or_else(|| panic!("no count of pauses in {said}"))
}

/// A SQLite store tells whether another process has its database open, and `callfold rebuild`
/// pauses after its swap batches only then: beside `callfold ingest`, which holds the database
/// open without writing, and alone once it stopped. Each rebuild folds with a configuration
/// other than the one the live projections were folded with, so that every batch writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_rebuild_pauses_only_while_another_process_has_the_database_open() {
    let db = TestDb::sqlite().await;
    append_invented_calls(&db, 1200).await;
    let worker = Projector::new(db.store.clone(), Precedence::default(), 100, LEASE);
    catch_up(&worker).await;
    let folder = tempfile::tempdir().expect("a folder");
    let default_rules = folder.path().join("default.toml");
    std::fs::write(&default_rules, "").expect("written");
    let changed_rule = folder.path().join("changed.toml");
    let rule =
        "[linking_rules]\n\"tag.added\" = [\"/data/call_id\", \"/data/conversation/call_id\"]\n";
    std::fs::write(&changed_rule, rule).expect("written");
    assert_eq!(db.store.opened_by_another_process(), Some(false));
    let mut ingest = start_service("ingest", &db.url, &[]).await;
    assert_eq!(db.store.opened_by_another_process(), Some(true));
    // Beside `ingest` alone: this process closes its store.
    db.store.close().await;

    assert!(rebuild_pauses(&db.url, &changed_rule).await > 0);
    ingest.child.kill().await.expect("ingest stops");
    assert_eq!(rebuild_pauses(&db.url, &default_rules).await, 0);
}

on_both_stores!(
    folds_settled_between_a_rebuilds_read_and_its_swap_are_never_undone,
    a_rebuilds_read_does_not_wait_for_the_write_lock,
    a_rebuild_of_many_pages_swaps_while_it_reads_and_refolds_cut_calls_whole,
    a_whole_rebuild_reads_folds_and_swaps_every_page,
    a_whole_rebuild_whose_swap_fails_reports_the_failure
);

/// Asserts that the projections of `calls` equal a fold of their events from scratch, and
/// that those are `events` events: every event folded once.
async fn assert_each_event_folded_once(db: &TestDb, calls: &[&str], events: i64) {
    let calls: BTreeSet<CallKey> = calls.iter().copied().map(CallKey::new).collect();
    assert_eq!(
        assert_projections_equal_a_fold_from_scratch(&db.store, &calls).await,
        events,
        "every event folded once"
    );
}
