-- The renewal secret of each session's agent: a restarted agent of a live session proves it
-- is the same sandbox with it (AgentGateway.Reenroll) instead of its used bootstrap token.
-- Only the hash is kept; every Enroll/Reenroll replaces it, so a secret works once.
-- Keep in step with ../postgres/0012_agent_renewal_secrets.sql.
CREATE TABLE agent_renewal_secrets (
    session_id   TEXT    NOT NULL PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    secret_hash  TEXT    NOT NULL,
    created_ms   INTEGER  NOT NULL,
    rotated_ms   INTEGER  NOT NULL,
    -- How many times the agent re-enrolled with it.
    reenrolls    INTEGER  NOT NULL DEFAULT 0
);

-- Which agent stream holds the session now, as `<replica>/<connection>`: set by the replica
-- the agent (re)connects to, so that a replica still holding a stale stream of an agent that
-- moved to another replica hands its prompts over instead of sending them into the void.
ALTER TABLE sessions ADD COLUMN agent_conn TEXT;
