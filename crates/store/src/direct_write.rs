//! The hot writes of a SQLite store on a connection driven directly (rusqlite): the appends
//! (see `log`), and the fold queue's claims and settles (see `queue`); and, in a read
//! transaction on the same connection, a worker's read of the calls it claimed, whose pages
//! those writes just touched. Each write's whole transaction runs on a blocking thread, which
//! hands back its outcome once.
//!
//! Through sqlx, each statement crosses a channel to the connection's worker thread and back,
//! and so does each row it returns, each crossing a thread switch and a wake-up; the
//! statements' values are copied into sqlx's buffers on the way. Here the statements run one
//! after another on the thread that holds the connection, prepared once and kept
//! (`docs/benchmarks.md`). The SQL is that of the sqlx path, one row per statement. Appends,
//! claims and settles share this connection, so that neither empties the other's page cache
//! (in WAL mode a connection drops its whole cache when another has committed since its last
//! transaction).
//!
//! The store keeps its one sqlx write connection for every other write (the rebuild's swaps,
//! renewals of claims, migrations), each of which still empties this connection's cache. So
//! that this process's writes never meet on SQLite's lock, where the one that waits sleeps in
//! the busy handler, a direct write holds that connection as its turn for as long as it runs:
//! the process's writes still run one at a time, in the order they asked for the write
//! connection, and a checkpoint that holds it (see `checkpoint`) holds the direct writes too. The connection opens the same
//! file with the same SQLite library and the same settings as sqlx's writer: WAL with
//! `synchronous=FULL` (a commit returns once the WAL is fsync'd), foreign keys enforced, the
//! same automatic-checkpoint backstop and WAL size limit, and the same wait for another
//! process's lock.
//!
//! A transaction that fails closes its connection instead of keeping it, as the store does with
//! sqlx's (see `Checkout`): SQLite may have rolled it back by itself, or left it open. The next
//! write opens a new one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use sqlx::SqlitePool;

use crate::StoreError;
use crate::checkpoint::{BACKSTOP_PAGES, WAL_SIZE_LIMIT_BYTES};
use crate::direct_read::open_directly;

/// Statements kept prepared on the connection: the appends', claims' and settles' own (fourteen
/// today), with room to spare, so that none is prepared again on every write. The statements
/// over a list of calls (a settle's, a worker's read of its claimed calls) differ with the
/// list's length; the least recently used statement is the one dropped, so those used by every
/// commit stay.
const STATEMENTS_KEPT: usize = 64;

/// The direct write connection of one SQLite file.
#[derive(Debug)]
pub(crate) struct DirectWriter {
    database: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Option<Connection>>,
    closed: AtomicBool,
}

impl DirectWriter {
    /// Writes to `database` (resolved once, so that a relative path does not follow the
    /// process's working folder), each waiting for another process's lock at most
    /// `busy_timeout`.
    pub(crate) fn new(database: PathBuf, busy_timeout: Duration) -> Self {
        let database = std::fs::canonicalize(&database).unwrap_or(database);
        Self {
            database,
            busy_timeout,
            idle: Mutex::default(),
            closed: AtomicBool::new(false),
        }
    }

    /// Runs `write` in one transaction, and commits it, on a blocking thread, once it holds the
    /// write turn: the one connection of `writer`, the store's sqlx write pool, waited for at
    /// most that pool's acquire timeout. The turn is held until the transaction ends, even if
    /// the caller stops waiting for it.
    pub(crate) async fn in_transaction<T, W>(
        self: &Arc<Self>,
        writer: &SqlitePool,
        write: W,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        W: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.with_turn(writer, TransactionBehavior::Immediate, write)
            .await
    }

    /// Runs `read` in one read transaction on this connection, with the write turn held as
    /// [`DirectWriter::in_transaction`] holds it, but without SQLite's write lock, which other
    /// processes' writes go on taking meanwhile. The connection's page cache holds what this
    /// process's direct writes last read and wrote, and stays valid for as long as no other
    /// connection commits (in WAL mode, a connection empties its cache when another one has
    /// committed since its last transaction): a read of what those writes touched is served
    /// from it, not from the file.
    pub(crate) async fn in_read_transaction<T, R>(
        self: &Arc<Self>,
        writer: &SqlitePool,
        read: R,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        R: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.with_turn(writer, TransactionBehavior::Deferred, read)
            .await
    }

    /// Runs `work` in a transaction of `behavior` on a blocking thread, with the write turn of
    /// `writer` held until the transaction ends. A transaction that fails after its caller
    /// stopped waiting for it (a commit past its deadline) is warned of in the log.
    async fn with_turn<T, W>(
        self: &Arc<Self>,
        writer: &SqlitePool,
        behavior: TransactionBehavior,
        work: W,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        W: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed.into());
        }
        let turn = writer.acquire().await?;
        let direct = Arc::clone(self);
        let (answer, answered) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let done = direct.run_now(behavior, work);
            drop(turn);
            if let Err(Err(error)) = answer.send(done) {
                // The caller stopped waiting (its deadline passed): no one else would hear of
                // why the transaction failed.
                tracing::warn!(
                    %error,
                    "a database transaction failed after its caller had stopped waiting"
                );
            }
        });
        answered.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }

    /// Closes the connection; every later write fails as one on a closed pool does. A write
    /// under way holds the write turn, so the store's closing of its write pool waits for it;
    /// its connection is closed when it ends.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.idle_connection().take();
    }

    fn run_now<T>(
        &self,
        behavior: TransactionBehavior,
        work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let idle = {
            let mut idle = self.idle_connection();
            if self.closed.load(Ordering::Acquire) {
                return Err(sqlx::Error::PoolClosed.into());
            }
            idle.take()
        };
        let mut connection = match idle {
            Some(connection) => connection,
            None => self.open().map_err(StoreError::Direct)?,
        };
        let done = in_transaction(&mut connection, behavior, work)?;
        // Only a connection whose transaction committed is kept.
        let mut idle = self.idle_connection();
        if !self.closed.load(Ordering::Acquire) {
            *idle = Some(connection);
        }
        Ok(done)
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let connection = open_directly(&self.database, self.busy_timeout)?;
        connection.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", true)?;
        connection.pragma_update(None, "temp_store", "MEMORY")?;
        connection.pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES)?;
        connection.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
        Ok(connection)
    }

    fn idle_connection(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Fails unless `statement` has exactly `given` parameters: a parameter bound by name is the
/// only kind a statement may leave unbound, and SQLite would then read it as NULL.
pub(crate) fn every_parameter_given(
    statement: &rusqlite::Statement<'_>,
    given: usize,
) -> rusqlite::Result<()> {
    let expected = statement.parameter_count();
    if expected == given {
        Ok(())
    } else {
        Err(rusqlite::Error::InvalidParameterCount(given, expected))
    }
}

/// Runs `work` in a transaction of `behavior` on `connection` (an immediate one takes SQLite's
/// write lock at once), and commits it. A failed commit is a [`StoreError::DirectCommit`].
fn in_transaction<T>(
    connection: &mut Connection,
    behavior: TransactionBehavior,
    work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    let transaction = connection
        .transaction_with_behavior(behavior)
        .map_err(StoreError::Direct)?;
    let done = work(&transaction).map_err(StoreError::Direct)?;
    transaction.commit().map_err(StoreError::DirectCommit)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        CallKey, CallLink, Content, EventTime, NewEvent, QueueSweep, Store, StoredProjection,
        Topic, WebhookId,
    };
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    /// A WAL file, its sqlx write pool of one connection, and a direct writer beside it.
    async fn writer_beside_a_pool(
        folder: &tempfile::TempDir,
    ) -> (Arc<DirectWriter>, sqlx::SqlitePool) {
        let database = folder.path().join("direct.db");
        let options = SqliteConnectOptions::new()
            .filename(&database)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("a pool");
        sqlx::raw_sql(
            "CREATE TABLE written (n INTEGER); \
             CREATE TABLE parent (id INTEGER PRIMARY KEY); \
             CREATE TABLE child (parent INTEGER REFERENCES parent (id));",
        )
        .execute(&pool)
        .await
        .expect("tables");
        let second = Duration::from_secs(1);
        (Arc::new(DirectWriter::new(database, second)), pool)
    }

    #[tokio::test]
    async fn direct_commits_reach_the_disk_before_returning_as_the_stores_writer_does() {
        let folder = tempfile::tempdir().expect("a folder");
        let (writer, pool) = writer_beside_a_pool(&folder).await;
        let settings = writer
            .in_transaction(&pool, |tx| {
                let setting = |name: &str| {
                    tx.query_row(&format!("PRAGMA {name}"), [], |row| row.get::<_, i64>(0))
                };
                Ok([
                    setting("synchronous")?,
                    setting("foreign_keys")?,
                    setting("wal_autocheckpoint")?,
                    setting("journal_size_limit")?,
                ])
            })
            .await
            .expect("reads its settings");
        // synchronous=FULL is 2.
        assert_eq!(settings, [2, 1, BACKSTOP_PAGES, WAL_SIZE_LIMIT_BYTES]);
    }

    #[tokio::test]
    async fn an_abandoned_write_holds_the_write_pools_connection_until_its_transaction_ends() {
        let folder = tempfile::tempdir().expect("a folder");
        let (writer, pool) = writer_beside_a_pool(&folder).await;
        let (started, has_started) = std::sync::mpsc::channel();
        let (finish, may_finish) = std::sync::mpsc::channel::<()>();
        let write = {
            let (writer, pool) = (Arc::clone(&writer), pool.clone());
            tokio::spawn(async move {
                writer
                    .in_transaction(&pool, move |tx| {
                        started.send(()).expect("the test waits");
                        may_finish.recv().expect("the test lets it finish");
                        tx.execute("INSERT INTO written (n) VALUES (1)", [])
                    })
                    .await
            })
        };
        tokio::task::spawn_blocking(move || has_started.recv())
            .await
            .expect("joins")
            .expect("the write started");
        // Its caller stops waiting; the transaction goes on, and so does its turn.
        write.abort();
        assert!(write.await.is_err_and(|error| error.is_cancelled()));
        assert!(pool.try_acquire().is_none(), "the write's turn was let go");
        finish.send(()).expect("the write waits");
        let written: i64 = sqlx::query_scalar("SELECT count(*) FROM written")
            .fetch_one(&pool)
            .await
            .expect("counts once the turn is back");
        assert_eq!(written, 1);
    }

    #[tokio::test]
    async fn a_failed_commit_is_told_from_a_refused_statement() {
        let folder = tempfile::tempdir().expect("a folder");
        let (writer, pool) = writer_beside_a_pool(&folder).await;
        let refused = writer
            .in_transaction(&pool, |tx| {
                tx.execute("INSERT INTO child (parent) VALUES (1)", [])
            })
            .await
            .expect_err("foreign keys are enforced");
        assert!(matches!(refused, StoreError::Direct(_)), "{refused:?}");
        assert_eq!(
            refused.refused_content().as_deref(),
            Some("SQLite result code 787")
        );
        let failed = writer
            .in_transaction(&pool, |tx| {
                tx.pragma_update(None, "defer_foreign_keys", true)?;
                tx.execute("INSERT INTO child (parent) VALUES (1)", [])
            })
            .await
            .expect_err("the deferred check fails the commit");
        assert!(matches!(failed, StoreError::DirectCommit(_)), "{failed:?}");
        assert_eq!(failed.refused_content(), None);
    }

    #[tokio::test]
    async fn a_failed_write_rolls_back_and_the_next_one_commits_on_a_new_connection() {
        let folder = tempfile::tempdir().expect("a folder");
        let (writer, pool) = writer_beside_a_pool(&folder).await;
        let failed = writer
            .in_transaction(&pool, |tx| {
                tx.execute("INSERT INTO written (n) VALUES (1)", [])?;
                tx.execute("INSERT INTO no_such_table (n) VALUES (2)", [])
            })
            .await;
        assert!(matches!(failed, Err(StoreError::Direct(_))), "{failed:?}");
        assert!(
            writer.idle_connection().is_none(),
            "the failed connection is closed"
        );
        writer
            .in_transaction(&pool, |tx| {
                tx.execute("INSERT INTO written (n) VALUES (3)", [])
            })
            .await
            .expect("writes");
        let written: Vec<i64> = sqlx::query_scalar("SELECT n FROM written")
            .fetch_all(&pool)
            .await
            .expect("reads");
        assert_eq!(written, [3]);
        writer.close();
        let refused = writer.in_transaction(&pool, |_| Ok(())).await.err();
        assert!(
            matches!(refused, Some(StoreError::Database(sqlx::Error::PoolClosed))),
            "{refused:?}"
        );
    }

    /// `body` under `id` with `content`; its digest a stand-in that differs as bodies do.
    fn event(id: &str, body: &[u8], content: Content) -> NewEvent {
        let mut body_sha256 = [0; 32];
        for (byte, digest) in body.iter().zip(body_sha256.iter_mut()) {
            *digest = *byte;
        }
        NewEvent {
            webhook_id: WebhookId::parse(id).expect("test id"),
            webhook_timestamp: 1_770_715_062,
            received_at: EventTime::from_unix_micros(1_770_715_062_000_001),
            body: body.to_vec(),
            body_sha256,
            content,
        }
    }

    fn on_call(topic: &str, call: CallLink) -> Content {
        Content::Usable {
            topic: Topic::new(topic),
            event_time: EventTime::from_unix_micros(1_770_715_000_000_000),
            call,
        }
    }

    fn linked(call: &str) -> Content {
        on_call("call.completed", CallLink::Linked(CallKey::new(call)))
    }

    async fn migrated(url: &str) -> Store {
        let store = Store::connect(url).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }

    /// Two SQLite stores in `folder`: one whose writes run on its direct writer, one whose run
    /// through sqlx, as where the URL names how the file is opened (`vfs=`).
    async fn on_either_driver(folder: &tempfile::TempDir) -> [Store; 2] {
        let file = |name: &str| folder.path().join(name).display().to_string();
        let direct = migrated(&format!("sqlite:{}", file("direct.db"))).await;
        let through_sqlx = migrated(&format!("sqlite:{}?vfs=unix", file("sqlx.db"))).await;
        assert!(direct.direct_writer().is_some());
        assert!(through_sqlx.direct_writer().is_none());
        [direct, through_sqlx]
    }

    /// Everything a store holds, as its reads give it: the records, the two lists of kept
    /// records, the counts, the latest projection changes, and the fold queue's marks (claimed
    /// to be read).
    async fn as_read(store: &Store) -> String {
        let len = store.log_len().await.expect("len");
        let mut records = Vec::new();
        for seq in 1..=len {
            records.push(store.event_by_seq(seq).await.expect("read"));
        }
        let quarantined = store.quarantined_events(0, 100).await.expect("list");
        let unlinked = store.unlinked_events(0, 100).await.expect("list");
        let mut stats = store.stats().await.expect("stats");
        stats.oldest_waiting_since = None;
        let changes = store.latest_changes(100).await.expect("changes");
        let claimed = store
            .claim_calls(&QueueSweep::default(), 100, LEASE)
            .await
            .expect("claim");
        format!(
            "{records:#?}\n{quarantined:#?}\n{unlinked:#?}\n{stats:#?}\n{changes:#?}\n{:#?}",
            claimed.claims
        )
    }

    const LEASE: Duration = Duration::from_secs(600);

    #[tokio::test]
    async fn appends_write_the_same_through_either_sqlite_driver() {
        let folder = tempfile::tempdir().expect("a folder");
        let stores = on_either_driver(&folder).await;
        let quarantined = Content::Quarantined {
            reason: "not JSON".to_owned(),
        };
        let batches = [
            vec![
                event("msg_b", b"{b}", linked("cll_2")),
                event("msg_a", b"{a}", linked("cll_1")),
                event("msg_a", b"{a, again}", linked("cll_1")),
                event(
                    "msg_s",
                    b"{sms}",
                    on_call("sms.received", CallLink::NotACall),
                ),
                event("msg_u", b"{u}", on_call("tag.added", CallLink::Unlinked)),
                event("msg_q", b"not json", quarantined),
            ],
            vec![
                event("msg_a", b"{a}", linked("cll_1")),
                event("msg_b", b"{b, changed}", linked("cll_2")),
                event("msg_c", b"{c}", linked("cll_1")),
                // A call key with U+0000, which the log's trigger refuses: kept quarantined.
                event("msg_r", b"{r}", linked("cll_\u{0}")),
                event("msg_d", b"{d}", linked("cll_3")),
            ],
        ];
        for batch in &batches {
            let [on_direct, on_sqlx] =
                [&stores[0], &stores[1]].map(|store| store.append_batch(batch));
            assert_eq!(
                on_direct.await.expect("append"),
                on_sqlx.await.expect("append")
            );
        }
        assert_eq!(as_read(&stores[0]).await, as_read(&stores[1]).await);
        assert_eq!(stores[0].log_len().await.expect("len"), 8);
        assert_eq!(
            stores[0].quarantined_events(0, 10).await.expect("list").1,
            2
        );
    }

    #[tokio::test]
    async fn claims_and_settles_write_the_same_through_either_sqlite_driver() {
        let folder = tempfile::tempdir().expect("a folder");
        let mut settles = Vec::new();
        for store in on_either_driver(&folder).await {
            let calls = ["cll_1", "cll_2", "cll_3", "cll_4"];
            let batch: Vec<NewEvent> = calls
                .iter()
                .map(|call| event(&format!("msg_{call}"), call.as_bytes(), linked(call)))
                .collect();
            store.append_batch(&batch).await.expect("append");
            let sweep = QueueSweep::default();
            // Claims run on the direct connection where there is one.
            let direct = store.direct_writer().map(|(direct, _)| Arc::clone(direct));
            let taken = direct
                .as_ref()
                .map(|direct| direct.idle_connection().take());
            let claimed = store.claim_calls(&sweep, 2, LEASE).await.expect("claim");
            if let Some(direct) = &direct {
                assert!(taken.is_some_and(|taken| taken.is_some()));
                assert!(direct.idle_connection().is_some(), "claimed through sqlx");
            }
            // The next claim on the sweep takes the rest of its lap, up to the lap's end.
            let rest = store.claim_calls(&sweep, 2, LEASE).await.expect("claim");
            // Appended to during the fold: released, to be folded again.
            let late = event("msg_late", b"{late}", linked("cll_2"));
            store.append_batch(&[late]).await.expect("append");
            let projections: Vec<StoredProjection> = claimed
                .claims
                .iter()
                .map(|claim| StoredProjection {
                    call_key: claim.call_key.clone(),
                    document: format!("{{\"call\":\"{}\"}}", claim.call_key.as_str()),
                    last_seq: 1,
                    late_events: 0,
                    events_folded: 1,
                    updated_at: EventTime::from_unix_micros(2),
                    built_with: None,
                })
                .collect();
            let settled = store
                .settle_claims(&claimed, &projections)
                .await
                .expect("settle");
            let one = store
                .claim_call(&CallKey::new("cll_4"), LEASE)
                .await
                .expect("claim");
            settles.push(format!(
                "{:?}\n{:?}\n{settled:?}\n{:?}\n{}",
                claimed.claims,
                rest.claims,
                one.claims,
                as_read(&store).await
            ));
        }
        assert_eq!(settles[0], settles[1]);
        assert!(
            settles[0].contains("Settled { folded: 1, to_refold: 1, lost: 0 }"),
            "{}",
            settles[0]
        );
    }

    #[tokio::test]
    async fn a_file_opened_read_only_refuses_appends() {
        let folder = tempfile::tempdir().expect("a folder");
        let url = format!("sqlite:{}", folder.path().join("log.db").display());
        let writable = migrated(&url).await;
        let read_only = Store::connect_existing_with(&format!("{url}?mode=ro"), Default::default())
            .await
            .expect("connect");
        assert!(read_only.direct_writer().is_none());
        let batch = [event("msg_a", b"{a}", linked("cll_1"))];
        assert!(read_only.append_batch(&batch).await.is_err());
        assert_eq!(writable.log_len().await.expect("len"), 0);
    }

    #[tokio::test]
    async fn a_read_transaction_reads_while_another_connection_holds_the_write_lock() {
        let folder = tempfile::tempdir().expect("a folder");
        let (writer, pool) = writer_beside_a_pool(&folder).await;
        let holder = open_directly(&folder.path().join("direct.db"), Duration::ZERO)
            .expect("another connection");
        holder
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO written (n) VALUES (1);")
            .expect("holds the write lock");
        let count = |tx: &Transaction<'_>| {
            tx.query_row("SELECT count(*) FROM written", [], |row| {
                row.get::<_, i64>(0)
            })
        };
        let seen = writer
            .in_read_transaction(&pool, count)
            .await
            .expect("reads without the write lock");
        assert_eq!(seen, 0, "the other connection's write is not committed");
        assert!(writer.idle_connection().is_some(), "the connection is kept");
        holder.execute_batch("COMMIT").expect("commits");
        let seen = writer
            .in_read_transaction(&pool, count)
            .await
            .expect("reads");
        assert_eq!(seen, 1, "the next read sees the other connection's commit");
    }

    /// A worker's read of its claimed calls gives the write connection up once over its budget,
    /// and reads the same on the read connections instead.
    #[tokio::test]
    async fn a_read_of_claimed_calls_over_its_budget_is_made_on_the_read_connections() {
        let folder = tempfile::tempdir().expect("a folder");
        let url = format!("sqlite:{}", folder.path().join("claimed.db").display());
        let store = migrated(&url).await;
        let batch = [
            event("msg_a", b"{a}", linked("cll_1")),
            event("msg_b", b"{b}", linked("cll_2")),
            event("msg_c", b"{c}", linked("cll_1")),
        ];
        store.append_batch(&batch).await.expect("append");
        let claimed = store
            .claim_calls(&QueueSweep::default(), 10, LEASE)
            .await
            .expect("claim");
        let settled = StoredProjection {
            call_key: CallKey::new("cll_1"),
            document: "{}".to_owned(),
            last_seq: 3,
            late_events: 1,
            events_folded: 2,
            updated_at: EventTime::from_unix_micros(4),
            built_with: None,
        };
        store
            .settle_claims(&claimed, &[settled])
            .await
            .expect("settle");
        let calls = [CallKey::new("cll_2"), CallKey::new("cll_1")];
        let hour = Duration::from_secs(3600);

        let over_budget = store
            .read_on_write_connection(&calls, Duration::ZERO)
            .await
            .expect("reads");
        assert!(over_budget.is_none(), "a read over its budget goes on");
        let (writer, _) = store.direct_writer().expect("a direct writer");
        assert!(
            writer.idle_connection().is_some(),
            "the write connection is kept after a read over its budget"
        );
        let within_budget = store
            .read_on_write_connection(&calls, hour)
            .await
            .expect("reads")
            .expect("a read within its budget ends");
        let made_again = store
            .read_claimed_calls_within(&calls, Duration::ZERO)
            .await
            .expect("reads");
        assert_eq!(made_again, within_budget);
        let (logged, folded_so_far) = made_again;
        let ids: Vec<&str> = logged.iter().map(|e| e.webhook_id.as_str()).collect();
        assert_eq!(ids, ["msg_a", "msg_c", "msg_b"]);
        let folded: Vec<(&str, i64, i64)> = folded_so_far
            .iter()
            .map(|f| (f.call_key.as_str(), f.last_seq, f.late_events))
            .collect();
        assert_eq!(folded, [("cll_1", 3, 1)]);
        store.close().await;
    }
}
