//! WatchSession: a session's state now, then each change of it, until it has ended.
//!
//! Woken by the hub's state bumps (every transition made on this replica bumps), so a change
//! reaches the watcher as soon as it is stored; a slow re-read covers changes made by another
//! replica. Record traffic does not wake a watcher: it wants the state, not the records.

use super::{SessionError, Sessions};
use crate::store::{Session, SessionStatus};
use tokio::sync::mpsc;
use tonic::Status;

/// Updates buffered per watcher (each is the whole session; states change rarely).
const QUEUE: usize = 16;

impl Sessions {
    /// The session `id` as stored now, then after each change of its status or reasons; the
    /// channel closes after a terminal state. Errors (the session deleted, the replica
    /// shutting down) end it with a status.
    pub fn watch(&self, id: String) -> mpsc::Receiver<Result<Session, Status>> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(status) = this.follow_state(&id, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        rx
    }

    async fn follow_state(
        &self,
        id: &str,
        tx: &mpsc::Sender<Result<Session, Status>>,
    ) -> Result<(), Status> {
        // Re-read the state this often without a wake-up (see `SessionConfig`).
        let poll = self.config.store_poll;
        let mut wake = self.hub.subscribe_states(id);
        let closed = self.hub.closed();
        tokio::pin!(closed);
        let mut last: Option<(SessionStatus, String, Option<String>)> = None;
        loop {
            // Mark the wake-ups so far as seen before reading: a change stored after this
            // read wakes the wait below.
            wake.borrow_and_update();
            let session = self
                .store
                .get_session(id)
                .await
                .map_err(|e| Status::from(SessionError::from(e)))?;
            let key = (
                session.status,
                session.failure_reason.clone(),
                session.exit_status.clone(),
            );
            if last.as_ref() != Some(&key) {
                last = Some(key);
                let ended = session.status.is_terminal();
                if tx.send(Ok(session)).await.is_err() || ended {
                    return Ok(());
                }
            }
            tokio::select! {
                changed = wake.changed() => {
                    if changed.is_err() {
                        // The hub dropped its sender (it cannot while we watch): poll.
                        tokio::time::sleep(poll).await;
                    }
                }
                _ = tokio::time::sleep(poll) => {}
                _ = tx.closed() => return Ok(()),
                _ = &mut closed => {
                    return Err(Status::unavailable("control plane shutting down; watch again"));
                }
            }
        }
    }
}
