//! The fold queue: which calls' projections are behind the log, and which worker folds each.
//!
//! An append marks the calls it touched (`version + 1`) in its own transaction. A worker claims
//! marked calls for a short lease under a random token, folds them from the log, and settles the
//! claim: it writes the projections of the calls it still holds, removes each mark still at the
//! version it claimed, and releases the ones appended to since (they are claimed and folded again
//! when the sweep next passes). A worker whose lease was taken over no longer matches its token
//! and writes nothing. On PostgreSQL the projections commit first and the marks after, so that an
//! append never waits for a settle that waits for the change counter (a worker taken over between
//! the two still removes no mark; see [`Store::settle_claims`]).
//!
//! Workers take marks in call order, each claim from where the previous one stopped
//! ([`QueueSweep`]): the marks a claim takes and its settle removes share pages, and no index in
//! age order has to be kept, whose entries a settle would remove one page each. A lap of the
//! sweep ends at the queue's last call as of its first full claim, so calls marked beyond that
//! wait for the next lap instead of keeping this one going.
//!
//! Leases are measured with the database's clock, never a worker's: a worker whose clock runs
//! ahead would otherwise take over live claims, and one whose clock runs behind would hold its
//! own too long. A worker whose fold runs long renews its claim ([`Store::renew_claim`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rusqlite::types::{ToSql, Value};
use rusqlite::{OptionalExtension, named_params};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use tokio::sync::Mutex;

use crate::direct_read::read_statements_until;
use crate::direct_write::every_parameter_given;
use crate::event::{CallKey, EventTime, LoggedEvent};
use crate::log::{EACH_CALL_IN_SEQ_ORDER, EventRow, SELECT_EVENT};
use crate::projection::{
    COUNT_NEW_PROJECTIONS, ConfigFingerprint, FoldedSoFar, FoldedSoFarRow, LIVE, StoredProjection,
    TAKE_CHANGES, folded_so_far_select, take_changes, upsert_counting_new_statement,
    upsert_projections, upsert_statement,
};
use crate::sql::{Placeholders, ROWS_PER_STATEMENT};
use crate::{Store, StoreError, in_transaction, on_pool, on_read_pool};

/// How long a worker's read of the calls it claimed may hold the write turn on a SQLite file
/// (see [`Store::read_claimed_calls`]): about two commits of appends (2.7 ms each in
/// `docs/benchmarks.md`), so that an append waits for it no longer than for two more commits
/// ahead of it. A batch of 256 neighbouring calls of a log of 1,000,000 records (about 600
/// events) read in about 2 ms.
const WRITE_TURN_READ_MOST: Duration = Duration::from_millis(5);

/// What a mark does to a call already marked: bump its version, so that a worker folding it
/// meanwhile knows its fold missed an event.
pub(crate) const MARK_ON_CONFLICT: &str =
    "ON CONFLICT (call_key) DO UPDATE SET version = calls_to_fold.version + 1";

/// Releases the marks still held under claim `$1` after its settle removed the ones it folded
/// (what is left was appended to during the fold), each marked anew at the claim's time, `$2`:
/// every event committed before the claim was folded, so the queue's lag counts from there.
const RELEASE_UNFOLDED: &str = "UPDATE calls_to_fold \
     SET claim_token = NULL, claimed_until_us = NULL, marked_at_us = $2 \
     WHERE claim_token = $1 RETURNING call_key";

/// On PostgreSQL, the marks still held under claim `$1`, locked for the settle's transaction
/// in byte order of their call keys, with their versions. The settle then removes those still
/// at their claimed version by call key, probing the primary key. Removing them by
/// `claim_token = $1 AND (call_key, version) IN (VALUES ...)`, as on SQLite, made the planner
/// (which, the column being mostly NULL when analyzed, expects one row per token) compare every
/// claimed pair with every held row: 9 ms for a claim of 256 calls, over a quarter of the
/// server's time in a catch-up (`docs/benchmarks.md`).
const LOCK_HELD: &str = "SELECT call_key, version FROM calls_to_fold WHERE claim_token = $1 \
     ORDER BY call_key COLLATE \"C\" FOR UPDATE";

/// On PostgreSQL, the calls still held under claim `$1`, read by a settle's first transaction
/// without a lock (see [`Store::settle_on_postgres`]): a call taken over after this read may
/// still get the projection, which is then a fold of what the log held when it was read, and
/// written only if at least as fresh as the live one.
const STILL_HELD: &str = "SELECT call_key FROM calls_to_fold WHERE claim_token = $1";

/// Lets the transaction that settles the marks on PostgreSQL commit without waiting for the
/// disk (see [`Store::settle_on_postgres`] for why losing it is harmless).
const MARKS_NOT_FLUSHED_AT_COMMIT: &str = "SET LOCAL synchronous_commit = off";

/// Marks `rows` calls, each bound as (call key, marked at).
pub(crate) fn mark_statement(placeholders: Placeholders, rows: usize) -> String {
    format!(
        "INSERT INTO calls_to_fold (call_key, marked_at_us) VALUES {} {MARK_ON_CONFLICT}",
        placeholders.values_list(rows, 2, 1)
    )
}

/// A marked call claimed by a worker, at the version it was claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The call to fold.
    pub call_key: CallKey,
    /// The mark's version when claimed.
    pub version: i64,
}

/// The calls one worker claimed together, under one token.
#[derive(Clone, Debug)]
pub struct ClaimedCalls {
    token: i64,
    /// When the claim was made, by the worker's clock: a mark its settle releases is marked
    /// anew at this time.
    claimed_at: EventTime,
    /// The claims, in call order.
    pub claims: Vec<Claim>,
}

/// How a claim was settled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Calls whose projection was written and whose mark was removed.
    pub folded: usize,
    /// Calls whose projection was written but which were appended to during the fold: their
    /// mark stays, released, to be folded again.
    pub to_refold: usize,
    /// Calls whose lease expired and was taken over: their marks were left to the worker that
    /// took them (on PostgreSQL their projections may have been written, if the takeover came
    /// during the settle: see [`Store::settle_claims`]).
    pub lost: usize,
}

/// The fold queue at a glance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueDepth {
    /// Calls waiting to be folded (claimed or not).
    pub calls: i64,
    /// When the longest-waiting of them was marked.
    pub oldest_marked_at: Option<EventTime>,
}

/// Where the sweep of one worker, or of the workers of one process, stands in the fold queue.
/// Each claim takes the free marks after the call the previous one reached, in call order, up
/// to the lap's end: the last call of the queue when the lap's first full claim was made. A
/// claim that finds fewer marks than it wants ends the lap and takes the rest from the first
/// call, on a new lap. Calls marked after a lap began beyond its end wait for the next lap, so
/// new calls whose keys grow with time cannot keep one lap going while the marks behind it
/// wait. Claims on one sweep run one at a time.
#[derive(Debug, Default)]
pub struct QueueSweep {
    lap: Mutex<Lap>,
}

/// A lap of a [`QueueSweep`].
#[derive(Debug, Default)]
struct Lap {
    /// The last call claimed on this lap; none before the lap's first claim.
    reached: Option<CallKey>,
    /// Where the lap ends; none until its first claim found as many marks as it wanted (a
    /// claim that finds fewer takes every free mark, and ends the lap).
    end: Option<CallKey>,
}

/// Which marked calls a claim statement takes: `limit` after call `after` (up to call `end`),
/// or one call.
enum ClaimOf<'a> {
    Run {
        after: &'a str,
        end: Option<&'a str>,
        limit: i64,
    },
    Call(&'a CallKey),
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    call_key: String,
    version: i64,
}

/// The database's clock, as an SQL expression of microseconds since the Unix epoch.
fn database_now_us(store: &Store) -> &'static str {
    match store {
        Store::Postgres(_) => "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
        // julianday() works in every SQLite version; 2440587.5 is the Unix epoch's day.
        Store::Sqlite(_) => "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)",
    }
}

/// The SQL condition of a mark that no live lease holds: never claimed, or its lease ended by
/// the database's clock (`now`, from [`database_now_us`]).
fn free_of_live_lease(now: &str) -> String {
    format!("(claimed_until_us IS NULL OR claimed_until_us <= {now})")
}

/// A lease's length in microseconds, as bound to a statement.
fn lease_micros(lease: Duration) -> i64 {
    i64::try_from(lease.as_micros()).unwrap_or(i64::MAX)
}

impl Store {
    /// Claims up to `limit` marked calls that no live lease holds, for `lease`: those next on
    /// `sweep`'s lap, in call order, then, if the lap ends first, those from the first call on
    /// the next lap. So a batch is a run of neighbouring calls, whose marks and projections
    /// share pages (on a long queue, a projector catching up, its settle writes a fraction of
    /// the pages that calls scattered over the key space would dirty), and a free mark is
    /// reached on the lap under way or the next, whatever calls are marked beyond the lap's
    /// end meanwhile. On PostgreSQL, rows another worker is claiming at the same instant are
    /// skipped, so concurrent workers split the queue between them.
    pub async fn claim_calls(
        &self,
        sweep: &QueueSweep,
        limit: i64,
        lease: Duration,
    ) -> Result<ClaimedCalls, StoreError> {
        let token = rand::random::<i64>();
        let claimed_at = EventTime::now();
        let mut rows = Vec::new();
        let mut lap = sweep.lap.lock().await;
        // The lap in hand, then, if it ended short of `limit`, the next one.
        while (rows.len() as i64) < limit {
            let wanted = limit - rows.len() as i64;
            let run = ClaimOf::Run {
                after: lap.reached.as_ref().map_or("", |call| call.as_str()),
                end: lap.end.as_ref().map(|call| call.as_str()),
                limit: wanted,
            };
            let taken = self.claim_rows(token, lease, run).await?;
            let filled = taken.len() as i64 == wanted;
            let new_lap = lap.reached.is_none();
            // Any call of the run is a safe place to go on from (every free mark before it on
            // the lap was taken); byte order stands in for the database's order of call keys.
            *lap = match taken.iter().map(|row| &row.call_key).max() {
                Some(last) if filled => {
                    let last = CallKey::new(last.clone());
                    let end = match lap.end.take() {
                        Some(end) => end,
                        None => self.last_marked_call().await?.unwrap_or(last.clone()),
                    };
                    Lap {
                        reached: Some(last),
                        end: Some(end),
                    }
                }
                _ => Lap::default(),
            };
            rows.extend(taken);
            // A new lap that fell short took every free mark.
            if filled || new_lap {
                break;
            }
        }
        Ok(claimed_calls(token, claimed_at, rows))
    }

    /// The last call in the fold queue, in the database's order of call keys.
    async fn last_marked_call(&self) -> Result<Option<CallKey>, StoreError> {
        let last: Option<String> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT max(call_key) FROM calls_to_fold")
                .fetch_one(pool)
                .await?
        });
        Ok(last.map(CallKey::new))
    }

    /// Claims call `call_key` for `lease` if it is marked and no live lease holds it.
    pub async fn claim_call(
        &self,
        call_key: &CallKey,
        lease: Duration,
    ) -> Result<ClaimedCalls, StoreError> {
        let token = rand::random::<i64>();
        let claimed_at = EventTime::now();
        let rows = self
            .claim_rows(token, lease, ClaimOf::Call(call_key))
            .await?;
        Ok(claimed_calls(token, claimed_at, rows))
    }

    /// What a worker reads to fold `call_keys`, calls it claimed: their events, each call's
    /// together in seq order (as [`Store::events_of_calls`] reads them), and how far their live
    /// projections were folded (as [`Store::folded_so_far`] does).
    ///
    /// On a SQLite file both are read first on the direct write connection, in one read
    /// transaction (see `DirectWriter::in_read_transaction`), for at most
    /// [`WRITE_TURN_READ_MOST`]. That connection's page cache holds what the claim just read and
    /// what the latest settles wrote, and, when the appends run in this process too, the pages
    /// they wrote; a direct read connection empties its cache whenever another connection has
    /// committed since its last read, which, with a worker claiming and settling on the write
    /// connection, is before nearly every read. A read that takes longer (calls with many or
    /// large events) gives the write turn back, so that the appends waiting for it wait no
    /// longer, and is made again on the read connections.
    ///
    /// There, and elsewhere, the two reads run at once, and the batch waits for both, even when
    /// one fails, so a read that hangs holds the batch (and its claim) as it would alone.
    pub async fn read_claimed_calls(
        &self,
        call_keys: &[CallKey],
    ) -> Result<(Vec<LoggedEvent>, Vec<FoldedSoFar>), StoreError> {
        self.read_claimed_calls_within(call_keys, WRITE_TURN_READ_MOST)
            .await
    }

    /// [`Store::read_claimed_calls`], with the write connection's read given up after `budget`.
    pub(crate) async fn read_claimed_calls_within(
        &self,
        call_keys: &[CallKey],
        budget: Duration,
    ) -> Result<(Vec<LoggedEvent>, Vec<FoldedSoFar>), StoreError> {
        if let Some(read) = self.read_on_write_connection(call_keys, budget).await? {
            return Ok(read);
        }
        let (logged, folded_so_far) = tokio::join!(
            self.events_of_calls(call_keys),
            self.folded_so_far(call_keys)
        );
        Ok((logged?, folded_so_far?))
    }

    /// The read of [`Store::read_claimed_calls`] on the direct write connection, or `None` where
    /// there is none, or once it has run `budget`.
    pub(crate) async fn read_on_write_connection(
        &self,
        call_keys: &[CallKey],
        budget: Duration,
    ) -> Result<Option<(Vec<LoggedEvent>, Vec<FoldedSoFar>)>, StoreError> {
        let Some((direct, writer)) = self.direct_writer() else {
            return Ok(None);
        };
        let events =
            self.direct_statements_for_calls(SELECT_EVENT, EACH_CALL_IN_SEQ_ORDER, call_keys);
        let folded = self.direct_statements_for_calls(&folded_so_far_select(), "", call_keys);
        let read = direct
            .in_read_transaction(writer, move |tx| {
                let deadline = Instant::now() + budget;
                let logged = read_statements_until(tx, &events, EventRow::from_direct, deadline)?;
                let Some(logged) = logged else {
                    return Ok(None);
                };
                let folded_so_far =
                    read_statements_until(tx, &folded, FoldedSoFarRow::from_direct, deadline)?;
                Ok(folded_so_far.map(|folded_so_far| (logged, folded_so_far)))
            })
            .await?;
        Ok(read.map(|(logged, folded_so_far)| {
            (
                logged.into_iter().map(LoggedEvent::from).collect(),
                folded_so_far.into_iter().map(FoldedSoFar::from).collect(),
            )
        }))
    }

    /// Claims the marked calls that `of` selects and no live lease holds, under `token`, for
    /// `lease`.
    async fn claim_rows(
        &self,
        token: i64,
        lease: Duration,
        of: ClaimOf<'_>,
    ) -> Result<Vec<ClaimRow>, StoreError> {
        let now = database_now_us(self);
        let free = free_of_live_lease(now);
        let skip_locked = match self {
            Store::Postgres(_) => "FOR UPDATE SKIP LOCKED",
            Store::Sqlite(_) => "",
        };
        let chosen = match of {
            ClaimOf::Run { end, .. } => format!(
                "call_key IN (SELECT call_key FROM calls_to_fold WHERE {free} AND call_key > $3 \
                 {} ORDER BY call_key LIMIT $4 {skip_locked})",
                if end.is_some() {
                    "AND call_key <= $5"
                } else {
                    ""
                }
            ),
            ClaimOf::Call(_) => format!("{free} AND call_key = $3"),
        };
        let sql = format!(
            "UPDATE calls_to_fold SET claim_token = $1, claimed_until_us = {now} + $2 \
             WHERE {chosen} RETURNING call_key, version"
        );
        if let Some((direct, writer)) = self.direct_writer() {
            let mut parameters = vec![
                ("$1", Value::Integer(token)),
                ("$2", Value::Integer(lease_micros(lease))),
            ];
            match of {
                ClaimOf::Run { after, end, limit } => {
                    parameters.push(("$3", Value::Text(after.to_owned())));
                    parameters.push(("$4", Value::Integer(limit)));
                    parameters.extend(end.map(|end| ("$5", Value::Text(end.to_owned()))));
                }
                ClaimOf::Call(call_key) => {
                    parameters.push(("$3", Value::Text(call_key.as_str().to_owned())));
                }
            }
            return direct
                .in_transaction(writer, move |tx| {
                    let parameters: Vec<(&str, &dyn ToSql)> = parameters
                        .iter()
                        .map(|(name, value)| (*name, value as &dyn ToSql))
                        .collect();
                    let mut claim = tx.prepare_cached(&sql)?;
                    every_parameter_given(&claim, parameters.len())?;
                    let rows = claim.query_map(parameters.as_slice(), |row| {
                        Ok(ClaimRow {
                            call_key: row.get(0)?,
                            version: row.get(1)?,
                        })
                    })?;
                    rows.collect()
                })
                .await;
        }
        let rows = on_pool!(self, pool => {
            let query = sqlx::query_as(&sql).bind(token).bind(lease_micros(lease));
            let query = match of {
                ClaimOf::Run { after, end, limit } => {
                    let query = query.bind(after).bind(limit);
                    match end {
                        Some(end) => query.bind(end),
                        None => query,
                    }
                }
                ClaimOf::Call(call_key) => query.bind(call_key.as_str()),
            };
            query.fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// Extends the lease of every call still held under `claimed` to `lease` from now (the
    /// database's now), for a fold that runs long. Returns how many calls it still holds: a
    /// call settled, or taken over after its lease ended, is not renewed.
    pub async fn renew_claim(
        &self,
        claimed: &ClaimedCalls,
        lease: Duration,
    ) -> Result<u64, StoreError> {
        // On PostgreSQL, lock the rows in call order first, the order appends and settles lock
        // them in, so that a renewal never deadlocks with an append. Call order is byte order
        // (`COLLATE "C"`, as appends sort in Rust), whatever the database's collation.
        let held = match self {
            Store::Postgres(_) => {
                "call_key IN (SELECT call_key FROM calls_to_fold WHERE claim_token = $1 \
                 ORDER BY call_key COLLATE \"C\" FOR UPDATE) AND claim_token = $1"
            }
            Store::Sqlite(_) => "claim_token = $1",
        };
        let sql = format!(
            "UPDATE calls_to_fold SET claimed_until_us = {} + $2 WHERE {held}",
            database_now_us(self)
        );
        on_pool!(self, pool => {
            let renewed = sqlx::query(&sql)
                .bind(claimed.token)
                .bind(lease_micros(lease))
                .execute(pool)
                .await?;
            Ok(renewed.rows_affected())
        })
    }

    /// Marks `call_key` to be folded again, as an append of one of its events would.
    pub async fn mark_call(&self, call_key: &CallKey) -> Result<(), StoreError> {
        let sql = mark_statement(self.placeholders(), 1);
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(call_key.as_str())
                .bind(EventTime::now().unix_micros())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Settles `claimed` with the `projections` folded for it: writes the projection of every
    /// call still held under the claim's token, removes the marks still at their claimed
    /// version, and releases the others. Calls taken over by another worker are left alone.
    /// SQLite does it in one transaction; PostgreSQL in two, the projections first, so that no
    /// append waits for a settle that waits for the change counter (see `settle_on_postgres`).
    pub async fn settle_claims(
        &self,
        claimed: &ClaimedCalls,
        projections: &[StoredProjection],
    ) -> Result<Settled, StoreError> {
        let count_live = format!("SELECT count(*) FROM {LIVE}");
        let (folded, to_refold) = match self {
            Store::Postgres(pools) => {
                self.settle_on_postgres(&pools.writer, claimed, projections)
                    .await?
            }
            Store::Sqlite(pools) => match &pools.direct_writer {
                // On a file, on the direct write connection, one mark per statement.
                Some(direct) => {
                    let (claim, projections) = (claimed.clone(), projections.to_vec());
                    direct
                        .in_transaction(&pools.writer, move |tx| {
                            settle_directly(tx, &claim, &projections, &count_live)
                        })
                        .await?
                }
                None => {
                    self.settle_on_sqlite_pool(&pools.writer, claimed, projections, &count_live)
                        .await?
                }
            },
        };
        Ok(settled(claimed.claims.len(), folded, to_refold))
    }

    /// [`Store::settle_claims`] on PostgreSQL, in two transactions, so that no append waits for
    /// a settle that waits for the change counter (which a rebuild's swap holds for a batch at a
    /// time, and other settles for their upserts). The first writes the projections of the
    /// calls still held under the claim's token, under the counter's lock, and locks no mark;
    /// the second, once they are committed, locks the marks still held (in call order, the
    /// order appends lock them in), removes those still at their claimed version and releases
    /// the others: it waits for appends to those calls and renewals of the claim, never for the
    /// counter.
    ///
    /// A mark is still removed only after a projection that read its events is committed, so
    /// every argument that rests on it holds (`docs/ARCHITECTURE.md`, "Why the projector cannot
    /// skip an event" and "Rebuild"). A failure between the two leaves the marks, and the calls
    /// are folded again when their leases end; a projection already written is only replaced
    /// by one as fresh ([`crate::projection`]'s guard). So the second transaction does not wait
    /// for its commit to reach the disk (`synchronous_commit` off): one it loses in a crash
    /// leaves the same marks, and every later commit that writes flushes it first.
    async fn settle_on_postgres(
        &self,
        pool: &PgPool,
        claimed: &ClaimedCalls,
        projections: &[StoredProjection],
    ) -> Result<(usize, usize), StoreError> {
        in_transaction!(pool, tx => {
            let still_held: HashSet<String> = sqlx::query_scalar(STILL_HELD)
                .bind(claimed.token)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
            let held: Vec<&StoredProjection> = projections
                .iter()
                .filter(|projection| still_held.contains(projection.call_key.as_str()))
                .collect();
            if !held.is_empty() {
                // The new projections are counted in the upsert's statement, under the
                // counter's lock, which a rebuild's swap holds until it commits: no projection
                // can appear between the count and the upsert.
                let first_change = take_changes!(&mut *tx, held.len() as i64);
                upsert_projections!(&mut *tx, upsert_counting_new_statement, held, first_change);
            }
        })?;
        in_transaction!(pool, tx => {
            sqlx::query(MARKS_NOT_FLUSHED_AT_COMMIT).execute(&mut *tx).await?;
            // In byte order of the call keys, as appends sort them in Rust, whatever the
            // database's collation, so that the two never wait on each other in a cycle.
            // `FOR UPDATE` waits for an append that holds a row, and returns the version it
            // bumped.
            let held: Vec<(String, i64)> = sqlx::query_as(LOCK_HELD)
                .bind(claimed.token)
                .fetch_all(&mut *tx)
                .await?;
            let unchanged = at_claimed_version(claimed, &held);
            let mut folded = 0;
            // By call key alone, checking neither token nor version: these rows were returned,
            // locked, by `LOCK_HELD` earlier in the same transaction.
            let deletes = self.statements_for_calls("DELETE FROM calls_to_fold", "", &unchanged);
            for (sql, keys) in deletes {
                let mut delete = sqlx::query(&sql);
                for key in keys {
                    delete = delete.bind(*key);
                }
                folded += delete.execute(&mut *tx).await?.rows_affected() as usize;
            }
            let to_refold = sqlx::query(RELEASE_UNFOLDED)
                .bind(claimed.token)
                .bind(claimed.claimed_at.unix_micros())
                .execute(&mut *tx)
                .await?
                .rows_affected() as usize;
            (folded, to_refold)
        })
    }

    /// [`Store::settle_claims`] on a SQLite database without a direct writer (in memory), in
    /// one transaction: SQLite has one writer at a time, so no append waits on the settle's
    /// marks while it waits for the counter.
    async fn settle_on_sqlite_pool(
        &self,
        pool: &SqlitePool,
        claimed: &ClaimedCalls,
        projections: &[StoredProjection],
        count_live: &str,
    ) -> Result<(usize, usize), StoreError> {
        let placeholders = Placeholders::Anonymous;
        in_transaction!(pool, tx => {
            let mut folded: HashSet<String> = HashSet::new();
            for claims in claimed.claims.chunks(ROWS_PER_STATEMENT) {
                let sql = settle_statement(placeholders, claims.len());
                let mut delete = sqlx::query_scalar::<_, String>(&sql).bind(claimed.token);
                for claim in claims {
                    delete = delete.bind(claim.call_key.as_str()).bind(claim.version);
                }
                folded.extend(delete.fetch_all(&mut *tx).await?);
            }
            let to_refold: HashSet<String> = sqlx::query_scalar::<_, String>(RELEASE_UNFOLDED)
                .bind(claimed.token)
                .bind(claimed.claimed_at.unix_micros())
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
            let held = held_projections(projections, &folded, &to_refold);
            if !held.is_empty() {
                // After the marks, before the projections: the lock order of every writer.
                // The new projections are counted under the counter's lock (see
                // `settle_on_postgres`).
                let first_change = take_changes!(&mut *tx, held.len() as i64);
                let mut existing = 0;
                for (sql, chunk) in self.statements_for_calls(count_live, "", &held) {
                    let mut count = sqlx::query_scalar::<_, i64>(&sql);
                    for projection in chunk {
                        count = count.bind(projection.call_key.as_str());
                    }
                    existing += count.fetch_one(&mut *tx).await?;
                }
                let statement = |rows| upsert_statement(placeholders, rows);
                upsert_projections!(&mut *tx, statement, held, first_change);
                sqlx::query(COUNT_NEW_PROJECTIONS)
                    .bind(held.len() as i64 - existing)
                    .execute(&mut *tx)
                    .await?;
            }
            (folded.len(), to_refold.len())
        })
    }

    /// How many calls wait to be folded, and since when the oldest waits.
    pub async fn queue_depth(&self) -> Result<QueueDepth, StoreError> {
        let (calls, oldest): (i64, Option<i64>) = on_read_pool!(self, pool => {
            sqlx::query_as("SELECT count(*), min(marked_at_us) FROM calls_to_fold")
                .fetch_one(pool)
                .await?
        });
        Ok(QueueDepth {
            calls,
            oldest_marked_at: oldest.map(EventTime::from_unix_micros),
        })
    }
}

/// The claim of `rows` under `token`, made at `claimed_at`, its calls in call order. A call
/// whose lease ran out between a claim's two statements was taken by both: it is claimed once,
/// at the later version.
fn claimed_calls(token: i64, claimed_at: EventTime, mut rows: Vec<ClaimRow>) -> ClaimedCalls {
    rows.sort_by(|a, b| a.call_key.cmp(&b.call_key).then(b.version.cmp(&a.version)));
    rows.dedup_by(|later, earlier| later.call_key == earlier.call_key);
    let claims = rows
        .into_iter()
        .map(|row| Claim {
            call_key: CallKey::new(row.call_key),
            version: row.version,
        })
        .collect();
    ClaimedCalls {
        token,
        claimed_at,
        claims,
    }
}

/// The call keys of the `held` marks (call key, version) that are still at the version their
/// claim in `claimed` took.
fn at_claimed_version<'h>(claimed: &ClaimedCalls, held: &'h [(String, i64)]) -> Vec<&'h str> {
    let claimed_versions: HashMap<&str, i64> = claimed
        .claims
        .iter()
        .map(|claim| (claim.call_key.as_str(), claim.version))
        .collect();
    held.iter()
        .filter(|(call_key, version)| claimed_versions.get(call_key.as_str()) == Some(version))
        .map(|(call_key, _)| call_key.as_str())
        .collect()
}

/// Removes the marks of `claims` claims (bound as the token, then (call key, version) per
/// claim) that are still at their claimed version.
fn settle_statement(placeholders: Placeholders, claims: usize) -> String {
    format!(
        "DELETE FROM calls_to_fold WHERE claim_token = {} \
         AND (call_key, version) IN (VALUES {}) RETURNING call_key",
        placeholders.nth(1),
        placeholders.values_list(claims, 2, 2)
    )
}

/// Removes the mark of call `$1` if it is still at version `$2` under claim `$3`: one row of
/// [`settle_statement`], found by its primary key. One claim per statement, the list of
/// `settle_statement` would cost an ephemeral table per row (7 times the time, timed in SQLite
/// for a claim of 256 calls).
const REMOVE_FOLDED_MARK: &str = "DELETE FROM calls_to_fold \
     WHERE call_key = $1 AND version = $2 AND claim_token = $3 RETURNING call_key";

/// How a claim of `claimed` calls was settled, `folded` of them removed from the queue and
/// `to_refold` released.
fn settled(claimed: usize, folded: usize, to_refold: usize) -> Settled {
    Settled {
        folded,
        to_refold,
        lost: claimed.saturating_sub(folded + to_refold),
    }
}

/// [`Store::settle_claims`]'s statements, in its order, in `tx` on a SQLite connection driven
/// directly (see `direct_write`), one row per statement, each prepared once for the connection;
/// `count_live` counts the live projections. Returns how many of the claimed calls were folded
/// and how many released to be folded again.
fn settle_directly(
    tx: &rusqlite::Transaction<'_>,
    claimed: &ClaimedCalls,
    projections: &[StoredProjection],
    count_live: &str,
) -> rusqlite::Result<(usize, usize)> {
    let one_row = Placeholders::Anonymous;
    let mut folded: HashSet<String> = HashSet::new();
    let mut remove = tx.prepare_cached(REMOVE_FOLDED_MARK)?;
    for claim in &claimed.claims {
        let removed = remove
            .query_row(
                named_params! {
                    "$1": claim.call_key.as_str(),
                    "$2": claim.version,
                    "$3": claimed.token,
                },
                |row| row.get(0),
            )
            .optional()?;
        folded.extend(removed);
    }
    let to_refold: HashSet<String> = tx
        .prepare_cached(RELEASE_UNFOLDED)?
        .query_map(
            named_params! {"$1": claimed.token, "$2": claimed.claimed_at.unix_micros()},
            |row| row.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let held = held_projections(projections, &folded, &to_refold);
    if !held.is_empty() {
        let count = held.len() as i64;
        let last_change: i64 = tx
            .prepare_cached(TAKE_CHANGES)?
            .query_row(named_params! {"$1": count}, |row| row.get(0))?;
        let mut exists = tx.prepare_cached(&format!("{count_live} WHERE call_key = ?"))?;
        let mut existing = 0;
        for projection in &held {
            existing +=
                exists.query_row([projection.call_key.as_str()], |row| row.get::<_, i64>(0))?;
        }
        let mut upsert = tx.prepare_cached(&upsert_statement(one_row, 1))?;
        for (change, projection) in (last_change - count + 1..).zip(&held) {
            upsert.execute(rusqlite::params![
                projection.call_key.as_str(),
                projection.document.as_str(),
                projection.last_seq,
                projection.late_events,
                projection.events_folded,
                projection.updated_at.unix_micros(),
                projection
                    .built_with
                    .as_ref()
                    .map(ConfigFingerprint::as_str),
                change,
            ])?;
        }
        tx.prepare_cached(COUNT_NEW_PROJECTIONS)?
            .execute(named_params! {"$1": count - existing})?;
    }
    Ok((folded.len(), to_refold.len()))
}

/// The `projections` of the calls a settle still held: those whose mark it removed
/// (`folded`) or released (`to_refold`).
fn held_projections<'a>(
    projections: &'a [StoredProjection],
    folded: &HashSet<String>,
    to_refold: &HashSet<String>,
) -> Vec<&'a StoredProjection> {
    projections
        .iter()
        .filter(|p| folded.contains(p.call_key.as_str()) || to_refold.contains(p.call_key.as_str()))
        .collect()
}
