-- Connectors: their credentials (sealed like secrets), the approvals calls wait for, and the
-- log of every call through the broker. Keep in step with ../sqlite/0006_connectors.sql.
--
-- No foreign keys on approvals and calls: like the audit log, they outlive the sessions
-- they name.

CREATE TABLE connector_credentials (
    project_id  TEXT   NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    connector   TEXT   NOT NULL,
    -- '' for the project's shared credential, else the person whose own (per_user) it is.
    person_id   TEXT   NOT NULL DEFAULT '',
    nonce       BYTEA   NOT NULL,
    ciphertext  BYTEA   NOT NULL,
    updated_ms  BIGINT NOT NULL,
    PRIMARY KEY (project_id, connector, person_id)
);

CREATE TABLE connector_approvals (
    id            TEXT   PRIMARY KEY,
    project_id    TEXT   NOT NULL,
    session_id    TEXT   NOT NULL,
    connector     TEXT   NOT NULL,
    tool          TEXT   NOT NULL,
    -- SHA-256 of (connector, tool, canonical arguments): an approval runs exactly that call.
    digest        TEXT   NOT NULL,
    -- pending -> approved -> used, or pending -> denied.
    state         TEXT   NOT NULL,
    reason        TEXT   NOT NULL DEFAULT '',
    args_preview  TEXT   NOT NULL DEFAULT '',
    requested_ms  BIGINT NOT NULL,
    decided_ms    BIGINT NOT NULL DEFAULT 0,
    decided_by    TEXT   NOT NULL DEFAULT '',
    -- 0: waits for a person; otherwise denied as expired after this time.
    expires_ms    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX connector_approvals_session ON connector_approvals(session_id, digest);
CREATE INDEX connector_approvals_project ON connector_approvals(project_id, state);

CREATE TABLE connector_calls (
    id               BIGSERIAL PRIMARY KEY,
    at_ms            BIGINT  NOT NULL,
    project_id       TEXT    NOT NULL,
    session_id       TEXT    NOT NULL,
    connector        TEXT    NOT NULL,
    tool             TEXT    NOT NULL,
    digest           TEXT    NOT NULL,
    -- ok, error, denied or pending_approval.
    status           TEXT    NOT NULL,
    duration_ms      BIGINT  NOT NULL,
    upstream_status  BIGINT  NOT NULL DEFAULT 0,
    args_preview     TEXT    NOT NULL DEFAULT '',
    error            TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX connector_calls_project ON connector_calls(project_id, id);
CREATE INDEX connector_calls_session ON connector_calls(session_id, id);
