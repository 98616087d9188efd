//! The fold and rebuild benchmark: a log with a realistic mix (arrivals shuffled within short
//! windows, so some events are late; some deliveries repeated), the raw rate of streaming the
//! rows a rebuild reads with a plain `SELECT`, `callfold rebuild` over them with its peak
//! memory, and one `callfold projector` worker catching up on every call.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use callfold_ingest::LinkingRules;
use callfold_simulate::invent_events;
use callfold_store::{EventTime, NewEvent, Store, WebhookId};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};
use sqlx::sqlite::SqliteConnectOptions;
use tokio_stream::StreamExt;

use crate::late;
use crate::servers::{
    Placement, callfold_executable, counters_of, peak_rss_mib_of, start_callfold_command,
};

/// Events appended per transaction while filling.
const FILL_BATCH: usize = 1000;
/// Arrivals are shuffled within windows of this many events.
const SHUFFLE_WINDOW: usize = 32;
/// One delivery in this many is delivered twice.
const DUPLICATE_EVERY: usize = 20;

/// What a fill wrote.
#[derive(Clone, Copy, Debug)]
pub struct Filled {
    /// Records in the log.
    pub events: i64,
}

/// Appends about `events` invented events (all their calls' events, in shuffled windows,
/// with some repeated) to `store`.
pub async fn fill_log(store: &Store, events: usize, seed: u64) -> anyhow::Result<Filled> {
    append_invented(store, events, seed).await?;
    vacuum(store).await?;
    Ok(Filled {
        events: store.log_len().await?,
    })
}

/// Appends about `events` invented events to `store` as [`fill_log`] does, without the
/// clean-up after a bulk load.
pub async fn append_invented(store: &Store, events: usize, seed: u64) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    // The traffic model makes about 3.7 events per call.
    let mut invented = invent_events(events * 10 / 37 + 1, seed, now);
    invented.truncate(events);
    let mut rng = StdRng::seed_from_u64(seed);
    for window in invented.chunks_mut(SHUFFLE_WINDOW) {
        window.shuffle(&mut rng);
    }
    let rules = LinkingRules::default();
    let received_at = EventTime::now();
    let records: Vec<NewEvent> = invented
        .into_iter()
        .map(|event| NewEvent {
            webhook_id: WebhookId::parse(&event.webhook_id).expect("invented ids are valid"),
            webhook_timestamp: now.timestamp(),
            received_at,
            body_sha256: Sha256::digest(&event.body).into(),
            content: rules.read(&event.body),
            body: event.body,
        })
        .collect();
    for batch in records.chunks(FILL_BATCH) {
        let mut with_repeats = batch.to_vec();
        with_repeats.extend(batch.iter().step_by(DUPLICATE_EVERY).cloned());
        store.append_batch(&with_repeats).await?;
    }
    Ok(())
}

/// On PostgreSQL, what autovacuum would do soon after a bulk change, done now, so that it does
/// not run under the measurements that follow. Nothing to do on SQLite.
pub async fn vacuum(store: &Store) -> anyhow::Result<()> {
    if let Store::Postgres(pools) = store {
        sqlx::raw_sql("VACUUM ANALYZE")
            .execute(&pools.writer)
            .await?;
    }
    Ok(())
}

/// The rows a rebuild reads, in its order, decoded into owned values like its own rows.
type RawRow = (
    i64,
    String,
    i64,
    i64,
    Vec<u8>,
    Vec<u8>,
    Option<String>,
    Option<i64>,
    Option<String>,
    bool,
    Option<String>,
);

const RAW_READ: &str = "SELECT seq, webhook_id, webhook_timestamp, received_at_us, body, \
     body_sha256, topic, event_time_us, call_key, unlinked, quarantine_reason FROM events \
     WHERE call_key IS NOT NULL ORDER BY call_key, seq";

/// Streams every call's rows of the store at `url` with one plain `SELECT` and returns how
/// many and how long it took: the physical limit of a rebuild. On SQLite the rows are read as
/// the rebuild reads its pages, on a connection driven directly on a thread of its own.
pub async fn raw_read(store: &Store, url: &str) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut rows = 0u64;
    match store {
        Store::Sqlite(_) => {
            let database = SqliteConnectOptions::from_str(url)?
                .get_filename()
                .to_path_buf();
            rows = tokio::task::spawn_blocking(move || direct_raw_read(&database)).await??;
        }
        Store::Postgres(pools) => {
            let mut stream = sqlx::query_as::<_, RawRow>(RAW_READ).fetch(&pools.readers);
            while let Some(row) = stream.next().await {
                row?;
                rows += 1;
            }
        }
    }
    Ok((rows, started.elapsed()))
}

/// The SQLite raw read: every row of [`RAW_READ`], each column decoded.
fn direct_raw_read(database: &Path) -> anyhow::Result<u64> {
    let connection = rusqlite::Connection::open(database)?;
    let mut statement = connection.prepare(RAW_READ)?;
    let mut rows = statement.query([])?;
    let mut read = 0;
    while let Some(row) = rows.next()? {
        let _decoded: RawRow = (
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
            row.get(7)?,
            row.get(8)?,
            row.get(9)?,
            row.get(10)?,
        );
        read += 1;
    }
    Ok(read)
}

/// What one `callfold rebuild` took.
#[derive(Clone, Copy, Debug)]
pub struct RebuildFigures {
    /// From its start to its exit.
    pub took: Duration,
    /// Its CPU time, all threads, as last sampled before it exited.
    pub cpu_seconds: f64,
    /// Its peak resident memory in MiB, as last sampled.
    pub peak_rss_mib: f64,
}

/// One `callfold rebuild` running at `placement`, its memory and CPU time sampled every 20 ms.
pub async fn rebuild(database_url: &str, placement: Placement) -> anyhow::Result<RebuildFigures> {
    let started = Instant::now();
    let mut child = placement
        .command(callfold_executable()?)
        .args(["rebuild", "--database-url", database_url])
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or_default();
    let (mut peak_rss_mib, mut cpu_seconds) = (0.0f64, 0.0);
    let mut placement_checked = false;
    loop {
        tokio::select! {
            status = child.wait() => {
                anyhow::ensure!(status?.success(), "callfold rebuild failed");
                let took = started.elapsed();
                return Ok(RebuildFigures { took, cpu_seconds, peak_rss_mib });
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                if !placement_checked {
                    placement.ensure_holds_for(pid)?;
                    placement_checked = true;
                }
                peak_rss_mib = peak_rss_mib.max(peak_rss_mib_of(pid));
                cpu_seconds = counters_of(pid).cpu_seconds.max(cpu_seconds);
            }
        }
    }
}

/// Marks every call of the log to be folded again, as when projectors come back to a log
/// that grew without them.
pub async fn mark_every_call(store: &Store) -> anyhow::Result<()> {
    let sql = "INSERT INTO calls_to_fold (call_key, marked_at_us) \
         SELECT DISTINCT call_key, 0 FROM events WHERE call_key IS NOT NULL \
         ON CONFLICT (call_key) DO UPDATE SET version = calls_to_fold.version + 1";
    match store {
        Store::Sqlite(pools) => sqlx::query(sql).execute(&pools.writer).await.map(drop)?,
        Store::Postgres(pools) => sqlx::query(sql).execute(&pools.writer).await.map(drop)?,
    }
    Ok(())
}

/// How long one `callfold projector` (one worker), started now, takes to empty the fold queue
/// of `store` at `database_url`.
pub async fn catch_up(database_url: &str, store: &Store) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let projector = start_callfold_command("projector", database_url, &[]).await?;
    late::wait_until_folded(store).await?;
    let took = started.elapsed();
    drop(projector);
    Ok(took)
}
