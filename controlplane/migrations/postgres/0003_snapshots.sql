-- Content-addressed sandbox snapshots: one row per (project, snapshot hash). The row is the
-- single-flight lock of a build: whoever moves it from pending to building (a conditional
-- update) builds it, everyone else waits for it to become active or failed. A builder that
-- vanished without finishing leaves a claim that ages out (claimed_ms) and is taken over.
CREATE TABLE snapshots (
    project_id      TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    hash            TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    template        TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    failure_reason  TEXT    NOT NULL DEFAULT '',
    size_bytes      BIGINT,
    builder         TEXT    NOT NULL DEFAULT '',
    claimed_ms      BIGINT,
    builds          BIGINT  NOT NULL DEFAULT 0,
    created_ms      BIGINT  NOT NULL,
    built_ms        BIGINT,
    last_used_ms    BIGINT  NOT NULL,
    PRIMARY KEY (project_id, hash)
);
CREATE INDEX snapshots_name ON snapshots(name);

-- The snapshot a session's sandbox boots from, so pruning never removes one in use.
ALTER TABLE sessions ADD COLUMN snapshot TEXT NOT NULL DEFAULT '';
CREATE INDEX sessions_snapshot ON sessions(snapshot) WHERE snapshot <> '';
