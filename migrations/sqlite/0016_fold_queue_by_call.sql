-- The fold queue's rows, stored in call order. A claim takes a run of neighbouring calls and its
-- settle removes them, but the rows of a rowid table lie in the order calls were first marked,
-- which is random against call order: on a long queue (a projector catching up on a log that
-- grew without it) every claimed call's row sat on a page of its own, and the claims and
-- settles wrote 60% of the catch-up's WAL pages into this table alone. Keyed by the call, the
-- rows a batch claims and settles share a few pages, and the call key's own index goes away.
-- PostgreSQL keeps its heap: there the worker's CPU, not the pages, limits the catch-up.
CREATE TABLE calls_to_fold_by_call (
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
) WITHOUT ROWID;

INSERT INTO calls_to_fold_by_call (call_key, version, marked_at_us, claim_token, claimed_until_us)
SELECT call_key, version, marked_at_us, claim_token, claimed_until_us FROM calls_to_fold;

DROP TABLE calls_to_fold;
ALTER TABLE calls_to_fold_by_call RENAME TO calls_to_fold;

-- The indexes of migrations 0005 and 0015, as they were.
CREATE INDEX calls_to_fold_by_age ON calls_to_fold (marked_at_us);
CREATE INDEX calls_to_fold_by_claim ON calls_to_fold (claim_token) WHERE claim_token IS NOT NULL;
