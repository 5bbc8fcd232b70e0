-- Records lose their per-row foreign key check. Every insert already locks and reads its
-- session row in the same transaction (the record pipeline's group commit), so the check only
-- cost time: a referential-integrity query per record, the largest part of PostgreSQL's CPU
-- under 100 streaming sessions. Deleting a session (directly or through its project) still
-- deletes its records, by trigger instead of cascade.
ALTER TABLE records DROP CONSTRAINT IF EXISTS records_session_id_fkey;

CREATE FUNCTION kortix_delete_session_records() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM records WHERE session_id = OLD.id;
    RETURN OLD;
END
$$;

CREATE TRIGGER sessions_delete_records AFTER DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION kortix_delete_session_records();
