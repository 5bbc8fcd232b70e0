-- People, account membership, project grants, narrowed tokens and session launchers.
-- Keep in step with ../postgres/0004_people_members_grants.sql.
--
-- Until now an account was one person. Every existing account becomes a person with the same
-- id and name, and stays as that person's personal account, owned by them: a person's
-- personal account always shares the person's id. Projects keep their owning account.

CREATE TABLE people (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    -- The holder of the server's admin token (creates people); not an account role.
    server_admin  BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms    INTEGER NOT NULL
);
INSERT INTO people (id, name, server_admin, created_ms)
    SELECT id, name, admin, created_ms FROM accounts;

CREATE TABLE account_members (
    account_id  TEXT    NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    person_id   TEXT    NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    -- owner | admin | member
    role        TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (account_id, person_id)
);
CREATE INDEX account_members_person ON account_members(person_id);
INSERT INTO account_members (account_id, person_id, role, created_ms)
    SELECT id, id, 'owner', created_ms FROM accounts;

ALTER TABLE accounts DROP COLUMN admin;

CREATE TABLE project_grants (
    project_id  TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    person_id   TEXT    NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    -- manager | editor | viewer
    role        TEXT    NOT NULL,
    expires_ms  INTEGER,
    granted_by  TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (project_id, person_id)
);
CREATE INDEX project_grants_person ON project_grants(person_id);

-- Tokens belong to people; a token may be narrowed to one project and role, and expire.
CREATE TABLE api_tokens_v2 (
    id            TEXT    NOT NULL PRIMARY KEY,
    person_id     TEXT    NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    token_hash    TEXT    NOT NULL UNIQUE,
    created_ms    INTEGER NOT NULL,
    last_used_ms  INTEGER,
    revoked_ms    INTEGER,
    project_id    TEXT    REFERENCES projects(id) ON DELETE CASCADE,
    role          TEXT,
    expires_ms    INTEGER
);
INSERT INTO api_tokens_v2 (id, person_id, name, token_hash, created_ms, last_used_ms, revoked_ms)
    SELECT id, account_id, name, token_hash, created_ms, last_used_ms, revoked_ms FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_v2 RENAME TO api_tokens;
CREATE INDEX api_tokens_person ON api_tokens(person_id);

-- Who started a session: person:<id>, token:<id> or trigger:<slug>.
ALTER TABLE sessions ADD COLUMN launched_by TEXT NOT NULL DEFAULT '';
