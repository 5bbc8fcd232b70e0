-- Control frames (prompts) for a session's agent that the replica asked to send does not
-- hold: kept here until the replica the agent is connected to takes them (woken over
-- PostgreSQL's kortix_command channel, and whenever an agent connects).
-- Keep in step with ../postgres/0009_session_commands.sql.
CREATE TABLE session_commands (
    id          TEXT    NOT NULL PRIMARY KEY,
    session_id  TEXT    NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    -- A prost-encoded kortix.v1.ControlFrame.
    frame       BLOB   NOT NULL,
    created_ms  BIGINT  NOT NULL
);
CREATE INDEX session_commands_session ON session_commands(session_id, created_ms);
