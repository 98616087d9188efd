//! The fold queue: which calls' projections are behind the log, and which worker folds each.
//!
//! An append marks the calls it touched (`version + 1`) in its own transaction. A worker claims
//! marked calls for a short lease under a random token, folds them from the log, and settles the
//! claim in one transaction: it removes each mark still at the version it claimed, releases the
//! ones appended to since (they are claimed and folded again, back in line at the claim's
//! time), and writes the projections of both. A worker whose lease was taken over no longer
//! matches its token and writes nothing.
//!
//! Leases are measured with the database's clock, never a worker's: a worker whose clock runs
//! ahead would otherwise take over live claims, and one whose clock runs behind would hold its
//! own too long. A worker whose fold runs long renews its claim ([`Store::renew_claim`]).

use std::collections::HashSet;
use std::time::Duration;

use crate::event::{CallKey, EventTime};
use crate::projection::{
    COUNT_NEW_PROJECTIONS, LIVE, ONLY_IF_AS_FRESH, StoredProjection, take_changes,
    upsert_projections,
};
use crate::sql::{Placeholders, ROWS_PER_STATEMENT};
use crate::{Store, StoreError, in_transaction, on_pool, on_read_pool};

/// What a mark does to a call already marked: bump its version, so that a worker folding it
/// meanwhile knows its fold missed an event.
pub(crate) const MARK_ON_CONFLICT: &str =
    "ON CONFLICT (call_key) DO UPDATE SET version = calls_to_fold.version + 1";

/// Releases the marks still held under claim `$1` after its settle removed the ones it folded
/// (what is left was appended to during the fold), each back in line at the claim's time,
/// `$2`: every event committed before the claim was folded. Left at its first mark's
/// time, a call appended to during each of its folds would stay the oldest mark, every claim
/// would start from it and take its neighbours, and an older mark further along in call order
/// would never be reached (see [`Store::claim_calls`]).
const RELEASE_UNFOLDED: &str = "UPDATE calls_to_fold \
     SET claim_token = NULL, claimed_until_us = NULL, marked_at_us = $2 \
     WHERE claim_token = $1 RETURNING call_key";

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
    /// When the claim was made, by the worker's clock: a mark its settle releases goes back in
    /// line at this time.
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
    /// Calls whose lease expired and was taken over: nothing was written for them.
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

/// Which marked calls a claim takes: `n` from the oldest mark on in call order, or one call.
enum ClaimOf<'a> {
    FromOldest(i64),
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
    /// Claims up to `limit` marked calls that no live lease holds, for `lease`: the one marked
    /// longest ago, and the ones after it in call order, wrapping round to the first call. So
    /// the oldest mark is always taken (a settle that releases a mark puts it back in line at
    /// the claim's time, so no mark stays the oldest for good), and a batch taken from a long
    /// queue (a projector catching up) is a run of neighbouring calls, whose projections and
    /// marks share pages: its settle writes a fraction of the pages that calls scattered over
    /// the whole key space would dirty. On PostgreSQL, rows another worker is claiming at the
    /// same instant are skipped, so concurrent workers split the queue between them.
    pub async fn claim_calls(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<ClaimedCalls, StoreError> {
        let skip_locked = match self {
            Store::Postgres(_) => "FOR UPDATE SKIP LOCKED",
            Store::Sqlite(_) => "",
        };
        let now = database_now_us(self);
        let free = free_of_live_lease(now);
        let run_from = |side: &str| {
            format!(
                "SELECT call_key FROM (SELECT call_key FROM calls_to_fold WHERE {free} \
                 AND call_key {side} (SELECT call_key FROM oldest) \
                 ORDER BY call_key LIMIT $3 {skip_locked}) AS run"
            )
        };
        let sql = format!(
            "UPDATE calls_to_fold SET claim_token = $1, claimed_until_us = {now} + $2 \
             WHERE call_key IN (WITH oldest AS (SELECT call_key FROM calls_to_fold \
             WHERE {free} ORDER BY marked_at_us LIMIT 1) \
             {} UNION ALL {} LIMIT $3) \
             RETURNING call_key, version",
            run_from(">="),
            run_from("<"),
        );
        self.claim(&sql, lease, ClaimOf::FromOldest(limit)).await
    }

    /// Claims call `call_key` for `lease` if it is marked and no live lease holds it.
    pub async fn claim_call(
        &self,
        call_key: &CallKey,
        lease: Duration,
    ) -> Result<ClaimedCalls, StoreError> {
        let now = database_now_us(self);
        let free = free_of_live_lease(now);
        let sql = format!(
            "UPDATE calls_to_fold SET claim_token = $1, claimed_until_us = {now} + $2 \
             WHERE {free} AND call_key = $3 RETURNING call_key, version"
        );
        self.claim(&sql, lease, ClaimOf::Call(call_key)).await
    }

    /// Runs claim statement `sql`, binding the token, the lease's length, and what `of`
    /// selects.
    async fn claim(
        &self,
        sql: &str,
        lease: Duration,
        of: ClaimOf<'_>,
    ) -> Result<ClaimedCalls, StoreError> {
        let token = rand::random::<i64>();
        let claimed_at = EventTime::now();
        let mut rows: Vec<ClaimRow> = on_pool!(self, pool => {
            let query = sqlx::query_as(sql).bind(token).bind(lease_micros(lease));
            let query = match of {
                ClaimOf::FromOldest(limit) => query.bind(limit),
                ClaimOf::Call(call_key) => query.bind(call_key.as_str()),
            };
            query.fetch_all(pool).await?
        });
        rows.sort_by_key(|row| row.call_key.clone());
        let claims = rows
            .into_iter()
            .map(|row| Claim {
                call_key: CallKey::new(row.call_key),
                version: row.version,
            })
            .collect();
        Ok(ClaimedCalls {
            token,
            claimed_at,
            claims,
        })
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

    /// Settles `claimed` with the `projections` folded for it, in one transaction: writes the
    /// projection of every call still held under the claim's token, removes the marks still
    /// at their claimed version, and releases the others. Calls taken over by another worker
    /// are left alone.
    pub async fn settle_claims(
        &self,
        claimed: &ClaimedCalls,
        projections: &[StoredProjection],
    ) -> Result<Settled, StoreError> {
        // Lock the claim's rows in call order, the order appends lock them in (byte order, as
        // appends sort in Rust, whatever the database's collation), so that the two never wait
        // on each other in a cycle. SQLite has one writer at a time.
        let lock_held = match self {
            Store::Postgres(_) => Some(
                "SELECT call_key FROM calls_to_fold WHERE claim_token = $1 \
                 ORDER BY call_key COLLATE \"C\" FOR UPDATE",
            ),
            Store::Sqlite(_) => None,
        };
        let placeholders = self.placeholders();
        let deletes: Vec<(String, &[Claim])> = claimed
            .claims
            .chunks(ROWS_PER_STATEMENT)
            .map(|claims| (settle_statement(placeholders, claims.len()), claims))
            .collect();
        let (folded, to_refold) = on_pool!(self, pool => in_transaction!(pool, tx => {
            if let Some(lock_held) = lock_held {
                sqlx::query(lock_held).bind(claimed.token).execute(&mut *tx).await?;
            }
            let mut folded: HashSet<String> = HashSet::new();
            for (sql, claims) in &deletes {
                let mut delete = sqlx::query_scalar::<_, String>(sql).bind(claimed.token);
                for claim in *claims {
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
                let first_change = take_changes!(&mut *tx, held.len() as i64);
                // Counted under the counter's lock, which a rebuild's swap holds until it
                // commits: no projection can appear between this count and the upsert.
                let mut existing = 0;
                for (sql, chunk) in existing_count_statements(placeholders, &held) {
                    let mut count = sqlx::query_scalar::<_, i64>(&sql);
                    for projection in chunk {
                        count = count.bind(projection.call_key.as_str());
                    }
                    existing += count.fetch_one(&mut *tx).await?;
                }
                upsert_projections!(
                    &mut *tx,
                    placeholders,
                    LIVE,
                    held,
                    Some(first_change),
                    ONLY_IF_AS_FRESH
                );
                sqlx::query(COUNT_NEW_PROJECTIONS)
                    .bind(held.len() as i64 - existing)
                    .execute(&mut *tx)
                    .await?;
            }
            (folded.len(), to_refold.len())
        }))?;
        Ok(Settled {
            folded,
            to_refold,
            lost: claimed.claims.len() - folded - to_refold,
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

/// The statements that count how many of `held` have a live projection already, each with the
/// projections whose call keys it binds.
fn existing_count_statements<'h, 'p>(
    placeholders: Placeholders,
    held: &'h [&'p StoredProjection],
) -> impl Iterator<Item = (String, &'h [&'p StoredProjection])> {
    held.chunks(ROWS_PER_STATEMENT).map(move |chunk| {
        let sql = format!(
            "SELECT count(*) FROM {LIVE} WHERE call_key IN ({})",
            placeholders.list(chunk.len(), 1)
        );
        (sql, chunk)
    })
}
