//! Writing and reading the event log: the batched, deduplicating append and the reads that
//! operators and tests need.
//!
//! The append never updates a row: a webhook-id already present leaves the log untouched and
//! reports the first copy's `seq`. Dedup is a unique key checked inside the same transaction as
//! the insert (`ON CONFLICT DO NOTHING`), so it is exact under any concurrency and permanent.

use std::collections::HashMap;

use crate::event::{
    AppendOutcome, CallKey, CallLink, Content, EventTime, LoggedEvent, NewEvent, Topic,
};
use crate::queue::mark_statement;
use crate::sql::{Placeholders, ROWS_PER_STATEMENT};
use crate::{Store, StoreError, WebhookId, in_transaction, on_pool, on_read_pool};

/// The columns an append writes, in the order of their parameters.
const INSERT_COLUMNS: &str = "webhook_id, webhook_timestamp, received_at_us, body, body_sha256, \
     topic, event_time_us, call_key, unlinked, quarantine_reason";
const PARAMETERS_PER_ROW: usize = 10;

/// `INSERT ... VALUES (...), (...) ON CONFLICT DO NOTHING RETURNING seq, webhook_id` for `rows`
/// rows: it returns exactly the rows it wrote.
fn insert_statement(placeholders: Placeholders, rows: usize) -> String {
    format!(
        "INSERT INTO events ({INSERT_COLUMNS}) VALUES {} \
         ON CONFLICT (webhook_id) DO NOTHING RETURNING seq, webhook_id",
        placeholders.values_list(rows, PARAMETERS_PER_ROW, 1)
    )
}

/// How many stripes `log_counts` has (see migration 0009).
const COUNT_STRIPES: i64 = 8;

/// Adds an append's new records to one stripe of `log_counts`.
const ADD_TO_LOG_COUNTS: &str = "UPDATE log_counts SET events = events + $1, \
     quarantined = quarantined + $2, unlinked = unlinked + $3 WHERE stripe = $4";

/// The sum of one column of `log_counts` over its stripes.
fn log_count(column: &str) -> String {
    format!("SELECT CAST(coalesce(sum({column}), 0) AS BIGINT) FROM log_counts")
}

const FIND_FIRST_COPY: &str = "SELECT seq, body_sha256 FROM events WHERE webhook_id = $1";

pub(crate) const SELECT_EVENT: &str = "SELECT seq, webhook_id, webhook_timestamp, received_at_us, body, \
     body_sha256, topic, event_time_us, call_key, unlinked, quarantine_reason FROM events";

/// A row of `events` exactly as stored, before it is parsed back into a [`LoggedEvent`].
#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    seq: i64,
    webhook_id: String,
    webhook_timestamp: i64,
    received_at_us: i64,
    body: Vec<u8>,
    body_sha256: Vec<u8>,
    topic: Option<String>,
    event_time_us: Option<i64>,
    call_key: Option<String>,
    unlinked: bool,
    quarantine_reason: Option<String>,
}

impl From<EventRow> for LoggedEvent {
    fn from(row: EventRow) -> Self {
        let content = match (row.topic, row.event_time_us, row.quarantine_reason) {
            (Some(topic), Some(event_time), None) => Content::Usable {
                topic: Topic::new(topic),
                event_time: EventTime::from_unix_micros(event_time),
                call: match (row.call_key, row.unlinked) {
                    (Some(call_key), _) => CallLink::Linked(CallKey::new(call_key)),
                    (None, true) => CallLink::Unlinked,
                    (None, false) => CallLink::NotACall,
                },
            },
            // The table's CHECK constraint leaves only this other shape.
            (_, _, reason) => Content::Quarantined {
                reason: reason.unwrap_or_default(),
            },
        };
        LoggedEvent {
            seq: row.seq,
            // Only parsed ids were ever written.
            webhook_id: WebhookId::parse(&row.webhook_id).unwrap_or_else(|_| {
                unreachable!("the log holds an unparsable webhook-id at seq {}", row.seq)
            }),
            webhook_timestamp: row.webhook_timestamp,
            received_at: EventTime::from_unix_micros(row.received_at_us),
            body: row.body,
            body_sha256: row.body_sha256,
            content,
        }
    }
}

impl Store {
    /// Appends `events` in one transaction (one commit, one fsync) and returns one outcome per
    /// event, in order. Either every new event is durable when this returns `Ok`, or none is.
    ///
    /// An id repeated within the batch is appended once; its later copies are duplicates of it.
    /// The same transaction marks the calls of the new events in the fold queue (see
    /// [`Store::claim_calls`]), so no appended event can be missed by the projector.
    pub async fn append_batch(
        &self,
        events: &[NewEvent],
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let mut first_copy: HashMap<&str, usize> = HashMap::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            first_copy.entry(event.webhook_id.as_str()).or_insert(index);
        }
        let mut firsts: Vec<&NewEvent> = events
            .iter()
            .enumerate()
            .filter(|(index, event)| first_copy[event.webhook_id.as_str()] == *index)
            .map(|(_, event)| event)
            .collect();
        // Every transaction takes its row locks in the same order (webhook-ids, then calls), so
        // concurrent appends on PostgreSQL wait for each other but never deadlock. The
        // deliveries of one batch arrived concurrently, so their order in the log is free.
        firsts.sort_by(|a, b| a.webhook_id.as_str().cmp(b.webhook_id.as_str()));
        let placeholders = self.placeholders();
        on_pool!(self, pool => in_transaction!(pool, tx => {
            let mut appended: HashMap<String, i64> = HashMap::with_capacity(firsts.len());
            for chunk in firsts.chunks(ROWS_PER_STATEMENT) {
                let sql = insert_statement(placeholders, chunk.len());
                let mut insert = sqlx::query_as::<_, (i64, String)>(&sql);
                for event in chunk {
                    let (topic, event_time, call_key, unlinked, reason) = match &event.content {
                        Content::Usable { topic, event_time, call } => (
                            Some(topic.as_str()),
                            Some(event_time.unix_micros()),
                            call.call_key().map(CallKey::as_str),
                            *call == CallLink::Unlinked,
                            None,
                        ),
                        Content::Quarantined { reason } => {
                            (None, None, None, false, Some(reason.as_str()))
                        }
                    };
                    insert = insert
                        .bind(event.webhook_id.as_str())
                        .bind(event.webhook_timestamp)
                        .bind(event.received_at.unix_micros())
                        .bind(event.body.as_slice())
                        .bind(event.body_sha256.as_slice())
                        .bind(topic)
                        .bind(event_time)
                        .bind(call_key)
                        .bind(unlinked)
                        .bind(reason);
                }
                appended.extend(insert.fetch_all(&mut *tx).await?.into_iter().map(|(seq, id)| (id, seq)));
            }
            let mut touched: Vec<&str> = firsts
                .iter()
                .filter(|event| appended.contains_key(event.webhook_id.as_str()))
                .filter_map(|event| event.content.call_key().map(CallKey::as_str))
                .collect();
            touched.sort_unstable();
            touched.dedup();
            let marked_at = EventTime::now().unix_micros();
            for chunk in touched.chunks(ROWS_PER_STATEMENT) {
                let sql = mark_statement(placeholders, chunk.len());
                let mut mark = sqlx::query(&sql);
                for call_key in chunk {
                    mark = mark.bind(*call_key).bind(marked_at);
                }
                mark.execute(&mut *tx).await?;
            }
            // Last, after the webhook-ids and the marks: the order every append locks in.
            let new: Vec<&&NewEvent> = firsts
                .iter()
                .filter(|event| appended.contains_key(event.webhook_id.as_str()))
                .collect();
            if !new.is_empty() {
                let quarantined = new
                    .iter()
                    .filter(|event| event.content.quarantine_reason().is_some())
                    .count();
                let unlinked = new
                    .iter()
                    .filter(|event| event.content.is_unlinked())
                    .count();
                sqlx::query(ADD_TO_LOG_COUNTS)
                    .bind(new.len() as i64)
                    .bind(quarantined as i64)
                    .bind(unlinked as i64)
                    .bind(rand::random_range(0..COUNT_STRIPES))
                    .execute(&mut *tx)
                    .await?;
            }
            let mut outcomes = Vec::with_capacity(events.len());
            for (index, event) in events.iter().enumerate() {
                let id = event.webhook_id.as_str();
                let first = first_copy[id];
                let outcome = match appended.get(id) {
                    Some(&seq) if first == index => AppendOutcome::Appended { seq },
                    Some(&seq) => AppendOutcome::Duplicate {
                        seq,
                        conflicting: events[first].body_sha256 != event.body_sha256,
                    },
                    None => {
                        let (seq, logged_sha256): (i64, Vec<u8>) = sqlx::query_as(FIND_FIRST_COPY)
                            .bind(id)
                            .fetch_one(&mut *tx)
                            .await?;
                        AppendOutcome::Duplicate {
                            seq,
                            conflicting: logged_sha256 != event.body_sha256,
                        }
                    }
                };
                outcomes.push(outcome);
            }
            outcomes
        }))
    }

    /// The logged copy of `webhook_id`, if any.
    pub async fn event_by_webhook_id(
        &self,
        webhook_id: &WebhookId,
    ) -> Result<Option<LoggedEvent>, StoreError> {
        let sql = format!("{SELECT_EVENT} WHERE webhook_id = $1");
        on_read_pool!(self, pool => {
            let row: Option<EventRow> = sqlx::query_as(&sql)
                .bind(webhook_id.as_str())
                .fetch_optional(pool)
                .await?;
            Ok(row.map(LoggedEvent::from))
        })
    }

    /// Every event of call `call_key`, in seq order.
    pub async fn call_events(&self, call_key: &CallKey) -> Result<Vec<LoggedEvent>, StoreError> {
        self.events_of_calls(std::slice::from_ref(call_key)).await
    }

    /// Every event of the calls `call_keys`: each call's events together, in seq order.
    pub async fn events_of_calls(
        &self,
        call_keys: &[CallKey],
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        let rows: Vec<EventRow> = self
            .select_for_calls(SELECT_EVENT, "ORDER BY call_key, seq", call_keys)
            .await?;
        Ok(rows.into_iter().map(LoggedEvent::from).collect())
    }

    /// Up to `limit` unlinked events with `seq > after_seq`, in seq order, and how many unlinked
    /// events the log holds in all.
    pub async fn unlinked_events(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<(Vec<LoggedEvent>, i64), StoreError> {
        self.records_where("unlinked", "unlinked", after_seq, limit)
            .await
    }

    /// Up to `limit` quarantined records with `seq > after_seq`, in seq order, and how many the
    /// log holds in all.
    pub async fn quarantined_events(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<(Vec<LoggedEvent>, i64), StoreError> {
        self.records_where(
            "quarantine_reason IS NOT NULL",
            "quarantined",
            after_seq,
            limit,
        )
        .await
    }

    /// A page of the records matching `condition` (each kind has a partial index), and their
    /// count, kept in column `counted_in` of `log_counts`.
    async fn records_where(
        &self,
        condition: &str,
        counted_in: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<(Vec<LoggedEvent>, i64), StoreError> {
        let page = format!("{SELECT_EVENT} WHERE {condition} AND seq > $1 ORDER BY seq LIMIT $2");
        let count = log_count(counted_in);
        on_read_pool!(self, pool => {
            let rows: Vec<EventRow> =
                sqlx::query_as(&page).bind(after_seq).bind(limit).fetch_all(pool).await?;
            let total: i64 = sqlx::query_scalar(&count).fetch_one(pool).await?;
            Ok((rows.into_iter().map(LoggedEvent::from).collect(), total))
        })
    }

    /// The record at `seq`, if any.
    pub async fn event_by_seq(&self, seq: i64) -> Result<Option<LoggedEvent>, StoreError> {
        let sql = format!("{SELECT_EVENT} WHERE seq = $1");
        on_read_pool!(self, pool => {
            let row: Option<EventRow> = sqlx::query_as(&sql).bind(seq).fetch_optional(pool).await?;
            Ok(row.map(LoggedEvent::from))
        })
    }

    /// How many records the log holds (counted as they are appended, not by a scan).
    pub async fn log_len(&self) -> Result<i64, StoreError> {
        on_read_pool!(self, pool => {
            Ok(sqlx::query_scalar(&log_count("events")).fetch_one(pool).await?)
        })
    }
}
