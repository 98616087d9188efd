-- Which configuration folded each projection: the fingerprint (SHA-256, hex) of the linking
-- rules and the topic precedence graph of the process that wrote it. A process whose own
-- fingerprint differs from one found here says so at start, on /readyz and in
-- `callfold config check`, and asks for `callfold rebuild`, which refolds every projection
-- with the configuration of the process that runs it.
-- NULL: written before configurations were recorded, so by an unknown one.
ALTER TABLE call_projections ADD COLUMN config_fingerprint TEXT;
ALTER TABLE call_projections_rebuild ADD COLUMN config_fingerprint TEXT;

-- Finds a projection built otherwise with two range probes and a NULL probe, without a scan.
CREATE INDEX call_projections_by_config ON call_projections (config_fingerprint);
