//! Commands (prompts, stop) for a session's agent from any replica, delivered exactly once
//! per command id.
//!
//! Every command is queued in the store first, with an id and the session's next command
//! seq. The replica that holds the agent's stream takes it — marking it sent to that stream,
//! not deleting it — and sends it; the agent acks it (`CommandAck`) once it has taken it,
//! and the ack marks it delivered. A command not acked is sent again whenever the agent
//! opens a new stream (to any replica: a replica that died with commands in flight leaves
//! them to the next one) and when the agent has not acked it within [`RESEND_AFTER`]. The
//! agent applies each seq once, however often it arrives. Agents that do not ack (older
//! ones, `Hello.acks_commands` unset) have their commands taken as delivered once sent.
//!
//! A replica asked for a command whose agent streams elsewhere wakes the others over
//! PostgreSQL's `kortix_command` channel; acks travel on the same channel to whoever waits
//! for them (`SendPrompt`). On SQLite there is one replica: a command for an agent not
//! connected here is refused as before.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kortix_proto::v1::{CommandRef, ControlFrame, control_frame::Frame};
use prost::Message as _;
use tokio::sync::{Notify, watch};

use super::{SessionError, Sessions};
use crate::clock::now_ms;
use crate::store::{ACK_PREFIX, COMMAND_CHANNEL, Heard};

/// A command sent to an agent and not acked this long after is sent to it again.
pub const RESEND_AFTER: Duration = Duration::from_secs(5);
/// Sends of one command at most; one still not acked then is dropped (logged): an agent
/// that keeps taking it without answering would otherwise get it forever.
pub const MAX_SENDS: i64 = 20;
/// Callers waiting for acks at once on one replica, at most; more do not wait.
const MAX_ACK_WAITERS: usize = 4096;

/// What became of a command by the time [`Sessions::send_command`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSent {
    pub id: String,
    /// The agent acked it.
    pub delivered: bool,
}

/// Callers waiting for the ack of one of their commands, by command id.
#[derive(Default)]
pub struct AckWaiters {
    waiting: Mutex<HashMap<String, watch::Sender<bool>>>,
}

impl AckWaiters {
    fn wait_for(&self, id: &str) -> Option<watch::Receiver<bool>> {
        let mut waiting = self.waiting.lock().expect("ack waiters lock");
        if waiting.len() >= MAX_ACK_WAITERS {
            return None;
        }
        Some(
            waiting
                .entry(id.to_string())
                .or_insert_with(|| watch::channel(false).0)
                .subscribe(),
        )
    }

    fn forget(&self, id: &str) {
        self.waiting.lock().expect("ack waiters lock").remove(id);
    }

    fn acked(&self, id: &str) {
        if let Some(tx) = self.waiting.lock().expect("ack waiters lock").get(id) {
            tx.send_replace(true);
        }
    }
}

/// Wake-ups heard and not handled yet: sessions with an agent here, or "look at all of them"
/// after notifications may have been missed.
#[derive(Default)]
struct Wakeups {
    sessions: HashSet<String>,
    gap: bool,
}

/// The command reference of a prompt or stop frame; other frames carry none.
fn command_ref(frame: &mut ControlFrame) -> Option<&mut Option<CommandRef>> {
    match frame.frame.as_mut()? {
        Frame::Prompt(p) => Some(&mut p.command),
        Frame::Stop(s) => Some(&mut s.command),
        _ => None,
    }
}

impl Sessions {
    /// Queues command `id` (a prompt or stop frame) for the session's agent, sends it at once
    /// when the agent is connected here, otherwise wakes the replica that holds it
    /// (PostgreSQL), then waits up to `wait` for the agent's ack.
    pub async fn send_command(
        &self,
        session_id: &str,
        id: &str,
        frame: ControlFrame,
        wait: Duration,
    ) -> Result<CommandSent, SessionError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            SessionError::Unavailable(format!("session {session_id}, command {id}: {e}"))
        };
        let here = self.holds_agent(session_id).await;
        if !here && !self.store.has_wake_channel() {
            return Err(unavailable(
                &"the session's agent is not connected to this control plane",
            ));
        }
        let acked = (!wait.is_zero())
            .then(|| self.ack_waiters.wait_for(id))
            .flatten();
        let queued = self
            .store
            .queue_session_command(session_id, id, &frame.encode_to_vec(), !here)
            .await;
        let queued = match queued {
            Ok(Some(q)) => q,
            Ok(None) => {
                self.ack_waiters.forget(id);
                return Err(unavailable(
                    &"too many commands are waiting for its agent already",
                ));
            }
            Err(e) => {
                self.ack_waiters.forget(id);
                return Err(e.into());
            }
        };
        if here {
            self.send_unacked(session_id).await;
        }
        let delivered = match acked {
            Some(mut rx) => {
                let got = tokio::time::timeout(wait, rx.wait_for(|acked| *acked))
                    .await
                    .is_ok_and(|r| r.is_ok());
                self.ack_waiters.forget(id);
                got
            }
            None => false,
        };
        tracing::debug!(session = %session_id, command = %id, seq = queued.seq, delivered, "command queued");
        Ok(CommandSent {
            id: queued.id,
            delivered,
        })
    }

    /// The agent of the session acked command `id`: marks it delivered and tells whoever
    /// waits for it, here or on another replica.
    pub async fn command_acked(&self, session_id: &str, id: &str) {
        match self.store.ack_session_command(session_id, id).await {
            Ok(true) => {
                self.ack_waiters.acked(id);
                let payload = format!("{ACK_PREFIX}{id}");
                if let Err(e) = self.store.notify_on(COMMAND_CHANNEL, &[payload]).await {
                    tracing::debug!(session = %session_id, command = %id, error = %e, "telling the other replicas of an ack");
                }
            }
            // A repeated ack (of a resent command), or of a command of an ended session.
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(session = %session_id, command = %id, error = %e, "recording an ack");
            }
        }
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

    /// Sends the session's commands that its agent stream here has not had (or has not
    /// acked in time), oldest first, if its agent is connected here.
    pub async fn deliver_queued(&self, session_id: &str) {
        if self.holds_agent(session_id).await {
            self.send_unacked(session_id).await;
        }
    }

    /// [`Sessions::deliver_queued`] once it is known that the agent streams here.
    async fn send_unacked(&self, session_id: &str) {
        let Some((conn_id, acks)) = self.hub.agent_stream(session_id) else {
            return;
        };
        let stream = self.agent_conn_key(conn_id);
        let resend_before = now_ms() - RESEND_AFTER.as_millis() as i64;
        let taken = match self
            .store
            .take_session_commands(session_id, &stream, resend_before, MAX_SENDS)
            .await
        {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!(session = %session_id, error = %e, "taking queued commands");
                return;
            }
        };
        for command in taken.commands {
            let mut frame = match ControlFrame::decode(command.frame.as_slice()) {
                Ok(frame) => frame,
                Err(e) => {
                    tracing::warn!(session = %session_id, command = %command.id, error = %e, "a queued command is not a control frame; dropped");
                    let _ = self
                        .store
                        .ack_session_command(session_id, &command.id)
                        .await;
                    continue;
                }
            };
            if let Some(slot) = command_ref(&mut frame) {
                *slot = Some(CommandRef {
                    id: command.id.clone(),
                    seq: command.seq.max(0) as u64,
                    floor: taken.floor.max(0) as u64,
                });
            }
            if command.sends > 1 {
                tracing::info!(session = %session_id, command = %command.id, sends = command.sends, "sending a command again: not acked yet");
            }
            if let Err(e) = self.hub.send_control_on(session_id, conn_id, frame) {
                // The stream went away meanwhile: the agent's next stream gets the rest.
                tracing::info!(session = %session_id, command = %command.id, error = %e, "queued commands wait for the agent");
                return;
            }
            if !acks {
                self.command_acked(session_id, &command.id).await;
            }
        }
    }

    /// Until `shutdown`: sends the queued commands of the sessions whose agents are
    /// connected here when told of them over the command channel (PostgreSQL), tells the
    /// callers waiting here of acks made elsewhere, and resends what agents have not acked
    /// in time.
    pub async fn run_command_relay(self, shutdown: impl std::future::Future<Output = ()>) {
        let heard = Arc::new((Mutex::new(Wakeups::default()), Notify::new()));
        let follower = {
            let (store, hub, heard) = (self.store.clone(), self.hub.clone(), heard.clone());
            let waiters = self.ack_waiters.clone();
            tokio::spawn(async move {
                store
                    .follow_channel(COMMAND_CHANNEL, move |h| {
                        {
                            let mut pending = heard.0.lock().expect("command relay lock");
                            match h {
                                Heard::Wake(payload) => match payload.strip_prefix(ACK_PREFIX) {
                                    Some(command) => return waiters.acked(command),
                                    // Only sessions whose agent is here: the set stays bounded.
                                    None if hub.is_connected(&payload) => {
                                        pending.sessions.insert(payload);
                                    }
                                    None => return,
                                },
                                Heard::Gap => pending.gap = true,
                            }
                        }
                        heard.1.notify_one();
                    })
                    .await
            })
        };
        let mut resend = tokio::time::interval(RESEND_AFTER / 2);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                _ = resend.tick() => self.resend_unacked().await,
                () = &mut shutdown => break,
            }
        }
        follower.abort();
    }

    /// Sends again the commands that agents connected here have not acked in time, and drops
    /// those sent [`MAX_SENDS`] times.
    async fn resend_unacked(&self) {
        let due = now_ms() - RESEND_AFTER.as_millis() as i64;
        match self.store.sessions_with_unacked_commands(due).await {
            Ok(sessions) => {
                for session in sessions {
                    if self.hub.is_connected(&session) {
                        self.deliver_queued(&session).await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "finding unacked commands"),
        }
        match self.store.drop_unacked_commands(MAX_SENDS, due).await {
            Ok(dropped) => {
                for (session, command) in dropped {
                    tracing::warn!(session = %session, command = %command, sends = MAX_SENDS, "a command was never acked; dropped");
                }
            }
            Err(e) => tracing::warn!(error = %e, "dropping commands never acked"),
        }
    }
}
