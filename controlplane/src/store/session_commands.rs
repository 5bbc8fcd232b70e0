//! Control frames waiting for the replica that holds their session's agent. What a frame
//! means and who may send one live in `crate::sessions::commands`; this module knows rows.

use super::{DbContext, Result, Store, new_id, with_pool};
use crate::clock::now_ms;

/// The channel replicas hear "session S has commands" on.
pub const COMMAND_CHANNEL: &str = "kortix_command";
/// Longest frame kept (a prompt is capped far below this).
pub const MAX_COMMAND_BYTES: usize = 256 * 1024;
/// Commands waiting per session at most: more are refused, not queued.
pub const MAX_COMMANDS_PER_SESSION: i64 = 64;

impl Store {
    /// Queues an encoded frame for the session's agent and wakes the other replicas. False
    /// when the session already has [`MAX_COMMANDS_PER_SESSION`] waiting.
    pub async fn queue_session_command(&self, session_id: &str, frame: &[u8]) -> Result<bool> {
        if frame.len() > MAX_COMMAND_BYTES {
            return Err(super::Error::Invalid {
                what: "session command",
                reason: format!("larger than {MAX_COMMAND_BYTES} bytes"),
            });
        }
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO session_commands (id, session_id, frame, created_ms)
                 SELECT $1, $2, $3, $4
                 WHERE (SELECT COUNT(*) FROM session_commands WHERE session_id = $2) < $5",
            )
            .bind(new_id())
            .bind(session_id)
            .bind(frame)
            .bind(now_ms())
            .bind(MAX_COMMANDS_PER_SESSION)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("queueing a command for session {session_id}"))?;
        if inserted == 1 {
            self.notify_on(COMMAND_CHANNEL, &[session_id.to_string()])
                .await?;
        }
        Ok(inserted == 1)
    }

    /// Forgets the frames still waiting for an ended session's agent: nobody will take them.
    pub async fn clear_session_commands(&self, session_id: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM session_commands WHERE session_id = $1")
                .bind(session_id)
                .execute(pool)
                .await
                .map(|_| ())
        })
        .ctx(|| format!("clearing the commands of session {session_id}"))
    }

    /// Records that the agent stream `key` (`<replica>/<connection>`) holds the session now.
    pub async fn set_agent_conn(&self, session_id: &str, key: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE sessions SET agent_conn = $2 WHERE id = $1")
                .bind(session_id)
                .bind(key)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .ctx(|| format!("recording the agent stream of session {session_id}"))?;
        Ok(())
    }

    /// Forgets the session's agent stream if it is still `key`.
    pub async fn clear_agent_conn(&self, session_id: &str, key: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE sessions SET agent_conn = NULL WHERE id = $1 AND agent_conn = $2")
                .bind(session_id)
                .bind(key)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .ctx(|| format!("forgetting the agent stream of session {session_id}"))?;
        Ok(())
    }

    /// The agent stream that holds the session (`<replica>/<connection>`), if any.
    pub async fn agent_conn(&self, session_id: &str) -> Result<Option<String>> {
        let found = with_pool!(self, |pool| {
            sqlx::query_scalar::<_, Option<String>>("SELECT agent_conn FROM sessions WHERE id = $1")
                .bind(session_id)
                .fetch_optional(pool)
                .await
        })
        .ctx(|| format!("reading the agent stream of session {session_id}"))?;
        Ok(found.flatten())
    }

    /// Takes the session's waiting frames, oldest first: whoever takes them delivers them.
    pub async fn take_session_commands(&self, session_id: &str) -> Result<Vec<Vec<u8>>> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as::<_, (i64, String, Vec<u8>)>(
                "DELETE FROM session_commands WHERE session_id = $1
                 RETURNING created_ms, id, frame",
            )
            .bind(session_id)
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("taking the commands of session {session_id}"))?;
        let mut rows = rows;
        // RETURNING has no order: the frames go out as they were queued.
        rows.sort();
        Ok(rows.into_iter().map(|(_, _, frame)| frame).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{TestDb, account_and_project, both_backends, session_in};
    use super::*;

    both_backends!(commands_are_queued_taken_in_order_and_bounded);

    async fn commands_are_queued_taken_in_order_and_bounded(db: TestDb) {
        let store = &db.store;
        let (_, project) = account_and_project(store, "web").await;
        let session = session_in(store, &project).await;
        assert!(
            store
                .take_session_commands(&session.id)
                .await
                .unwrap()
                .is_empty()
        );
        for i in 0..3u8 {
            assert!(
                store
                    .queue_session_command(&session.id, &[i])
                    .await
                    .unwrap()
            );
        }
        assert_eq!(
            store.take_session_commands(&session.id).await.unwrap(),
            [vec![0], vec![1], vec![2]]
        );
        assert!(
            store
                .take_session_commands(&session.id)
                .await
                .unwrap()
                .is_empty(),
            "taken once"
        );
        for _ in 0..MAX_COMMANDS_PER_SESSION {
            assert!(
                store
                    .queue_session_command(&session.id, b"x")
                    .await
                    .unwrap()
            );
        }
        assert!(
            !store
                .queue_session_command(&session.id, b"x")
                .await
                .unwrap(),
            "a full queue refuses more"
        );
        let huge = vec![0u8; MAX_COMMAND_BYTES + 1];
        assert!(
            store
                .queue_session_command(&session.id, &huge)
                .await
                .is_err()
        );
        assert!(
            store
                .queue_session_command("no-such-session", b"x")
                .await
                .is_err()
        );
    }
}
