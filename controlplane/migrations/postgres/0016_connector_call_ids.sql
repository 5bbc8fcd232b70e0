-- A connector call's id, so a row replayed from a crashed process's journal is not stored
-- twice. Rows logged before this migration have none (NULLs do not collide).
ALTER TABLE connector_calls ADD COLUMN call_id TEXT;
CREATE UNIQUE INDEX connector_calls_call_id ON connector_calls(call_id);
