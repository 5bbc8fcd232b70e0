//! Control frames (prompts) for a session's agent from any replica. The agent's stream ends
//! on one replica; a frame asked for on another is queued in the store and that replica is
//! woken over PostgreSQL's `kortix_command` channel to take and send it. Frames queued while
//! no replica holds the agent go out when it connects. On SQLite there is one replica: a
//! frame for an agent not connected here is refused as before.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use kortix_proto::v1::ControlFrame;
use prost::Message as _;
use tokio::sync::Notify;

use super::live::DeliveryError;
use super::{SessionError, Sessions};
use crate::store::{COMMAND_CHANNEL, Heard};

/// Wake-ups heard and not handled yet: sessions with an agent here, or "look at all of them"
/// after notifications may have been missed.
#[derive(Default)]
struct Wakeups {
    sessions: HashSet<String>,
    gap: bool,
}

impl Sessions {
    /// Sends a control frame to the session's agent: at once when it is connected here,
    /// otherwise (PostgreSQL) through the store to the replica that holds it.
    pub async fn send_command(
        &self,
        session_id: &str,
        frame: ControlFrame,
    ) -> Result<(), SessionError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            SessionError::Unavailable(format!("session {session_id}: {e}"))
        };
        let sent = if self.holds_agent(session_id).await {
            self.hub.send_control(session_id, frame.clone())
        } else {
            Err(DeliveryError::NotConnected)
        };
        let frame = match sent {
            Ok(()) => return Ok(()),
            Err(DeliveryError::NotConnected) if self.store.has_wake_channel() => frame,
            Err(e) => return Err(unavailable(&e)),
        };
        if !self
            .store
            .queue_session_command(session_id, &frame.encode_to_vec())
            .await?
        {
            return Err(unavailable(
                &"too many messages are waiting for its agent already",
            ));
        }
        Ok(())
    }

    /// The store's name for agent stream `conn_id` of this replica.
    pub(crate) fn agent_conn_key(&self, conn_id: u64) -> String {
        format!("{}/{conn_id}", self.replica)
    }

    /// Whether the session's agent streams to this replica. With several replicas the store
    /// says which stream holds the session: an agent that moved to another replica (its old
    /// stream here not yet noticed dead, e.g. after a network cut) is let go here, so that
    /// its frames go through the store to the replica it is on now.
    pub async fn holds_agent(&self, session_id: &str) -> bool {
        let Some(conn_id) = self.hub.agent_conn_id(session_id) else {
            return false;
        };
        if !self.store.has_wake_channel() {
            return true;
        }
        let mine = self.agent_conn_key(conn_id);
        match self.store.agent_conn(session_id).await {
            Ok(Some(holder)) if holder != mine => {
                tracing::info!(session = %session_id, stale = %mine, holder = %holder, "the agent moved to another stream; letting the old one go");
                self.hub.disconnect_agent(session_id, conn_id);
                false
            }
            Ok(_) => true,
            // The store cannot say: the stream here is the best guess.
            Err(e) => {
                tracing::warn!(session = %session_id, error = %e, "reading which stream holds the agent");
                true
            }
        }
    }

    /// Sends the session's queued frames if its agent is connected here.
    pub async fn deliver_queued(&self, session_id: &str) {
        if !self.holds_agent(session_id).await {
            return;
        }
        let frames = match self.store.take_session_commands(session_id).await {
            Ok(frames) => frames,
            Err(e) => {
                tracing::warn!(session = %session_id, error = %e, "taking queued commands");
                return;
            }
        };
        for (i, bytes) in frames.iter().enumerate() {
            let frame = match ControlFrame::decode(bytes.as_slice()) {
                Ok(frame) => frame,
                Err(e) => {
                    tracing::warn!(session = %session_id, error = %e, "a queued command is not a control frame; dropped");
                    continue;
                }
            };
            if let Err(e) = self.hub.send_control(session_id, frame) {
                // The agent went away meanwhile: the rest wait for its next connection.
                tracing::info!(session = %session_id, error = %e, "queued commands wait for the agent");
                for rest in &frames[i..] {
                    if let Err(e) = self.store.queue_session_command(session_id, rest).await {
                        tracing::warn!(session = %session_id, error = %e, "re-queueing a command");
                    }
                }
                return;
            }
        }
    }

    /// Follows the command channel until `shutdown`, sending the queued frames of the
    /// sessions whose agents are connected here. Returns at once on SQLite.
    pub async fn run_command_relay(self, shutdown: impl std::future::Future<Output = ()>) {
        if !self.store.has_wake_channel() {
            return;
        }
        let heard = Arc::new((Mutex::new(Wakeups::default()), Notify::new()));
        let follower = {
            let (store, hub, heard) = (self.store.clone(), self.hub.clone(), heard.clone());
            tokio::spawn(async move {
                store
                    .follow_channel(COMMAND_CHANNEL, move |h| {
                        {
                            let mut pending = heard.0.lock().expect("command relay lock");
                            match h {
                                // Only sessions whose agent is here: the set stays bounded.
                                Heard::Wake(session) if hub.is_connected(&session) => {
                                    pending.sessions.insert(session);
                                }
                                Heard::Wake(_) => return,
                                Heard::Gap => pending.gap = true,
                            }
                        }
                        heard.1.notify_one();
                    })
                    .await
            })
        };
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = heard.1.notified() => {
                    let pending = std::mem::take(&mut *heard.0.lock().expect("command relay lock"));
                    let sessions: Vec<String> = if pending.gap {
                        self.hub.connected_sessions()
                    } else {
                        pending.sessions.into_iter().collect()
                    };
                    for session in sessions {
                        self.deliver_queued(&session).await;
                    }
                }
                () = &mut shutdown => break,
            }
        }
        follower.abort();
    }
}
