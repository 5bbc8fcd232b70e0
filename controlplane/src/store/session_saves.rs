//! What a session's last sandbox saved for a resume (`session_saves`), and the resume's own
//! status move. What a save means and who may resume live in `crate::sessions::resume`; this
//! module knows rows.

use super::{DbContext, Error, Result, SessionStatus, Store, placeholders, with_pool};
use crate::clock::now_ms;

/// Largest conversation kept per session (OpenCode's export, JSON).
pub const MAX_CONVERSATION_BYTES: usize = 8 * 1024 * 1024;
/// Longest note kept (what happened to the uncommitted work or the conversation).
const MAX_NOTE_BYTES: usize = 1024;

/// A save as people see it: everything but the conversation's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionSave {
    pub session_id: String,
    /// The commit at `refs/kortix/wip/<session>`; empty when nothing uncommitted was saved.
    pub wip_commit: String,
    pub wip_note: String,
    /// Size of the stored conversation; 0 when none is stored.
    pub conversation_bytes: i64,
    pub conversation_note: String,
    pub opencode_session: String,
    pub saved_ms: i64,
}

/// What an agent hands over when it winds down.
#[derive(Debug, Clone, Default)]
pub struct NewSave<'a> {
    pub wip_commit: &'a str,
    pub wip_note: &'a str,
    pub conversation: Option<&'a [u8]>,
    pub conversation_note: &'a str,
    pub opencode_session: &'a str,
}

fn clip(s: &str) -> &str {
    if s.len() <= MAX_NOTE_BYTES {
        return s;
    }
    let mut end = MAX_NOTE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

const SAVE_COLUMNS: &str = "session_id, wip_commit, wip_note, conversation_bytes, conversation_note, opencode_session, saved_ms";

impl Store {
    /// Replaces the session's save. A conversation over [`MAX_CONVERSATION_BYTES`] is refused
    /// (the caller records why it was not kept).
    pub async fn save_session_work(&self, session_id: &str, save: &NewSave<'_>) -> Result<()> {
        if let Some(c) = save.conversation
            && c.len() > MAX_CONVERSATION_BYTES
        {
            return Err(Error::Invalid {
                what: "conversation",
                reason: format!(
                    "{} bytes, at most {MAX_CONVERSATION_BYTES} allowed",
                    c.len()
                ),
            });
        }
        if save.wip_commit.len() > 64 || save.opencode_session.len() > 256 {
            return Err(Error::Invalid {
                what: "save",
                reason: "commit or OpenCode session id too long".into(),
            });
        }
        let bytes = save.conversation.map_or(0, |c| c.len() as i64);
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO session_saves (session_id, wip_commit, wip_note, conversation,
                     conversation_bytes, conversation_note, opencode_session, saved_ms)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8
                 WHERE EXISTS (SELECT 1 FROM sessions WHERE id = $1)
                 ON CONFLICT (session_id) DO UPDATE SET
                     wip_commit = excluded.wip_commit, wip_note = excluded.wip_note,
                     conversation = excluded.conversation,
                     conversation_bytes = excluded.conversation_bytes,
                     conversation_note = excluded.conversation_note,
                     opencode_session = excluded.opencode_session, saved_ms = excluded.saved_ms",
            )
            .bind(session_id)
            .bind(save.wip_commit)
            .bind(clip(save.wip_note))
            .bind(save.conversation)
            .bind(bytes)
            .bind(clip(save.conversation_note))
            .bind(save.opencode_session)
            .bind(now_ms())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("saving the work of session {session_id}"))
        .and_then(|n| {
            if n == 1 {
                Ok(())
            } else {
                Err(Error::NotFound(format!("session {session_id}")))
            }
        })
    }

    /// The session's save, without the conversation's bytes; `None` when nothing was saved.
    pub async fn session_save(&self, session_id: &str) -> Result<Option<SessionSave>> {
        let sql = format!("SELECT {SAVE_COLUMNS} FROM session_saves WHERE session_id = $1");
        with_pool!(self, |pool| {
            sqlx::query_as::<_, SessionSave>(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(session_id)
                .fetch_optional(pool)
                .await
        })
        .ctx(|| format!("reading the save of session {session_id}"))
    }

    /// The saves of any of `session_ids` (those without one are absent).
    pub async fn session_saves_of(&self, session_ids: &[String]) -> Result<Vec<SessionSave>> {
        if session_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {SAVE_COLUMNS} FROM session_saves WHERE session_id IN ({})",
            placeholders(1, session_ids.len())
        );
        with_pool!(self, |pool| {
            let mut q = sqlx::query_as::<_, SessionSave>(sqlx::AssertSqlSafe(sql.as_str()));
            for id in session_ids {
                q = q.bind(id);
            }
            q.fetch_all(pool).await
        })
        .ctx(|| format!("reading the saves of {} sessions", session_ids.len()))
    }

    /// The saved conversation and its OpenCode session id; `None` when none is stored.
    pub async fn session_conversation(
        &self,
        session_id: &str,
    ) -> Result<Option<(Vec<u8>, String)>> {
        let row = with_pool!(self, |pool| {
            sqlx::query_as::<_, (Option<Vec<u8>>, String)>(
                "SELECT conversation, opencode_session FROM session_saves WHERE session_id = $1",
            )
            .bind(session_id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading the conversation of session {session_id}"))?;
        Ok(row.and_then(|(c, id)| c.filter(|c| !c.is_empty()).map(|c| (c, id))))
    }

    /// Moves a stopped or hibernated session to `resuming` for a new sandbox: its end is
    /// forgotten, `prompt` (when not empty) becomes the prompt to deliver once, and its time
    /// to come up counts from now. False when it is in no resumable state (or unknown).
    pub async fn begin_resume(&self, session_id: &str, prompt: &str) -> Result<bool> {
        if prompt.len() > super::sessions::MAX_PROMPT_BYTES {
            return Err(Error::Invalid {
                what: "prompt",
                reason: format!(
                    "{} bytes, at most {} allowed",
                    prompt.len(),
                    super::sessions::MAX_PROMPT_BYTES
                ),
            });
        }
        let now = now_ms();
        let moved = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE sessions SET status = $1,
                     prompt = CASE WHEN $2 = '' THEN prompt ELSE $2 END,
                     prompt_delivered = ($2 = ''),
                     ended_ms = NULL, failure_reason = '', exit_status = NULL,
                     last_heartbeat_ms = $3, idle_ms = 0, resumed_ms = $3,
                     resumes = resumes + 1
                 WHERE id = $4 AND status IN ($5, $6)",
            )
            .bind(SessionStatus::Resuming.as_str())
            .bind(prompt)
            .bind(now)
            .bind(session_id)
            .bind(SessionStatus::RESUMABLE[0].as_str())
            .bind(SessionStatus::RESUMABLE[1].as_str())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("resuming session {session_id}"));
        if !matches!(moved, Ok(0)) {
            self.agents_changed(super::AgentChange::Session(session_id.to_owned()))
                .await;
        }
        Ok(moved? == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{TestDb, account_and_project, session_in};

    async fn saves_and_resumes(db: TestDb) {
        let store = &db.store;
        let (_, project) = account_and_project(store, "web").await;
        let s = session_in(store, &project).await;
        assert_eq!(store.session_save(&s.id).await.unwrap(), None);
        assert_eq!(store.session_conversation(&s.id).await.unwrap(), None);
        // Only stopped and hibernated sessions resume.
        assert!(!store.begin_resume(&s.id, "go on").await.unwrap());
        assert!(!store.begin_resume("nope", "").await.unwrap());

        let conv = br#"{"info":{},"messages":[]}"#;
        store
            .save_session_work(
                &s.id,
                &NewSave {
                    wip_commit: "abc",
                    wip_note: "2 files",
                    conversation: Some(conv),
                    conversation_note: "",
                    opencode_session: "ses_1",
                },
            )
            .await
            .unwrap();
        let save = store.session_save(&s.id).await.unwrap().unwrap();
        assert_eq!(
            (save.wip_commit.as_str(), save.conversation_bytes),
            ("abc", conv.len() as i64)
        );
        assert_eq!(
            store.session_conversation(&s.id).await.unwrap(),
            Some((conv.to_vec(), "ses_1".to_string()))
        );
        // A later save replaces the earlier one.
        store
            .save_session_work(
                &s.id,
                &NewSave {
                    wip_note: "nothing uncommitted",
                    conversation_note: "conversation too large, not saved",
                    ..NewSave::default()
                },
            )
            .await
            .unwrap();
        let save = store.session_save(&s.id).await.unwrap().unwrap();
        assert_eq!((save.wip_commit.as_str(), save.conversation_bytes), ("", 0));
        assert_eq!(store.session_conversation(&s.id).await.unwrap(), None);
        assert_eq!(
            store
                .session_saves_of(&[s.id.clone(), "x".into()])
                .await
                .unwrap(),
            vec![save]
        );
        let big = vec![b'x'; MAX_CONVERSATION_BYTES + 1];
        let refused = store
            .save_session_work(
                &s.id,
                &NewSave {
                    conversation: Some(&big),
                    ..NewSave::default()
                },
            )
            .await;
        assert!(matches!(refused, Err(Error::Invalid { .. })), "{refused:?}");
        assert!(matches!(
            store.save_session_work("nope", &NewSave::default()).await,
            Err(Error::NotFound(_))
        ));

        assert!(
            store
                .transition_session(
                    &s.id,
                    &[SessionStatus::Provisioning],
                    SessionStatus::Hibernated,
                    Some("idle")
                )
                .await
                .unwrap()
        );
        assert!(store.begin_resume(&s.id, "go on").await.unwrap());
        let resumed = store.get_session(&s.id).await.unwrap();
        assert_eq!(resumed.status, SessionStatus::Resuming);
        assert_eq!(
            (resumed.prompt.as_str(), resumed.prompt_delivered),
            ("go on", false)
        );
        assert_eq!((resumed.resumes, resumed.ended_ms), (1, None));
        assert!(resumed.resumed_ms.is_some() && resumed.failure_reason.is_empty());
        // Twice in a row: the second finds it resuming already.
        assert!(!store.begin_resume(&s.id, "").await.unwrap());
        // An empty prompt keeps the old one and delivers nothing.
        store
            .transition_session(
                &s.id,
                &[SessionStatus::Resuming],
                SessionStatus::Stopped,
                None,
            )
            .await
            .unwrap();
        assert!(store.begin_resume(&s.id, "").await.unwrap());
        let resumed = store.get_session(&s.id).await.unwrap();
        assert_eq!(
            (
                resumed.prompt.as_str(),
                resumed.prompt_delivered,
                resumed.resumes
            ),
            ("go on", true, 2)
        );
    }

    crate::store::tests::both_backends!(saves_and_resumes);
}
