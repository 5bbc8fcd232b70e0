-- The audit log: every privileged action, appended and never changed through the API.
-- Keep in step with ../postgres/0005_audit.sql.
--
-- No foreign keys: the log outlives the projects, people and tokens it names, so names are
-- copied in when an event is written.

CREATE TABLE audit_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms         BIGINT NOT NULL,
    -- The account the action happened in (a project's owning account).
    account_id    TEXT   NOT NULL,
    project_id    TEXT   NOT NULL DEFAULT '',
    project_name  TEXT   NOT NULL DEFAULT '',
    -- person:<id>, or trigger:<slug> for what a trigger did.
    actor         TEXT   NOT NULL,
    actor_name    TEXT   NOT NULL,
    -- The bearer token used; empty when none (a trigger).
    token_id      TEXT   NOT NULL DEFAULT '',
    -- What was done, e.g. change_request.merge, secret.set, access.grant.
    action        TEXT   NOT NULL,
    -- What it was done to: a change request number, a secret's name, a person, a session.
    target        TEXT   NOT NULL DEFAULT '',
    detail        TEXT   NOT NULL DEFAULT '',
    -- The caller's address as the public listener saw it.
    from_addr     TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_account ON audit_events(account_id, id);
