-- People, account membership, project grants, narrowed tokens and session launchers.
-- Keep in step with ../sqlite/0004_people_members_grants.sql.
--
-- Until now an account was one person. Every existing account becomes a person with the same
-- id and name, and stays as that person's personal account, owned by them: a person's
-- personal account always shares the person's id. Projects keep their owning account.

CREATE TABLE people (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    -- The holder of the server's admin token (creates people); not an account role.
    server_admin  BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms    BIGINT  NOT NULL
);
INSERT INTO people (id, name, server_admin, created_ms)
    SELECT id, name, admin, created_ms FROM accounts;

CREATE TABLE account_members (
    account_id  TEXT    NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    person_id   TEXT    NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    -- owner | admin | member
    role        TEXT    NOT NULL,
    created_ms  BIGINT  NOT NULL,
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
    expires_ms  BIGINT,
    granted_by  TEXT    NOT NULL,
    created_ms  BIGINT  NOT NULL,
    PRIMARY KEY (project_id, person_id)
);
CREATE INDEX project_grants_person ON project_grants(person_id);

-- Tokens belong to people; a token may be narrowed to one project and role, and expire.
ALTER TABLE api_tokens RENAME COLUMN account_id TO person_id;
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_account_id_fkey;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_person_id_fkey
    FOREIGN KEY (person_id) REFERENCES people(id) ON DELETE CASCADE;
ALTER INDEX api_tokens_account RENAME TO api_tokens_person;
ALTER TABLE api_tokens ADD COLUMN project_id TEXT REFERENCES projects(id) ON DELETE CASCADE;
ALTER TABLE api_tokens ADD COLUMN role TEXT;
ALTER TABLE api_tokens ADD COLUMN expires_ms BIGINT;

-- Who started a session: person:<id>, token:<id> or trigger:<slug>.
ALTER TABLE sessions ADD COLUMN launched_by TEXT NOT NULL DEFAULT '';
