//! Heartbeats: answered from memory, written to the store in batches.
//!
//! A heartbeat says "this agent is alive and has been idle for N ms". Storing each one before
//! answering made every heartbeat a durable commit: 10,000 agents every 10 s were 1,000
//! commits a second, each an fsync on SQLite, and the round trip's tail was the disk's. The
//! answer needs only a live stream; the store needs the newest value per session soon enough
//! for the sweeper, whose deadlines (heartbeat loss, idle hibernation) are tens of seconds to
//! minutes. So the newest heartbeat per session waits in a map and all of them are written in
//! one transaction every [`FLUSH_INTERVAL`], and once more at shutdown.

use super::Sessions;
use crate::store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How stale a heartbeat in the store may be, at most (plus one commit).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Beat {
    idle_ms: i64,
    at_ms: i64,
}

/// What one flush did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    pub stored: usize,
    /// Sessions that beat although they have ended.
    pub ended: Vec<String>,
}

/// The newest unstored heartbeat of each session. Bounded by the number of connected agents.
#[derive(Default)]
pub struct HeartbeatBook {
    pending: Mutex<HashMap<Arc<str>, Beat>>,
}

impl HeartbeatBook {
    pub fn record(&self, session_id: &Arc<str>, idle_ms: i64, at_ms: i64) {
        let mut pending = self.pending.lock().expect("heartbeat book lock");
        pending.insert(session_id.clone(), Beat { idle_ms, at_ms });
    }

    pub fn pending(&self) -> usize {
        self.pending.lock().expect("heartbeat book lock").len()
    }

    /// Writes every pending heartbeat in one transaction; returns how many it wrote and the
    /// sessions whose beats were refused because they have ended. On failure the beats go
    /// back into the map (unless a newer one arrived meanwhile) for the next flush.
    pub async fn flush(&self, store: &Store) -> crate::store::Result<Flushed> {
        let taken = std::mem::take(&mut *self.pending.lock().expect("heartbeat book lock"));
        if taken.is_empty() {
            return Ok(Flushed::default());
        }
        let beats: Vec<(&str, i64, i64)> = taken
            .iter()
            .map(|(id, b)| (&**id, b.idle_ms, b.at_ms))
            .collect();
        match store.record_heartbeats(&beats).await {
            Ok(ended) => Ok(Flushed {
                stored: taken.len() - ended.len(),
                ended,
            }),
            Err(e) => {
                let mut pending = self.pending.lock().expect("heartbeat book lock");
                for (id, beat) in taken {
                    pending.entry(id).or_insert(beat);
                }
                Err(e)
            }
        }
    }
}

impl Sessions {
    /// Flushes heartbeats every [`FLUSH_INTERVAL`] until `shutdown` resolves, then once more.
    pub async fn run_heartbeat_flusher(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let last = tokio::select! {
                _ = &mut shutdown => true,
                _ = tick.tick() => false,
            };
            match self.heartbeats.flush(&self.store).await {
                Ok(flushed) => {
                    for id in &flushed.ended {
                        self.stop_agent_of_ended(id).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, pending = self.heartbeats.pending(), "storing heartbeats; retrying next flush");
                }
            }
            if last {
                return;
            }
        }
    }
}

impl Sessions {
    /// Tells an agent connected here that its session has ended. The replica that ended it
    /// tells only the agents connected to itself; this one learns it when the store refuses
    /// the agent's heartbeat (after a pause of this process, a lost database, a race).
    async fn stop_agent_of_ended(&self, id: &str) {
        if !self.hub.is_connected(id) {
            return;
        }
        let session = match self.store.get_session(id).await {
            Ok(s) if s.status.is_terminal() => s,
            Ok(_) => return,
            Err(e) => {
                if !e.is_not_found() {
                    tracing::warn!(session = %id, error = %e, "reading an ended session");
                }
                return;
            }
        };
        tracing::warn!(session = %id, status = %session.status, "the session ended elsewhere while its agent streams here; stopping the agent");
        let _ = self
            .hub
            .send_control(id, super::lifecycle::ended_frame(session.status));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{TestDb, account_and_project, session_in};
    use crate::store::{Project, SessionStatus};

    async fn running_session(store: &Store, project: &Project) -> Arc<str> {
        let s = session_in(store, project).await;
        let moved = store
            .transition_session(
                &s.id,
                &[SessionStatus::Provisioning],
                SessionStatus::Running,
                None,
            )
            .await
            .unwrap();
        assert!(moved);
        s.id.into()
    }

    async fn flushes_the_newest_beat_of_each_session(db: TestDb) {
        let store = &db.store;
        let (_, project) = account_and_project(store, "web").await;
        let mut ids: Vec<Arc<str>> = Vec::new();
        for _ in 0..3 {
            ids.push(running_session(store, &project).await);
        }
        let book = HeartbeatBook::default();
        book.record(&ids[0], 10, 1_000);
        book.record(&ids[0], 20, 2_000);
        book.record(&ids[1], 30, 3_000);
        // Unknown sessions are skipped, not an error for the others.
        book.record(&Arc::from("ghost"), 1, 1);
        let flushed = book.flush(store).await.unwrap();
        assert_eq!(flushed.stored, 2);
        assert_eq!(flushed.ended, ["ghost"]);
        assert_eq!(book.pending(), 0);
        let a = store.get_session(&ids[0]).await.unwrap();
        assert_eq!((a.idle_ms, a.last_heartbeat_ms), (20, Some(2_000)));
        let b = store.get_session(&ids[1]).await.unwrap();
        assert_eq!((b.idle_ms, b.last_heartbeat_ms), (30, Some(3_000)));
        assert_eq!(
            store.get_session(&ids[2]).await.unwrap().last_heartbeat_ms,
            None
        );
        assert_eq!(book.flush(store).await.unwrap(), Flushed::default());
    }

    async fn a_failed_flush_keeps_the_beats(db: TestDb) {
        let store = &db.store;
        let (_, project) = account_and_project(store, "web").await;
        let id = running_session(store, &project).await;
        let book = HeartbeatBook::default();
        book.record(&id, 5, 5_000);
        store.close().await;
        assert!(book.flush(store).await.is_err());
        assert_eq!(book.pending(), 1);
        let reopened = db.reopen().await;
        assert_eq!(book.flush(&reopened).await.unwrap().stored, 1);
        assert_eq!(reopened.get_session(&id).await.unwrap().idle_ms, 5);
    }

    crate::store::tests::both_backends!(
        flushes_the_newest_beat_of_each_session,
        a_failed_flush_keeps_the_beats
    );
}
