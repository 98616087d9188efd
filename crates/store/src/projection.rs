//! Reading and writing per-call projections and the projector's checkpoint.
//!
//! The store keeps a projection as the projector hands it over (a document already serialized,
//! plus the bookkeeping the projector needs); it does not interpret documents. Projections and
//! the checkpoint that covers them are written in one transaction, so a crash can neither skip
//! nor double-apply an event.

use crate::event::{CallKey, EventTime, WebhookId};
use crate::{Store, StoreError, on_pool};

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

const UPSERT_PROJECTION: &str = "INSERT INTO call_projections (call_key, document, \
     last_event_time_us, last_rank, last_webhook_id, last_seq, late_events, updated_at_us) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (call_key) DO UPDATE SET document = excluded.document, \
     last_event_time_us = excluded.last_event_time_us, last_rank = excluded.last_rank, \
     last_webhook_id = excluded.last_webhook_id, last_seq = excluded.last_seq, \
     late_events = excluded.late_events, updated_at_us = excluded.updated_at_us";

const UPSERT_CHECKPOINT: &str = "INSERT INTO projector_checkpoints (name, last_seq) \
     VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET last_seq = excluded.last_seq";

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

    /// Writes `projections` and moves checkpoint `name` to `last_seq`, in one transaction.
    pub async fn commit_projections(
        &self,
        name: &str,
        last_seq: i64,
        projections: &[StoredProjection],
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for projection in projections {
                sqlx::query(UPSERT_PROJECTION)
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
            sqlx::query(UPSERT_CHECKPOINT).bind(name).bind(last_seq).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        })
    }
}
