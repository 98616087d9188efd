-- A cursor over projection changes, for the live streams (`GET /v1/stream`): every write of a
-- projection takes the next number of one counter, in the writing transaction. The counter's
-- single row is locked until that transaction commits, so changes become visible in the order
-- of their numbers, and a reader that has seen change N never sees a lower one appear later.
CREATE TABLE projection_changes (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    last_change BIGINT NOT NULL
);
INSERT INTO projection_changes (only_row, last_change) VALUES (1, 0);

-- The change that last wrote each projection.
ALTER TABLE call_projections ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE call_projections_rebuild ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX call_projections_by_change ON call_projections (change_seq);

-- The projections already there count as one change each, so a stream of one call starts with
-- it whatever its age.
UPDATE call_projections SET change_seq = rowid;
UPDATE projection_changes SET last_change = (SELECT coalesce(max(change_seq), 0) FROM call_projections);
