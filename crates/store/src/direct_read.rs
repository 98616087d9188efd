//! Bulk reads of a SQLite file on connections driven directly (rusqlite), each read on a
//! blocking thread and handed back whole: the rebuild's pages of the log, and the reads by call
//! (`Store::select_for_calls`): the events of the calls a query shows, and how far the projector
//! had folded their projections. A worker's read of the calls it claimed runs the same
//! statements ([`read_statements_until`]) on the direct write connection first (see
//! `Store::read_claimed_calls`).
//!
//! Through sqlx, every row of a result crosses from the connection's worker thread to the
//! runtime on its own, its values copied on the way: on one core, reading the rows of a
//! rebuild that way takes two to three times as long as here (`docs/benchmarks.md`). The SQL is
//! the same, and so is what a read sees: one statement, one snapshot of the database. The
//! connections open the same file with the same SQLite library as sqlx's (there is only one in
//! the process, so its file locks are shared), refuse to write (`PRAGMA query_only`), and wait
//! for another process's lock as long as the store's other connections do. At most as many
//! reads run at once as the read pool has connections, and a read waits for its turn as long
//! as one waits for a pooled connection.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, params_from_iter};
use tokio::sync::Semaphore;

use crate::StoreError;
use crate::log::EventRow;

/// The direct read connections of one SQLite file, and the turns to use them.
#[derive(Debug)]
pub(crate) struct DirectReader {
    database: PathBuf,
    busy_timeout: Duration,
    acquire_timeout: Duration,
    turns: Arc<Semaphore>,
    max_reads: u32,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
}

impl DirectReader {
    /// Reads of `database` (resolved once, so that a relative path does not follow the process's
    /// working folder), `max_reads` at a time, each waiting for its turn at most
    /// `acquire_timeout` and for another process's lock at most `busy_timeout`.
    pub(crate) fn new(
        database: PathBuf,
        max_reads: u32,
        acquire_timeout: Duration,
        busy_timeout: Duration,
    ) -> Self {
        let database = std::fs::canonicalize(&database).unwrap_or(database);
        let max_reads = max_reads.max(1);
        Self {
            database,
            busy_timeout,
            acquire_timeout,
            turns: Arc::new(Semaphore::new(max_reads as usize)),
            max_reads,
            idle: Mutex::default(),
            closed: AtomicBool::new(false),
        }
    }

    /// The database file, as resolved when the reader was made.
    pub(crate) fn database(&self) -> &Path {
        &self.database
    }

    /// The records `sql` selects (the columns of `SELECT_EVENT`), with `parameters` bound in
    /// order.
    pub(crate) async fn event_rows(
        self: &Arc<Self>,
        sql: String,
        parameters: Vec<Value>,
    ) -> Result<Vec<EventRow>, StoreError> {
        self.rows(sql, parameters, EventRow::from_direct).await
    }

    /// The rows `sql` selects, each decoded by `decode`, with `parameters` bound in order.
    pub(crate) async fn rows<T: Send + 'static>(
        self: &Arc<Self>,
        sql: String,
        parameters: Vec<Value>,
        decode: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed.into());
        }
        let turns = Arc::clone(&self.turns);
        let turn = tokio::time::timeout(self.acquire_timeout, turns.acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let reader = Arc::clone(self);
        let read = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            reader.read_now(&sql, &parameters, decode)
        });
        read.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }

    /// Waits for the reads under way to end, then closes every connection; every later read,
    /// and every read still waiting for its turn, fails as one on a closed pool does.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Every turn back means no read is under way. Reads that were waiting for a turn get
        // theirs first, and find the reader closed.
        if let Ok(all_turns) = self.turns.acquire_many(self.max_reads).await {
            all_turns.forget();
        }
        self.turns.close();
        self.idle_connections().clear();
    }

    fn read_now<T>(
        &self,
        sql: &str,
        parameters: &[Value],
        decode: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let idle = {
            let mut idle = self.idle_connections();
            if self.closed.load(Ordering::Acquire) {
                return Err(sqlx::Error::PoolClosed.into());
            }
            idle.pop()
        };
        let connection = match idle {
            Some(connection) => connection,
            None => self.open().map_err(StoreError::Direct)?,
        };
        let rows = read_rows(&connection, sql, parameters, decode).map_err(StoreError::Direct)?;
        // Only a connection whose read succeeded is kept; one that failed is closed, and so is
        // every connection once the reader is.
        let mut idle = self.idle_connections();
        if !self.closed.load(Ordering::Acquire) {
            idle.push(connection);
        }
        Ok(rows)
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        // Not SQLITE_OPEN_READ_ONLY, as for sqlx's readers: such a connection cannot create the
        // WAL's shared-memory file when no other connection has it open.
        let connection = open_directly(&self.database, self.busy_timeout)?;
        connection.pragma_update(None, "query_only", true)?;
        Ok(connection)
    }

    fn idle_connections(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection driven directly to the existing file `database`, for reading and writing,
/// waiting for another connection's lock at most `busy_timeout`.
pub(crate) fn open_directly(
    database: &Path,
    busy_timeout: Duration,
) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(busy_timeout)?;
    Ok(connection)
}

/// The rows of each of `statements` (SQL and the values it binds, in order) on `connection`, each
/// row decoded by `decode`, in one list; `None` once `deadline` has passed, checked before each
/// row, so that the read runs at most one row's read past it.
pub(crate) fn read_statements_until<T>(
    connection: &Connection,
    statements: &[(String, Vec<Value>)],
    decode: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    deadline: Instant,
) -> rusqlite::Result<Option<Vec<T>>> {
    let mut rows = Vec::new();
    for (sql, parameters) in statements {
        let mut statement = connection.prepare_cached(sql)?;
        let mut read = statement.query(params_from_iter(parameters))?;
        while let Some(row) = read.next()? {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            rows.push(decode(row)?);
        }
    }
    Ok(Some(rows))
}

fn read_rows<T>(
    connection: &Connection,
    sql: &str,
    parameters: &[Value],
    decode: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map(params_from_iter(parameters), decode)?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::SELECT_EVENT;
    use crate::{Content, LoggedEvent};

    /// A file holding an `events` table with the log's columns: one record whose body and
    /// digest SQLite keeps as BLOB, one as TEXT (as a hand-made repair would write them), and
    /// one quarantined record with its NULLs.
    fn database_with_three_records(folder: &tempfile::TempDir) -> PathBuf {
        let database = folder.path().join("direct.db");
        let connection = Connection::open(&database).expect("opens");
        connection
            .execute_batch(
                "PRAGMA journal_mode=WAL;
                 CREATE TABLE events (seq INTEGER PRIMARY KEY, webhook_id TEXT, \
                   webhook_timestamp INTEGER, received_at_us INTEGER, body BLOB, body_sha256 BLOB, \
                   topic TEXT, event_time_us INTEGER, call_key TEXT, unlinked BOOLEAN, \
                   quarantine_reason TEXT);
                 INSERT INTO events VALUES
                   (1, 'msg_1', 10, 11, x'7b7d', x'0102', 'tag.added', 12, 'cll_1', 0, NULL),
                   (2, 'msg_2', 20, 21, '{\"a\":1}', 'digest', 'call.received', 22, NULL, 1, NULL),
                   (3, 'msg_3', 30, 31, x'00ff', x'03', NULL, NULL, NULL, 0, 'not JSON');",
            )
            .expect("a table of three records");
        database
    }

    fn reader(database: PathBuf) -> Arc<DirectReader> {
        let second = Duration::from_secs(1);
        Arc::new(DirectReader::new(database, 2, second, second))
    }

    #[tokio::test]
    async fn records_read_directly_decode_as_sqlx_decodes_them() {
        let folder = tempfile::tempdir().expect("a folder");
        let reader = reader(database_with_three_records(&folder));
        let sql = format!("{SELECT_EVENT} WHERE seq > $1 ORDER BY seq LIMIT $2");
        let rows = reader
            .event_rows(sql, vec![Value::Integer(0), Value::Integer(10)])
            .await
            .expect("reads");
        let events: Vec<LoggedEvent> = rows.into_iter().map(LoggedEvent::from).collect();
        let bodies: Vec<&[u8]> = events.iter().map(|event| event.body.as_slice()).collect();
        assert_eq!(bodies, [&b"{}"[..], &br#"{"a":1}"#[..], &[0x00, 0xff][..]]);
        assert_eq!(events[1].body_sha256, b"digest");
        assert!(events[1].content.is_unlinked());
        assert_eq!(
            events[2].content,
            Content::Quarantined {
                reason: "not JSON".to_owned()
            }
        );
        assert_eq!(events[0].webhook_timestamp, 10);
        assert_eq!(events[0].received_at.unix_micros(), 11);
    }

    #[tokio::test]
    async fn a_closed_reader_refuses_reads_as_a_closed_pool_does() {
        let folder = tempfile::tempdir().expect("a folder");
        let reader = reader(database_with_three_records(&folder));
        let sql = || format!("{SELECT_EVENT} ORDER BY seq");
        assert_eq!(
            reader
                .event_rows(sql(), Vec::new())
                .await
                .expect("reads")
                .len(),
            3
        );
        reader.close().await;
        let refused = reader.event_rows(sql(), Vec::new()).await.err();
        assert!(
            matches!(refused, Some(StoreError::Database(sqlx::Error::PoolClosed))),
            "{refused:?}"
        );
        assert!(reader.idle_connections().is_empty());
    }
}
