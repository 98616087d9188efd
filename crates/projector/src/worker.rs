//! The projector's loop: read the log after the checkpoint, fold each event into its call, and
//! commit the touched projections together with the new checkpoint.
//!
//! An event later (in effective order) than everything folded for its call is applied to the
//! stored document in O(1). An earlier one re-folds that call from the log, reading only that
//! call's events up to the current record. The projector only reads the log.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use callfold_store::{
    CallKey, EventTime, LoggedEvent, Store, StoreError, StoredProjection, WebhookId,
};
use tokio::sync::Notify;

use crate::fold::{CallDocument, EffectiveKey, FoldEvent, fold, fold_events, mark_late};
use crate::precedence::Precedence;

/// The checkpoint name of the per-call projector.
pub const CHECKPOINT: &str = "calls";

/// Folds the log into per-call projections.
#[derive(Clone, Debug)]
pub struct Projector {
    store: Store,
    precedence: Precedence,
    batch_size: i64,
}

/// A call being folded within one batch.
struct Working {
    document: CallDocument,
    last_key: Option<EffectiveKey>,
    last_seq: i64,
    late_events: i64,
}

impl Working {
    /// A call folded from scratch from its logged records (in seq order), with the late
    /// arrivals among them counted as the incremental path counts them.
    fn from_log(precedence: &Precedence, call_key: &CallKey, logged: &[LoggedEvent]) -> Self {
        let mut events = Vec::with_capacity(logged.len());
        let (mut last_key, mut last_seq, mut late_events) = (None, 0, 0);
        for (record, event, late) in mark_late(fold_events(precedence, logged)) {
            if late {
                late_events += 1;
            } else {
                last_key = Some(event.key.clone());
            }
            last_seq = last_seq.max(record.seq);
            events.push(event);
        }
        Self {
            document: fold(call_key.as_str(), events),
            last_key,
            last_seq,
            late_events,
        }
    }

    /// The projection to store; `None` for a call with no event folded.
    fn into_stored(self, call_key: CallKey, updated_at: EventTime) -> Option<StoredProjection> {
        let last_key = self.last_key?;
        Some(StoredProjection {
            document: serde_json::to_string(&self.document).ok()?,
            last_event_time: last_key.event_time,
            last_rank: i64::from(last_key.rank),
            last_webhook_id: WebhookId::parse(&last_key.webhook_id).ok()?,
            last_seq: self.last_seq,
            late_events: self.late_events,
            updated_at,
            call_key,
        })
    }
}

impl Projector {
    /// A projector over `store`, reading at most `batch_size` log records per transaction.
    pub fn new(store: Store, precedence: Precedence, batch_size: i64) -> Self {
        Self {
            store,
            precedence,
            batch_size,
        }
    }

    /// The call folded from every one of its events with `seq <= up_to_seq`.
    async fn refold(&self, call_key: &CallKey, up_to_seq: i64) -> Result<Working, StoreError> {
        let logged = self.store.call_events_up_to(call_key, up_to_seq).await?;
        Ok(Working::from_log(&self.precedence, call_key, &logged))
    }

    /// The call as folded so far, before the record at `seq`. A call without a projection has
    /// no folded events yet (each batch stores every call it touches), so it starts empty.
    async fn load(&self, call_key: &CallKey, seq: i64) -> Result<Working, StoreError> {
        let Some(stored) = self.store.projection(call_key).await? else {
            return Ok(Working {
                document: CallDocument::new(call_key.as_str()),
                last_key: None,
                last_seq: 0,
                late_events: 0,
            });
        };
        let Ok(document) = serde_json::from_str(&stored.document) else {
            tracing::warn!(
                call_key = call_key.as_str(),
                "unreadable projection; re-folding it"
            );
            return self.refold(call_key, seq - 1).await;
        };
        Ok(Working {
            document,
            last_key: Some(EffectiveKey {
                event_time: stored.last_event_time,
                rank: u32::try_from(stored.last_rank).unwrap_or(u32::MAX),
                webhook_id: stored.last_webhook_id.as_str().to_owned(),
            }),
            last_seq: stored.last_seq,
            late_events: stored.late_events,
        })
    }

    /// Folds the next batch of the log and commits it with the checkpoint, unless the
    /// checkpoint moved meanwhile (then the batch is dropped, to be read again). Returns how
    /// many log records it read: 0 means the projections are caught up.
    pub async fn fold_next_batch(&self) -> Result<usize, StoreError> {
        let checkpoint = self.store.checkpoint(CHECKPOINT).await?;
        let records = self
            .store
            .read_log_after(checkpoint, self.batch_size)
            .await?;
        let Some(last) = records.last() else {
            self.record_lag(checkpoint).await?;
            return Ok(0);
        };
        let mut touched: HashMap<CallKey, Working> = HashMap::new();
        let mut late_in_batch = 0;
        for record in &records {
            let Some((call_key, event)) = FoldEvent::from_logged(&self.precedence, record) else {
                continue;
            };
            if !touched.contains_key(&call_key) {
                let working = self.load(&call_key, record.seq).await?;
                touched.insert(call_key.clone(), working);
            }
            let working = touched.get_mut(&call_key).expect("inserted above");
            if working
                .last_key
                .as_ref()
                .is_none_or(|last| *last < event.key)
            {
                working.document.apply(&event);
                working.last_key = Some(event.key);
                working.last_seq = record.seq;
            } else {
                late_in_batch += 1;
                *working = self.refold(&call_key, record.seq).await?;
            }
        }
        let now = EventTime::now();
        let projections: Vec<StoredProjection> = touched
            .into_iter()
            .filter_map(|(call_key, working)| working.into_stored(call_key, now))
            .collect();
        let committed = self
            .store
            .commit_projections(CHECKPOINT, checkpoint, last.seq, &projections)
            .await?;
        if !committed {
            // A rebuild moved the checkpoint under this batch: drop it and read again from
            // where the checkpoint now is.
            tracing::info!(
                checkpoint,
                "checkpoint moved during the batch; folding again"
            );
            return Ok(records.len());
        }
        metrics::counter!("callfold_events_folded_total").increment(records.len() as u64);
        metrics::counter!("callfold_late_events_total").increment(late_in_batch);
        self.record_lag(last.seq).await?;
        Ok(records.len())
    }

    /// Re-folds every call from the log up to its current end, beside the live projections,
    /// then swaps the result in with the checkpoint (see `Store::rebuild_projections`).
    /// `progress` hears the number of log records read so far and the seq the rebuild reads
    /// up to. Returns the number of calls rebuilt.
    pub async fn rebuild(&self, mut progress: impl FnMut(u64, i64)) -> Result<u64, StoreError> {
        let up_to_seq = self.store.last_seq().await?;
        let now = EventTime::now();
        let project = |call_key: &CallKey, logged: &[LoggedEvent]| {
            Working::from_log(&self.precedence, call_key, logged).into_stored(call_key.clone(), now)
        };
        self.store
            .rebuild_projections(CHECKPOINT, up_to_seq, project, |read| {
                progress(read, up_to_seq)
            })
            .await
    }

    /// Re-folds one call from its events up to the checkpoint and replaces its projection.
    /// Returns false when the log holds no event of that call yet.
    pub async fn rebuild_call(&self, call_key: &CallKey) -> Result<bool, StoreError> {
        let checkpoint = self.store.checkpoint(CHECKPOINT).await?;
        let working = self.refold(call_key, checkpoint).await?;
        let Some(projection) = working.into_stored(call_key.clone(), EventTime::now()) else {
            return Ok(false);
        };
        self.store.put_projections(&[projection]).await?;
        Ok(true)
    }

    /// Publishes how many log records are not folded yet, and how long ago the oldest of them
    /// arrived.
    async fn record_lag(&self, checkpoint: i64) -> Result<(), StoreError> {
        let lag = self.store.last_seq().await? - checkpoint;
        metrics::gauge!("callfold_projection_lag_events").set(lag as f64);
        let oldest_waiting = match lag {
            0 => None,
            _ => self
                .store
                .read_log_after(checkpoint, 1)
                .await?
                .first()
                .map(|e| e.received_at),
        };
        let waited_micros = oldest_waiting.map_or(0, |arrived| {
            EventTime::now().unix_micros() - arrived.unix_micros()
        });
        metrics::gauge!("callfold_projection_lag_seconds").set(waited_micros.max(0) as f64 / 1e6);
        Ok(())
    }

    /// Folds batches until `shutdown` resolves: immediately while there is a backlog, then on
    /// each `wake` (a new append) or every `poll`, whichever comes first. A failed batch is
    /// logged and retried after `poll`; nothing of it was committed.
    pub async fn run(&self, wake: Arc<Notify>, poll: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let caught_up = match self.fold_next_batch().await {
                Ok(consumed) => consumed == 0,
                Err(error) => {
                    tracing::error!(%error, "projector batch failed; retrying");
                    true
                }
            };
            let pause = if caught_up { poll } else { Duration::ZERO };
            tokio::select! {
                biased;
                _ = &mut shutdown => return,
                _ = wake.notified(), if caught_up => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
