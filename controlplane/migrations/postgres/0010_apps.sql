-- [[apps]] (experimental, KORTIX_APPS_EXPERIMENTAL=true): what the deploy sweep knows of each
-- app and which deployment is served. Keep in step with ../sqlite/0010_apps.sql.
CREATE TABLE apps (
    project_id          TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    slug                TEXT    NOT NULL,
    name                TEXT    NOT NULL DEFAULT '',
    -- Served at all: false once the manifest disables or drops the app.
    enabled             BOOLEAN NOT NULL DEFAULT TRUE,
    -- The manifest-derived hash the deploy sweep last claimed. Moving it is a conditional
    -- update that exactly one replica wins, so a hash is built once however many sweep.
    swept_hash          TEXT    NOT NULL DEFAULT '',
    -- The deployment served; NULL until one succeeded.
    active_deployment   TEXT,
    updated_ms          BIGINT  NOT NULL,
    PRIMARY KEY (project_id, slug)
);

-- One row per deployment: its manifest config and hash, build status and the tail of its log.
CREATE TABLE app_deployments (
    id               TEXT    NOT NULL PRIMARY KEY,
    project_id       TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    slug             TEXT    NOT NULL,
    hash             TEXT    NOT NULL,
    -- The normalized [[apps]] entry (JSON) the deployment was built from.
    config           TEXT    NOT NULL,
    -- sweep | manual
    reason           TEXT    NOT NULL,
    -- building | succeeded | failed
    status           TEXT    NOT NULL,
    source_revision  TEXT    NOT NULL DEFAULT '',
    logs             TEXT    NOT NULL DEFAULT '',
    failure_reason   TEXT    NOT NULL DEFAULT '',
    -- The replica building it and when it last said so (a stale claim is an abandoned build).
    builder          TEXT    NOT NULL DEFAULT '',
    claimed_ms       BIGINT,
    requested_by     TEXT    NOT NULL DEFAULT '',
    created_ms       BIGINT  NOT NULL,
    finished_ms      BIGINT
);
CREATE INDEX app_deployments_app ON app_deployments(project_id, slug, id);
CREATE INDEX app_deployments_building ON app_deployments(status) WHERE status = 'building';

-- Custom domains of the served deployments, for serving by Host header. The first app to
-- claim a domain keeps it.
CREATE TABLE app_domains (
    domain      TEXT NOT NULL PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    slug        TEXT NOT NULL
);
CREATE INDEX app_domains_app ON app_domains(project_id, slug);
