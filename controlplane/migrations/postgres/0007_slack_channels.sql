-- Slack channels: a project bound to a Slack app, the events it has taken, the threads it
-- owns (thread -> session) and the outbound messages that must not be lost.
-- Keep in step with ../sqlite/0007_slack_channels.sql.

-- The app's signing secret and bot token, sealed under the master key like secrets but
-- never project secrets: nothing here reaches a sandbox.
CREATE TABLE slack_bindings (
    project_id     TEXT    NOT NULL PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    signing_nonce  BYTEA   NOT NULL,
    signing_sealed BYTEA   NOT NULL,
    token_nonce    BYTEA   NOT NULL,
    token_sealed   BYTEA   NOT NULL,
    -- person:<id> of whoever connected it.
    connected_by   TEXT    NOT NULL,
    created_ms     BIGINT  NOT NULL,
    updated_ms     BIGINT  NOT NULL
);

-- Slack's event_id, claimed by an insert before anything is done for the event: a retry or
-- a second replica loses the insert and does nothing. Old rows are pruned (Slack stops
-- retrying within hours).
CREATE TABLE slack_events (
    project_id   TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    event_id     TEXT    NOT NULL,
    received_ms  BIGINT  NOT NULL,
    PRIMARY KEY (project_id, event_id)
);
CREATE INDEX slack_events_received ON slack_events(received_ms);

-- A thread the bot owns and the session it drives (replaced when that session has ended).
CREATE TABLE slack_threads (
    project_id   TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    channel      TEXT    NOT NULL,
    thread_ts    TEXT    NOT NULL,
    -- Empty while the first session is being started.
    session_id   TEXT    NOT NULL DEFAULT '',
    -- The Slack user who started the thread's session.
    asked_by     TEXT    NOT NULL,
    created_ms   BIGINT  NOT NULL,
    updated_ms   BIGINT  NOT NULL,
    PRIMARY KEY (project_id, channel, thread_ts)
);
CREATE INDEX slack_threads_session ON slack_threads(session_id);

-- Web API calls that must reach Slack (final answers, reactions): retried until delivered,
-- honouring Retry-After, up to a bounded number of attempts.
CREATE TABLE slack_outbox (
    id          TEXT    NOT NULL PRIMARY KEY,
    project_id  TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    method      TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    due_ms      BIGINT  NOT NULL,
    created_ms  BIGINT  NOT NULL,
    last_error  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX slack_outbox_due ON slack_outbox(due_ms);
