-- The store's limits on the text columns an append writes, the same on both backends.
-- PostgreSQL already refuses U+0000 in text, and a B-tree entry over about 2.7 kB (call_key is
-- indexed by events_by_call and is the key of the fold queue and of the projections); this
-- constraint makes the length limit explicit and equal to SQLite's: 1024 bytes of UTF-8, which
-- is `callfold_store::MAX_KEY_BYTES`, checked first by the receiver. A record the store refuses
-- is quarantined (see `Store::append_batch`). NOT VALID: rows already logged are not scanned.
ALTER TABLE events ADD CONSTRAINT events_keys_fit
    CHECK (octet_length(topic) <= 1024 AND octet_length(call_key) <= 1024) NOT VALID;
