-- The counts of the log that grow with it, kept by every append in its own transaction, so that
-- the operators' counts (`/v1/stats`, `/status`, the gauges, list totals) read a few rows
-- instead of scanning the log.
--
-- Eight rows (stripes), summed when read: each append adds its batch's counts to one stripe
-- picked at random, so that on PostgreSQL appends from several receivers rarely wait for the
-- same row lock. An append takes it last, after its webhook-ids and marks, and holds it until
-- it commits.
CREATE TABLE log_counts (
    stripe INTEGER PRIMARY KEY CHECK (stripe BETWEEN 0 AND 7),
    -- Records in the log.
    events BIGINT NOT NULL,
    -- Records kept raw with a quarantine_reason.
    quarantined BIGINT NOT NULL,
    -- Call events stored with unlinked set.
    unlinked BIGINT NOT NULL
);

-- The records already logged, counted once here, so that an upgraded database starts right.
INSERT INTO log_counts (stripe, events, quarantined, unlinked)
SELECT 0, count(*), count(quarantine_reason), coalesce(sum(CASE WHEN unlinked THEN 1 ELSE 0 END), 0)
FROM events;
INSERT INTO log_counts (stripe, events, quarantined, unlinked)
VALUES (1, 0, 0, 0), (2, 0, 0, 0), (3, 0, 0, 0), (4, 0, 0, 0), (5, 0, 0, 0), (6, 0, 0, 0), (7, 0, 0, 0);

-- How many projections `call_projections` holds, beside the change counter: every write of a
-- projection already holds this row's lock (see 0006), so counting there adds no waiting. A
-- settle adds the projections it creates; a rebuild's swap sets the number it swapped in.
ALTER TABLE projection_changes ADD COLUMN projections BIGINT NOT NULL DEFAULT 0;
UPDATE projection_changes SET projections = (SELECT count(*) FROM call_projections);
