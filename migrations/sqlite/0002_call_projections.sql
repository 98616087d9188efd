-- Per-call state folded from the event log by the projector. Derived data: it can be dropped and
-- rebuilt from the log at any time.
CREATE TABLE call_projections (
    -- The call's id (events.call_key).
    call_key TEXT PRIMARY KEY,
    -- The call document as JSON: a pure function of the call's events, byte-identical whatever
    -- order they arrived in.
    document TEXT NOT NULL,
    -- Effective key (payload time, topic precedence rank, webhook-id) of the latest event folded:
    -- an event after it is applied to the document directly; one before it re-folds the call.
    last_event_time_us BIGINT NOT NULL,
    last_rank BIGINT NOT NULL,
    last_webhook_id TEXT NOT NULL,
    -- Arrival-dependent facts, shown under "meta" by the query API:
    -- the highest log seq folded into this call,
    last_seq BIGINT NOT NULL,
    -- how many of its events arrived after a later one of the same call,
    late_events BIGINT NOT NULL,
    -- and when the projector last changed it.
    updated_at_us BIGINT NOT NULL
);

-- How far each projector has read the log: every record with seq <= last_seq is folded. It is
-- written in the same transaction as the projections it covers.
CREATE TABLE projector_checkpoints (
    name TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
