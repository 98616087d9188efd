//! Reading and writing per-call projections and the projector's checkpoint.
//!
//! The store keeps a projection as the projector hands it over (a document already serialized,
//! plus the bookkeeping the projector needs); it does not interpret documents. Projections and
//! the checkpoint that covers them are written in one transaction, so a crash can neither skip
//! nor double-apply an event.

use crate::event::{CallKey, Content, EventTime, LoggedEvent, WebhookId};
use crate::log::{EventRow, SELECT_EVENT};
use crate::{Store, StoreError, on_pool};

fn call_key_of(event: &LoggedEvent) -> Option<&CallKey> {
    match &event.content {
        Content::Usable { call, .. } => call.call_key(),
        Content::Quarantined { .. } => None,
    }
}

/// One call's projection as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredProjection {
    /// The call.
    pub call_key: CallKey,
    /// The call document, serialized JSON.
    pub document: String,
    /// Payload time of the latest event folded (first part of its effective key).
    pub last_event_time: EventTime,
    /// Precedence rank of the latest event folded.
    pub last_rank: i64,
    /// Webhook-id of the latest event folded.
    pub last_webhook_id: WebhookId,
    /// Highest log seq folded into this call.
    pub last_seq: i64,
    /// Events of this call that arrived after a later one.
    pub late_events: i64,
    /// When the projector last changed it.
    pub updated_at: EventTime,
}

#[derive(sqlx::FromRow)]
struct ProjectionRow {
    call_key: String,
    document: String,
    last_event_time_us: i64,
    last_rank: i64,
    last_webhook_id: String,
    last_seq: i64,
    late_events: i64,
    updated_at_us: i64,
}

impl From<ProjectionRow> for StoredProjection {
    fn from(row: ProjectionRow) -> Self {
        // Only ids read from the log are written here.
        let last_webhook_id = WebhookId::parse(&row.last_webhook_id)
            .unwrap_or_else(|_| unreachable!("projection of {} holds a bad id", row.call_key));
        StoredProjection {
            call_key: CallKey::new(row.call_key),
            document: row.document,
            last_event_time: EventTime::from_unix_micros(row.last_event_time_us),
            last_rank: row.last_rank,
            last_webhook_id,
            last_seq: row.last_seq,
            late_events: row.late_events,
            updated_at: EventTime::from_unix_micros(row.updated_at_us),
        }
    }
}

/// The live projections, which queries read.
const LIVE: &str = "call_projections";
/// Where a rebuild writes before the swap.
const SHADOW: &str = "call_projections_rebuild";

/// Log records read per page while rebuilding.
const REBUILD_PAGE: i64 = 2000;

fn upsert_projection(table: &str) -> String {
    format!(
        "INSERT INTO {table} (call_key, document, last_event_time_us, last_rank, \
         last_webhook_id, last_seq, late_events, updated_at_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (call_key) DO UPDATE SET document = excluded.document, \
         last_event_time_us = excluded.last_event_time_us, last_rank = excluded.last_rank, \
         last_webhook_id = excluded.last_webhook_id, last_seq = excluded.last_seq, \
         late_events = excluded.late_events, updated_at_us = excluded.updated_at_us"
    )
}

const UPSERT_CHECKPOINT: &str = "INSERT INTO projector_checkpoints (name, last_seq) \
     VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET last_seq = excluded.last_seq";

/// Moves a checkpoint only from the value the caller read: `$2` expected, `$3` new.
const ADVANCE_CHECKPOINT: &str = "INSERT INTO projector_checkpoints (name, last_seq) \
     VALUES ($1, $3) ON CONFLICT (name) DO UPDATE SET last_seq = excluded.last_seq \
     WHERE projector_checkpoints.last_seq = $2";

impl Store {
    /// The projection of `call_key`, if the projector has folded any of its events.
    pub async fn projection(
        &self,
        call_key: &CallKey,
    ) -> Result<Option<StoredProjection>, StoreError> {
        on_pool!(self, pool => {
            let row: Option<ProjectionRow> =
                sqlx::query_as("SELECT * FROM call_projections WHERE call_key = $1")
                    .bind(call_key.as_str())
                    .fetch_optional(pool)
                    .await?;
            Ok(row.map(StoredProjection::from))
        })
    }

    /// Up to `limit` projections with a call key after `after` (from the first when `None`), in
    /// call key order: the pages of a stable cursor.
    pub async fn list_projections(
        &self,
        after: Option<&CallKey>,
        limit: i64,
    ) -> Result<Vec<StoredProjection>, StoreError> {
        let after = after.map_or("", CallKey::as_str);
        on_pool!(self, pool => {
            let rows: Vec<ProjectionRow> = sqlx::query_as(
                "SELECT * FROM call_projections WHERE call_key > $1 ORDER BY call_key LIMIT $2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(StoredProjection::from).collect())
        })
    }

    /// The seq up to which projector `name` has folded the log (0 before its first batch).
    pub async fn checkpoint(&self, name: &str) -> Result<i64, StoreError> {
        on_pool!(self, pool => {
            let seq: Option<i64> =
                sqlx::query_scalar("SELECT last_seq FROM projector_checkpoints WHERE name = $1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await?;
            Ok(seq.unwrap_or(0))
        })
    }

    /// Writes `projections` and moves checkpoint `name` from `from_seq` to `to_seq`, in one
    /// transaction; or, when the checkpoint is no longer at `from_seq` (a rebuild, or another
    /// projector, moved it), writes nothing and returns false.
    pub async fn commit_projections(
        &self,
        name: &str,
        from_seq: i64,
        to_seq: i64,
        projections: &[StoredProjection],
    ) -> Result<bool, StoreError> {
        self.write_projections(LIVE, projections, Some((name, from_seq, to_seq)))
            .await
    }

    /// Replaces `projections` without moving any checkpoint.
    pub async fn put_projections(
        &self,
        projections: &[StoredProjection],
    ) -> Result<(), StoreError> {
        self.write_projections(LIVE, projections, None)
            .await
            .map(drop)
    }

    /// Upserts `projections` into `table`, and moves `checkpoint` (name, from, to) when given,
    /// in one transaction. Returns false, having written nothing, when the checkpoint was not
    /// at `from`.
    async fn write_projections(
        &self,
        table: &str,
        projections: &[StoredProjection],
        checkpoint: Option<(&str, i64, i64)>,
    ) -> Result<bool, StoreError> {
        let upsert = upsert_projection(table);
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for projection in projections {
                sqlx::query(&upsert)
                    .bind(projection.call_key.as_str())
                    .bind(projection.document.as_str())
                    .bind(projection.last_event_time.unix_micros())
                    .bind(projection.last_rank)
                    .bind(projection.last_webhook_id.as_str())
                    .bind(projection.last_seq)
                    .bind(projection.late_events)
                    .bind(projection.updated_at.unix_micros())
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some((name, from_seq, to_seq)) = checkpoint {
                let moved = sqlx::query(ADVANCE_CHECKPOINT)
                    .bind(name)
                    .bind(from_seq)
                    .bind(to_seq)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if moved == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Rebuilds every projection from the log records with `seq <= up_to_seq`: reads them in
    /// pages ordered by (call, seq), hands each call's records, in seq order, to `project`,
    /// writes the results beside the live projections, then swaps them in and moves checkpoint
    /// `name` to `up_to_seq` in one transaction. Memory holds one page and one call; no
    /// connection is held between pages. Until the swap, readers see the old projections.
    /// `progress` hears the number of records read so far. Returns the number of calls rebuilt.
    pub async fn rebuild_projections(
        &self,
        name: &str,
        up_to_seq: i64,
        mut project: impl FnMut(&CallKey, &[LoggedEvent]) -> Option<StoredProjection>,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, StoreError> {
        let page_sql = format!(
            "{SELECT_EVENT} WHERE call_key IS NOT NULL AND seq <= $1 \
             AND (call_key, seq) > ($2, $3) ORDER BY call_key, seq LIMIT $4"
        );
        let (mut calls, mut read) = (0, 0);
        let mut call: Vec<LoggedEvent> = Vec::new();
        let mut after: (String, i64) = (String::new(), 0);
        on_pool!(self, pool => {
            sqlx::query(&format!("DELETE FROM {SHADOW}")).execute(pool).await?;
            loop {
                let page: Vec<EventRow> = sqlx::query_as(&page_sql)
                    .bind(up_to_seq)
                    .bind(after.0.as_str())
                    .bind(after.1)
                    .bind(REBUILD_PAGE)
                    .fetch_all(pool)
                    .await?;
                let last_page = (page.len() as i64) < REBUILD_PAGE;
                let mut projections = Vec::new();
                for event in page.into_iter().map(LoggedEvent::from) {
                    let key = call_key_of(&event).cloned().unwrap_or_else(|| CallKey::new(""));
                    if call.first().and_then(call_key_of).is_some_and(|current| *current != key) {
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
                self.write_projections(SHADOW, &projections, None).await?;
                if last_page {
                    break;
                }
            }
            let mut tx = pool.begin().await?;
            sqlx::query(&format!("DELETE FROM {LIVE}")).execute(&mut *tx).await?;
            sqlx::query(&format!("INSERT INTO {LIVE} SELECT * FROM {SHADOW}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("DELETE FROM {SHADOW}")).execute(&mut *tx).await?;
            sqlx::query(UPSERT_CHECKPOINT).bind(name).bind(up_to_seq).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(calls)
        })
    }
}

/// The projection of one call's complete records, counting it in `calls`.
fn project_call(
    project: &mut impl FnMut(&CallKey, &[LoggedEvent]) -> Option<StoredProjection>,
    call: &[LoggedEvent],
    calls: &mut u64,
) -> Option<StoredProjection> {
    let key = call_key_of(call.first()?)?;
    *calls += 1;
    project(key, call)
}
