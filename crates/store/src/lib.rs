//! The storage layer of callfold, on SQLite or PostgreSQL: the append-only event log
//! ([`log`]), the per-call projections ([`projection`]), the queue of calls to fold
//! ([`queue`]) and the counts operators watch ([`stats`]); and the paging every list of the
//! read side shares ([`page`]).
//!
//! Owns the connection pools, the migrations (the top-level `migrations/` folder, one folder per
//! backend) and every SQL statement. It knows nothing of HTTP, signatures or folding: callers
//! hand it parsed [`NewEvent`]s and serialized projections, and get back what is stored.
//!
//! Both backends run the same runtime-checked SQL (see [`on_pool!`]): the compile-time `query!`
//! macros would need one live database per build, and one behavioural test suite runs against
//! both backends instead (see `docs/ARCHITECTURE.md`).

mod checkpoint;
mod direct_read;
mod direct_write;
mod event;
mod kept_open;
mod log;
pub mod page;
mod projection;
mod queue;
mod sharing;
mod sql;
mod stats;

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::Value;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use event::{
    AppendOutcome, CallKey, CallLink, Content, EventTime, InvalidEventTime, InvalidWebhookId,
    LoggedEvent, MAX_BODY_BYTES, MAX_KEY_BYTES, NewEvent, Topic, WebhookId,
};
pub use log::KeptRecord;
pub use page::{
    BadParameter, Cursor, KeptPosition, Listed, Page, PageLimit, PageParams, PageQuery,
};
pub use projection::{
    ConfigFingerprint, FoldedSoFar, ProjectionChange, ProjectionsBuiltWith, RebuildRead,
    RebuildSwap, StoredProjection,
};
pub use queue::{Claim, ClaimedCalls, QueueDepth, QueueSweep, Settled};
pub use stats::StoreStats;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");

/// The PostgreSQL channel on which appends are announced (see migration 0004).
const APPENDED_CHANNEL: &str = "callfold_appended";

/// Limits of the connection pool and of each statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    /// Most connections of each pool: on PostgreSQL the pool that writes and the pool that
    /// reads have this many each; on SQLite it is the read pool's size, beside the one
    /// connection that writes (SQLite has one writer at a time).
    pub max_connections: u32,
    /// How long a caller waits for a connection (including opening one) before the store
    /// counts as unavailable.
    pub acquire_timeout: Duration,
    /// Longest a statement may run (PostgreSQL `statement_timeout`); on SQLite, longest a
    /// statement waits for another process's write lock.
    pub statement_timeout: Duration,
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names neither SQLite nor PostgreSQL.
    #[error(
        "unsupported database URL (expected sqlite:PATH or postgres://...); got a URL starting with {scheme:?}"
    )]
    UnsupportedUrl {
        /// The part of the URL before its first colon, never the credentials.
        scheme: String,
    },
    /// The database refused or failed a statement, or could not be reached. The message
    /// quotes sqlx's, which already quotes its own cause; so that a chain of causes (`{:#}`)
    /// says each once, the sqlx error is not also this error's source.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// The database lacks migrations this build needs.
    #[error("the database has {applied} of {known} migrations applied; run callfold migrate")]
    NotMigrated {
        /// Migrations applied.
        applied: i64,
        /// Migrations this build knows.
        known: usize,
    },
    /// A statement on a connection to a SQLite file driven directly failed (see `direct_read`
    /// and `direct_write`). As for [`StoreError::Database`], the message quotes the cause,
    /// which is not also the source.
    #[error("database error: {0}")]
    Direct(rusqlite::Error),
    /// Applying the migrations failed. As for [`StoreError::Database`], the message quotes the
    /// cause, which is not also the source.
    #[error("migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// The database failed the COMMIT of a transaction whose statements it had run: a deferred
    /// check, a full NOTIFY queue, a lost connection (after which the transaction may have been
    /// stored). It speaks of the transaction, never of one of its rows, so it is never a
    /// refusal of content ([`StoreError::refused_content`]).
    #[error("the database failed a commit: {0}")]
    Commit(sqlx::Error),
    /// [`StoreError::Commit`], on a connection to a SQLite file driven directly (see
    /// `direct_write`).
    #[error("the database failed a commit: {0}")]
    DirectCommit(rusqlite::Error),
    /// The database did not answer within the caller's deadline; the connection that was
    /// waiting is closed. Work already sent may have been committed all the same (a COMMIT
    /// that reached the server before the deadline).
    #[error("the database did not answer within {} ms", .deadline.as_millis())]
    TimedOut {
        /// The deadline.
        deadline: Duration,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Database(error)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(error)
    }
}

impl StoreError {
    /// When the database refused a statement because of a value it was given (not because it
    /// is unreachable or busy), what it said, as an error code that quotes no value: one of
    /// [`REFUSED_CONTENT_SQLSTATES`] on PostgreSQL; SQLite's "too big", "datatype mismatch" and
    /// constraint errors other than a unique key (the log's dedup key is never an error: the
    /// append uses `ON CONFLICT DO NOTHING`). Retrying such a statement fails again, wherever
    /// the value goes. Only an error of a statement can be such a refusal: a failed COMMIT is
    /// [`StoreError::Commit`], whatever its code.
    pub fn refused_content(&self) -> Option<String> {
        match self {
            StoreError::Database(sqlx::Error::Database(error)) => {
                let code = error.code()?;
                if error
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some()
                {
                    let refused = REFUSED_CONTENT_SQLSTATES.contains(&&*code);
                    return refused.then(|| format!("PostgreSQL SQLSTATE {code}"));
                }
                sqlite_refusal(code.parse().ok()?)
            }
            StoreError::Direct(rusqlite::Error::SqliteFailure(error, _)) => {
                sqlite_refusal(error.extended_code)
            }
            _ => None,
        }
    }
}

/// [`StoreError::refused_content`] of a SQLite statement that failed with the result code
/// `extended`.
fn sqlite_refusal(extended: i32) -> Option<String> {
    const SQLITE_TOOBIG: i32 = 18;
    const SQLITE_CONSTRAINT: i32 = 19;
    const SQLITE_MISMATCH: i32 = 20;
    const SQLITE_CONSTRAINT_PRIMARYKEY: i32 = 1555;
    const SQLITE_CONSTRAINT_UNIQUE: i32 = 2067;
    let refused = match extended & 0xff {
        SQLITE_TOOBIG | SQLITE_MISMATCH => true,
        SQLITE_CONSTRAINT => !matches!(
            extended,
            SQLITE_CONSTRAINT_PRIMARYKEY | SQLITE_CONSTRAINT_UNIQUE
        ),
        _ => false,
    };
    refused.then(|| format!("SQLite result code {extended}"))
}

/// The PostgreSQL SQLSTATEs with which a row statement of the append (an INSERT of text,
/// integers and bytes into the log and its indexes) refuses a value it was given, and that
/// retrying it with the same value raises again. Listed one by one, not by class: classes 22
/// and 54 also hold errors of the server's state (54000 is also a full NOTIFY queue, raised at
/// COMMIT), and an unlisted code makes a 503 and a retry, never a record kept quarantined.
///
/// - 22001 string_data_right_truncation, 22003 numeric_value_out_of_range, 22007
///   invalid_datetime_format, 22008 datetime_field_overflow, 22P02 invalid_text_representation:
///   a value that does not fit its column's type;
/// - 22021 character_not_in_repertoire, 22P05 untranslatable_character: text the database
///   encoding cannot hold (U+0000 among them);
/// - 23502 not_null_violation, 23514 check_violation: a value the table's constraints refuse;
/// - 54000 program_limit_exceeded: from an INSERT, an index entry over the B-tree's limit of
///   about 2.7 kB ("index row size exceeds btree maximum"). Its other causes are the NOTIFY
///   queue, which fails the COMMIT ([`StoreError::Commit`]), never a statement, and a
///   transaction of more than 2^32 commands, which an append never runs.
pub const REFUSED_CONTENT_SQLSTATES: &[&str] = &[
    "22001", "22003", "22007", "22008", "22021", "22P02", "22P05", "23502", "23514", "54000",
];

/// `work` (calls to the store), abandoned when it has not finished within `deadline`, with
/// [`StoreError::TimedOut`]: the bound on a database that stops answering without closing the
/// connection, which no server-side timeout gives.
pub async fn within<T>(
    deadline: Duration,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(deadline, work)
        .await
        .unwrap_or(Err(StoreError::TimedOut { deadline }))
}

/// A connection pool to one of the two supported backends.
#[derive(Clone, Debug)]
pub enum Store {
    /// The embedded default: one file, WAL journal, `synchronous=FULL`.
    Sqlite(SqlitePools),
    /// The production store.
    Postgres(PgPools),
}

/// The two pools of a SQLite store: one connection for every write, and several for reads.
///
/// In WAL mode readers never block the writer nor wait for it: each read sees the writes
/// committed when it began. So a read that scans (a status page, a list, a stream) never
/// delays the commit that acknowledges deliveries, which waits only for the write connection.
#[derive(Clone, Debug)]
pub struct SqlitePools {
    /// The one sqlx connection that writes: rebuilds' swaps, renewals, migrations, and the
    /// appends, claims and settles where there is no direct writer. Where there is one, each
    /// of its writes holds this connection while it runs, so that the process still writes
    /// one transaction at a time. Some writes' own reads run on it too: a rebuild's swap reads
    /// the live projections it may replace, and a worker, on the direct writer, the calls it
    /// claimed, rows for at most a few milliseconds (see `Store::read_claimed_calls`).
    pub writer: SqlitePool,
    /// Connections that only read (`PRAGMA query_only`): queries, counts and streams, and
    /// every read where there is no direct reader.
    pub readers: SqlitePool,
    /// The task that checkpoints the WAL, so that no commit does (see [`checkpoint`]); none
    /// for a database in memory, or opened only to inspect or fix a few records.
    checkpointer: Option<Arc<checkpoint::Checkpointer>>,
    /// Connections of its own for the bulk reads by call and the rebuild's pages (see
    /// [`direct_read`]); none for a database in memory or a URL naming `vfs=` or `immutable=`.
    direct: Option<Arc<direct_read::DirectReader>>,
    /// A connection of its own for the appends, claims and settles (see [`direct_write`]),
    /// where there is a direct reader and the URL does not open the file read-only; elsewhere
    /// they run on `writer`.
    direct_writer: Option<Arc<direct_write::DirectWriter>>,
}

/// Whether the SQLite `url`'s query names how the file is opened or locked (`vfs`,
/// `immutable`): options only sqlx's connections would follow.
fn names_file_system_options(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|option| option.starts_with("vfs=") || option.starts_with("immutable="))
    })
}

/// Whether the SQLite `url`'s query opens the file read-only (`mode=ro`): sqlx's write
/// connection then refuses every write, and a direct writer must not take them instead.
fn opens_read_only(url: &str) -> bool {
    url.split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|option| option == "mode=ro"))
}

/// The two pools of a PostgreSQL store: connections for writes, and as many for reads.
///
/// A read holds its connection for as long as the database takes to answer, and most reads
/// have no client-side deadline (a stream's poll, a query of the API, the operators' counts):
/// on a network that goes silent without closing, they would hold their connections until TCP
/// gives up. In their own pool they can exhaust only that pool, and the commits that
/// acknowledge deliveries still get connections once the database answers again.
#[derive(Clone, Debug)]
pub struct PgPools {
    /// Connections for every write: appends, claims, settles, rebuilds, migrations, and the
    /// readiness check (whether appends can be made is what readiness means).
    pub writer: PgPool,
    /// Connections that only read: queries, counts, streams, the projector's read of the
    /// events of the calls it claimed, and the connection that LISTENs for appends.
    pub readers: PgPool,
}

/// Closes `pool` and every connection it has. A connection dropped just before (the
/// checkpoint task's hold on the writer, an append's) goes back to the pool in a task of its
/// own; if it lands in the idle queue after `close` looked there, `close` still returns, with
/// that connection open. So close again while any is left: each round either closes the idle
/// ones or waits for those in use.
async fn close_every_connection(pool: &SqlitePool) {
    pool.close().await;
    while pool.size() > 0 {
        pool.close().await;
    }
}

/// Runs the same generic body against the pool of `$store` that writes, bound to `$pool`.
///
/// `sqlx::query` is generic over the database, so one body compiles once per backend; this is
/// how every statement in this crate is written exactly once. A body holds only the statements
/// and their bindings: rustfmt cannot format it, so whatever decides the statements is a plain
/// function that the body calls.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::Store::Sqlite(pools) => {
                let $pool = &pools.writer;
                $body
            }
            $crate::Store::Postgres(pools) => {
                let $pool = &pools.writer;
                $body
            }
        }
    };
}
pub(crate) use on_pool;

/// A connection of the pool that goes back to the pool only through [`Checkout::release`],
/// once its work finished cleanly. Dropped otherwise (after an error, or with the future of
/// its work, abandoned at a caller's deadline), it is detached from the pool and its socket
/// closed at once: it may be inside a transaction the driver no longer tracks, or waiting on
/// a network that stopped answering. Returned to the pool, sqlx would first test it, and that
/// test can wait as long as the network stays silent, holding a place in the pool; the pool
/// opens a fresh connection instead.
pub(crate) struct Checkout<DB: sqlx::Database> {
    connection: Option<sqlx::pool::PoolConnection<DB>>,
}

impl<DB: sqlx::Database> Checkout<DB> {
    /// Takes a connection of `pool`, waiting at most the pool's acquire timeout.
    pub(crate) async fn acquire(pool: &sqlx::Pool<DB>) -> Result<Self, sqlx::Error> {
        Ok(Self {
            connection: Some(pool.acquire().await?),
        })
    }

    /// The connection, to run statements on.
    pub(crate) fn connection(&mut self) -> &mut DB::Connection {
        self.connection
            .as_deref_mut()
            .expect("a checkout holds its connection until released")
    }

    /// Gives the connection back to the pool: its work finished cleanly.
    pub(crate) fn release(mut self) {
        drop(self.connection.take());
    }

    /// Begins a transaction on the connection.
    pub(crate) async fn begin(&mut self) -> Result<sqlx::Transaction<'_, DB>, sqlx::Error> {
        sqlx::Connection::begin(self.connection()).await
    }

    /// Gives the connection back to the pool if `outcome`, the outcome of its work, is a
    /// success; closes it otherwise. Returns `outcome`.
    pub(crate) fn release_after<T>(self, outcome: Result<T, StoreError>) -> Result<T, StoreError> {
        if outcome.is_ok() {
            self.release();
        }
        outcome
    }
}

/// Commits `transaction`; its failure is a [`StoreError::Commit`].
pub(crate) async fn commit<DB: sqlx::Database>(
    transaction: sqlx::Transaction<'_, DB>,
) -> Result<(), StoreError> {
    transaction.commit().await.map_err(StoreError::Commit)
}

impl<DB: sqlx::Database> Drop for Checkout<DB> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            drop(connection.detach());
        }
    }
}

/// Like [`on_pool!`], for a body that only reads: it runs on the read pool of either backend,
/// so that it never waits for a connection that writes nor holds one. The body must not
/// depend on a write of its caller that is not committed yet (none of the store's reads run
/// inside a write transaction).
macro_rules! on_read_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::Store::Sqlite(pools) => {
                let $pool = &pools.readers;
                $body
            }
            $crate::Store::Postgres(pools) => {
                let $pool = &pools.readers;
                $body
            }
        }
    };
}
pub(crate) use on_read_pool;

/// Runs `$body` in a transaction on a connection of `$pool`, binding the transaction to `$tx`,
/// and commits; evaluates to the body's value, or to the first error (`?` in the body ends
/// the transaction). The connection goes back to the pool only after a commit: after an error,
/// or when the caller stops waiting, it is closed (see [`Checkout`]). A failed statement or
/// commit can leave a connection in a transaction the driver no longer tracks (SQLite rolls
/// back by itself on a full disk, so the driver's own ROLLBACK then fails and its bookkeeping
/// stays "inside a transaction"), and the next writes on that connection would then run inside
/// a transaction that never commits.
macro_rules! in_transaction {
    ($pool:expr, $tx:ident => $body:expr) => {{
        let mut checkout = $crate::Checkout::acquire($pool).await?;
        let outcome: Result<_, $crate::StoreError> = async {
            let mut $tx = checkout.begin().await?;
            let value = $body;
            $crate::commit($tx).await?;
            Ok(value)
        }
        .await;
        checkout.release_after(outcome)
    }};
}
pub(crate) use in_transaction;

impl Store {
    /// Opens a pool for `url` with the default [`PoolLimits`]; see [`Store::connect_with`].
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Self::connect_with(url, PoolLimits::default()).await
    }

    /// Opens a pool for `url`: `sqlite:PATH` (the file is created if missing) or
    /// `postgres://...`, within `limits`. Does not migrate; see [`Store::migrate`]. A connection
    /// found broken is replaced on a later call, so a database that goes away makes calls fail
    /// until it is back, and then they succeed again without a restart.
    pub async fn connect_with(url: &str, limits: PoolLimits) -> Result<Store, StoreError> {
        Self::open(url, limits, true).await
    }

    /// Opens a pool for `url` as [`Store::connect_with`] does, but fails instead of creating a
    /// SQLite file that does not exist: for commands that only inspect a store.
    pub async fn connect_existing_with(url: &str, limits: PoolLimits) -> Result<Store, StoreError> {
        Self::open(url, limits, false).await
    }

    async fn open(url: &str, limits: PoolLimits, create: bool) -> Result<Store, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Self::open_sqlite(url, limits, create).await,
            "postgres" | "postgresql" => Self::open_postgres(url, limits).await,
            other => Err(StoreError::UnsupportedUrl {
                scheme: other.to_owned(),
            }),
        }
    }

    /// The two pools of a SQLite store, and its checkpoint task where `create` (the processes
    /// that run a service, migrate or rebuild).
    async fn open_sqlite(url: &str, limits: PoolLimits, create: bool) -> Result<Store, StoreError> {
        // WAL with synchronous=FULL: a commit returns only after the WAL is fsync'd,
        // which is what makes a 2xx mean "durable". Statement journals and temporary tables
        // stay in memory: SQLite would otherwise write those larger than 64 KiB (a rebuild's
        // swap batch) to a file in /var/tmp, /tmp or the working folder, which need not be
        // writable where the database's folder is.
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .pragma("temp_store", "MEMORY")
            .busy_timeout(limits.statement_timeout);
        // One connection writes: SQLite has one writer at a time, and writers that wait
        // on SQLite's own lock sleep in its busy handler (tens of milliseconds), while
        // tasks waiting for the pool's connection are woken the moment it is free.
        // It lasts as long as the store, never closed for idleness or age: a new one would
        // start with an empty page cache.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(limits.acquire_timeout)
            .connect_with(
                options
                    .clone()
                    .pragma("wal_autocheckpoint", checkpoint::BACKSTOP_PAGES.to_string())
                    .pragma(
                        "journal_size_limit",
                        checkpoint::WAL_SIZE_LIMIT_BYTES.to_string(),
                    ),
            )
            .await?;
        // Readers open the same file with the same settings and refuse to write. Not
        // SQLITE_OPEN_READONLY: such a connection cannot create
        // the WAL's shared-memory file if no other connection has it open.
        let readers = SqlitePoolOptions::new()
            .max_connections(limits.max_connections)
            .acquire_timeout(limits.acquire_timeout)
            .connect_with(options.clone().pragma("query_only", "ON"))
            .await?;
        // Only processes that may write much checkpoint the WAL; the commands that
        // inspect or fix a few records leave it to them.
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&writer)
            .await?;
        let checkpointer = (create && journal == "wal")
            .then(|| Arc::new(checkpoint::Checkpointer::start(&options, writer.clone())));
        // Only a file in WAL mode opened with SQLite's default file system layer: a database
        // in memory is not shared with other libraries' connections, and connections that
        // lock the file another way (`vfs=`, `immutable=`) must not meet on it.
        let direct_file = journal == "wal" && !names_file_system_options(url);
        let database = options.get_filename().to_path_buf();
        let direct = direct_file.then(|| {
            Arc::new(direct_read::DirectReader::new(
                database.clone(),
                limits.max_connections,
                limits.acquire_timeout,
                limits.statement_timeout,
            ))
        });
        let direct_writer = (direct_file && !opens_read_only(url)).then(|| {
            Arc::new(direct_write::DirectWriter::new(
                database,
                limits.statement_timeout,
            ))
        });
        Ok(Store::Sqlite(SqlitePools {
            writer,
            readers,
            checkpointer,
            direct,
            direct_writer,
        }))
    }

    /// The two pools of a PostgreSQL store.
    async fn open_postgres(url: &str, limits: PoolLimits) -> Result<Store, StoreError> {
        // Guard against a server or database configured with synchronous_commit=off:
        // an acknowledged event must survive a crash of the server too. A transaction
        // whose client stops answering (a network that drops packets) is ended by the
        // server after the statement timeout, so its locks do not outlive it.
        let statement_timeout = limits.statement_timeout.as_millis().to_string();
        let options = PgConnectOptions::from_str(url)?.options([
            ("synchronous_commit", "on"),
            ("statement_timeout", statement_timeout.as_str()),
            (
                "idle_in_transaction_session_timeout",
                statement_timeout.as_str(),
            ),
        ]);
        let pool = || {
            PgPoolOptions::new()
                .max_connections(limits.max_connections)
                .acquire_timeout(limits.acquire_timeout)
        };
        let writer = pool().connect_with(options.clone()).await?;
        let readers = pool().connect_with(options).await?;
        Ok(Store::Postgres(PgPools { writer, readers }))
    }

    /// Declares this process the one whose commits acknowledge deliveries. On SQLite its
    /// checkpoint task then also makes the WAL start over, which holds the write lock for a
    /// moment that this process's commits wait out in their pool's queue (see
    /// `checkpoint.rs`); other processes only copy the WAL. Nothing to do on PostgreSQL.
    pub fn own_wal_restarts(&self) {
        if let Store::Sqlite(SqlitePools {
            checkpointer: Some(checkpointer),
            ..
        }) = self
        {
            checkpointer.own_restarts();
        }
    }

    /// Applies every pending migration of this backend. Safe to run from several processes
    /// at once: sqlx serializes migrators with a lock (an advisory lock on PostgreSQL).
    ///
    /// On SQLite the migrations run with SQLite's default place for temporary data: with it in
    /// memory (as the store's connections keep it), building an index sorts the whole table in
    /// memory, where the default spills what outgrows the page cache to a temporary file.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pools) => {
                let mut writer = pools.writer.acquire().await?;
                sqlx::raw_sql("PRAGMA temp_store = DEFAULT")
                    .execute(&mut *writer)
                    .await?;
                let migrated = SQLITE_MIGRATIONS.run(&mut *writer).await;
                sqlx::raw_sql("PRAGMA temp_store = MEMORY")
                    .execute(&mut *writer)
                    .await?;
                migrated?
            }
            Store::Postgres(pools) => POSTGRES_MIGRATIONS.run(&pools.writer).await?,
        }
        Ok(())
    }

    /// Ok when the store answers and every migration this build knows is applied (a database
    /// never migrated is [`StoreError::NotMigrated`] with none applied). It asks the pool that
    /// writes: whether appends can be made is what readiness means.
    pub async fn check_ready(&self) -> Result<(), StoreError> {
        let known = match self {
            Store::Sqlite(_) => SQLITE_MIGRATIONS.iter().count(),
            Store::Postgres(_) => POSTGRES_MIGRATIONS.iter().count(),
        };
        // A database never migrated has no table of migrations at all.
        let tracking = match self {
            Store::Sqlite(_) => {
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Store::Postgres(_) => {
                "SELECT count(*) FROM pg_class WHERE oid = to_regclass('_sqlx_migrations')"
            }
        };
        let applied: i64 = on_pool!(self, pool => {
            let mut checkout = Checkout::acquire(pool).await?;
            let tracked: i64 = sqlx::query_scalar(tracking)
                .fetch_one(checkout.connection())
                .await?;
            let applied = if tracked == 0 {
                0
            } else {
                sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                    .fetch_one(checkout.connection())
                    .await?
            };
            checkout.release();
            applied
        });
        if usize::try_from(applied).unwrap_or(0) < known {
            return Err(StoreError::NotMigrated { applied, known });
        }
        Ok(())
    }

    /// Closes the pools: waits for checked-out connections to come back, then closes them all.
    /// Every later call fails with [`StoreError::Database`].
    pub async fn close(&self) {
        match self {
            Store::Sqlite(pools) => {
                if let Some(checkpointer) = &pools.checkpointer {
                    checkpointer.stop().await;
                }
                if let Some(direct) = &pools.direct {
                    direct.close().await;
                }
                if let Some(direct_writer) = &pools.direct_writer {
                    direct_writer.close();
                }
                close_every_connection(&pools.readers).await;
                close_every_connection(&pools.writer).await;
            }
            Store::Postgres(pools) => {
                pools.readers.close().await;
                pools.writer.close().await;
            }
        }
    }

    /// Calls `on_append` each time any process commits an append to the log. On PostgreSQL this
    /// is LISTEN on the channel migration 0004 notifies; it returns only on an error (a lost
    /// connection ends it, and notifications sent meanwhile are missed: callers also poll). On
    /// SQLite, whose only writer is this process, it never returns.
    pub async fn watch_appends(&self, mut on_append: impl FnMut()) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => std::future::pending().await,
            Store::Postgres(pools) => {
                let mut listener = PgListener::connect_with(&pools.readers).await?;
                listener.listen(APPENDED_CHANNEL).await?;
                loop {
                    listener.recv().await?;
                    on_append();
                }
            }
        }
    }

    /// The rows of `select` (a `SELECT ... FROM ...` without `WHERE`) whose `call_key` is one of
    /// `call_keys`, read a statement per [`sql::ROWS_PER_STATEMENT`] calls, each statement's rows
    /// ordered by `order_by` (an `ORDER BY` clause, or empty). On a SQLite file they are read on
    /// a direct connection (see `direct_read`), each row decoded by `decode_direct`.
    pub(crate) async fn select_for_calls<R>(
        &self,
        select: &str,
        order_by: &str,
        call_keys: &[CallKey],
        decode_direct: fn(&rusqlite::Row<'_>) -> rusqlite::Result<R>,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin
            + 'static,
    {
        let mut rows = Vec::new();
        if let Some(direct) = self.direct_reader() {
            for (sql, keys) in self.direct_statements_for_calls(select, order_by, call_keys) {
                rows.extend(direct.rows(sql, keys, decode_direct).await?);
            }
            return Ok(rows);
        }
        for (sql, chunk) in self.statements_for_calls(select, order_by, call_keys) {
            on_read_pool!(self, pool => {
                let mut query = sqlx::query_as::<_, R>(&sql);
                for call_key in chunk {
                    query = query.bind(call_key.as_str());
                }
                rows.extend(query.fetch_all(pool).await?);
            });
        }
        Ok(rows)
    }

    /// The statements of [`Store::select_for_calls`] over `call_keys`, each with the call keys it
    /// binds, for a read on a direct connection.
    pub(crate) fn direct_statements_for_calls(
        &self,
        select: &str,
        order_by: &str,
        call_keys: &[CallKey],
    ) -> Vec<(String, Vec<Value>)> {
        self.statements_for_calls(select, order_by, call_keys)
            .into_iter()
            .map(|(sql, chunk)| {
                let keys = chunk.iter().map(|key| Value::Text(key.as_str().to_owned()));
                (sql, keys.collect())
            })
            .collect()
    }

    /// The statements `head WHERE call_key IN (...) tail` over the call keys of `keyed` (one
    /// parameter per item, which the caller binds in order), a statement per
    /// [`sql::ROWS_PER_STATEMENT`] items, each with the items it binds: those of
    /// [`Store::select_for_calls`], and the settle's.
    pub(crate) fn statements_for_calls<'k, K>(
        &self,
        head: &str,
        tail: &str,
        keyed: &'k [K],
    ) -> Vec<(String, &'k [K])> {
        keyed
            .chunks(sql::ROWS_PER_STATEMENT)
            .map(|chunk| {
                let placeholders = self.placeholders().list(chunk.len(), 1);
                let sql = format!("{head} WHERE call_key IN ({placeholders}) {tail}");
                (sql, chunk)
            })
            .collect()
    }

    /// Whether a process other than this one has this store's SQLite file open, from its first
    /// transaction on (see `sharing`), counting as "yes" what cannot be asked; `None` where
    /// that cannot be told: on PostgreSQL, and where [`Store::open_sqlite`] opens no direct
    /// reader (a database in memory, `vfs=`, `immutable=`).
    pub fn opened_by_another_process(&self) -> Option<bool> {
        let direct = self.direct_reader()?;
        Some(sharing::opened_by_another_process(direct.database()))
    }

    /// The direct reader of a SQLite file (see `direct_read`); `None` on PostgreSQL and where
    /// [`Store::open_sqlite`] opens none (a database in memory, `vfs=`, `immutable=`).
    pub(crate) fn direct_reader(&self) -> Option<&Arc<direct_read::DirectReader>> {
        match self {
            Store::Sqlite(pools) => pools.direct.as_ref(),
            Store::Postgres(_) => None,
        }
    }

    /// The direct writer of a SQLite file (see `direct_write`), with the write pool whose
    /// connection is its turn; `None` on PostgreSQL and where [`Store::open_sqlite`] opens
    /// none.
    pub(crate) fn direct_writer(&self) -> Option<(&Arc<direct_write::DirectWriter>, &SqlitePool)> {
        match self {
            Store::Sqlite(pools) => pools
                .direct_writer
                .as_ref()
                .map(|direct| (direct, &pools.writer)),
            Store::Postgres(_) => None,
        }
    }

    /// How this backend's multi-row statements spell their parameters.
    pub(crate) fn placeholders(&self) -> sql::Placeholders {
        match self {
            Store::Sqlite(_) => sql::Placeholders::Anonymous,
            Store::Postgres(_) => sql::Placeholders::Numbered,
        }
    }

    /// Whether transactions that write run one at a time: on SQLite one connection writes, so
    /// a second writer waits for the write turn; PostgreSQL runs them side by side.
    pub fn writes_one_at_a_time(&self) -> bool {
        matches!(self, Store::Sqlite(_))
    }

    /// Which backend this is, for logs: `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }
}
