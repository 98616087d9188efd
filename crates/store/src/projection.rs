//! Reading and writing per-call projections, and rebuilding them all from the log.
//!
//! The store keeps a projection as the projector hands it over (a document already serialized,
//! plus the bookkeeping the projector needs); it does not interpret documents. Projections are
//! written only by the settles of the fold queue's claims, before or with the removal of the
//! marks they settle (see `queue.rs`), or by a rebuild's swap, which replaces a live projection
//! only with one folded from at least as many events and never deletes one.
//!
//! Every write of a live projection takes the next number of one counter (`change_seq`, see
//! migration 0006) in its own transaction; [`Store::projection_changes`] reads them in that
//! order, which is what the live streams of the query API follow.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rusqlite::types::Value;

use crate::event::{CallKey, EventTime, LoggedEvent};
use crate::log::{EventRow, SELECT_EVENT};
use crate::sql::Placeholders;
use crate::{Store, StoreError, in_transaction, on_pool, on_read_pool};

/// One call's projection as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredProjection {
    /// The call.
    pub call_key: CallKey,
    /// The call document, serialized JSON.
    pub document: String,
    /// Highest log seq folded into this call.
    pub last_seq: i64,
    /// Events of this call that arrived after a later one.
    pub late_events: i64,
    /// How many events were folded: the log only grows, so a call whose log holds more events
    /// than this is behind.
    pub events_folded: i64,
    /// When the projector last changed it.
    pub updated_at: EventTime,
    /// The configuration that folded it; `None` when unknown (folded before configurations
    /// were recorded).
    pub built_with: Option<ConfigFingerprint>,
}

/// How far one call's live projection was folded: what the projector needs of it to fold the
/// call again (see [`Store::folded_so_far`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldedSoFar {
    /// The call.
    pub call_key: CallKey,
    /// Highest log seq folded into the projection.
    pub last_seq: i64,
    /// Events of the call that the projection counts as late.
    pub late_events: i64,
}

/// A row of [`folded_so_far_select`].
#[derive(sqlx::FromRow)]
pub(crate) struct FoldedSoFarRow {
    call_key: String,
    last_seq: i64,
    late_events: i64,
}

impl FoldedSoFarRow {
    /// The row at `row` of a direct read (see `direct_read`) of `call_key, last_seq,
    /// late_events`.
    pub(crate) fn from_direct(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            call_key: row.get(0)?,
            last_seq: row.get(1)?,
            late_events: row.get(2)?,
        })
    }
}

impl From<FoldedSoFarRow> for FoldedSoFar {
    fn from(row: FoldedSoFarRow) -> Self {
        FoldedSoFar {
            call_key: CallKey::new(row.call_key),
            last_seq: row.last_seq,
            late_events: row.late_events,
        }
    }
}

/// A digest of the configuration a projection is folded with (the linking rules and the
/// topic precedence graph), as lowercase hex. The store compares fingerprints; it does not
/// compute them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfigFingerprint(String);

impl ConfigFingerprint {
    /// Wraps a fingerprint computed by the caller.
    pub fn new(hex: impl Into<String>) -> Self {
        Self(hex.into())
    }

    /// The fingerprint as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ConfigFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether the live projections were all folded with one configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectionsBuiltWith {
    /// Every projection was folded with the configuration asked about (or there are none).
    That,
    /// Some projection was folded with another configuration: this one, or an unknown one
    /// (`None`) for projections older than the recording of configurations.
    Another(Option<ConfigFingerprint>),
}

#[derive(sqlx::FromRow)]
struct ProjectionRow {
    call_key: String,
    document: String,
    last_seq: i64,
    late_events: i64,
    events_folded: i64,
    updated_at_us: i64,
    config_fingerprint: Option<String>,
}

impl From<ProjectionRow> for StoredProjection {
    fn from(row: ProjectionRow) -> Self {
        StoredProjection {
            call_key: CallKey::new(row.call_key),
            document: row.document,
            last_seq: row.last_seq,
            late_events: row.late_events,
            events_folded: row.events_folded,
            updated_at: EventTime::from_unix_micros(row.updated_at_us),
            built_with: row.config_fingerprint.map(ConfigFingerprint),
        }
    }
}

/// A projection as written by one change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectionChange {
    /// The change's number: higher numbers were committed later.
    pub change: i64,
    /// The projection it wrote.
    pub projection: StoredProjection,
}

#[derive(sqlx::FromRow)]
struct ChangeRow {
    #[sqlx(flatten)]
    projection: ProjectionRow,
    change_seq: i64,
}

impl From<ChangeRow> for ProjectionChange {
    fn from(row: ChangeRow) -> Self {
        ProjectionChange {
            change: row.change_seq,
            projection: row.projection.into(),
        }
    }
}

/// The live projections, which queries read.
pub(crate) const LIVE: &str = "call_projections";

/// The bookkeeping of live projections that [`Store::folded_so_far`] reads, without a `WHERE`.
pub(crate) fn folded_so_far_select() -> String {
    format!("SELECT call_key, last_seq, late_events FROM {LIVE}")
}

/// Log records read per page while rebuilding.
const REBUILD_PAGE: i64 = 2000;
/// Rebuilt projections a swap's first transaction considers.
const SWAP_BATCH_FIRST: usize = 256;
/// Most rebuilt projections a swap considers per transaction.
const SWAP_BATCH_MAX: usize = 4096;
/// Fewest rebuilt projections a swap considers per transaction.
const SWAP_BATCH_MIN: usize = 16;
/// How long a swap batch that writes should hold what others may wait for (the write lock, or
/// the change counter): batches are resized towards it (see [`SwapPacing`]).
const SWAP_BATCH_TIME: Duration = Duration::from_millis(10);
/// On SQLite, the least pause after a swap batch that wrote (see [`SwapPacing`]): longer than
/// any sleep of SQLite's busy handler in a writer's first 30 ms of waiting.
const SQLITE_SWAP_PAUSE: Duration = Duration::from_millis(20);
/// Most rebuilt projections waiting for their swap while a pause lets the read go on.
const SWAP_QUEUE_MOST: usize = 2 * SWAP_BATCH_MAX;

const PROJECTION_COLUMNS: &str =
    "call_key, document, last_seq, late_events, events_folded, updated_at_us, config_fingerprint";
/// The columns an upsert writes: the projection's, and the change that writes it.
const WRITTEN_COLUMNS: &str = "call_key, document, last_seq, late_events, events_folded, \
     updated_at_us, config_fingerprint, change_seq";
const PARAMETERS_PER_PROJECTION: usize = 8;

/// What every write of a live projection adds to its upsert: the new projection replaces the
/// live one only if it folded at least as many events, checked under the row's lock. A call's
/// events only grow, so a fold that counted fewer read a strict subset: a settle that raced a
/// rebuild's swap (or another fold) must not put it back.
const ONLY_IF_AS_FRESH: &str = "WHERE excluded.events_folded >= call_projections.events_folded";

/// How an upsert of projections resolves a call that has one already: the new projection
/// replaces it only where [`ONLY_IF_AS_FRESH`] holds.
const REPLACE_IF_AS_FRESH: &str = "ON CONFLICT (call_key) DO UPDATE SET \
     document = excluded.document, last_seq = excluded.last_seq, \
     late_events = excluded.late_events, events_folded = excluded.events_folded, \
     updated_at_us = excluded.updated_at_us, config_fingerprint = excluded.config_fingerprint, \
     change_seq = excluded.change_seq";

/// Upserts `rows` projections into the live table in one statement, replacing an existing one
/// only where [`ONLY_IF_AS_FRESH`] holds.
pub(crate) fn upsert_statement(placeholders: Placeholders, rows: usize) -> String {
    format!(
        "INSERT INTO {LIVE} ({WRITTEN_COLUMNS}) VALUES {} {REPLACE_IF_AS_FRESH} \
         {ONLY_IF_AS_FRESH}",
        placeholders.values_list(rows, PARAMETERS_PER_PROJECTION, 1)
    )
}

/// On PostgreSQL, [`upsert_statement`] that also adds the calls it gives a first projection to
/// the count beside the change counter, in the same round trip: the count of those that exist
/// and the upsert read one snapshot (data-modifying `WITH`), which a settle takes after its
/// change numbers, so under the counter's lock, as [`COUNT_NEW_PROJECTIONS`] would be.
pub(crate) fn upsert_counting_new_statement(rows: usize) -> String {
    format!(
        "WITH incoming ({WRITTEN_COLUMNS}) AS (VALUES {}), \
         written AS (INSERT INTO {LIVE} ({WRITTEN_COLUMNS}) \
         SELECT {WRITTEN_COLUMNS} FROM incoming {REPLACE_IF_AS_FRESH} {ONLY_IF_AS_FRESH}) \
         UPDATE projection_changes SET projections = projections \
         + (SELECT count(*) FROM incoming) \
         - (SELECT count(*) FROM {LIVE} WHERE call_key IN (SELECT call_key FROM incoming)) \
         WHERE only_row = 1",
        Placeholders::Numbered.values_list(rows, PARAMETERS_PER_PROJECTION, 1)
    )
}

/// Writes `$projections` into the live table on `$executor` (a connection or transaction of
/// either backend), a statement per [`crate::sql::ROWS_PER_STATEMENT`] projections, each made
/// by `$statement` (given its number of rows: [`upsert_statement`] in the executor's
/// placeholder style, or [`upsert_counting_new_statement`]); the projection at index `i` is
/// written by change `$first_change + i`, and replaces an existing one only where
/// [`ONLY_IF_AS_FRESH`] holds.
macro_rules! upsert_projections {
    ($executor:expr, $statement:expr, $projections:expr, $first_change:expr) => {
        let first_change: i64 = $first_change;
        for (number, chunk) in $projections
            .chunks($crate::sql::ROWS_PER_STATEMENT)
            .enumerate()
        {
            let sql = $statement(chunk.len());
            let mut upsert = sqlx::query(&sql);
            let offset = (number * $crate::sql::ROWS_PER_STATEMENT) as i64;
            for (index, projection) in (offset..).zip(chunk) {
                upsert = upsert
                    .bind(projection.call_key.as_str())
                    .bind(projection.document.as_str())
                    .bind(projection.last_seq)
                    .bind(projection.late_events)
                    .bind(projection.events_folded)
                    .bind(projection.updated_at.unix_micros())
                    .bind(
                        projection
                            .built_with
                            .as_ref()
                            .map($crate::ConfigFingerprint::as_str),
                    )
                    .bind(first_change + index);
            }
            upsert.execute($executor).await?;
        }
    };
}
pub(crate) use upsert_projections;

/// Adds `$1` projections to the count kept beside the change counter (see migration 0009).
pub(crate) const COUNT_NEW_PROJECTIONS: &str =
    "UPDATE projection_changes SET projections = projections + $1 WHERE only_row = 1";

/// The number of the latest change.
const LAST_CHANGE: &str = "SELECT last_change FROM projection_changes WHERE only_row = 1";

/// Takes `$1` change numbers; returns the last of them. The row lock on the counter lasts
/// until the transaction ends.
pub(crate) const TAKE_CHANGES: &str = "UPDATE projection_changes \
     SET last_change = last_change + $1 WHERE only_row = 1 RETURNING last_change";

/// Takes `$count` change numbers in the transaction `$executor`, whose row lock on the counter
/// lasts until it ends; evaluates to the first of them.
macro_rules! take_changes {
    ($executor:expr, $count:expr) => {{
        let count: i64 = $count;
        let last: i64 = sqlx::query_scalar($crate::projection::TAKE_CHANGES)
            .bind(count)
            .fetch_one($executor)
            .await?;
        last - count + 1
    }};
}
pub(crate) use take_changes;

/// Locks the change counter's row in the transaction `$executor` and evaluates to the last
/// change number. Taken first, the lock keeps every settle out until the transaction commits
/// (settles write projections only after taking change numbers), so the live projections it
/// reads under it stay as read.
macro_rules! lock_change_counter {
    ($executor:expr) => {{
        let last_change: i64 = sqlx::query_scalar(
            "UPDATE projection_changes SET last_change = last_change \
             WHERE only_row = 1 RETURNING last_change",
        )
        .fetch_one($executor)
        .await?;
        last_change
    }};
}

/// Reads, on `$executor`, the live projections of the calls in `$range` (first and last);
/// evaluates to their rows.
macro_rules! live_projections_in {
    ($executor:expr, $range:expr) => {{
        let sql = format!(
            "SELECT {PROJECTION_COLUMNS} FROM {LIVE} WHERE call_key >= $1 AND call_key <= $2"
        );
        let live: Vec<ProjectionRow> = sqlx::query_as(&sql)
            .bind($range.0)
            .bind($range.1)
            .fetch_all($executor)
            .await?;
        live
    }};
}

/// Writes `$swap` (a [`Swap`]) in the transaction `$executor` (`$placeholders` its style),
/// which read `$last_change` under the counter's lock: its projections into the live table,
/// numbered from the next change on, the counter past them, and the count of projections.
/// Writes nothing when it changes nothing.
macro_rules! write_swap {
    ($executor:expr, $placeholders:expr, $swap:expr, $last_change:expr) => {
        if $swap.changes() > 0 {
            let statement = |rows| upsert_statement($placeholders, rows);
            upsert_projections!($executor, statement, $swap.replacing, $last_change + 1);
            sqlx::query("UPDATE projection_changes SET last_change = $1 WHERE only_row = 1")
                .bind($last_change + $swap.changes())
                .execute($executor)
                .await?;
            sqlx::query(COUNT_NEW_PROJECTIONS)
                .bind($swap.new_calls)
                .execute($executor)
                .await?;
        }
    };
}

impl Store {
    /// The projection of `call_key`, if the projector has folded any of its events.
    pub async fn projection(
        &self,
        call_key: &CallKey,
    ) -> Result<Option<StoredProjection>, StoreError> {
        let sql = format!("SELECT {PROJECTION_COLUMNS} FROM {LIVE} WHERE call_key = $1");
        on_read_pool!(self, pool => {
            let row: Option<ProjectionRow> = sqlx::query_as(&sql)
                .bind(call_key.as_str())
                .fetch_optional(pool)
                .await?;
            Ok(row.map(StoredProjection::from))
        })
    }

    /// How far the live projections of those of `call_keys` that have one were folded: their
    /// bookkeeping, without their documents.
    pub async fn folded_so_far(
        &self,
        call_keys: &[CallKey],
    ) -> Result<Vec<FoldedSoFar>, StoreError> {
        let rows: Vec<FoldedSoFarRow> = self
            .select_for_calls(
                &folded_so_far_select(),
                "",
                call_keys,
                FoldedSoFarRow::from_direct,
            )
            .await?;
        Ok(rows.into_iter().map(FoldedSoFar::from).collect())
    }

    /// Up to `limit` projections with a call key after `after` (from the first when `None`), in
    /// call key order: the pages of a stable cursor.
    pub async fn list_projections(
        &self,
        after: Option<&CallKey>,
        limit: i64,
    ) -> Result<Vec<StoredProjection>, StoreError> {
        let after = after.map_or("", CallKey::as_str);
        let sql = format!(
            "SELECT {PROJECTION_COLUMNS} FROM {LIVE} WHERE call_key > $1 \
             ORDER BY call_key LIMIT $2"
        );
        on_read_pool!(self, pool => {
            let rows: Vec<ProjectionRow> =
                sqlx::query_as(&sql).bind(after).bind(limit).fetch_all(pool).await?;
            Ok(rows.into_iter().map(StoredProjection::from).collect())
        })
    }

    /// Up to `limit` changes after change `after`, in change order, of every call or of
    /// `call_key` only. Each is the projection as that change wrote it; a call changed again
    /// since shows only at its latest change.
    pub async fn projection_changes(
        &self,
        after: i64,
        call_key: Option<&CallKey>,
        limit: i64,
    ) -> Result<Vec<ProjectionChange>, StoreError> {
        let of_call = if call_key.is_some() {
            "AND call_key = $3"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {PROJECTION_COLUMNS}, change_seq FROM {LIVE} WHERE change_seq > $1 {of_call} \
             ORDER BY change_seq LIMIT $2"
        );
        on_read_pool!(self, pool => {
            let mut query = sqlx::query_as::<_, ChangeRow>(&sql).bind(after).bind(limit);
            if let Some(call_key) = call_key {
                query = query.bind(call_key.as_str());
            }
            let rows = query.fetch_all(pool).await?;
            Ok(rows.into_iter().map(ProjectionChange::from).collect())
        })
    }

    /// The `limit` projections changed last, the latest first.
    pub async fn latest_changes(&self, limit: i64) -> Result<Vec<ProjectionChange>, StoreError> {
        let sql = format!(
            "SELECT {PROJECTION_COLUMNS}, change_seq FROM {LIVE} ORDER BY change_seq DESC LIMIT $1"
        );
        on_read_pool!(self, pool => {
            let rows: Vec<ChangeRow> = sqlx::query_as(&sql).bind(limit).fetch_all(pool).await?;
            Ok(rows.into_iter().map(ProjectionChange::from).collect())
        })
    }

    /// Whether every live projection was folded with configuration `fingerprint`: three probes
    /// of an index (below it, above it, unknown), never a scan.
    pub async fn projections_built_with(
        &self,
        fingerprint: &ConfigFingerprint,
    ) -> Result<ProjectionsBuiltWith, StoreError> {
        let around = [
            "SELECT config_fingerprint FROM call_projections WHERE config_fingerprint < $1 \
             ORDER BY config_fingerprint DESC LIMIT 1",
            "SELECT config_fingerprint FROM call_projections WHERE config_fingerprint > $1 \
             ORDER BY config_fingerprint LIMIT 1",
        ];
        let unknown = "SELECT config_fingerprint FROM call_projections \
             WHERE config_fingerprint IS NULL LIMIT 1";
        for probe in around {
            let found: Option<String> = on_pool!(self, pool => {
                sqlx::query_scalar(probe)
                    .bind(fingerprint.as_str())
                    .fetch_optional(pool)
                    .await?
            });
            if let Some(other) = found {
                return Ok(ProjectionsBuiltWith::Another(Some(ConfigFingerprint(
                    other,
                ))));
            }
        }
        let found: Option<Option<String>> = on_pool!(self, pool => {
            sqlx::query_scalar(unknown).fetch_optional(pool).await?
        });
        if found.is_some() {
            return Ok(ProjectionsBuiltWith::Another(None));
        }
        Ok(ProjectionsBuiltWith::That)
    }

    /// The number of the latest projection change committed (0 before any).
    pub async fn last_projection_change(&self) -> Result<i64, StoreError> {
        on_read_pool!(self, pool => {
            Ok(sqlx::query_scalar(LAST_CHANGE).fetch_one(pool).await?)
        })
    }

    /// The next page of a rebuild's read, after the calls `read` has passed: the records of the
    /// calls of up to [`REBUILD_PAGE`] records, in call order, each call's in seq order; `None`
    /// once the log holds no call after them. Each call is read whole by one statement, so from
    /// one snapshot of the log: a call cut short by the end of the page is read again whole.
    /// On a SQLite file the page is a direct read (see `direct_read`): it takes no lock on the
    /// database, and leaves this store's write connection free meanwhile.
    pub async fn rebuild_page(
        &self,
        read: &mut RebuildRead,
    ) -> Result<Option<Vec<(CallKey, Vec<LoggedEvent>)>>, StoreError> {
        if read.finished {
            return Ok(None);
        }
        let page = self.rebuild_rows(&read.after).await?;
        let full_page = page.len() as i64 == REBUILD_PAGE;
        let mut calls = calls_of(page.into_iter().map(LoggedEvent::from));
        if full_page {
            if let Some((cut, _)) = calls.pop() {
                let whole = self.call_events(&cut).await?;
                calls.push((cut, whole));
            }
        }
        read.finished = !full_page;
        let Some((last_call, _)) = calls.last() else {
            return Ok(None);
        };
        read.after = last_call.as_str().to_owned();
        Ok(Some(calls))
    }

    /// A rebuild's page of records: up to [`REBUILD_PAGE`] records of the calls after `after`,
    /// ordered by (call, seq).
    async fn rebuild_rows(&self, after: &str) -> Result<Vec<EventRow>, StoreError> {
        let page_sql = format!(
            "{SELECT_EVENT} WHERE call_key IS NOT NULL AND call_key > $1 \
             ORDER BY call_key, seq LIMIT $2"
        );
        if let Some(direct) = self.direct_reader() {
            let parameters = vec![Value::Text(after.to_owned()), Value::Integer(REBUILD_PAGE)];
            return direct.event_rows(page_sql, parameters).await;
        }
        Ok(on_pool!(self, pool => {
            sqlx::query_as(&page_sql)
                .bind(after)
                .bind(REBUILD_PAGE)
                .fetch_all(pool)
                .await?
        }))
    }

    /// A rebuild's swap, which has swapped nothing in yet.
    pub fn rebuild_swap(&self) -> RebuildSwap {
        RebuildSwap {
            waiting: VecDeque::new(),
            pacing: SwapPacing::for_store(self),
            changed: 0,
        }
    }

    /// Queues `rebuilt`, projections of calls after every one queued before, in call order, for
    /// their swap into the live ones, and swaps in the batches [`SwapPacing`] lets through now.
    /// While a pause after a batch keeps the write lock free, the rebuild goes on reading, until
    /// [`SWAP_QUEUE_MOST`] projections wait. [`RebuildSwap::take_changed`] tells how many live
    /// projections it changed, also when it fails after some batches committed.
    ///
    /// A rebuilt projection replaces the live one only if it folded at least as many events
    /// (so it read a superset of the live one's events: see `docs/ARCHITECTURE.md`, "Rebuild")
    /// and differs from it; each projection replaced takes a change number, so the live
    /// streams see it. A live projection is never deleted, and one that a worker settled from
    /// more events than the rebuild read is left alone.
    pub async fn swap_rebuilt(
        &self,
        swap: &mut RebuildSwap,
        rebuilt: Vec<StoredProjection>,
    ) -> Result<(), StoreError> {
        swap.waiting.extend(rebuilt);
        while swap.waiting.len() >= swap.pacing.calls {
            if swap.pacing.paused() && swap.waiting.len() < SWAP_QUEUE_MOST {
                break;
            }
            self.swap_next_batch(swap).await?;
        }
        Ok(())
    }

    /// Swaps in every rebuilt projection still queued in `swap`, pauses included (see
    /// [`RebuildSwap::take_changed`] for what it changed).
    pub async fn finish_swap(&self, swap: &mut RebuildSwap) -> Result<(), StoreError> {
        while !swap.waiting.is_empty() {
            self.swap_next_batch(swap).await?;
        }
        Ok(())
    }

    /// Swaps in the next batch of `swap`'s queue, once the pause after the last batch that wrote
    /// is over, and counts the live projections it changed.
    async fn swap_next_batch(&self, swap: &mut RebuildSwap) -> Result<(), StoreError> {
        swap.pacing.wait_out_pause().await;
        let size = swap.pacing.calls.min(swap.waiting.len());
        let rebuilt: Vec<StoredProjection> = swap.waiting.drain(..size).collect();
        let (Some(first), Some(last)) = (rebuilt.first(), rebuilt.last()) else {
            return Ok(());
        };
        let range = (first.call_key.as_str(), last.call_key.as_str());
        // First without any lock: a batch that would replace nothing is skipped, which the
        // locked pass would conclude too, since whatever a settle writes meanwhile leaves its
        // call's mark unless it folded every event of the call.
        let live = on_pool!(self, pool => live_projections_in!(pool, range));
        if replacements(&rebuilt, live).is_empty() {
            return Ok(());
        }
        let batch_started = Instant::now();
        swap.changed += self.swap_batch(&rebuilt, range).await?;
        let took = batch_started.elapsed();
        let shared = self.opened_by_another_process() != Some(false);
        swap.pacing.after_batch_that_wrote(took, shared);
        Ok(())
    }

    /// Swaps `rebuilt`, rebuilt projections of the calls in `range` (first and last), into
    /// the live ones in one transaction, deciding which it replaces under the change counter's
    /// lock; returns how many live projections it changed.
    async fn swap_batch(
        &self,
        rebuilt: &[StoredProjection],
        range: (&str, &str),
    ) -> Result<u64, StoreError> {
        let placeholders = self.placeholders();
        let changed = on_pool!(self, pool => in_transaction!(pool, tx => {
            let last_change = lock_change_counter!(&mut *tx);
            let live = live_projections_in!(&mut *tx, range);
            let swap = Swap::of(rebuilt, live);
            write_swap!(&mut *tx, placeholders, swap, last_change);
            swap.changes() as u64
        }))?;
        Ok(changed)
    }
}

/// Where a rebuild's read stands (see [`Store::rebuild_page`]): from the first call of the
/// log when new.
#[derive(Debug, Default)]
pub struct RebuildRead {
    /// The last call read; empty before the first page.
    after: String,
    /// Whether the last page read was the log's last.
    finished: bool,
}

/// A rebuild's swap (see [`Store::swap_rebuilt`]): the rebuilt projections waiting to be swapped
/// in, in call order, and the pacing of the batches that swap them.
#[derive(Debug)]
pub struct RebuildSwap {
    waiting: VecDeque<StoredProjection>,
    pacing: SwapPacing,
    /// Live projections changed since [`RebuildSwap::take_changed`] was last asked.
    changed: u64,
}

impl RebuildSwap {
    /// How many live projections the swap's committed batches changed since this was last
    /// asked.
    pub fn take_changed(&mut self) -> u64 {
        std::mem::take(&mut self.changed)
    }

    /// How many of its batches were followed by a pause because another process had the
    /// database open (see [`Store::swap_rebuilt`]).
    pub fn pauses(&self) -> u64 {
        self.pacing.pauses_started
    }
}

/// How a swap sizes its batches and spaces them.
///
/// A batch that writes holds what others wait for: on SQLite the database's write lock, which
/// every commit of the receivers' appends needs; on PostgreSQL the change counter, which
/// settles wait on (holding no marks: see [`Store::settle_claims`]). So each batch's size is
/// adjusted towards [`SWAP_BATCH_TIME`] (halved when a batch took longer, doubled when it took
/// less than half, between [`SWAP_BATCH_MIN`] and [`SWAP_BATCH_MAX`]), which bounds those waits
/// whatever the size of the projections and the machine's speed.
/// On SQLite the receivers of `callfold serve` are another process, and a commit that finds the
/// lock taken does not queue for it but sleeps in SQLite's busy handler and retries: each batch
/// that wrote is followed by a pause as long as it took, and at least [`SQLITE_SWAP_PAUSE`], or
/// batches back to back would keep finding the lock free first; the rebuild reads and folds on
/// meanwhile, without the lock. Only while another process has the database open, though (as
/// [`Store::opened_by_another_process`] tells after each batch that wrote): a writer maps the
/// wal-index, which is what that asks about, before it waits for the lock, so when no other
/// process has it mapped after a batch, no one is waiting, and the next batch follows at once;
/// one that maps it just after waits through that next batch at most, and is seen after it.
/// PostgreSQL queues lock waiters, so there the next batch follows at once.
#[derive(Debug)]
struct SwapPacing {
    /// Rebuilt projections the next batch considers.
    calls: usize,
    /// Whether a batch that wrote is followed by a pause while the database is shared: on
    /// SQLite.
    pauses: bool,
    /// When the pause after the last batch that wrote ends.
    resume_at: Option<tokio::time::Instant>,
    /// Pauses started so far.
    pauses_started: u64,
}

impl SwapPacing {
    fn for_store(store: &Store) -> Self {
        Self {
            calls: SWAP_BATCH_FIRST,
            pauses: matches!(store, Store::Sqlite(_)),
            resume_at: None,
            pauses_started: 0,
        }
    }

    /// Whether the pause after the last batch that wrote is still on.
    fn paused(&self) -> bool {
        self.resume_at
            .is_some_and(|resume_at| resume_at > tokio::time::Instant::now())
    }

    /// Waits until the pause after the last batch that wrote is over.
    async fn wait_out_pause(&self) {
        if let Some(resume_at) = self.resume_at {
            tokio::time::sleep_until(resume_at).await;
        }
    }

    /// Resizes the next batch from how long the last one, which wrote, `took`, and starts the
    /// pause after it where another process may be waiting for the lock (`shared`).
    fn after_batch_that_wrote(&mut self, took: Duration, shared: bool) {
        self.calls = resized_swap_batch(self.calls, took);
        if self.pauses && shared {
            self.resume_at = Some(tokio::time::Instant::now() + took.max(SQLITE_SWAP_PAUSE));
            self.pauses_started += 1;
        }
    }
}

/// The size of the swap batch after one of `calls` that wrote and `took` so long.
fn resized_swap_batch(calls: usize, took: Duration) -> usize {
    if took > SWAP_BATCH_TIME {
        (calls / 2).max(SWAP_BATCH_MIN)
    } else if took < SWAP_BATCH_TIME / 2 {
        (calls * 2).min(SWAP_BATCH_MAX)
    } else {
        calls
    }
}

/// The rebuilt projections of a batch that replace the live ones (`live`, those of the batch's
/// calls that have one): where there is none, and where the rebuilt one folded at least as many
/// events and differs from it (in its document, its bookkeeping or the configuration that
/// folded it, so that a rebuild records the current configuration everywhere).
fn replacements(rebuilt: &[StoredProjection], live: Vec<ProjectionRow>) -> Vec<&StoredProjection> {
    let live: HashMap<String, StoredProjection> = live
        .into_iter()
        .map(|row| (row.call_key.clone(), StoredProjection::from(row)))
        .collect();
    rebuilt
        .iter()
        .filter(|rebuilt| match live.get(rebuilt.call_key.as_str()) {
            None => true,
            Some(live) => {
                rebuilt.events_folded >= live.events_folded
                    && (
                        rebuilt.events_folded,
                        &rebuilt.document,
                        rebuilt.last_seq,
                        rebuilt.late_events,
                        &rebuilt.built_with,
                    ) != (
                        live.events_folded,
                        &live.document,
                        live.last_seq,
                        live.late_events,
                        &live.built_with,
                    )
            }
        })
        .collect()
}

/// What a swap batch writes, decided under the counter's lock.
struct Swap<'a> {
    /// The rebuilt projections that replace live ones (see [`replacements`]).
    replacing: Vec<&'a StoredProjection>,
    /// How many of them are of calls without a live projection.
    new_calls: i64,
}

impl<'a> Swap<'a> {
    /// The swap of `rebuilt` over `live`, the live projections of the batch's calls.
    fn of(rebuilt: &'a [StoredProjection], live: Vec<ProjectionRow>) -> Self {
        let live_calls: HashSet<String> = live.iter().map(|row| row.call_key.clone()).collect();
        let replacing = replacements(rebuilt, live);
        let new_calls = replacing
            .iter()
            .filter(|projection| !live_calls.contains(projection.call_key.as_str()))
            .count() as i64;
        Self {
            replacing,
            new_calls,
        }
    }

    /// How many live projections it changes, each with a change number of its own.
    fn changes(&self) -> i64 {
        self.replacing.len() as i64
    }
}

/// Groups `records`, ordered by (call, seq), into one run per call.
fn calls_of(records: impl Iterator<Item = LoggedEvent>) -> Vec<(CallKey, Vec<LoggedEvent>)> {
    let mut calls: Vec<(CallKey, Vec<LoggedEvent>)> = Vec::new();
    for record in records {
        let Some(call_key) = record.content.call_key().cloned() else {
            continue;
        };
        match calls.last_mut() {
            Some((current, run)) if *current == call_key => run.push(record),
            _ => calls.push((call_key, vec![record])),
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_batches_halve_when_slow_and_double_when_quick_within_their_bounds() {
        let slow = SWAP_BATCH_TIME * 3;
        let quick = SWAP_BATCH_TIME / 4;
        let on_target = SWAP_BATCH_TIME * 3 / 4;
        assert_eq!(resized_swap_batch(SWAP_BATCH_MAX, slow), SWAP_BATCH_MAX / 2);
        assert_eq!(resized_swap_batch(SWAP_BATCH_MIN, slow), SWAP_BATCH_MIN);
        assert_eq!(resized_swap_batch(64, quick), 128);
        assert_eq!(resized_swap_batch(SWAP_BATCH_MAX, quick), SWAP_BATCH_MAX);
        assert_eq!(resized_swap_batch(64, on_target), 64);
    }
}
