-- Records lose their per-row foreign key check. Every insert already locks and reads its
-- session row in the same transaction (the record pipeline's group commit), so the check only
-- cost time: one parent lookup per record. Deleting a session (directly or through its
-- project) still deletes its records, by trigger instead of cascade.
CREATE TABLE records_v2 (
    session_id  TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    ts_ms       INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    body        BLOB    NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
INSERT INTO records_v2 (session_id, seq, ts_ms, kind, body)
    SELECT session_id, seq, ts_ms, kind, body FROM records;
DROP TABLE records;
ALTER TABLE records_v2 RENAME TO records;

CREATE TRIGGER sessions_delete_records AFTER DELETE ON sessions
BEGIN
    DELETE FROM records WHERE session_id = OLD.id;
END;
