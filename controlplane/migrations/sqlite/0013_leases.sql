-- Background jobs that must run on one replica at a time (the session sweeper, the trigger
-- sweep, approval expiry) hold a named lease here, renewed while they run. A replica that
-- dies stops renewing and another takes the lease once it has expired.
-- Keep in step with ../postgres/0013_leases.sql.
CREATE TABLE leases (
    name        TEXT    NOT NULL PRIMARY KEY,
    holder      TEXT    NOT NULL,
    expires_ms  BIGINT  NOT NULL
);
