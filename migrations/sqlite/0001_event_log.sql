-- The event log: every authentic delivery callfold acknowledged, in arrival order.
-- Append-only: the triggers at the end refuse UPDATE and DELETE, so a bug cannot rewrite history.
-- Instants are microseconds since the Unix epoch (UTC) in both backends, so the same code and the
-- same ordering rules serve SQLite and PostgreSQL.
CREATE TABLE events (
    -- Position in the log. Grows in commit order and is never reused (rows are never deleted,
    -- so SQLite's max(rowid) + 1 rule is monotonic).
    seq INTEGER PRIMARY KEY,
    -- Standard Webhooks message id, stable across Allo's retries. Unique forever: it is the
    -- dedup key, and Allo's "Recover" can replay a message months later.
    webhook_id TEXT NOT NULL UNIQUE,
    -- The webhook-timestamp header (Unix seconds) of the delivery attempt that was stored.
    webhook_timestamp INTEGER NOT NULL,
    -- When callfold received that attempt.
    received_at_us INTEGER NOT NULL,
    -- The exact request body bytes the signature covered.
    body BLOB NOT NULL,
    -- SHA-256 of body: tells a plain retry from a conflicting re-use of the same webhook-id.
    body_sha256 BLOB NOT NULL,
    -- Envelope topic, e.g. call.completed. NULL exactly when the event is quarantined.
    topic TEXT,
    -- The payload `timestamp`: the time later stages order by. NULL exactly when quarantined.
    event_time_us INTEGER,
    -- The call this event belongs to, found by the linking rules; NULL for events that are not
    -- about a call (sms.*, contact.*) and for call events that carry no call id (unlinked).
    call_key TEXT,
    -- True for a call event whose call the linking rules could not find (call_key is NULL):
    -- such events are kept and listed for operators, never dropped.
    unlinked BOOLEAN NOT NULL DEFAULT FALSE,
    -- Why an authentic body could not be used (not JSON, no topic, bad timestamp). Such events
    -- are kept, raw, for operators; NULL for usable events.
    quarantine_reason TEXT,
    CHECK ((quarantine_reason IS NULL) = (topic IS NOT NULL AND event_time_us IS NOT NULL)),
    CHECK (NOT unlinked OR call_key IS NULL)
);

-- How operators list unlinked events.
CREATE INDEX events_unlinked ON events (seq) WHERE unlinked;

-- How the projector reads one call's events, and a rebuild every call's, in arrival order.
CREATE INDEX events_by_call ON events (call_key, seq) WHERE call_key IS NOT NULL;

CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only');
END;

CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only');
END;
