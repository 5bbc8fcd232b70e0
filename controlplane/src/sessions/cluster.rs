//! Wake-ups between control-plane replicas on one PostgreSQL.
//!
//! The replica that makes a session's records durable (the one holding its agent's stream)
//! or changes its state wakes the other replicas' viewers through `NOTIFY`: a wake-up only
//! says "session S is durable up to seq N" or "session S changed"; the viewer's replica then
//! reads the records by seq from the store, as for anything not in its own tail. Nothing in
//! a payload is trusted beyond that, and a lost wake-up costs latency (the attach poll), not
//! records.
//!
//! Outgoing wake-ups are coalesced per session while the previous `NOTIFY` is in flight, so
//! a busy session costs one notification per round trip, not one per batch. Incoming ones
//! touch only sessions this replica has viewers or waiters for.

use super::live::Hub;
use crate::backoff::{Backoff, Jitter};
use crate::store::{Heard, Store, WAKE_CHANNEL};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Longest wait between attempts to reach the database after it failed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A `NOTIFY` that takes longer than this is abandoned (viewers fall back to polling).
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// Wake-ups waiting to be sent, coalesced per session.
#[derive(Default)]
pub struct Outbox {
    pending: Mutex<Pending>,
    ready: Notify,
}

#[derive(Default)]
struct Pending {
    advances: HashMap<String, u64>,
    bumps: HashSet<String>,
}

impl Outbox {
    pub(super) fn advance(&self, session_id: &str, seq: u64) {
        {
            let mut pending = self.pending.lock().expect("outbox lock");
            let cur = pending.advances.entry(session_id.to_string()).or_default();
            *cur = (*cur).max(seq);
        }
        self.ready.notify_one();
    }

    pub(super) fn bump(&self, session_id: &str) {
        self.pending
            .lock()
            .expect("outbox lock")
            .bumps
            .insert(session_id.to_string());
        self.ready.notify_one();
    }

    fn take(&self, replica: &str) -> Vec<String> {
        let pending = std::mem::take(&mut *self.pending.lock().expect("outbox lock"));
        let mut out = Vec::with_capacity(pending.advances.len() + pending.bumps.len());
        out.extend(
            pending
                .advances
                .into_iter()
                .map(|(session, seq)| Wake::Advance { session, seq }.encode(replica)),
        );
        out.extend(
            pending
                .bumps
                .into_iter()
                .map(|session| Wake::Bump { session }.encode(replica)),
        );
        out
    }
}

/// One wake-up as it travels in a notification's payload: `<replica>|a|<seq>|<session>` or
/// `<replica>|b|<session>`.
#[derive(Debug, PartialEq, Eq)]
enum Wake {
    Advance { session: String, seq: u64 },
    Bump { session: String },
}

impl Wake {
    fn encode(&self, replica: &str) -> String {
        match self {
            Wake::Advance { session, seq } => format!("{replica}|a|{seq}|{session}"),
            Wake::Bump { session } => format!("{replica}|b|{session}"),
        }
    }

    /// The wake-up and the replica that sent it; `None` for anything malformed.
    fn decode(payload: &str) -> Option<(&str, Wake)> {
        let (replica, rest) = payload.split_once('|')?;
        let wake = match rest.split_once('|')? {
            ("a", rest) => {
                let (seq, session) = rest.split_once('|')?;
                Wake::Advance {
                    session: session.to_string(),
                    seq: seq.parse().ok()?,
                }
            }
            ("b", session) => Wake::Bump {
                session: session.to_string(),
            },
            _ => return None,
        };
        Some((replica, wake))
    }
}

/// This replica's side of the wake-up channel: a sender of its own wake-ups and a listener
/// for the others'. Both end with the hub (shutdown).
pub struct Cluster {
    replica: String,
    store: Store,
    hub: Hub,
    outbox: Arc<Outbox>,
}

impl Cluster {
    /// Connects `hub` to the other replicas through `store`; `None` when the store has no
    /// wake channel (SQLite: one process per data file).
    pub fn attach(store: &Store, hub: &Hub) -> Option<Self> {
        if !store.has_wake_channel() {
            return None;
        }
        let outbox = Arc::new(Outbox::default());
        hub.send_wakeups_to(outbox.clone());
        Some(Self {
            replica: crate::store::new_id(),
            store: store.clone(),
            hub: hub.clone(),
            outbox,
        })
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Runs the sender and the listener until the hub closes.
    pub async fn run(self) {
        let closed = self.hub.closed();
        tokio::select! {
            _ = closed => {}
            _ = futures::future::join(self.send(), self.listen()) => {}
        }
    }

    async fn send(&self) {
        let mut failures = 0u32;
        loop {
            self.outbox.ready.notified().await;
            let payloads = self.outbox.take(&self.replica);
            if payloads.is_empty() {
                continue;
            }
            let sent =
                tokio::time::timeout(NOTIFY_TIMEOUT, self.store.notify_wakeups(&payloads)).await;
            match sent {
                Ok(Ok(())) => {
                    failures = 0;
                    crate::metrics::metrics()
                        .cluster_wakeups_sent
                        .inc_by(payloads.len() as u64);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, dropped = payloads.len(), "sending wake-ups to other replicas");
                    failures += 1;
                    backoff(failures).await;
                }
                Err(_) => {
                    tracing::warn!(
                        dropped = payloads.len(),
                        "sending wake-ups to other replicas timed out"
                    );
                    failures += 1;
                    backoff(failures).await;
                }
            }
        }
    }

    async fn listen(&self) {
        self.store
            .follow_channel(WAKE_CHANNEL, |heard| match heard {
                Heard::Wake(payload) => self.apply(&payload),
                // Whatever was sent while nobody listened is lost: waiters look for themselves.
                Heard::Gap => self.hub.bump_all_remote(),
            })
            .await;
    }

    fn apply(&self, payload: &str) {
        let Some((from, wake)) = Wake::decode(payload) else {
            tracing::debug!(payload, "ignoring a malformed wake-up");
            return;
        };
        if from == self.replica {
            return;
        }
        crate::metrics::metrics().cluster_wakeups_received.inc();
        match wake {
            Wake::Advance { session, seq } => self.hub.advance_from_remote(&session, seq),
            Wake::Bump { session } => self.hub.bump_from_remote(&session),
        }
    }
}

/// Doubling from 100 ms up to [`MAX_BACKOFF`], with full jitter.
async fn backoff(failures: u32) {
    const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), MAX_BACKOFF, Jitter::Full);
    BACKOFF.sleep(failures).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_ups_round_trip_and_malformed_ones_are_refused() {
        let advance = Wake::Advance {
            session: "s-1".into(),
            seq: 42,
        };
        let bump = Wake::Bump {
            session: "s|2".into(),
        };
        assert_eq!(Wake::decode(&advance.encode("r1")), Some(("r1", advance)));
        assert_eq!(Wake::decode(&bump.encode("r2")), Some(("r2", bump)));
        for bad in [
            "",
            "r1",
            "r1|x|s",
            "r1|a|notanumber|s",
            "r1|a|5",
            "r1|a|-1|s",
        ] {
            assert_eq!(Wake::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_outbox_keeps_one_wake_up_per_session_with_the_highest_seq() {
        let outbox = Outbox::default();
        outbox.advance("s", 3);
        outbox.advance("s", 9);
        outbox.advance("s", 5);
        outbox.bump("s");
        outbox.bump("s");
        let mut sent = outbox.take("r");
        sent.sort();
        assert_eq!(sent, ["r|a|9|s", "r|b|s"]);
        assert!(outbox.take("r").is_empty());
    }

    /// Two replicas on one PostgreSQL schema: records made durable and state changes on one
    /// wake the subscribers of the other, and a replica ignores its own wake-ups.
    #[tokio::test]
    async fn wake_ups_cross_replicas_on_postgres() {
        use crate::store::testing::PgTestSchema;
        let Some(schema) = PgTestSchema::create_or_skip().await else {
            return;
        };
        let store_b = schema.other_replica().await;
        let (hub_a, hub_b) = (Hub::new(), Hub::new());
        let a = Cluster::attach(schema.store(), &hub_a).expect("postgres has a wake channel");
        let b = Cluster::attach(&store_b, &hub_b).expect("postgres has a wake channel");
        assert_ne!(a.replica(), b.replica());
        let runs = [tokio::spawn(a.run()), tokio::spawn(b.run())];
        // Distinct per run: other tests on the same database hear these too.
        let session = crate::store::new_id();
        let mut durable_b = hub_b.subscribe(&session);
        let mut states_b = hub_b.subscribe_states(&session);
        let mut durable_a = hub_a.subscribe(&session);

        // B's listener may not be up yet: A keeps advancing until B sees it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut seq = 0;
        while *durable_b.borrow() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no wake-up reached B"
            );
            seq += 1;
            hub_a.advance(&session, seq);
            let _ = tokio::time::timeout(Duration::from_millis(200), durable_b.changed()).await;
        }
        assert!(*durable_b.borrow_and_update() <= seq);
        hub_a.advance(&session, 1_000);
        tokio::time::timeout(Duration::from_secs(10), durable_b.wait_for(|s| *s == 1_000))
            .await
            .expect("B follows A to 1000")
            .unwrap();

        // A state change on A wakes B's state waiters.
        states_b.borrow_and_update();
        hub_a.bump(&session);
        tokio::time::timeout(Duration::from_secs(10), states_b.changed())
            .await
            .expect("B hears A's state change")
            .unwrap();

        // And the other way round; A's own wake-ups came back to it and were ignored, so
        // its value is what it set itself.
        // A's listener came up beside B's, but nothing above waited for it: B keeps advancing
        // until A sees it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut seq_b = 2_000;
        hub_b.advance(&session, seq_b);
        while *durable_a.borrow() < 2_000 {
            assert!(tokio::time::Instant::now() < deadline, "A follows B");
            let _ = tokio::time::timeout(Duration::from_millis(200), durable_a.changed()).await;
            seq_b += 1;
            hub_b.advance(&session, seq_b);
        }

        // Sessions nobody here follows are not tracked because of a wake-up.
        let unfollowed = crate::store::new_id();
        hub_a.advance(&unfollowed, 7);
        hub_a.advance(&session, 3_000);
        tokio::time::timeout(Duration::from_secs(10), durable_b.wait_for(|s| *s == 3_000))
            .await
            .expect("B follows A to 3000")
            .unwrap();
        assert!(!hub_b.is_watched(&unfollowed));
        assert!(!hub_b.has_entry(&unfollowed));

        hub_a.close();
        hub_b.close();
        for run in runs {
            tokio::time::timeout(Duration::from_secs(10), run)
                .await
                .expect("the cluster task ends with its hub")
                .unwrap();
        }
        store_b.close().await;
        schema.drop_schema().await.unwrap();
    }
}
