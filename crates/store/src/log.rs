//! Writing and reading the event log: the batched, deduplicating append, and the reads of
//! records by id, by seq, by call (for the projector) and by list (quarantined, unlinked).
//!
//! The append never updates a row of the log: a webhook-id already present leaves the log
//! untouched and reports the first copy's `seq`. Dedup is a unique key checked inside the same
//! transaction as the insert (`ON CONFLICT DO NOTHING`), so it is exact under any concurrency
//! and permanent. The same transaction marks the calls it touched in the fold queue, gives
//! quarantined and unlinked records their places in the kept lists, and adds its new records
//! to the counts (`log_counts`, `stored_per_minute`) that reads use instead of scans.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rusqlite::named_params;

use crate::event::{
    AppendOutcome, CallKey, CallLink, Content, EventTime, LoggedEvent, NewEvent, Topic,
};
use crate::queue::mark_statement;
use crate::sql::{BYTES_PER_STATEMENT, Placeholders, ROWS_PER_STATEMENT, statement_runs};
use crate::{Store, StoreError, WebhookId, in_transaction, on_pool, on_read_pool, within};

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

/// PostgreSQL only: bounds the rest of the current transaction by `$1` milliseconds (each
/// statement, each lock wait, and each wait for the client's next statement), in one round
/// trip. `set_config(..., true)` is `SET LOCAL`: the server goes back to the session's values
/// when the transaction ends.
const BOUND_TRANSACTION_BY_DEADLINE: &str = "SELECT set_config('statement_timeout', $1, true), \
     set_config('lock_timeout', $1, true), \
     set_config('idle_in_transaction_session_timeout', $1, true)";

/// How many stripes `log_counts` has (see migration 0009).
const COUNT_STRIPES: i64 = 8;

/// Adds an append's new records to one stripe of `log_counts`.
const ADD_TO_LOG_COUNTS: &str = "UPDATE log_counts SET events = events + $1, \
     quarantined = quarantined + $2, unlinked = unlinked + $3 WHERE stripe = $4";

/// Microseconds in a minute: the unit of `stored_per_minute` (see migration 0014).
pub(crate) const MICROS_PER_MINUTE: i64 = 60_000_000;

/// Adds an append's new records of one minute to one stripe of `stored_per_minute`.
const ADD_TO_STORED_PER_MINUTE: &str = "INSERT INTO stored_per_minute (minute, stripe, stored) \
     VALUES ($1, $2, $3) ON CONFLICT (minute, stripe) \
     DO UPDATE SET stored = stored_per_minute.stored + excluded.stored";

/// The sum of one column of `log_counts` over its stripes.
fn log_count(column: &str) -> String {
    format!("SELECT CAST(coalesce(sum({column}), 0) AS BIGINT) FROM log_counts")
}

const FIND_FIRST_COPY: &str = "SELECT seq, body_sha256 FROM events WHERE webhook_id = $1";

/// The columns of `events` an [`EventRow`] reads.
macro_rules! event_columns {
    () => {
        "seq, webhook_id, webhook_timestamp, received_at_us, body, body_sha256, topic, \
         event_time_us, call_key, unlinked, quarantine_reason"
    };
}

pub(crate) const SELECT_EVENT: &str = concat!("SELECT ", event_columns!(), " FROM events");

/// The order of the events of several calls as [`Store::events_of_calls`] reads them: each
/// call's together, in seq order.
pub(crate) const EACH_CALL_IN_SEQ_ORDER: &str = "ORDER BY call_key, seq";

/// A page of one list of kept records: `$1` quarantined (or unlinked), after position `$2`, at
/// most `$3`.
const SELECT_KEPT_PAGE: &str = concat!(
    "SELECT ",
    event_columns!(),
    ", list_position FROM kept_records JOIN events ON seq = event_seq \
     WHERE quarantined = $1 AND list_position > $2 ORDER BY list_position LIMIT $3"
);

/// Takes `$1` positions in the lists of kept records; the row stays locked until the append
/// commits, so positions become visible in order.
const TAKE_KEPT_POSITIONS: &str = "UPDATE kept_records_counter \
     SET last_position = last_position + $1 WHERE only_row = 1 RETURNING last_position";

/// Runs `$inserts` (from [`insert_statements`]) on `$executor`; evaluates to the seq of each
/// record they wrote, by webhook-id (`$capacity` the number of records they may write). A
/// webhook-id the log held already is absent.
macro_rules! insert_events {
    ($executor:expr, $inserts:expr, $capacity:expr) => {{
        let mut appended: HashMap<String, i64> = HashMap::with_capacity($capacity);
        for (sql, run) in $inserts {
            let mut insert = sqlx::query_as::<_, (i64, String)>(sql);
            for event in *run {
                let columns = ContentColumns::of(&event.content);
                insert = insert
                    .bind(event.webhook_id.as_str())
                    .bind(event.webhook_timestamp)
                    .bind(event.received_at.unix_micros())
                    .bind(event.body.as_slice())
                    .bind(event.body_sha256.as_slice())
                    .bind(columns.topic)
                    .bind(columns.event_time_us)
                    .bind(columns.call_key)
                    .bind(columns.unlinked)
                    .bind(columns.quarantine_reason);
            }
            let rows = insert.fetch_all($executor).await?;
            appended.extend(rows.into_iter().map(|(seq, id)| (id, seq)));
        }
        appended
    }};
}

/// Marks, on `$executor`, the calls the new records of `$writes` (a [`FollowingWrites`])
/// touched in the fold queue.
macro_rules! mark_touched_calls {
    ($executor:expr, $writes:expr) => {
        for (sql, calls) in $writes.mark_statements() {
            let mut mark = sqlx::query(&sql);
            for call_key in calls {
                mark = mark.bind(*call_key).bind($writes.marked_at);
            }
            mark.execute($executor).await?;
        }
    };
}

/// Gives, on `$executor`, the new kept records of `$writes` (a [`FollowingWrites`]) their
/// places in the lists of kept records.
macro_rules! add_to_kept_lists {
    ($executor:expr, $writes:expr) => {
        if !$writes.kept.is_empty() {
            let last: i64 = sqlx::query_scalar(TAKE_KEPT_POSITIONS)
                .bind($writes.kept.len() as i64)
                .fetch_one($executor)
                .await?;
            for (sql, rows) in $writes.kept_statements(last) {
                let mut insert = sqlx::query(&sql);
                for (position, seq, quarantined) in rows {
                    insert = insert.bind(position).bind(seq).bind(quarantined);
                }
                insert.execute($executor).await?;
            }
        }
    };
}

/// Adds, on `$executor`, the new records of `$writes` (a [`FollowingWrites`]) to the counts
/// (`log_counts`, `stored_per_minute`).
macro_rules! add_to_counts {
    ($executor:expr, $writes:expr) => {
        if let Some(counts) = &$writes.counts {
            sqlx::query(ADD_TO_LOG_COUNTS)
                .bind(counts.records)
                .bind(counts.quarantined)
                .bind(counts.unlinked)
                .bind(counts.stripe)
                .execute($executor)
                .await?;
            for (minute, stored) in &counts.per_minute {
                sqlx::query(ADD_TO_STORED_PER_MINUTE)
                    .bind(*minute)
                    .bind(counts.stripe)
                    .bind(*stored)
                    .execute($executor)
                    .await?;
            }
        }
    };
}

/// The seq and body digest of the copy the log held already of webhook-ids an append was given
/// again, by webhook-id.
type LoggedCopies = HashMap<String, (i64, Vec<u8>)>;

/// Reads, on `$executor`, the copy the log holds of each of `$ids` (webhook-ids it held
/// already); evaluates to its [`LoggedCopies`].
macro_rules! find_logged_copies {
    ($executor:expr, $ids:expr) => {{
        let mut logged_copies = LoggedCopies::new();
        for id in $ids {
            let copy = sqlx::query_as(FIND_FIRST_COPY)
                .bind(id)
                .fetch_one($executor)
                .await?;
            logged_copies.insert(id.to_owned(), copy);
        }
        logged_copies
    }};
}

/// The statements that insert `firsts`, each with the records it binds.
fn insert_statements<'a, 'e>(
    placeholders: Placeholders,
    firsts: &'a [&'e NewEvent],
) -> Vec<(String, &'a [&'e NewEvent])> {
    statement_runs(firsts, ROWS_PER_STATEMENT, BYTES_PER_STATEMENT, |event| {
        event.body.len()
    })
    .into_iter()
    .map(|run| (insert_statement(placeholders, run.len()), run))
    .collect()
}

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

impl EventRow {
    /// The row at `row` of a direct read (see `direct_read`) of the columns of [`SELECT_EVENT`],
    /// in their order.
    pub(crate) fn from_direct(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: row.get(0)?,
            webhook_id: row.get(1)?,
            webhook_timestamp: row.get(2)?,
            received_at_us: row.get(3)?,
            // As sqlx does, whether SQLite holds them as BLOB or as TEXT.
            body: row.get_ref(4)?.as_bytes()?.to_vec(),
            body_sha256: row.get_ref(5)?.as_bytes()?.to_vec(),
            topic: row.get(6)?,
            event_time_us: row.get(7)?,
            call_key: row.get(8)?,
            unlinked: row.get(9)?,
            quarantine_reason: row.get(10)?,
        })
    }
}

/// A row of a list of kept records: the record and its position.
#[derive(sqlx::FromRow)]
struct KeptRow {
    #[sqlx(flatten)]
    event: EventRow,
    list_position: i64,
}

/// A record in the quarantine or unlinked list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptRecord {
    /// Its place in the list, in the order kept records were committed: a record committed
    /// later always has a higher position, whatever its `seq`. The lists' cursor.
    pub position: i64,
    /// The record as logged.
    pub record: LoggedEvent,
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

/// A future that may append part of a batch and then call itself on the rest.
type AppendFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<AppendOutcome>, StoreError>> + Send + 'a>>;

impl Store {
    /// Appends `events` and returns one outcome per event, in order. Every new event is durable
    /// when this returns `Ok`. Normally that takes one transaction (one commit, one fsync), and
    /// an error means none of them was written.
    ///
    /// An id repeated within the batch is appended once; its later copies are duplicates of it.
    /// The same transaction marks the calls of the new events in the fold queue (see
    /// [`Store::claim_calls`]), so no appended event can be missed by the projector.
    ///
    /// One record whose content the database refuses (see [`StoreError::refused_content`])
    /// does not fail the others: the batch is halved until that record is alone, every other
    /// part is appended in its own transaction, and the refused record is appended
    /// quarantined, with its raw body and the database's error code as the reason, so that
    /// its sender gets a final answer: its outcome is [`AppendOutcome::Quarantined`]. Any other
    /// error still fails the whole call; after such a split, the parts committed before it
    /// stay durable, and a retry finds them duplicates.
    ///
    /// So an error does not say that nothing was stored: some of the events may have been (a
    /// part committed before a split failed, or a COMMIT whose answer was lost), and a retry of
    /// those is answered [`AppendOutcome::Duplicate`].
    pub async fn append_batch(
        &self,
        events: &[NewEvent],
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        self.append_isolating_refused(events, None).await
    }

    /// [`Store::append_batch`], abandoned when it has not returned within `deadline`: then the
    /// connection it was using is closed rather than reused, and the error is
    /// [`StoreError::TimedOut`]. Some of the events may have been stored all the same (a part
    /// committed before a split, or a COMMIT that reached the server before the deadline); a
    /// retry of those is answered [`AppendOutcome::Duplicate`]. The write path's bound on a database that stops
    /// answering without closing the connection, which no server-side timeout can give.
    pub async fn append_batch_within(
        &self,
        events: &[NewEvent],
        deadline: Duration,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        within(
            deadline,
            self.append_isolating_refused(events, Some(deadline)),
        )
        .await
    }

    /// [`Store::append_batch`]'s halving: one transaction for `events`, and on a refusal of
    /// content, the same for each half, down to the one refused record. Each transaction is
    /// bounded by `deadline` on the server too (see [`Store::append_in_one_transaction`]).
    fn append_isolating_refused<'a>(
        &'a self,
        events: &'a [NewEvent],
        deadline: Option<Duration>,
    ) -> AppendFuture<'a> {
        Box::pin(async move {
            let error = match self.append_in_one_transaction(events, deadline).await {
                Err(error) => error,
                appended => return appended,
            };
            let Some(refusal) = error.refused_content() else {
                return Err(error);
            };
            match events {
                [] => Err(error),
                [event] => {
                    tracing::warn!(
                        webhook_id = %event.webhook_id,
                        %refusal,
                        "the store refused a record's content; keeping it quarantined"
                    );
                    let quarantined = NewEvent {
                        content: Content::Quarantined {
                            reason: format!("the store refused its content ({refusal})"),
                        },
                        ..event.clone()
                    };
                    let outcomes = self
                        .append_in_one_transaction(&[quarantined], deadline)
                        .await?;
                    Ok(outcomes
                        .into_iter()
                        .map(|outcome| match outcome {
                            AppendOutcome::Appended { seq } => AppendOutcome::Quarantined { seq },
                            other => other,
                        })
                        .collect())
                }
                _ => {
                    let (first_half, second_half) = events.split_at(events.len() / 2);
                    let mut outcomes = self.append_isolating_refused(first_half, deadline).await?;
                    outcomes.extend(self.append_isolating_refused(second_half, deadline).await?);
                    Ok(outcomes)
                }
            }
        })
    }

    /// Appends `events` in one transaction; see [`Store::append_batch`].
    ///
    /// With a `deadline`, on PostgreSQL, the transaction's statements, lock waits and idle
    /// time between statements are each bounded by it on the server too (`SET LOCAL`, for
    /// this transaction only). A transaction its client abandoned at the deadline then ends
    /// within about one more deadline, and the unique-index entries of its rows, on which
    /// retries of the same deliveries wait, go with it; the session's longer timeouts
    /// (`--db-statement-timeout-ms`) would have kept them, and failed every retry, for as long.
    async fn append_in_one_transaction(
        &self,
        events: &[NewEvent],
        deadline: Option<Duration>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let first_copy = first_copies(events);
        let firsts = in_lock_order(events, &first_copy);
        if let Some((direct, writer)) = self.direct_writer() {
            let firsts: Vec<NewEvent> = firsts.into_iter().cloned().collect();
            let (appended, logged_copies) = direct
                .in_transaction(writer, move |tx| append_directly(tx, &firsts))
                .await?;
            return Ok(outcomes(events, &first_copy, &appended, &logged_copies));
        }
        let server_deadline = self.server_deadline(deadline);
        let placeholders = self.placeholders();
        let inserts = insert_statements(placeholders, &firsts);
        let (appended, logged_copies) = on_pool!(self, pool => in_transaction!(pool, tx => {
            if let Some(milliseconds) = &server_deadline {
                sqlx::query(BOUND_TRANSACTION_BY_DEADLINE)
                    .bind(milliseconds.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            let appended = insert_events!(&mut *tx, &inserts, firsts.len());
            let writes = FollowingWrites::of(&firsts, &appended, placeholders);
            mark_touched_calls!(&mut *tx, writes);
            add_to_kept_lists!(&mut *tx, writes);
            add_to_counts!(&mut *tx, writes);
            let logged_copies = find_logged_copies!(&mut *tx, not_appended(&firsts, &appended));
            (appended, logged_copies)
        }))?;
        Ok(outcomes(events, &first_copy, &appended, &logged_copies))
    }

    /// On PostgreSQL with a `deadline`, the value (milliseconds) that bounds an append's
    /// transaction on the server (see [`BOUND_TRANSACTION_BY_DEADLINE`]); `None` otherwise.
    fn server_deadline(&self, deadline: Option<Duration>) -> Option<String> {
        match (self, deadline) {
            (Store::Postgres(_), Some(deadline)) => Some(deadline.as_millis().to_string()),
            _ => None,
        }
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
            .select_for_calls(
                SELECT_EVENT,
                EACH_CALL_IN_SEQ_ORDER,
                call_keys,
                EventRow::from_direct,
            )
            .await?;
        Ok(rows.into_iter().map(LoggedEvent::from).collect())
    }

    /// Up to `limit` unlinked events after position `after` of their list, in list order (the
    /// order they were committed in), and how many unlinked events the log holds in all.
    pub async fn unlinked_events(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<KeptRecord>, i64), StoreError> {
        self.kept_records(false, after, limit).await
    }

    /// Up to `limit` quarantined records after position `after` of their list, in list order
    /// (the order they were committed in), and how many the log holds in all.
    pub async fn quarantined_events(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<KeptRecord>, i64), StoreError> {
        self.kept_records(true, after, limit).await
    }

    /// A page of the quarantine list (`quarantined`) or of the unlinked one, and its length.
    async fn kept_records(
        &self,
        quarantined: bool,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<KeptRecord>, i64), StoreError> {
        let count = log_count(if quarantined {
            "quarantined"
        } else {
            "unlinked"
        });
        let (rows, total): (Vec<KeptRow>, i64) = on_read_pool!(self, pool => {
            let rows = sqlx::query_as(SELECT_KEPT_PAGE)
                .bind(quarantined)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            (rows, sqlx::query_scalar(&count).fetch_one(pool).await?)
        });
        let records = rows
            .into_iter()
            .map(|row| KeptRecord {
                position: row.list_position,
                record: row.event.into(),
            })
            .collect();
        Ok((records, total))
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

/// The index in `events` of the first copy of each webhook-id.
fn first_copies(events: &[NewEvent]) -> HashMap<&str, usize> {
    let mut first_copy: HashMap<&str, usize> = HashMap::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        first_copy.entry(event.webhook_id.as_str()).or_insert(index);
    }
    first_copy
}

/// The first copy of each webhook-id of `events`, in webhook-id order. Every transaction takes
/// its row locks in the same order (webhook-ids, then calls), so concurrent appends on
/// PostgreSQL wait for each other but never deadlock. The deliveries of one batch arrived
/// concurrently, so their order in the log is free.
fn in_lock_order<'a>(
    events: &'a [NewEvent],
    first_copy: &HashMap<&str, usize>,
) -> Vec<&'a NewEvent> {
    let mut firsts: Vec<&NewEvent> = events
        .iter()
        .enumerate()
        .filter(|(index, event)| first_copy[event.webhook_id.as_str()] == *index)
        .map(|(_, event)| event)
        .collect();
    firsts.sort_by(|a, b| a.webhook_id.as_str().cmp(b.webhook_id.as_str()));
    firsts
}

/// The columns of a record that its content decides, as the append binds them.
struct ContentColumns<'a> {
    topic: Option<&'a str>,
    event_time_us: Option<i64>,
    call_key: Option<&'a str>,
    unlinked: bool,
    quarantine_reason: Option<&'a str>,
}

impl<'a> ContentColumns<'a> {
    fn of(content: &'a Content) -> Self {
        match content {
            Content::Usable {
                topic,
                event_time,
                call,
            } => Self {
                topic: Some(topic.as_str()),
                event_time_us: Some(event_time.unix_micros()),
                call_key: call.call_key().map(CallKey::as_str),
                unlinked: *call == CallLink::Unlinked,
                quarantine_reason: None,
            },
            Content::Quarantined { reason } => Self {
                topic: None,
                event_time_us: None,
                call_key: None,
                unlinked: false,
                quarantine_reason: Some(reason.as_str()),
            },
        }
    }
}

/// What an append writes after its records, decided by which of them were new, in the order
/// every append locks in: the marks of the calls they touched, their places in the kept lists,
/// then the counts.
struct FollowingWrites<'a> {
    /// The calls the new records touched, in call order.
    touched: Vec<&'a str>,
    /// When the marks are made.
    marked_at: i64,
    /// The new kept records, as (seq, quarantined), in seq order.
    kept: Vec<(i64, bool)>,
    /// The counts to add, if any record is new.
    counts: Option<NewRecordCounts>,
    placeholders: Placeholders,
}

/// A kept record's row in its list: (position, seq, quarantined).
type KeptListRow = (i64, i64, bool);

/// What an append's new records add to the counts (`log_counts`, `stored_per_minute`).
struct NewRecordCounts {
    records: i64,
    quarantined: i64,
    unlinked: i64,
    /// The stripe of both tables this append adds to.
    stripe: i64,
    /// New records per minute of arrival, in minute order, so that appends lock these rows in
    /// one order.
    per_minute: BTreeMap<i64, i64>,
}

impl<'a> FollowingWrites<'a> {
    /// The writes that follow the insert of `firsts`, of which those in `appended` are new.
    fn of(
        firsts: &[&'a NewEvent],
        appended: &HashMap<String, i64>,
        placeholders: Placeholders,
    ) -> Self {
        let new: Vec<&'a NewEvent> = firsts
            .iter()
            .copied()
            .filter(|event| appended.contains_key(event.webhook_id.as_str()))
            .collect();
        let mut touched: Vec<&'a str> = new
            .iter()
            .filter_map(|event| event.content.call_key().map(CallKey::as_str))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let mut kept: Vec<(i64, bool)> = new
            .iter()
            .filter(|event| {
                event.content.quarantine_reason().is_some() || event.content.is_unlinked()
            })
            .map(|event| {
                let seq = appended[event.webhook_id.as_str()];
                (seq, event.content.quarantine_reason().is_some())
            })
            .collect();
        kept.sort_unstable();
        Self {
            touched,
            marked_at: EventTime::now().unix_micros(),
            kept,
            counts: NewRecordCounts::of(&new),
            placeholders,
        }
    }

    /// The statements that mark the touched calls, each with the calls it binds.
    fn mark_statements(&self) -> impl Iterator<Item = (String, &[&'a str])> {
        self.touched
            .chunks(ROWS_PER_STATEMENT)
            .map(|calls| (mark_statement(self.placeholders, calls.len()), calls))
    }

    /// The statements that add the kept records to their lists, each with its rows as
    /// (position, seq, quarantined), given `last`, the last of the positions taken for them.
    fn kept_statements(&self, last: i64) -> Vec<(String, Vec<KeptListRow>)> {
        self.kept_rows(last)
            .chunks(ROWS_PER_STATEMENT)
            .map(|chunk| {
                (
                    kept_statement(self.placeholders, chunk.len()),
                    chunk.to_vec(),
                )
            })
            .collect()
    }

    /// The rows of the kept records in their lists, (position, seq, quarantined), given `last`,
    /// the last of the positions taken for them.
    fn kept_rows(&self, last: i64) -> Vec<KeptListRow> {
        let first = last - self.kept.len() as i64 + 1;
        (first..)
            .zip(&self.kept)
            .map(|(position, (seq, quarantined))| (position, *seq, *quarantined))
            .collect()
    }
}

/// Adds `rows` kept records to their lists, each bound as (position, seq, quarantined).
fn kept_statement(placeholders: Placeholders, rows: usize) -> String {
    format!(
        "INSERT INTO kept_records (list_position, event_seq, quarantined) VALUES {}",
        placeholders.values_list(rows, 3, 1)
    )
}

/// [`Store::append_in_one_transaction`]'s statements, in its order, in `tx` on a SQLite
/// connection driven directly (see `direct_write`): `firsts`, the first copy of each
/// webhook-id in lock order, inserted one row per statement, each statement prepared once for
/// the connection. A numbered parameter (`$1`) is bound by its name, as sqlx binds it by its
/// number, whatever order the statement names them in. Returns the seq of each record
/// written, by webhook-id, and the seq and body digest of the copy the log held already of
/// each other one.
fn append_directly(
    tx: &rusqlite::Transaction<'_>,
    firsts: &[NewEvent],
) -> rusqlite::Result<(HashMap<String, i64>, LoggedCopies)> {
    let one_row = Placeholders::Anonymous;
    let mut appended: HashMap<String, i64> = HashMap::with_capacity(firsts.len());
    let mut insert = tx.prepare_cached(&insert_statement(one_row, 1))?;
    for event in firsts {
        let columns = ContentColumns::of(&event.content);
        let written = insert.query_row(
            rusqlite::params![
                event.webhook_id.as_str(),
                event.webhook_timestamp,
                event.received_at.unix_micros(),
                event.body,
                event.body_sha256,
                columns.topic,
                columns.event_time_us,
                columns.call_key,
                columns.unlinked,
                columns.quarantine_reason,
            ],
            |row| row.get::<_, i64>(0),
        );
        match written {
            Ok(seq) => appended.insert(event.webhook_id.as_str().to_owned(), seq),
            Err(rusqlite::Error::QueryReturnedNoRows) => None,
            Err(error) => return Err(error),
        };
    }
    let firsts: Vec<&NewEvent> = firsts.iter().collect();
    let writes = FollowingWrites::of(&firsts, &appended, one_row);
    let mut mark = tx.prepare_cached(&mark_statement(one_row, 1))?;
    for call_key in &writes.touched {
        mark.execute(rusqlite::params![call_key, writes.marked_at])?;
    }
    if !writes.kept.is_empty() {
        let taken = writes.kept.len() as i64;
        let last: i64 = tx
            .prepare_cached(TAKE_KEPT_POSITIONS)?
            .query_row(named_params! {"$1": taken}, |row| row.get(0))?;
        let mut keep = tx.prepare_cached(&kept_statement(one_row, 1))?;
        for (position, seq, quarantined) in writes.kept_rows(last) {
            keep.execute(rusqlite::params![position, seq, quarantined])?;
        }
    }
    if let Some(counts) = &writes.counts {
        tx.prepare_cached(ADD_TO_LOG_COUNTS)?
            .execute(named_params! {
                "$1": counts.records,
                "$2": counts.quarantined,
                "$3": counts.unlinked,
                "$4": counts.stripe,
            })?;
        let mut add = tx.prepare_cached(ADD_TO_STORED_PER_MINUTE)?;
        for (minute, stored) in &counts.per_minute {
            add.execute(named_params! {"$1": minute, "$2": counts.stripe, "$3": stored})?;
        }
    }
    let mut logged_copies = LoggedCopies::new();
    let mut find = tx.prepare_cached(FIND_FIRST_COPY)?;
    for id in not_appended(&firsts, &appended) {
        // The digest as sqlx reads it, whether SQLite holds it as BLOB or as TEXT.
        let copy = find.query_row(named_params! {"$1": id}, |row| {
            Ok((row.get(0)?, row.get_ref(1)?.as_bytes()?.to_vec()))
        })?;
        logged_copies.insert(id.to_owned(), copy);
    }
    Ok((appended, logged_copies))
}

impl NewRecordCounts {
    /// What `new` adds; `None` when it is empty.
    fn of(new: &[&NewEvent]) -> Option<Self> {
        if new.is_empty() {
            return None;
        }
        let count = |holds: fn(&Content) -> bool| {
            new.iter().filter(|event| holds(&event.content)).count() as i64
        };
        let mut per_minute: BTreeMap<i64, i64> = BTreeMap::new();
        for event in new {
            let minute = event.received_at.unix_micros() / MICROS_PER_MINUTE;
            *per_minute.entry(minute).or_default() += 1;
        }
        Some(Self {
            records: new.len() as i64,
            quarantined: count(|content| content.quarantine_reason().is_some()),
            unlinked: count(Content::is_unlinked),
            stripe: rand::random_range(0..COUNT_STRIPES),
            per_minute,
        })
    }
}

/// The webhook-ids of `firsts` that the log held already.
fn not_appended<'a>(
    firsts: &[&'a NewEvent],
    appended: &HashMap<String, i64>,
) -> impl Iterator<Item = &'a str> {
    firsts
        .iter()
        .map(|event| event.webhook_id.as_str())
        .filter(|id| !appended.contains_key(*id))
        .collect::<Vec<_>>()
        .into_iter()
}

/// The outcome of each of `events`: appended by this transaction (`appended`, by webhook-id),
/// a later copy of one of the batch, or a duplicate of the copy the log held already
/// (`logged_copies`: its seq and body digest, by webhook-id).
fn outcomes(
    events: &[NewEvent],
    first_copy: &HashMap<&str, usize>,
    appended: &HashMap<String, i64>,
    logged_copies: &LoggedCopies,
) -> Vec<AppendOutcome> {
    let mut outcomes = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let id = event.webhook_id.as_str();
        let first = first_copy[id];
        let (seq, first_sha256) = match appended.get(id) {
            Some(&seq) if first == index => {
                outcomes.push(AppendOutcome::Appended { seq });
                continue;
            }
            Some(&seq) => (seq, events[first].body_sha256.as_slice()),
            None => {
                let (seq, logged_sha256) = &logged_copies[id];
                (*seq, logged_sha256.as_slice())
            }
        };
        outcomes.push(AppendOutcome::Duplicate {
            seq,
            conflicting: first_sha256 != event.body_sha256.as_slice(),
        });
    }
    outcomes
}
