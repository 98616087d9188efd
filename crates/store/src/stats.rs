//! Counts for operators, read from the database so that every process (and the CLI) sees the
//! same: the log's size, its quarantined and unlinked records, how far the projections are
//! behind it, and how many there are; and records stored per minute, for the status page's
//! chart.

use crate::event::EventTime;
use crate::log::MICROS_PER_MINUTE;
use crate::{Store, StoreError, on_read_pool};

/// What the database holds now.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Records in the log.
    pub log_events: i64,
    /// Records kept raw because their authentic body could not be used.
    pub quarantined: i64,
    /// Call events that name no call the linking rules can find.
    pub unlinked: i64,
    /// Calls whose projection is behind the log.
    pub calls_waiting: i64,
    /// Logged events of those calls that their projections do not count yet.
    pub events_waiting: i64,
    /// When the longest-waiting call was marked, if any waits.
    pub oldest_waiting_since: Option<EventTime>,
    /// Calls with a projection.
    pub projections: i64,
    /// The number of the latest projection change.
    pub last_projection_change: i64,
}

impl StoreStats {
    /// How long the longest-waiting call has waited to be folded, in seconds (0 when none
    /// waits).
    pub fn lag_seconds(&self) -> f64 {
        self.oldest_waiting_since
            .map_or(0.0, |since| EventTime::now().seconds_after(since))
    }
}

/// Every count in one statement, so that they describe one moment. The counts that grow with
/// the log are kept as it grows (`log_counts`, and `projections` beside the change counter,
/// see migration 0009); the others cost what the fold queue holds.
///
/// The events waiting are the waiting calls' events less those their projections folded,
/// each sum a join from the queue. A join lets PostgreSQL's planner choose: it merges the
/// queue with the call index when many calls wait, where a lookup per call cost twice as much
/// (on a queue of 267,362 calls, 0.5 s of a core instead of 1.05 s). SQLite keeps the left
/// table of a `LEFT JOIN` outside, so it walks the queue by its primary key, in call order,
/// and each call's lookups move forward through the indexes. (While the queue had an index in
/// age order, SQLite walked that smaller index, in an order random against the calls: on the
/// same queue, 1.7 s instead of 0.3 s.) The queue's length and its oldest mark are read in one
/// more walk of it, together.
const STATS: &str = "SELECT \
     (SELECT CAST(coalesce(sum(events), 0) AS BIGINT) FROM log_counts), \
     (SELECT CAST(coalesce(sum(quarantined), 0) AS BIGINT) FROM log_counts), \
     (SELECT CAST(coalesce(sum(unlinked), 0) AS BIGINT) FROM log_counts), \
     depth.calls, \
     (SELECT count(e.call_key) FROM calls_to_fold q \
      LEFT JOIN events e ON e.call_key = q.call_key) \
     - (SELECT CAST(coalesce(sum(p.events_folded), 0) AS BIGINT) FROM calls_to_fold q \
        LEFT JOIN call_projections p ON p.call_key = q.call_key), \
     depth.oldest, \
     (SELECT projections FROM projection_changes WHERE only_row = 1), \
     (SELECT last_change FROM projection_changes WHERE only_row = 1) \
     FROM (SELECT count(*) AS calls, min(marked_at_us) AS oldest FROM calls_to_fold) AS depth";

type StatsRow = (i64, i64, i64, i64, i64, Option<i64>, i64, i64);

impl Store {
    /// The counts of [`StoreStats`], as of one moment.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let row: StatsRow = on_read_pool!(self, pool => {
            sqlx::query_as(STATS).fetch_one(pool).await?
        });
        let (
            log_events,
            quarantined,
            unlinked,
            calls_waiting,
            events_waiting,
            oldest,
            projections,
            last_projection_change,
        ) = row;
        Ok(StoreStats {
            log_events,
            quarantined,
            unlinked,
            calls_waiting,
            events_waiting,
            oldest_waiting_since: oldest.map(EventTime::from_unix_micros),
            projections,
            last_projection_change,
        })
    }
}

impl Store {
    /// Records stored per minute since `since`, oldest minute first, as (minute start, count):
    /// from the counts each append keeps (`stored_per_minute`, migration 0014), so the read
    /// costs the minutes asked for, not the records stored in them.
    pub async fn stored_per_minute(
        &self,
        since: EventTime,
    ) -> Result<Vec<(EventTime, i64)>, StoreError> {
        let sql = "SELECT minute, CAST(sum(stored) AS BIGINT) FROM stored_per_minute \
             WHERE minute >= $1 GROUP BY minute ORDER BY minute";
        let rows: Vec<(i64, i64)> = on_read_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(since.unix_micros() / MICROS_PER_MINUTE)
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(minute, count)| {
                (
                    EventTime::from_unix_micros(minute * MICROS_PER_MINUTE),
                    count,
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On SQLite the count of events waiting walks the fold queue by its primary key, in call
    /// order and without a sort, not by any index whose order would send each call's lookups
    /// to pages at random, and looks each call's events and projection up: it walks neither
    /// the log nor the projections, which outgrow the queue.
    #[tokio::test]
    async fn sqlite_walks_the_queue_in_call_order_to_count_the_events_waiting() {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let url = format!("sqlite:{}", folder.path().join("stats.db").display());
        let store = Store::connect(&url).await.expect("a store");
        store.migrate().await.expect("migrated");
        let Store::Sqlite(pools) = &store else {
            panic!("a SQLite store");
        };
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {STATS}"))
                .fetch_all(&pools.readers)
                .await
                .expect("the plan");
        let steps: Vec<&str> = plan.iter().map(|(.., step)| step.as_str()).collect();
        let queue_walks: Vec<&&str> = steps.iter().filter(|s| s.starts_with("SCAN q")).collect();
        assert!(
            !queue_walks.is_empty() && queue_walks.iter().all(|walk| !walk.contains("INDEX")),
            "the queue is walked as\n{}",
            steps.join("\n")
        );
        let looked_up = [
            "SEARCH e USING COVERING INDEX events_by_call",
            "SEARCH p USING",
        ];
        for lookup in looked_up {
            assert!(
                steps.iter().any(|step| step.starts_with(lookup)),
                "no `{lookup}` in\n{}",
                steps.join("\n")
            );
        }
        assert!(
            !steps
                .iter()
                .any(|step| step.starts_with("SCAN e") || step.starts_with("SCAN p")),
            "the log or the projections are walked:\n{}",
            steps.join("\n")
        );
        assert!(
            !steps.iter().any(|step| step.contains("TEMP B-TREE")),
            "the walk sorts:\n{}",
            steps.join("\n")
        );
        store.close().await;
    }
}
