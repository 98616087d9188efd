-- The lists of kept records (`/v1/quarantine`, `/v1/unlinked`) page by a number taken in commit
-- order, not by `seq`. On PostgreSQL a seq is taken at insert but becomes visible at commit, so
-- a client that listed up to seq 11 would never see a seq 10 committed after it.
--
-- An append that keeps records takes their numbers from the counter below, in its own
-- transaction. The counter's single row stays locked until that transaction commits, so a
-- record that commits later always gets a higher number (as with projection_changes, 0006).
-- Only appends that keep a record take the lock; ordinary appends never touch it.
CREATE TABLE kept_records_counter (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    last_position BIGINT NOT NULL
);

-- One row per kept record: its place in its list. A side table, because the log is
-- append-only (its rows are never updated).
CREATE TABLE kept_records (
    -- The record's place in the lists, in commit order: the cursor of `after=` and `next`.
    list_position BIGINT PRIMARY KEY,
    -- The record in the log.
    event_seq BIGINT NOT NULL UNIQUE REFERENCES events (seq),
    -- True in the quarantine list, false in the unlinked list.
    quarantined BOOLEAN NOT NULL
);

-- How each list reads a page.
CREATE INDEX kept_records_by_list ON kept_records (quarantined, list_position);

-- The records kept so far keep their seq as their position, so that a cursor a client took
-- from these lists before they paged by position (a seq) still means the same place; new
-- positions start after the highest seq in the log.
INSERT INTO kept_records (list_position, event_seq, quarantined)
SELECT seq, seq, quarantine_reason IS NOT NULL
FROM events WHERE unlinked OR quarantine_reason IS NOT NULL;
INSERT INTO kept_records_counter (only_row, last_position)
SELECT 1, coalesce(max(seq), 0) FROM events;
