-- The projector's work queue, replacing its log checkpoint. A checkpoint on `seq` is unsafe with
-- several writers on PostgreSQL: a seq is taken at insert but becomes visible at commit, so a
-- reader that moved past seq 11 never sees a seq 10 committed after it. Instead, every append
-- marks the calls it touched here, in the append's own transaction; a worker that folds a call
-- removes the mark only if no append bumped it meanwhile (see docs/ARCHITECTURE.md).
CREATE TABLE calls_to_fold (
    -- The call whose projection is behind the log.
    call_key TEXT PRIMARY KEY,
    -- Bumped by every append that touches the call: a worker clears the mark only at the
    -- version it folded.
    version BIGINT NOT NULL DEFAULT 1,
    -- When the oldest unfolded append marked it (microseconds since the epoch): lag in seconds.
    marked_at_us BIGINT NOT NULL,
    -- The claim of the worker folding it: a random token per claim, and until when it holds.
    -- An expired claim may be taken over; the token fences out the worker that lost it.
    claim_token BIGINT,
    claimed_until_us BIGINT
);

-- How workers find the calls that have waited longest.
CREATE INDEX calls_to_fold_by_age ON calls_to_fold (marked_at_us);

DROP TABLE projector_checkpoints;

-- Projections no longer carry the incremental fold's position: every fold reads the whole call.
-- They count the events folded instead, which lets a rebuild find the calls that grew under it.
ALTER TABLE call_projections DROP COLUMN last_event_time_us;
ALTER TABLE call_projections DROP COLUMN last_rank;
ALTER TABLE call_projections DROP COLUMN last_webhook_id;
ALTER TABLE call_projections ADD COLUMN events_folded BIGINT NOT NULL DEFAULT 0;
ALTER TABLE call_projections_rebuild DROP COLUMN last_event_time_us;
ALTER TABLE call_projections_rebuild DROP COLUMN last_rank;
ALTER TABLE call_projections_rebuild DROP COLUMN last_webhook_id;
ALTER TABLE call_projections_rebuild ADD COLUMN events_folded BIGINT NOT NULL DEFAULT 0;

-- Every call already in the log is folded once more by the workers of this version.
INSERT INTO calls_to_fold (call_key, version, marked_at_us)
SELECT call_key, 1, min(received_at_us) FROM events WHERE call_key IS NOT NULL GROUP BY call_key;
