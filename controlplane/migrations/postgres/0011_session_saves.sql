-- What a session's last sandbox saved for a resume: the commit it pushed to
-- refs/kortix/wip/<session> (uncommitted work) and OpenCode's export of the conversation
-- (at most 8 MiB; larger ones are not kept, and `conversation_note` says so). One row per
-- session, replaced by every save; it goes with the session.
-- Keep in step with ../sqlite/0011_session_saves.sql.
CREATE TABLE session_saves (
    session_id          TEXT    NOT NULL PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    wip_commit          TEXT    NOT NULL DEFAULT '',
    wip_note            TEXT    NOT NULL DEFAULT '',
    conversation        BYTEA,
    conversation_bytes  BIGINT  NOT NULL DEFAULT 0,
    conversation_note   TEXT    NOT NULL DEFAULT '',
    opencode_session    TEXT    NOT NULL DEFAULT '',
    saved_ms            BIGINT  NOT NULL
);
-- When the session was last resumed (its time to come up counts from there), and how often.
ALTER TABLE sessions ADD COLUMN resumed_ms BIGINT;
ALTER TABLE sessions ADD COLUMN resumes BIGINT NOT NULL DEFAULT 0;
