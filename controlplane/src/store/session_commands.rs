//! Control frames for the replica that holds their session's agent, kept until the agent
//! acks them. What a frame means and who may send one live in `crate::sessions::commands`;
//! this module knows rows.
//!
//! A row is queued (with the session's next command seq), then sent — marked with the agent
//! stream it went to, when, and how often — possibly several times (a new stream, a resend
//! timeout), then acked by the agent. Acked rows are kept, the newest
//! [`KEPT_DELIVERED_PER_SESSION`] of a session, so that a client can ask what became of one.

use super::{BeginWrite, DbContext, Result, Store, with_pool};
use crate::clock::now_ms;

/// The channel replicas hear "session S has commands" (payload: the session id) and
/// "command C was acked" (payload: [`ACK_PREFIX`] then the command id) on.
pub const COMMAND_CHANNEL: &str = "kortix_command";
/// Marks an ack's payload on [`COMMAND_CHANNEL`] (session ids never start with it).
pub const ACK_PREFIX: &str = "ack:";
/// Longest frame kept (a prompt is capped far below this).
pub const MAX_COMMAND_BYTES: usize = 256 * 1024;
/// Commands waiting (not acked) per session at most: more are refused, not queued.
pub const MAX_COMMANDS_PER_SESSION: i64 = 64;
/// Delivered commands remembered per session, for [`Store::command_status`].
pub const KEPT_DELIVERED_PER_SESSION: i64 = 64;

/// A command queued for a session's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedCommand {
    pub id: String,
    /// Per session, from 1, in queueing order.
    pub seq: i64,
}

/// Commands taken to be sent to an agent stream, oldest first.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TakenCommands {
    pub commands: Vec<TakenCommand>,
    /// The lowest seq of the session's commands not acked yet: everything below is acked.
    pub floor: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct TakenCommand {
    pub id: String,
    pub seq: i64,
    /// A prost-encoded `kortix.v1.ControlFrame`, without its command reference.
    pub frame: Vec<u8>,
    /// How many times it has been sent, this time included.
    pub sends: i64,
}

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandState {
    Queued,
    Sent,
    Delivered,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandStatus {
    pub id: String,
    pub state: CommandState,
    pub sends: i64,
    pub created_ms: i64,
    pub acked_ms: Option<i64>,
}

impl Store {
    /// Queues an encoded frame as command `id` for the session's agent, with the session's
    /// next command seq, and (when `wake`) wakes the other replicas. `None` when the session
    /// already has [`MAX_COMMANDS_PER_SESSION`] commands waiting.
    pub async fn queue_session_command(
        &self,
        session_id: &str,
        id: &str,
        frame: &[u8],
        wake: bool,
    ) -> Result<Option<QueuedCommand>> {
        if frame.len() > MAX_COMMAND_BYTES {
            return Err(super::Error::Invalid {
                what: "session command",
                reason: format!("command {id} is larger than {MAX_COMMAND_BYTES} bytes"),
            });
        }
        let now = now_ms();
        let queued = with_pool!(self, |pool| {
            async {
                let mut tx = pool.begin_write().await?;
                // Bumping first takes the session's row lock: concurrent queuers get
                // distinct seqs in commit order, and count the waiting rows one at a time.
                let Some(seq) = sqlx::query_scalar::<_, i64>(
                    "UPDATE sessions SET command_seq = command_seq + 1
                     WHERE id = $1 RETURNING command_seq",
                )
                .bind(session_id)
                .fetch_optional(&mut *tx)
                .await?
                else {
                    return Ok(Err(super::Error::NotFound(format!("session {session_id}"))));
                };
                let waiting = sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM session_commands
                     WHERE session_id = $1 AND acked_ms IS NULL",
                )
                .bind(session_id)
                .fetch_one(&mut *tx)
                .await?;
                if waiting >= MAX_COMMANDS_PER_SESSION {
                    tx.rollback().await?;
                    return Ok(Ok(None));
                }
                sqlx::query(
                    "INSERT INTO session_commands (id, session_id, frame, created_ms, seq)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id)
                .bind(session_id)
                .bind(frame)
                .bind(now)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Ok(Some(QueuedCommand {
                    id: id.to_string(),
                    seq,
                })))
            }
            .await
        })
        .ctx(|| format!("queueing command {id} for session {session_id}"))??;
        if queued.is_some() && wake {
            self.notify_on(COMMAND_CHANNEL, &[session_id.to_string()])
                .await?;
        }
        Ok(queued)
    }

    /// Forgets the commands of an ended session: nobody will take them.
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

    /// Takes the session's commands to send to agent stream `stream`, marking them sent
    /// there: those not acked and never sent to that stream, or sent to it before
    /// `resend_before_ms` (the agent should have acked by then). Commands already sent
    /// `max_sends` times are left alone (see [`Store::drop_unacked_commands`]).
    pub async fn take_session_commands(
        &self,
        session_id: &str,
        stream: &str,
        resend_before_ms: i64,
        max_sends: i64,
    ) -> Result<TakenCommands> {
        let now = now_ms();
        let (rows, floor) = with_pool!(self, |pool| {
            async {
                let rows = sqlx::query_as::<_, (i64, String, Vec<u8>, i64)>(
                    "UPDATE session_commands
                     SET sent_to = $2, sent_ms = $3, sends = sends + 1
                     WHERE session_id = $1 AND acked_ms IS NULL AND sends < $5
                       AND (sent_to IS NULL OR sent_to <> $2 OR sent_ms < $4)
                     RETURNING seq, id, frame, sends",
                )
                .bind(session_id)
                .bind(stream)
                .bind(now)
                .bind(resend_before_ms)
                .bind(max_sends)
                .fetch_all(pool)
                .await?;
                let floor = sqlx::query_scalar::<_, Option<i64>>(
                    "SELECT MIN(seq) FROM session_commands
                     WHERE session_id = $1 AND acked_ms IS NULL",
                )
                .bind(session_id)
                .fetch_one(pool)
                .await?;
                Ok::<_, sqlx::Error>((rows, floor))
            }
            .await
        })
        .ctx(|| format!("taking the commands of session {session_id}"))?;
        let mut rows = rows;
        // RETURNING has no order: the frames go out as they were queued.
        rows.sort();
        let floor = rows
            .first()
            .map(|r| r.0)
            .into_iter()
            .chain(floor)
            .min()
            .unwrap_or(0);
        Ok(TakenCommands {
            commands: rows
                .into_iter()
                .map(|(seq, id, frame, sends)| TakenCommand {
                    id,
                    seq,
                    frame,
                    sends,
                })
                .collect(),
            floor,
        })
    }

    /// Marks command `id` of the session delivered (its agent acked it) and forgets the
    /// session's delivered commands beyond the newest [`KEPT_DELIVERED_PER_SESSION`]. False
    /// when it was acked before or is unknown.
    pub async fn ack_session_command(&self, session_id: &str, id: &str) -> Result<bool> {
        let now = now_ms();
        let acked = with_pool!(self, |pool| {
            async {
                let acked = sqlx::query_scalar::<_, i64>(
                    "UPDATE session_commands SET acked_ms = $3
                     WHERE session_id = $1 AND id = $2 AND acked_ms IS NULL
                     RETURNING seq",
                )
                .bind(session_id)
                .bind(id)
                .bind(now)
                .fetch_optional(pool)
                .await?;
                if let Some(seq) = acked {
                    sqlx::query(
                        "DELETE FROM session_commands
                         WHERE session_id = $1 AND acked_ms IS NOT NULL AND seq <= $2",
                    )
                    .bind(session_id)
                    .bind(seq - KEPT_DELIVERED_PER_SESSION)
                    .execute(pool)
                    .await?;
                }
                Ok::<_, sqlx::Error>(acked.is_some())
            }
            .await
        })
        .ctx(|| format!("acking command {id} of session {session_id}"))?;
        Ok(acked)
    }

    /// Where command `id` of the session is; `None` when unknown or forgotten.
    pub async fn command_status(
        &self,
        session_id: &str,
        id: &str,
    ) -> Result<Option<CommandStatus>> {
        let row = with_pool!(self, |pool| {
            sqlx::query_as::<_, (i64, Option<i64>, i64, Option<i64>)>(
                "SELECT created_ms, sent_ms, sends, acked_ms FROM session_commands
                 WHERE session_id = $1 AND id = $2",
            )
            .bind(session_id)
            .bind(id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading command {id} of session {session_id}"))?;
        Ok(
            row.map(|(created_ms, sent_ms, sends, acked_ms)| CommandStatus {
                id: id.to_string(),
                state: match (acked_ms, sent_ms) {
                    (Some(_), _) => CommandState::Delivered,
                    (None, Some(_)) => CommandState::Sent,
                    (None, None) => CommandState::Queued,
                },
                sends,
                created_ms,
                acked_ms,
            }),
        )
    }

    /// Sessions with commands not acked that were sent before `before_ms`, or queued before
    /// it and never sent (the wake-up was lost): they are due a send.
    pub async fn sessions_with_unacked_commands(&self, before_ms: i64) -> Result<Vec<String>> {
        with_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>(
                "SELECT DISTINCT session_id FROM session_commands
                 WHERE acked_ms IS NULL AND COALESCE(sent_ms, created_ms) < $1",
            )
            .bind(before_ms)
            .fetch_all(pool)
            .await
        })
        .ctx(|| "finding unacked commands".to_string())
    }

    /// Deletes the commands sent `max_sends` times, the last before `sent_before_ms`, and
    /// still not acked (an agent that takes them and never answers); returns them as
    /// `(session, command)`.
    pub async fn drop_unacked_commands(
        &self,
        max_sends: i64,
        sent_before_ms: i64,
    ) -> Result<Vec<(String, String)>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, (String, String)>(
                "DELETE FROM session_commands
                 WHERE acked_ms IS NULL AND sends >= $1 AND sent_ms < $2
                 RETURNING session_id, id",
            )
            .bind(max_sends)
            .bind(sent_before_ms)
            .fetch_all(pool)
            .await
        })
        .ctx(|| "dropping commands never acked".to_string())
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::{TestDb, account_and_project, both_backends, session_in};
    use super::*;

    both_backends!(
        commands_are_queued_taken_in_order_and_bounded,
        commands_are_resent_until_acked,
    );

    fn ids(taken: &TakenCommands) -> Vec<(i64, Vec<u8>)> {
        taken
            .commands
            .iter()
            .map(|c| (c.seq, c.frame.clone()))
            .collect()
    }

    async fn commands_are_queued_taken_in_order_and_bounded(db: TestDb) {
        let store = &db.store;
        let (_, project) = account_and_project(store, "web").await;
        let session = session_in(store, &project).await;
        let take = |stream: &'static str| store.take_session_commands(&session.id, stream, 0, 10);
        assert_eq!(take("r/1").await.unwrap(), TakenCommands::default());
        for i in 0..3u8 {
            let queued = store
                .queue_session_command(&session.id, &format!("c{i}"), &[i], true)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(queued.seq, i64::from(i) + 1);
        }
        let first = take("r/1").await.unwrap();
        assert_eq!(ids(&first), [(1, vec![0]), (2, vec![1]), (3, vec![2])]);
        assert_eq!(first.floor, 1);
        assert!(first.commands.iter().all(|c| c.sends == 1));
        assert!(
            take("r/1").await.unwrap().commands.is_empty(),
            "taken once per stream"
        );
        let status = store
            .command_status(&session.id, "c0")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((status.state, status.sends), (CommandState::Sent, 1));

        // Sent commands still count against the bound until acked.
        for i in 3..MAX_COMMANDS_PER_SESSION {
            assert!(
                store
                    .queue_session_command(&session.id, &format!("c{i}"), b"x", false)
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        assert_eq!(
            store
                .queue_session_command(&session.id, "over", b"x", true)
                .await
                .unwrap(),
            None,
            "a full queue refuses more"
        );
        assert!(store.ack_session_command(&session.id, "c0").await.unwrap());
        let next = store
            .queue_session_command(&session.id, "after", b"x", true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            next.seq,
            MAX_COMMANDS_PER_SESSION + 1,
            "a refused command takes no seq"
        );
        let huge = vec![0u8; MAX_COMMAND_BYTES + 1];
        assert!(
            store
                .queue_session_command(&session.id, "huge", &huge, true)
                .await
                .is_err()
        );
        assert!(
            store
                .queue_session_command("no-such-session", "c", b"x", true)
                .await
                .is_err()
        );
    }

    async fn commands_are_resent_until_acked(db: TestDb) {
        let store = &db.store;
        let (_, project) = account_and_project(store, "web").await;
        let session = session_in(store, &project).await;
        for id in ["a", "b", "c"] {
            store
                .queue_session_command(&session.id, id, id.as_bytes(), true)
                .await
                .unwrap()
                .unwrap();
        }
        let now = now_ms();
        let sent = store
            .take_session_commands(&session.id, "r1/1", now, 3)
            .await
            .unwrap();
        assert_eq!(sent.commands.len(), 3);
        assert!(store.ack_session_command(&session.id, "a").await.unwrap());
        assert!(
            !store.ack_session_command(&session.id, "a").await.unwrap(),
            "acked once"
        );
        assert!(
            !store.ack_session_command("other", "b").await.unwrap(),
            "only the session's own agent acks its commands"
        );
        assert_eq!(
            store
                .command_status(&session.id, "a")
                .await
                .unwrap()
                .unwrap()
                .state,
            CommandState::Delivered
        );
        // Not acked in time: sent again to the same stream once the resend time has come.
        assert!(
            store
                .take_session_commands(&session.id, "r1/1", now - 1, 3)
                .await
                .unwrap()
                .commands
                .is_empty()
        );
        assert_eq!(
            store.sessions_with_unacked_commands(now + 1).await.unwrap(),
            std::slice::from_ref(&session.id)
        );
        let resent = store
            .take_session_commands(&session.id, "r1/1", now_ms() + 1, 3)
            .await
            .unwrap();
        assert_eq!(ids(&resent), [(2, b"b".to_vec()), (3, b"c".to_vec())]);
        assert_eq!(resent.floor, 2, "everything below b is acked");
        // A new stream (the agent reconnected, here or elsewhere) gets them at once.
        let moved = store
            .take_session_commands(&session.id, "r2/7", 0, 3)
            .await
            .unwrap();
        assert_eq!(
            moved.commands.iter().map(|c| c.sends).collect::<Vec<_>>(),
            [3, 3]
        );
        assert!(store.ack_session_command(&session.id, "c").await.unwrap());
        // b was sent three times without an ack: it is not sent again, and it is dropped
        // once it had its time to be acked.
        assert!(
            store
                .drop_unacked_commands(3, now - 1)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .take_session_commands(&session.id, "r3/1", 0, 3)
                .await
                .unwrap()
                .commands
                .is_empty()
        );
        assert_eq!(
            store.drop_unacked_commands(3, now_ms() + 1).await.unwrap(),
            [(session.id.clone(), "b".to_string())]
        );
        assert!(
            store
                .command_status(&session.id, "b")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            store
                .take_session_commands(&session.id, "r3/1", 0, 3)
                .await
                .unwrap()
                .floor,
            0,
            "nothing waits"
        );
        store.clear_session_commands(&session.id).await.unwrap();
        assert!(
            store
                .command_status(&session.id, "c")
                .await
                .unwrap()
                .is_none()
        );
    }
}
