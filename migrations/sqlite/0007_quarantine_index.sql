-- Finds the quarantined records (authentic bodies that could not be used) without a scan of
-- the log: for their count in the operators' statistics, and for `callfold quarantine list`.
CREATE INDEX events_quarantined ON events (seq) WHERE quarantine_reason IS NOT NULL;
