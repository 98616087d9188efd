//! The WAL checkpoints of a SQLite store, taken by a task of its own so that no commit waits
//! for the copy, nor for most of the fsync that follows it.
//!
//! SQLite's default copies the WAL back into the database file inside the commit that takes
//! the WAL past 1,000 pages, then fsyncs the database file there: every few megabytes one
//! group commit's deliveries wait for both, and after anything that kept checkpoints from
//! finishing for a while (a burst, readers holding old snapshots), for all of the backlog. Here
//! the write connection checkpoints only as a backstop ([`BACKSTOP_PAGES`]), and a task with a
//! connection of its own, every [`CHECKPOINT_EVERY`]:
//!
//! 1. runs passive checkpoints, which copy what no reader still needs beside the writer without
//!    taking its lock, until fewer than [`LEFTOVER_PAGES`] remain (commits go on meanwhile);
//! 2. fsyncs the database file, still beside the writer, once they have copied
//!    [`SYNC_PAGES`] since it was last fsynced, and before every restart (a passive checkpoint
//!    that has not reached the WAL's end leaves what it copied unsynced, and the checkpoint that
//!    reaches it would fsync all of it): so that, while its turns succeed, copies do not wait
//!    long for the disk, nor the restart for all of them;
//! 3. once the WAL holds [`RESTART_PAGES`], holds this process's write connection, so that no
//!    commit of its own comes in between, for a restart checkpoint: it copies the pages
//!    committed since step 1 and waits for readers to leave the WAL (both within
//!    [`READERS_WAIT`]), so that the next commit writes the WAL from its start. If readers, or a
//!    write lock held elsewhere, keep it from finishing, the restart waits
//!    [`RETRY_RESTART_AFTER`] before it is tried again.
//!
//! Step 3 runs only in the process whose commits acknowledge deliveries
//! ([`Checkpointer::own_restarts`]): its commits wait for a restart in their pool's queue, while
//! another process's would sleep in SQLite's busy handler, longer than the lock is held. Other
//! processes (a projector on its own, a rebuild, a migration) run steps 1 and 2 only. Passive
//! checkpoints alone never let the WAL start over while commits keep coming.
//!
//! A failed fsync of the database file ends the process, as it does PostgreSQL: the pages it
//! lost are marked copied, and a later checkpoint that succeeds would let the WAL, which still
//! holds them, start over. Started again, SQLite copies them from the WAL once more.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{Connection, SqliteConnection};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::kept_open::kept_open;

/// How often the task checkpoints.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// WAL pages past which the task makes the WAL start over (256 MiB at SQLite's 4 KiB pages).
/// Each restart holds this process's commits while it copies what was committed during the
/// fsync before it, and fsyncs the database file again: 22 to 31 ms each on a log of a million
/// events under steady appends when the WAL restarted at 16 MiB, several times a second, and
/// most of the acknowledgements' p99 (`docs/benchmarks.md`, "Fewer WAL restarts").
const RESTART_PAGES: i64 = 65_536;

/// Pages that passive checkpoints may copy into the database file before the task fsyncs it
/// (16 MiB).
const SYNC_PAGES: i64 = 4_096;

/// Most WAL pages left uncopied when the task holds the write connection (1 MiB).
const LEFTOVER_PAGES: i64 = 256;

/// Passive checkpoints tried in one turn to get under [`LEFTOVER_PAGES`].
const PASSIVE_TRIES: usize = 4;

/// The write connection's own automatic checkpoint (`wal_autocheckpoint`, in pages): only if the
/// task cannot keep the WAL short, as when readers keep holding old snapshots.
pub(crate) const BACKSTOP_PAGES: i64 = 4 * RESTART_PAGES;

/// The size the WAL file is cut back to when it starts over after growing past it
/// (`journal_size_limit`): a restart's worth and a quarter, above what commits add while a
/// restart is under way, so that the file is cut only after readers held the WAL back.
pub(crate) const WAL_SIZE_LIMIT_BYTES: i64 = RESTART_PAGES * 4096 * 5 / 4;

/// Longest the task waits for this process's write connection before trying at its next turn.
const WRITER_WAIT: Duration = Duration::from_secs(1);

/// Copies what no reader still needs, beside the writer.
const PASSIVE: &str = "PRAGMA wal_checkpoint(PASSIVE)";

/// Copies the rest and waits for readers to leave the WAL, so that the next commit restarts it.
const RESTART: &str = "PRAGMA wal_checkpoint(RESTART)";

/// Longest a restart waits for readers to leave the WAL (the task connection's busy timeout),
/// while this process's commits wait for it.
const READERS_WAIT: Duration = Duration::from_millis(20);

/// How long after a restart that readers kept from finishing the next one is tried.
const RETRY_RESTART_AFTER: Duration = Duration::from_secs(1);

/// The running checkpoint task of one store; it ends when [`Checkpointer::stop`] is called or
/// when the last clone of its store is dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    stop: watch::Sender<bool>,
    /// Whether this process makes the WAL start over (step 3).
    restarts: Arc<AtomicBool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// One `PRAGMA wal_checkpoint` row: whether another checkpoint was running, the WAL's pages,
/// and how many of them are now in the database file.
#[derive(sqlx::FromRow)]
struct CheckpointRow {
    busy: i64,
    log: i64,
    checkpointed: i64,
}

impl CheckpointRow {
    fn leftover(&self) -> i64 {
        self.log - self.checkpointed
    }
}

impl Checkpointer {
    /// Starts checkpointing the database that `options` opens and `writer` writes to, with a
    /// connection of its own.
    pub(crate) fn start(options: &SqliteConnectOptions, writer: SqlitePool) -> Self {
        // Resolved once: a relative path would follow the process's working folder.
        let database = options.get_filename();
        let database = std::fs::canonicalize(database).unwrap_or_else(|_| database.to_path_buf());
        let options = options
            .clone()
            .filename(&database)
            .create_if_missing(false)
            .busy_timeout(READERS_WAIT);
        let (stop, stopped) = watch::channel(false);
        let restarts = Arc::new(AtomicBool::new(false));
        let task = CheckpointTask {
            database,
            options,
            writer,
            restarts: Arc::clone(&restarts),
            last_restart_pages: None,
            connection: None,
            no_restart_before: Instant::now(),
            unsynced: UnsyncedCopies::default(),
        };
        let task = tokio::spawn(checkpoint_until_stopped(task, stopped));
        Self {
            stop,
            restarts,
            task: Mutex::new(Some(task)),
        }
    }

    /// Makes this process the one that has the WAL start over: the one whose commits
    /// acknowledge deliveries.
    pub(crate) fn own_restarts(&self) {
        self.restarts.store(true, Ordering::Relaxed);
    }

    /// Stops the task and waits until its connection is closed.
    pub(crate) async fn stop(&self) {
        self.stop.send_replace(true);
        let task = self.task.lock().map(|mut task| task.take()).ok().flatten();
        if let Some(task) = task
            && let Err(error) = task.await
        {
            tracing::error!(%error, "the WAL checkpoint task ended abnormally");
        }
    }
}

/// What the task keeps between turns.
struct CheckpointTask {
    options: SqliteConnectOptions,
    database: PathBuf,
    writer: SqlitePool,
    /// Its own connection, opened again at the next turn after a failure.
    connection: Option<SqliteConnection>,
    restarts: Arc<AtomicBool>,
    /// The WAL's pages after the last restart: until a commit adds to them, there is nothing
    /// to restart.
    last_restart_pages: Option<i64>,
    /// No restart before this, after one that readers kept from finishing.
    no_restart_before: Instant,
    unsynced: UnsyncedCopies,
}

/// Pages copied into the database file since it was last fsynced, as far as the task's passive
/// checkpoints tell.
#[derive(Debug, Default)]
struct UnsyncedCopies {
    /// The WAL's pages, and how many of them were copied, at the last passive checkpoint.
    last_passive: Option<(i64, i64)>,
    pages: i64,
}

impl UnsyncedCopies {
    /// Counts what a passive checkpoint that left the WAL at `log` pages, `checkpointed` of
    /// them copied, copied since the last one; a checkpoint that found another running (SQLite
    /// then answers -1 for both) tells nothing.
    fn count(&mut self, log: i64, checkpointed: i64) {
        if log < 0 || checkpointed < 0 {
            return;
        }
        let (before, copied) = match self.last_passive {
            Some((last_log, last_checkpointed))
                if log >= last_log && checkpointed >= last_checkpointed =>
            {
                (self.pages, checkpointed - last_checkpointed)
            }
            // The WAL started over since, which it does only after a checkpoint that reached its
            // end fsynced the file: what it holds was copied since, and nothing before it is left.
            // (One that started over and grew past its old size within a turn is missed here, and
            // counted from the next turn on.)
            _ => (0, checkpointed),
        };
        self.last_passive = Some((log, checkpointed));
        // A checkpoint that reached the WAL's end fsynced the file itself.
        self.pages = if checkpointed == log {
            0
        } else {
            before + copied
        };
    }

    /// Whether the file is due an fsync.
    fn due(&self) -> bool {
        self.pages >= SYNC_PAGES
    }

    fn synced(&mut self) {
        self.pages = 0;
    }
}

async fn checkpoint_until_stopped(mut task: CheckpointTask, mut stopped: watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        tokio::select! {
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    break;
                }
            }
            () = tokio::time::sleep(CHECKPOINT_EVERY) => {
                match task.turn().await {
                    Ok(()) => failing = false,
                    Err(error) => {
                        // Said once per spell of failures; the backstop keeps the WAL bounded
                        // meanwhile.
                        if !failing {
                            tracing::warn!(%error, "WAL checkpoints are failing");
                        }
                        failing = true;
                    }
                }
            }
        }
    }
    if let Some(connection) = task.connection {
        let _ = connection.close().await;
    }
}

impl CheckpointTask {
    /// Steps 1 to 3 of the module's header.
    async fn turn(&mut self) -> Result<(), sqlx::Error> {
        let mut connection = match self.connection.take() {
            Some(connection) => connection,
            None => SqliteConnection::connect_with(&self.options).await?,
        };
        let mut passive = checkpoint(&mut connection, PASSIVE).await?;
        for _ in 1..PASSIVE_TRIES {
            if passive.busy != 0 || passive.leftover() <= LEFTOVER_PAGES {
                break;
            }
            passive = checkpoint(&mut connection, PASSIVE).await?;
        }
        self.unsynced.count(passive.log, passive.checkpointed);
        if self.restart_due(&passive) {
            self.restart(&mut connection).await?;
        } else if self.unsynced.due() {
            self.sync().await;
        }
        self.connection = Some(connection);
        Ok(())
    }

    /// Step 2.
    async fn sync(&mut self) {
        if sync_database_file(&self.database).await {
            self.unsynced.synced();
        }
    }

    fn restart_due(&self, passive: &CheckpointRow) -> bool {
        self.restarts.load(Ordering::Relaxed)
            && passive.busy == 0
            && passive.log >= RESTART_PAGES
            && passive.leftover() <= LEFTOVER_PAGES
            && self.last_restart_pages != Some(passive.log)
            && Instant::now() >= self.no_restart_before
    }

    /// Steps 2 and 3.
    async fn restart(&mut self, connection: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        self.sync().await;
        let Ok(held) = tokio::time::timeout(WRITER_WAIT, self.writer.acquire()).await else {
            return Ok(());
        };
        let held = held?;
        let restart = checkpoint(connection, RESTART).await;
        drop(held);
        let restart = restart?;
        if restart.busy == 0 {
            self.last_restart_pages = Some(restart.log);
        } else {
            self.no_restart_before = Instant::now() + RETRY_RESTART_AFTER;
        }
        Ok(())
    }
}

async fn checkpoint(
    connection: &mut SqliteConnection,
    statement: &'static str,
) -> Result<CheckpointRow, sqlx::Error> {
    sqlx::query_as(statement)
        .fetch_one(connection)
        .await
        .inspect_err(abort_if_the_sync_failed)
}

/// SQLite's extended result code for a failed fsync (`SQLITE_IOERR_FSYNC`).
const SQLITE_IOERR_FSYNC: &str = "1034";

/// Ends the process if `error` is SQLite failing to fsync the database file in a checkpoint
/// (see the module's header).
fn abort_if_the_sync_failed(error: &sqlx::Error) {
    if let sqlx::Error::Database(database) = error
        && database.code().as_deref() == Some(SQLITE_IOERR_FSYNC)
    {
        abort_after_a_failed_sync(error);
    }
}

/// Ends the process after a failed fsync (see the module's header).
fn abort_after_a_failed_sync(error: &dyn std::fmt::Display) -> ! {
    tracing::error!(
        %error,
        "the database file could not be synced; stopping so that SQLite copies the WAL into \
         it again when started"
    );
    std::process::abort();
}

/// Fsyncs the database file on a blocking thread: what the passive checkpoints copied into it,
/// without holding anything SQLite locks. Returns false for a file that cannot be opened, which
/// is left to the next sync, or to the fsync of a checkpoint that reaches the WAL's end; a file
/// that fails to sync ends the process (see the module's header).
async fn sync_database_file(path: &Path) -> bool {
    let path = path.to_path_buf();
    let synced = tokio::task::spawn_blocking(move || match kept_open(&path) {
        Ok(file) => file.sync_data().map(|()| true),
        Err(error) => {
            tracing::warn!(%error, "the database file could not be opened to sync it");
            Ok(false)
        }
    })
    .await
    .map_err(std::io::Error::other);
    match synced {
        Ok(Ok(synced)) => synced,
        Err(error) | Ok(Err(error)) => abort_after_a_failed_sync(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A passive checkpoint's (log, checkpointed), or `None` for a sync; the pages then counted;
    /// why.
    type Step<'a> = (Option<(i64, i64)>, i64, &'a str);

    /// Feeds [`UnsyncedCopies`] each step and checks the pages it then counts and whether an
    /// fsync is due.
    fn counted(steps: &[Step]) {
        let mut unsynced = UnsyncedCopies::default();
        for (step, expected, why) in steps {
            match step {
                Some((log, checkpointed)) => unsynced.count(*log, *checkpointed),
                None => unsynced.synced(),
            }
            assert_eq!(unsynced.pages, *expected, "{why}");
            assert_eq!(unsynced.due(), *expected >= SYNC_PAGES, "due: {why}");
        }
    }

    #[test]
    fn copies_count_until_a_checkpoint_reaches_the_end_of_the_wal_or_a_sync() {
        counted(&[
            (
                Some((1_000, 600)),
                600,
                "the first checkpoint counts what it left copied",
            ),
            (
                Some((3_000, 2_900)),
                2_900,
                "then what each copied since the one before",
            ),
            (
                Some((5_000, 5_000)),
                0,
                "one that reached the end fsynced the file",
            ),
            (
                Some((9_000, 8_500)),
                3_500,
                "counting starts again from there",
            ),
            (
                Some((12_000, 11_000)),
                6_000,
                "past the pages that call for an fsync",
            ),
            (None, 0, "a sync"),
            (
                Some((12_500, 12_000)),
                1_000,
                "counting goes on from the last checkpoint",
            ),
        ]);
    }

    #[test]
    fn a_checkpoint_that_found_another_running_tells_nothing() {
        counted(&[
            (Some((9_000, 8_000)), 8_000, "unsynced copies"),
            (
                Some((-1, -1)),
                8_000,
                "a busy checkpoint's -1 is no WAL's end",
            ),
            (
                Some((9_500, 8_200)),
                8_200,
                "the next one counts from the last it could read",
            ),
        ]);
    }

    #[test]
    fn a_wal_that_started_over_counts_from_its_start() {
        counted(&[
            (Some((9_000, 8_000)), 8_000, "before the WAL started over"),
            (
                Some((700, 300)),
                300,
                "what was copied before it started over is synced",
            ),
            (
                Some((700, 300)),
                300,
                "a checkpoint that copied nothing adds nothing",
            ),
            (None, 0, "a sync"),
            (Some((20_000, 5_000)), 4_700, "copied since the last one"),
            (
                Some((30_000, 1_000)),
                1_000,
                "fewer copied than before: it started over again",
            ),
        ]);
    }
}
