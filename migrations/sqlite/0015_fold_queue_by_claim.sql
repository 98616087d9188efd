-- How a worker finds the rows of its own claim: renewing it, releasing what it could not
-- settle, and settling what it folded all select `WHERE claim_token = $1`. Without an index,
-- each of them read the whole fold queue, so a projector catching up on a long queue spent
-- time proportional to the queue on every batch. Only claimed rows are indexed: the rest of
-- the queue costs this index nothing.
CREATE INDEX calls_to_fold_by_claim ON calls_to_fold (claim_token) WHERE claim_token IS NOT NULL;
