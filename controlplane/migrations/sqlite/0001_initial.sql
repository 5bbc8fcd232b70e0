-- Kortix control plane schema (SQLite). Timestamps are unix milliseconds; ids are TEXT.
-- Keep in step with ../postgres/0001_initial.sql: both backends run the same queries.

CREATE TABLE accounts (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    admin       BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms  INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id            TEXT    NOT NULL PRIMARY KEY,
    account_id    TEXT    NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    token_hash    TEXT    NOT NULL UNIQUE,
    created_ms    INTEGER NOT NULL,
    last_used_ms  INTEGER,
    revoked_ms    INTEGER
);
CREATE INDEX api_tokens_account ON api_tokens(account_id);

CREATE TABLE projects (
    id               TEXT    NOT NULL PRIMARY KEY,
    account_id       TEXT    NOT NULL REFERENCES accounts(id),
    name             TEXT    NOT NULL UNIQUE,
    default_branch   TEXT    NOT NULL,
    created_ms       INTEGER NOT NULL,
    -- Bumped on every secret set/delete so watchers can tell that the set changed.
    secrets_version  INTEGER NOT NULL DEFAULT 0,
    -- Last change-request number handed out; bumped inside the transaction that inserts a CR.
    cr_counter       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX projects_account ON projects(account_id);

CREATE TABLE secrets (
    project_id  TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (project_id, name)
);

CREATE TABLE sessions (
    id                 TEXT    NOT NULL PRIMARY KEY,
    project_id         TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    status             TEXT    NOT NULL,
    template           TEXT    NOT NULL DEFAULT '',
    agent              TEXT    NOT NULL DEFAULT '',
    prompt             TEXT    NOT NULL DEFAULT '',
    origin             TEXT    NOT NULL DEFAULT '',
    idempotency_key    TEXT    NOT NULL DEFAULT '',
    head_sha           TEXT    NOT NULL DEFAULT '',
    failure_reason     TEXT    NOT NULL DEFAULT '',
    created_ms         INTEGER NOT NULL,
    started_ms         INTEGER,
    ended_ms           INTEGER,
    last_heartbeat_ms  INTEGER,
    idle_ms            INTEGER NOT NULL DEFAULT 0,
    acked_seq          INTEGER NOT NULL DEFAULT 0,
    prompt_delivered   BOOLEAN NOT NULL DEFAULT FALSE,
    exit_status        TEXT
);
CREATE INDEX sessions_project ON sessions(project_id, created_ms);
CREATE INDEX sessions_status ON sessions(status, created_ms);
CREATE UNIQUE INDEX sessions_idempotency ON sessions(project_id, idempotency_key)
    WHERE idempotency_key <> '';

CREATE TABLE records (
    session_id  TEXT    NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    ts_ms       INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    body        BLOB    NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;

CREATE TABLE change_requests (
    project_id         TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    number             INTEGER NOT NULL,
    title              TEXT    NOT NULL,
    body               TEXT    NOT NULL DEFAULT '',
    state              TEXT    NOT NULL,
    head_branch        TEXT    NOT NULL,
    base_branch        TEXT    NOT NULL,
    head_sha           TEXT    NOT NULL DEFAULT '',
    base_sha           TEXT    NOT NULL DEFAULT '',
    merge_base         TEXT    NOT NULL DEFAULT '',
    merge_commit       TEXT    NOT NULL DEFAULT '',
    merged_diff        TEXT,
    session_id         TEXT    REFERENCES sessions(id) ON DELETE SET NULL,
    author_account_id  TEXT    NOT NULL DEFAULT '',
    created_ms         INTEGER NOT NULL,
    updated_ms         INTEGER NOT NULL,
    merged_ms          INTEGER,
    PRIMARY KEY (project_id, number)
);
-- One open CR per head branch, as on every forge.
CREATE UNIQUE INDEX change_requests_open_head ON change_requests(project_id, head_branch)
    WHERE state = 'open';
CREATE INDEX change_requests_state ON change_requests(project_id, state, number);

CREATE TABLE trigger_firings (
    id            TEXT    NOT NULL PRIMARY KEY,
    project_id    TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    trigger_slug  TEXT    NOT NULL,
    firing_key    TEXT    NOT NULL,
    fired_ms      INTEGER NOT NULL,
    scheduled_ms  INTEGER,
    outcome       TEXT    NOT NULL,
    session_id    TEXT,
    error         TEXT,
    catch_up      BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (project_id, trigger_slug, firing_key)
);
CREATE INDEX trigger_firings_recent ON trigger_firings(project_id, trigger_slug, fired_ms);
CREATE INDEX trigger_firings_outcome ON trigger_firings(outcome, fired_ms);

CREATE TABLE bootstrap_tokens (
    token_hash  TEXT    NOT NULL PRIMARY KEY,
    session_id  TEXT    NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    used_ms     INTEGER
);
CREATE INDEX bootstrap_tokens_session ON bootstrap_tokens(session_id);
CREATE INDEX bootstrap_tokens_expiry ON bootstrap_tokens(expires_ms);

CREATE TABLE issued_certs (
    serial        TEXT    NOT NULL PRIMARY KEY,
    session_id    TEXT    NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_ms    INTEGER NOT NULL,
    not_after_ms  INTEGER NOT NULL,
    revoked_ms    INTEGER
);
CREATE INDEX issued_certs_session ON issued_certs(session_id);
CREATE INDEX issued_certs_expiry ON issued_certs(not_after_ms);

CREATE TABLE git_tokens (
    token_hash  TEXT    NOT NULL PRIMARY KEY,
    session_id  TEXT    NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    project_id  TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    branch      TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL
);
CREATE INDEX git_tokens_session ON git_tokens(session_id);
CREATE INDEX git_tokens_expiry ON git_tokens(expires_ms);
