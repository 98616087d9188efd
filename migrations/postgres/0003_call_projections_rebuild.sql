-- Where `callfold rebuild` folds fresh projections before swapping them into call_projections in
-- one transaction, so queries keep answering from the old projections until then. Empty
-- outside a rebuild; same columns as call_projections.
CREATE TABLE call_projections_rebuild (
    call_key TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    last_event_time_us BIGINT NOT NULL,
    last_rank BIGINT NOT NULL,
    last_webhook_id TEXT NOT NULL,
    last_seq BIGINT NOT NULL,
    late_events BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL
);
