-- Records stored per minute of their arrival, kept by every append in its own transaction, so
-- that the status page's chart of the last hour reads sixty rows per stripe instead of the
-- latest records of the log, however busy the hour was.
--
-- Striped like log_counts (0009): an append adds to the stripe it picked there, after it, so
-- that on PostgreSQL appends from several receivers rarely wait on the same row.
CREATE TABLE stored_per_minute (
    -- Minutes since the Unix epoch: received_at_us / 60000000.
    minute BIGINT NOT NULL,
    stripe INTEGER NOT NULL CHECK (stripe BETWEEN 0 AND 7),
    -- Records appended that minute.
    stored BIGINT NOT NULL,
    PRIMARY KEY (minute, stripe)
);

-- The records already logged, counted once here, so that an upgraded database starts right.
INSERT INTO stored_per_minute (minute, stripe, stored)
SELECT received_at_us / 60000000, 0, count(*) FROM events GROUP BY received_at_us / 60000000;
