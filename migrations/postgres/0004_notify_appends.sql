-- Wakes projectors in other processes as soon as an append commits: every INSERT statement into
-- the log sends a notification on channel callfold_appended, delivered at commit (and folded
-- into one per transaction). Projectors also poll, so a missed notification only delays.
CREATE FUNCTION events_notify_appended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('callfold_appended', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify_appended AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify_appended();
