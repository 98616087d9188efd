//! Reading and writing per-call projections, and rebuilding them all from the log.
//!
//! The store keeps a projection as the projector hands it over (a document already serialized,
//! plus the bookkeeping the projector needs); it does not interpret documents. Projections are
//! written only together with the fold-queue marks they settle (see `queue.rs`), or by a
//! rebuild's swap.
//!
//! Every write of a live projection takes the next number of one counter (`change_seq`, see
//! migration 0006) in its own transaction; [`Store::projection_changes`] reads them in that
//! order, which is what the live streams of the query API follow.

use crate::event::{CallKey, EventTime, LoggedEvent};
use crate::log::{EventRow, SELECT_EVENT};
use crate::queue::MARK_ON_CONFLICT;
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
}

#[derive(sqlx::FromRow)]
struct ProjectionRow {
    call_key: String,
    document: String,
    last_seq: i64,
    late_events: i64,
    events_folded: i64,
    updated_at_us: i64,
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
/// Where a rebuild writes before the swap.
const SHADOW: &str = "call_projections_rebuild";

/// Log records read per page while rebuilding.
const REBUILD_PAGE: i64 = 2000;

const PROJECTION_COLUMNS: &str =
    "call_key, document, last_seq, late_events, events_folded, updated_at_us";
/// The columns an upsert writes: the projection's, and the change that writes it.
const WRITTEN_COLUMNS: &str =
    "call_key, document, last_seq, late_events, events_folded, updated_at_us, change_seq";
const PARAMETERS_PER_PROJECTION: usize = 7;

/// Upserts `rows` projections into `table` in one statement.
pub(crate) fn upsert_statement(placeholders: Placeholders, table: &str, rows: usize) -> String {
    format!(
        "INSERT INTO {table} ({WRITTEN_COLUMNS}) VALUES {} \
         ON CONFLICT (call_key) DO UPDATE SET document = excluded.document, \
         last_seq = excluded.last_seq, late_events = excluded.late_events, \
         events_folded = excluded.events_folded, updated_at_us = excluded.updated_at_us, \
         change_seq = excluded.change_seq",
        placeholders.values_list(rows, PARAMETERS_PER_PROJECTION, 1)
    )
}

/// Writes `$projections` into `$table` on `$executor` (a connection or transaction of either
/// backend; `$placeholders` its style), a statement per [`crate::sql::ROWS_PER_STATEMENT`]
/// projections; the projection at index `i` is written by change `$first_change + i` (0 for
/// all when `$first_change` is `None`: a rebuild's shadow rows, numbered at the swap).
macro_rules! upsert_projections {
    ($executor:expr, $placeholders:expr, $table:expr, $projections:expr, $first_change:expr) => {
        let first_change: Option<i64> = $first_change;
        for (number, chunk) in $projections
            .chunks($crate::sql::ROWS_PER_STATEMENT)
            .enumerate()
        {
            let sql = $crate::projection::upsert_statement($placeholders, $table, chunk.len());
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
                    .bind(first_change.map_or(0, |first| first + index));
            }
            upsert.execute($executor).await?;
        }
    };
}
pub(crate) use upsert_projections;

/// Marks, in the fold queue, every call whose rebuilt projection counts fewer events than the
/// log now holds for it: events appended while the rebuild read the log.
const MARK_CALLS_THE_REBUILD_MISSED: &str = "INSERT INTO calls_to_fold (call_key, version, marked_at_us) \
     SELECT logged.call_key, 1, $1 FROM \
     (SELECT call_key, count(*) AS events FROM events WHERE call_key IS NOT NULL GROUP BY call_key) \
     AS logged LEFT JOIN call_projections_rebuild AS rebuilt ON rebuilt.call_key = logged.call_key \
     WHERE rebuilt.events_folded IS NULL OR rebuilt.events_folded <> logged.events \
     ORDER BY logged.call_key";

/// Adds `$1` projections to the count kept beside the change counter (see migration 0009).
pub(crate) const COUNT_NEW_PROJECTIONS: &str =
    "UPDATE projection_changes SET projections = projections + $1 WHERE only_row = 1";

/// The number of the latest change.
const LAST_CHANGE: &str = "SELECT last_change FROM projection_changes WHERE only_row = 1";

/// Takes `$count` change numbers in the transaction `$executor`, whose row lock on the counter
/// lasts until it ends; evaluates to the first of them.
macro_rules! take_changes {
    ($executor:expr, $count:expr) => {{
        let count: i64 = $count;
        let last: i64 = sqlx::query_scalar(
            "UPDATE projection_changes SET last_change = last_change + $1 \
             WHERE only_row = 1 RETURNING last_change",
        )
        .bind(count)
        .fetch_one($executor)
        .await?;
        last - count + 1
    }};
}
pub(crate) use take_changes;

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

    /// The projections of those of `call_keys` that have one.
    pub async fn projections_of(
        &self,
        call_keys: &[CallKey],
    ) -> Result<Vec<StoredProjection>, StoreError> {
        let select = format!("SELECT {PROJECTION_COLUMNS} FROM {LIVE}");
        let rows: Vec<ProjectionRow> = self.select_for_calls(&select, "", call_keys).await?;
        Ok(rows.into_iter().map(StoredProjection::from).collect())
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

    /// The number of the latest projection change committed (0 before any).
    pub async fn last_projection_change(&self) -> Result<i64, StoreError> {
        on_read_pool!(self, pool => {
            Ok(sqlx::query_scalar(LAST_CHANGE).fetch_one(pool).await?)
        })
    }

    /// Rebuilds every projection from the log: reads it in pages ordered by (call, seq), hands
    /// each call's records, in seq order, to `project`, and writes the results beside the live
    /// projections. Then, in one transaction, marks for folding every call that grew while it
    /// was read (its rebuilt projection counts fewer events than the log holds) and swaps the
    /// rebuilt projections in. Memory holds one page and one call; no connection is held
    /// between pages. Until the swap, readers see the old projections. `progress` hears the
    /// number of records read so far. Returns the number of calls rebuilt.
    ///
    /// Run one rebuild at a time per database: two would share the table they write into.
    pub async fn rebuild_projections(
        &self,
        mut project: impl FnMut(&CallKey, &[LoggedEvent]) -> Option<StoredProjection>,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, StoreError> {
        let page_sql = format!(
            "{SELECT_EVENT} WHERE call_key IS NOT NULL \
             AND (call_key, seq) > ($1, $2) ORDER BY call_key, seq LIMIT $3"
        );
        let mark_missed = format!("{MARK_CALLS_THE_REBUILD_MISSED} {MARK_ON_CONFLICT}");
        let placeholders = self.placeholders();
        let lock_live = match self {
            Store::Postgres(_) => Some("LOCK TABLE call_projections IN EXCLUSIVE MODE"),
            Store::Sqlite(_) => None,
        };
        let (mut calls, mut read) = (0, 0);
        let mut call: Vec<LoggedEvent> = Vec::new();
        let mut after: (String, i64) = (String::new(), 0);
        on_pool!(self, pool => {
            sqlx::query(&format!("DELETE FROM {SHADOW}")).execute(pool).await?;
            loop {
                let page: Vec<EventRow> = sqlx::query_as(&page_sql)
                    .bind(after.0.as_str())
                    .bind(after.1)
                    .bind(REBUILD_PAGE)
                    .fetch_all(pool)
                    .await?;
                let last_page = (page.len() as i64) < REBUILD_PAGE;
                let mut projections = Vec::new();
                for event in page.into_iter().map(LoggedEvent::from) {
                    let key = event.content.call_key().cloned().unwrap_or_else(|| CallKey::new(""));
                    if call.first().and_then(|first| first.content.call_key()).is_some_and(|current| *current != key) {
                        projections.extend(project_call(&mut project, &call, &mut calls));
                        call.clear();
                    }
                    after = (key.as_str().to_owned(), event.seq);
                    call.push(event);
                    read += 1;
                }
                progress(read);
                if last_page {
                    projections.extend(project_call(&mut project, &call, &mut calls));
                }
                upsert_projections!(pool, placeholders, SHADOW, projections, None);
                if last_page {
                    break;
                }
            }
            // Marks (in call order), then the change counter, then the whole live table: the
            // order in which appends and workers take their locks, so none of them waits on
            // another in a cycle.
            in_transaction!(pool, tx => {
            sqlx::query(&mark_missed)
                .bind(EventTime::now().unix_micros())
                .execute(&mut *tx)
                .await?;
            let rebuilt: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {SHADOW}"))
                .fetch_one(&mut *tx)
                .await?;
            let first_change = take_changes!(&mut *tx, rebuilt);
            if let Some(lock_live) = lock_live {
                sqlx::query(lock_live).execute(&mut *tx).await?;
            }
            sqlx::query(&format!("DELETE FROM {LIVE}")).execute(&mut *tx).await?;
            sqlx::query(&format!(
                "INSERT INTO {LIVE} ({WRITTEN_COLUMNS}) SELECT {PROJECTION_COLUMNS}, \
                 $1 - 1 + row_number() OVER (ORDER BY call_key) FROM {SHADOW}"
            ))
            .bind(first_change)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE projection_changes SET projections = $1 WHERE only_row = 1")
                .bind(rebuilt)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("DELETE FROM {SHADOW}")).execute(&mut *tx).await?;
            calls
            })
        })
    }
}

/// The projection of one call's complete records, counting it in `calls`.
fn project_call(
    project: &mut impl FnMut(&CallKey, &[LoggedEvent]) -> Option<StoredProjection>,
    call: &[LoggedEvent],
    calls: &mut u64,
) -> Option<StoredProjection> {
    let key = call.first()?.content.call_key()?;
    *calls += 1;
    project(key, call)
}
