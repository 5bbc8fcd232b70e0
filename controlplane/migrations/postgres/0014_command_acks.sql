-- Commands for a session's agent are kept until the agent acks them: a replica that sends
-- one marks it sent (to which stream, when, how often) instead of deleting it, so that a
-- replica that dies before the agent has it leaves it to be sent again when the agent
-- reconnects anywhere. Each carries a per-session seq the agent deduplicates by. Acked
-- commands are kept (the newest 64 per session) so that a client can ask what became of one.
-- Keep in step with ../sqlite/0014_command_acks.sql.
ALTER TABLE session_commands ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE session_commands ADD COLUMN sent_to TEXT;
ALTER TABLE session_commands ADD COLUMN sent_ms BIGINT;
ALTER TABLE session_commands ADD COLUMN sends BIGINT NOT NULL DEFAULT 0;
ALTER TABLE session_commands ADD COLUMN acked_ms BIGINT;
-- The last seq given to one of the session's commands.
ALTER TABLE sessions ADD COLUMN command_seq BIGINT NOT NULL DEFAULT 0;

-- The renewal secret a Reenroll replaced stays good (for a short while) until the agent has
-- shown it holds the new one (connected, or re-enrolled with it): a Reenroll answer lost on
-- the way must not strand the agent with a refused secret.
ALTER TABLE agent_renewal_secrets ADD COLUMN previous_hash TEXT;
