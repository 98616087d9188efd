-- A rebuild now swaps each page's projections into call_projections as it reads the log, so it
-- no longer writes them to a table of their own first: the shadow table is dropped. It is empty
-- outside a rebuild; a rebuild of an earlier version still running needs it, so stop one before
-- migrating (its work is redone by running `callfold rebuild` again).
DROP TABLE call_projections_rebuild;
