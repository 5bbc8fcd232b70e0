//! In-process rendezvous for live sessions: which agent stream is connected where, and how far
//! each session's durable record log has got.
//!
//! Viewers are woken here when a session's durable seq advances, and find the newest durable
//! records of watched sessions in the session's [`Tail`]; anything older they read from the
//! store by seq, so what they see is exactly what is durable, with no gap or duplicate at the
//! seam between history and live tail. With PostgreSQL, wake-ups also travel to the other
//! replicas ([`super::cluster`]); without them a viewer attached to another replica than the
//! agent's still sees every record, within the attach poll interval.

use super::cluster::Outbox;
use super::tail::Tail;
use kortix_proto::v1::{ControlFrame, Record};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{mpsc, watch};

/// Control frames waiting for one agent; small, since frames are rare (prompts, stop).
pub const CONTROL_QUEUE: usize = 64;

#[derive(Default)]
struct Entry {
    durable: Option<watch::Sender<u64>>,
    /// Counts the session's state changes, for those who wait on its state alone.
    states: Option<watch::Sender<u64>>,
    agent: Option<AgentLink>,
    tail: Arc<Mutex<Tail>>,
}

impl Entry {
    fn watched(&self) -> bool {
        self.durable
            .as_ref()
            .is_some_and(|tx| tx.receiver_count() > 0)
    }
}

#[derive(Clone)]
struct AgentLink {
    conn_id: u64,
    tx: mpsc::Sender<ControlFrame>,
    /// The agent acks commands (`Hello.acks_commands`).
    acks: bool,
}

/// Why a control frame could not reach an agent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeliveryError {
    #[error("the session's agent is not connected to this control plane")]
    NotConnected,
    #[error("the session's agent is not keeping up with control frames")]
    Backlogged,
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
    next_conn: Arc<std::sync::atomic::AtomicU64>,
    /// Set once at shutdown: long-lived streams (agents, viewers, secret watches) end so the
    /// listeners can drain instead of waiting out their deadline.
    closing: Arc<watch::Sender<bool>>,
    /// Where this replica's wake-ups go for the other replicas, once clustered.
    remote: Arc<OnceLock<Arc<Outbox>>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            next_conn: Arc::default(),
            closing: Arc::new(watch::channel(false).0),
            remote: Arc::default(),
        }
    }
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, durable advances and state changes are also sent to `outbox` for the
    /// other replicas. Set once; later calls are ignored.
    pub fn send_wakeups_to(&self, outbox: Arc<Outbox>) {
        let _ = self.remote.set(outbox);
    }

    /// Ends every live stream of this replica (shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`Hub::close`] was called.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|closing| *closing).await;
        }
    }

    /// Whether any viewer is attached to the session on this replica.
    pub fn is_watched(&self, session_id: &str) -> bool {
        let map = self.inner.lock().expect("hub lock");
        map.get(session_id).is_some_and(Entry::watched)
    }

    /// Whether this replica tracks the session at all (viewers, waiters or an agent).
    #[cfg(test)]
    pub fn has_entry(&self, session_id: &str) -> bool {
        self.inner
            .lock()
            .expect("hub lock")
            .contains_key(session_id)
    }

    /// The session's live tail, for a viewer.
    pub fn tail(&self, session_id: &str) -> Arc<Mutex<Tail>> {
        let mut map = self.inner.lock().expect("hub lock");
        map.entry(session_id.to_string()).or_default().tail.clone()
    }

    /// Records up to `acked` are durable for `session_id`; `batch` is one batch of that
    /// commit, whose records go into the tail while the session is watched. Wakes the viewers
    /// after the tail is updated, so they find the records there.
    ///
    /// One group commit can answer several batches of a stream with the same `acked`, and
    /// the stream's acker publishes them one at a time, oldest first. Each batch is therefore
    /// taken as durable up to its own newest seq, and viewers are woken only as far as the
    /// tail reaches; the batch that reaches `acked` wakes them to `acked`.
    pub fn publish(&self, session_id: &str, acked: u64, batch: &[Record]) {
        let known = {
            let map = self.inner.lock().expect("hub lock");
            map.get(session_id)
                .map(|entry| (entry.tail.clone(), entry.watched()))
        };
        let Some((tail, watched)) = known else {
            return self.advance(session_id, acked);
        };
        let newest = batch.iter().map(|r| r.seq).max().unwrap_or(0);
        let reach = {
            let mut tail = tail.lock().expect("tail lock");
            if watched {
                tail.publish(acked.min(newest), batch);
            } else if !tail.is_empty() {
                tail.clear();
            }
            tail.last_seq()
        };
        let wake_to = if watched && newest < acked {
            reach.min(acked)
        } else {
            acked
        };
        self.advance(session_id, wake_to);
    }

    /// Records up to `seq` are durable for `session_id`. Never moves backwards.
    pub fn advance(&self, session_id: &str, seq: u64) {
        self.advance_local(session_id, seq);
        if let Some(remote) = self.remote.get() {
            remote.advance(session_id, seq);
        }
    }

    /// Another replica made records up to `seq` durable. Only sessions someone here follows
    /// are touched, and a local tail that does not reach `seq` is dropped: the records past
    /// it are in the store, not in this replica's memory.
    pub fn advance_from_remote(&self, session_id: &str, seq: u64) {
        let tail = {
            let map = self.inner.lock().expect("hub lock");
            match map.get(session_id) {
                Some(entry) => entry.tail.clone(),
                None => return,
            }
        };
        {
            let mut tail = tail.lock().expect("tail lock");
            if !tail.is_empty() && tail.last_seq() < seq {
                tail.clear();
            }
        }
        self.advance_local(session_id, seq);
    }

    fn advance_local(&self, session_id: &str, seq: u64) {
        let mut map = self.inner.lock().expect("hub lock");
        let entry = map.entry(session_id.to_string()).or_default();
        let tx = entry.durable.get_or_insert_with(|| watch::channel(0).0);
        tx.send_if_modified(|cur| {
            if seq > *cur {
                *cur = seq;
                true
            } else {
                false
            }
        });
    }

    /// Wakes the session's viewers without new records (the session ended, say), and those
    /// waiting for its state to change.
    pub fn bump(&self, session_id: &str) {
        self.bump_local(session_id);
        if let Some(remote) = self.remote.get() {
            remote.bump(session_id);
        }
    }

    /// Another replica changed the session's state.
    pub fn bump_from_remote(&self, session_id: &str) {
        self.bump_local(session_id);
    }

    /// Wake-ups from other replicas may have been lost (the listener's connection dropped):
    /// wakes every viewer and waiter here, so each looks in the store for itself.
    pub fn bump_all_remote(&self) {
        let ids: Vec<String> = self
            .inner
            .lock()
            .expect("hub lock")
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.bump_local(&id);
        }
    }

    fn bump_local(&self, session_id: &str) {
        let map = self.inner.lock().expect("hub lock");
        let Some(entry) = map.get(session_id) else {
            return;
        };
        if let Some(tx) = &entry.durable {
            tx.send_modify(|_| {});
        }
        if let Some(tx) = &entry.states {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// A receiver that changes whenever the session's state changes on this replica
    /// ([`Hub::bump`]); record traffic does not wake it.
    pub fn subscribe_states(&self, session_id: &str) -> watch::Receiver<u64> {
        let mut map = self.inner.lock().expect("hub lock");
        let entry = map.entry(session_id.to_string()).or_default();
        entry
            .states
            .get_or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// A receiver that changes whenever the session's durable seq advances.
    pub fn subscribe(&self, session_id: &str) -> watch::Receiver<u64> {
        let mut map = self.inner.lock().expect("hub lock");
        let entry = map.entry(session_id.to_string()).or_default();
        entry
            .durable
            .get_or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Registers a connected agent stream, replacing (and so disconnecting) an older one for
    /// the same session. Returns the connection id and the frames to send to the agent.
    /// `acks`: the agent acks the commands it is sent.
    pub fn connect_agent(
        &self,
        session_id: &str,
        acks: bool,
    ) -> (u64, mpsc::Receiver<ControlFrame>) {
        let conn_id = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        let mut map = self.inner.lock().expect("hub lock");
        map.entry(session_id.to_string()).or_default().agent =
            Some(AgentLink { conn_id, tx, acks });
        (conn_id, rx)
    }

    /// Forgets the agent stream `conn_id` if it is still the registered one.
    pub fn disconnect_agent(&self, session_id: &str, conn_id: u64) {
        let mut map = self.inner.lock().expect("hub lock");
        if let Some(entry) = map.get_mut(session_id)
            && entry.agent.as_ref().is_some_and(|a| a.conn_id == conn_id)
        {
            entry.agent = None;
        }
    }

    /// The id of the session's open agent stream on this replica.
    pub fn agent_conn_id(&self, session_id: &str) -> Option<u64> {
        let map = self.inner.lock().expect("hub lock");
        map.get(session_id)
            .and_then(|e| e.agent.as_ref())
            .filter(|a| !a.tx.is_closed())
            .map(|a| a.conn_id)
    }

    /// The session's open agent stream on this replica, and whether its agent acks commands.
    pub fn agent_stream(&self, session_id: &str) -> Option<(u64, bool)> {
        let map = self.inner.lock().expect("hub lock");
        map.get(session_id)
            .and_then(|e| e.agent.as_ref())
            .filter(|a| !a.tx.is_closed())
            .map(|a| (a.conn_id, a.acks))
    }

    pub fn is_connected(&self, session_id: &str) -> bool {
        let map = self.inner.lock().expect("hub lock");
        map.get(session_id)
            .and_then(|e| e.agent.as_ref())
            .is_some_and(|a| !a.tx.is_closed())
    }

    /// The sessions whose agents are connected to this replica.
    pub fn connected_sessions(&self) -> Vec<String> {
        let map = self.inner.lock().expect("hub lock");
        map.iter()
            .filter(|(_, e)| e.agent.as_ref().is_some_and(|a| !a.tx.is_closed()))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Agent streams connected to this replica.
    pub fn connected_agents(&self) -> usize {
        let map = self.inner.lock().expect("hub lock");
        map.values()
            .filter(|e| e.agent.as_ref().is_some_and(|a| !a.tx.is_closed()))
            .count()
    }

    /// Queues a control frame for the session's agent without waiting.
    pub fn send_control(&self, session_id: &str, frame: ControlFrame) -> Result<(), DeliveryError> {
        let tx = {
            let map = self.inner.lock().expect("hub lock");
            map.get(session_id)
                .and_then(|e| e.agent.as_ref())
                .map(|a| a.tx.clone())
                .ok_or(DeliveryError::NotConnected)?
        };
        tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DeliveryError::Backlogged,
            mpsc::error::TrySendError::Closed(_) => DeliveryError::NotConnected,
        })
    }

    /// Queues a control frame for agent stream `conn_id` of the session without waiting:
    /// [`DeliveryError::NotConnected`] when that stream is no longer the session's.
    pub fn send_control_on(
        &self,
        session_id: &str,
        conn_id: u64,
        frame: ControlFrame,
    ) -> Result<(), DeliveryError> {
        let tx = {
            let map = self.inner.lock().expect("hub lock");
            map.get(session_id)
                .and_then(|e| e.agent.as_ref())
                .filter(|a| a.conn_id == conn_id)
                .map(|a| a.tx.clone())
                .ok_or(DeliveryError::NotConnected)?
        };
        tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DeliveryError::Backlogged,
            mpsc::error::TrySendError::Closed(_) => DeliveryError::NotConnected,
        })
    }

    /// Drops all state for a session that has ended and has no viewers left.
    pub fn forget(&self, session_id: &str) {
        let mut map = self.inner.lock().expect("hub lock");
        if let Some(entry) = map.get(session_id) {
            let watched = [&entry.durable, &entry.states]
                .into_iter()
                .flatten()
                .any(|tx| tx.receiver_count() > 0);
            if !watched && entry.agent.is_none() {
                map.remove(session_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kortix_proto::v1::{Stop, control_frame::Frame};

    fn stop() -> ControlFrame {
        ControlFrame {
            frame: Some(Frame::Stop(Stop::default())),
        }
    }

    #[tokio::test]
    async fn subscribers_see_advances_and_never_go_back() {
        let hub = Hub::new();
        let mut rx = hub.subscribe("s");
        hub.advance("s", 5);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 5);
        hub.advance("s", 3);
        assert!(!rx.has_changed().unwrap());
        hub.advance("s", 9);
        assert_eq!(*rx.borrow_and_update(), 9);
    }

    #[tokio::test]
    async fn the_tail_fills_only_while_someone_watches() {
        use kortix_proto::v1::Record;
        let rec = |seq| Record {
            seq,
            ..Record::default()
        };
        let hub = Hub::new();
        hub.publish("s", 2, &[rec(1), rec(2)]);
        assert!(hub.tail("s").lock().unwrap().is_empty());
        let mut rx = hub.subscribe("s");
        assert!(hub.is_watched("s"));
        hub.publish("s", 4, &[rec(3), rec(4)]);
        assert_eq!(*rx.borrow_and_update(), 4);
        let got = hub.tail("s").lock().unwrap().read(3, 10).unwrap();
        assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4]);
        // One commit answering three batches: each publish wakes viewers as far as the tail
        // reaches, the last one to the commit's seq.
        hub.publish("s", 10, &[rec(5), rec(6)]);
        assert_eq!(*rx.borrow_and_update(), 6);
        hub.publish("s", 10, &[rec(7), rec(8)]);
        assert_eq!(*rx.borrow_and_update(), 8);
        hub.publish("s", 10, &[rec(9), rec(10)]);
        assert_eq!(*rx.borrow_and_update(), 10);
        let got = hub.tail("s").lock().unwrap().read(3, 100).unwrap();
        assert_eq!(got.len(), 8, "3..=10 all in the tail");
        drop(rx);
        hub.publish("s", 11, &[rec(11)]);
        assert!(
            hub.tail("s").lock().unwrap().is_empty(),
            "unwatched tails are dropped"
        );
    }

    #[tokio::test]
    async fn state_watchers_wake_on_bumps_not_on_records() {
        let hub = Hub::new();
        let mut states = hub.subscribe_states("s");
        hub.advance("s", 5);
        assert!(!states.has_changed().unwrap());
        hub.bump("s");
        states.changed().await.unwrap();
        hub.forget("s");
        hub.bump("s");
        assert!(states.has_changed().unwrap(), "a watched entry is kept");
    }

    #[tokio::test]
    async fn a_newer_agent_stream_replaces_the_old_one() {
        let hub = Hub::new();
        assert_eq!(
            hub.send_control("s", stop()),
            Err(DeliveryError::NotConnected)
        );
        let (old, mut old_rx) = hub.connect_agent("s", true);
        let (new, mut new_rx) = hub.connect_agent("s", true);
        hub.send_control("s", stop()).unwrap();
        assert!(new_rx.recv().await.is_some());
        assert!(
            old_rx.recv().await.is_none(),
            "old stream's sender was dropped"
        );
        hub.disconnect_agent("s", old);
        assert!(
            hub.is_connected("s"),
            "stale disconnect must not unregister the new stream"
        );
        hub.disconnect_agent("s", new);
        assert!(!hub.is_connected("s"));
    }

    #[tokio::test]
    async fn a_full_control_queue_is_reported_not_awaited() {
        let hub = Hub::new();
        let (_id, _rx) = hub.connect_agent("s", true);
        for _ in 0..CONTROL_QUEUE {
            hub.send_control("s", stop()).unwrap();
        }
        assert_eq!(
            hub.send_control("s", stop()),
            Err(DeliveryError::Backlogged)
        );
    }
}
