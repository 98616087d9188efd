-- Nothing to do on SQLite: one process writes the log, and it wakes its projector in memory.
-- (PostgreSQL's migration 0004 adds the cross-process notification.)
SELECT 1;
