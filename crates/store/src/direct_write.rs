//! The appends of a SQLite log on a connection driven directly (rusqlite): each append's whole
//! transaction runs on a blocking thread, which hands back its outcome once.
//!
//! Through sqlx, each statement of an append crosses a channel to the connection's worker thread
//! and back, and so does each row it returns, each crossing a thread switch and a wake-up; the
//! statements' values are copied into sqlx's buffers on the way. Here the statements run one
//! after another on the thread that holds the connection, prepared once and kept
//! (`docs/benchmarks.md`). The SQL is the same (see `log`).
//!
//! The store keeps its one sqlx write connection for every other write. So that this process's
//! writes never meet on SQLite's lock, where the one that waits sleeps in the busy handler, a
//! direct write holds that connection as its turn for as long as it runs: the process's writes
//! still run one at a time, in the order they asked for the write connection, and a checkpoint
//! that holds it (see `checkpoint`) holds the direct writes too. The connection opens the same
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
        if self.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed.into());
        }
        let turn = writer.acquire().await?;
        let direct = Arc::clone(self);
        let written = tokio::task::spawn_blocking(move || {
            let written = direct.write_now(write);
            drop(turn);
            written
        });
        written.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }

    /// Closes the connection; every later write fails as one on a closed pool does. A write
    /// under way holds the write turn, so the store's closing of its write pool waits for it;
    /// its connection is closed when it ends.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.idle_connection().take();
    }

    fn write_now<T>(
        &self,
        write: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
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
        let written = in_transaction(&mut connection, write)?;
        // Only a connection whose transaction committed is kept.
        let mut idle = self.idle_connection();
        if !self.closed.load(Ordering::Acquire) {
            *idle = Some(connection);
        }
        Ok(written)
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let connection = open_directly(&self.database, self.busy_timeout)?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", true)?;
        connection.pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES)?;
        connection.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
        Ok(connection)
    }

    fn idle_connection(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs `write` in a transaction on `connection` that takes SQLite's write lock at once, and
/// commits it. A failed commit is a [`StoreError::DirectCommit`].
fn in_transaction<T>(
    connection: &mut Connection,
    write: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::Direct)?;
    let written = write(&transaction).map_err(StoreError::Direct)?;
    transaction.commit().map_err(StoreError::DirectCommit)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
