//! A simulated agent that only heartbeats, as an idle-but-alive session does, and measures
//! each heartbeat's round trip: `Heartbeat{nonce}` queued on the Connect stream → the control
//! plane notes it (it stores the newest heartbeat of every session once a second) and answers
//! `HeartbeatAck{nonce}` → received here.

use crate::clock::{Window, now_us, spread};
use crate::errors::{BenchError, ErrorLog};
use crate::provision::LiveAgent;
use kortix_proto::v1::control_frame::Frame as Out;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Deadline for queueing one heartbeat onto the Connect stream.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of the queue of round-trip samples to the collector; overflow is counted.
pub const SAMPLE_QUEUE: usize = 65_536;

/// One heartbeat's round trip.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub sent_us: u64,
    pub rtt: Duration,
}

/// Counters of the whole fleet. "In window" counts heartbeats sent inside the window.
#[derive(Default)]
pub struct FleetCounters {
    pub connected: AtomicU64,
    pub sent_in_window: AtomicU64,
    /// No HeartbeatAck before the agent's next heartbeat was due.
    pub unanswered_in_window: AtomicU64,
    pub unanswered_total: AtomicU64,
    pub dropped_samples: AtomicU64,
    /// Agents whose stream ended before the run did.
    pub lost: AtomicU64,
}

pub struct Fleet {
    pub counters: FleetCounters,
    pub window: Arc<Window>,
    pub samples: mpsc::Sender<Sample>,
    pub errors: ErrorLog,
    pub period: Duration,
}

/// Heartbeats every `period` (first one at a per-agent offset, so the fleet's heartbeats are
/// spread evenly) until `stop`.
pub async fn run(
    index: u64,
    mut agent: LiveAgent,
    fleet: Arc<Fleet>,
    mut stop: watch::Receiver<bool>,
) {
    let c = &fleet.counters;
    c.connected.fetch_add(1, Ordering::Relaxed);
    let period = fleet.period;
    let offset = period.mul_f64((spread(index) % 10_000) as f64 / 10_000.0);
    let mut tick = tokio::time::interval_at(Instant::now() + offset, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut nonce = 0u64;
    // (nonce, sent at, sent at on the process clock)
    let mut pending: Option<(u64, Instant, u64)> = None;
    let result: Result<(), BenchError> = loop {
        tokio::select! {
            _ = stop.changed() => break Ok(()),
            _ = tick.tick() => {
                if let Some((_, _, sent_us)) = pending.take() {
                    c.unanswered_total.fetch_add(1, Ordering::Relaxed);
                    if fleet.window.contains(sent_us) {
                        c.unanswered_in_window.fetch_add(1, Ordering::Relaxed);
                    }
                }
                nonce += 1;
                let (at, at_us) = (Instant::now(), now_us());
                match tokio::time::timeout(SEND_TIMEOUT, agent.tx.heartbeat(nonce, 0)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(BenchError::from_sim("heartbeat send", &e)),
                    Err(_) => break Err(BenchError::timeout("heartbeat send", SEND_TIMEOUT)),
                }
                if fleet.window.contains(at_us) {
                    c.sent_in_window.fetch_add(1, Ordering::Relaxed);
                }
                pending = Some((nonce, at, at_us));
            }
            frame = agent.rx.next() => match frame {
                Ok(Some(Out::HeartbeatAck(ack))) => {
                    if let Some((n, at, sent_us)) = pending
                        && n == ack.nonce
                    {
                        pending = None;
                        let sample = Sample { sent_us, rtt: at.elapsed() };
                        if fleet.samples.try_send(sample).is_err() {
                            c.dropped_samples.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(Some(Out::Stop(s))) => break Err(BenchError::new("fleet stream", "stopped", s.reason)),
                Ok(Some(_)) => {}
                Ok(None) => break Err(BenchError::new("fleet stream", "ended", "control plane ended the stream")),
                Err(e) => break Err(BenchError::from_sim("fleet stream", &e)),
            },
        }
    };
    if let Err(e) = result {
        c.lost.fetch_add(1, Ordering::Relaxed);
        fleet.errors.record(&e);
    }
    c.connected.fetch_sub(1, Ordering::Relaxed);
}

/// Serial heartbeats of one agent on an otherwise idle control plane: the unloaded round trip.
pub async fn unloaded_round_trips(
    agent: &mut LiveAgent,
    n: u64,
) -> Result<crate::stats::Latency, BenchError> {
    let mut hist = crate::stats::Latency::new();
    for nonce in 1..=n {
        let at = Instant::now();
        agent
            .tx
            .heartbeat(1_000_000 + nonce, 0)
            .await
            .map_err(|e| BenchError::from_sim("baseline heartbeat", &e))?;
        let deadline = at + SEND_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, agent.rx.next()).await {
                Err(_) => return Err(BenchError::timeout("baseline heartbeat", SEND_TIMEOUT)),
                Ok(Err(e)) => return Err(BenchError::from_sim("baseline heartbeat", &e)),
                Ok(Ok(None)) => {
                    return Err(BenchError::new(
                        "baseline heartbeat",
                        "ended",
                        "stream ended",
                    ));
                }
                Ok(Ok(Some(Out::HeartbeatAck(a)))) if a.nonce == 1_000_000 + nonce => break,
                Ok(Ok(Some(_))) => {}
            }
        }
        hist.record(at.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(hist)
}
