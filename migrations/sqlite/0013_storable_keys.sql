-- The store's limits on the text columns an append writes, the same on both backends.
-- PostgreSQL cannot hold U+0000 in text at all, and refuses a B-tree entry over about 2.7 kB
-- (call_key is indexed by events_by_call and is the key of the fold queue and of the
-- projections). SQLite would store both, so this trigger refuses them too: a record the store
-- refuses is then quarantined alike on either backend (see `Store::append_batch`). The limit,
-- 1024 bytes of UTF-8, is `callfold_store::MAX_KEY_BYTES`; the receiver checks it first.
CREATE TRIGGER events_refuse_unstorable_keys BEFORE INSERT ON events
WHEN instr(CAST(NEW.topic AS BLOB), X'00') > 0
    OR instr(CAST(NEW.call_key AS BLOB), X'00') > 0
    OR length(CAST(NEW.topic AS BLOB)) > 1024
    OR length(CAST(NEW.call_key AS BLOB)) > 1024
BEGIN
    SELECT RAISE(ABORT, 'a topic or call key the store cannot hold');
END;
