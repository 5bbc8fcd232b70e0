//! A simulated agent streaming log records: batches of `batch` records, at most `window`
//! batches unacknowledged, optionally paced; measures batch send → covering Ack latency.

use crate::clock::{Window, now_us};
use crate::errors::{BenchError, ErrorLog};
use crate::provision::LiveAgent;
use crate::stats::Latency;
use kortix_proto::v1::{LogLine, LogStream, Record, control_frame::Frame as Out, record::Body};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A batch not acknowledged this long ends the agent with an error.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for queueing one batch onto the Connect stream.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How each streaming agent behaves.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub batch: usize,
    pub record_bytes: usize,
    pub window: usize,
    /// Records/s for this agent; 0 means as fast as acks allow.
    pub rate: f64,
    /// Where in its send interval a paced agent starts, as a fraction (0..1). Independent
    /// agents do not send in lockstep; spreading the phases keeps a hundred paced agents
    /// from arriving as one burst every interval.
    pub phase: f64,
}

/// Counters every streaming agent of a run adds to.
#[derive(Default)]
pub struct StreamTotals {
    /// Records acknowledged as durable (all time).
    pub acked: AtomicU64,
    /// Records sent (all time).
    pub sent: AtomicU64,
    /// Agents still streaming.
    pub live: AtomicU64,
}

/// Encoded bytes of a record besides its line (seq, timestamp, field tags and lengths).
pub const RECORD_OVERHEAD: usize = 18;
/// Length of the send-time prefix of each line.
pub const PREFIX: usize = 17;

/// Filler that makes an encoded record about `record_bytes` long.
pub fn filler(record_bytes: usize) -> String {
    "x".repeat(record_bytes.saturating_sub(PREFIX + RECORD_OVERHEAD))
}

/// The log line of a record: its send time (hex µs on the process clock) then filler.
pub fn line(send_us: u64, filler: &str) -> String {
    let mut s = String::with_capacity(17 + filler.len());
    s.push_str(&format!("{send_us:016x} "));
    s.push_str(filler);
    s
}

/// The send time written by [`line`], if `record` is one of ours.
pub fn sent_us(record: &Record) -> Option<u64> {
    match &record.body {
        Some(Body::Log(l)) => u64::from_str_radix(l.line.get(..16)?, 16).ok(),
        _ => None,
    }
}

fn batch(first_seq: u64, n: usize, filler: &str) -> Vec<Record> {
    let t = now_us();
    let ts = kortix_controlplane::clock::now_ms();
    (0..n as u64)
        .map(|i| Record {
            seq: first_seq + i,
            ts_unix_ms: ts,
            body: Some(Body::Log(LogLine {
                stream: LogStream::Stdout as i32,
                line: line(t, filler),
            })),
        })
        .collect()
}

/// Streams until `stop` turns true or an error; returns, for each of `windows`, the ack
/// latencies of batches sent inside it.
pub async fn run(
    mut agent: LiveAgent,
    cfg: StreamConfig,
    totals: Arc<StreamTotals>,
    windows: Vec<Arc<Window>>,
    errors: ErrorLog,
    mut stop: watch::Receiver<bool>,
) -> Vec<Latency> {
    let mut hists = vec![Latency::new(); windows.len()];
    totals.live.fetch_add(1, Ordering::Relaxed);
    let filler = filler(cfg.record_bytes);
    let mut next_seq = agent.bootstrap.acked_seq + 1;
    let mut acked = agent.bootstrap.acked_seq;
    // (last seq of the batch, when it was sent, send time on the process clock)
    let mut inflight: VecDeque<(u64, Instant, u64)> = VecDeque::with_capacity(cfg.window);
    let paced = cfg.rate > 0.0;
    let interval = if paced {
        Duration::from_secs_f64(cfg.batch as f64 / cfg.rate)
    } else {
        Duration::ZERO
    };
    let mut next_send = Instant::now() + interval.mul_f64(cfg.phase.clamp(0.0, 1.0));
    let result: Result<(), BenchError> = loop {
        if *stop.borrow() {
            break Ok(());
        }
        let mut send_failed = None;
        while inflight.len() < cfg.window && (!paced || Instant::now() >= next_send) {
            let records = batch(next_seq, cfg.batch, &filler);
            let last = next_seq + cfg.batch as u64 - 1;
            let at = Instant::now();
            let at_us = now_us();
            match tokio::time::timeout(SEND_TIMEOUT, agent.tx.send_records(records)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    send_failed = Some(BenchError::from_sim("send records", &e));
                    break;
                }
                Err(_) => {
                    send_failed = Some(BenchError::timeout("send records", SEND_TIMEOUT));
                    break;
                }
            }
            totals.sent.fetch_add(cfg.batch as u64, Ordering::Relaxed);
            inflight.push_back((last, at, at_us));
            next_seq = last + 1;
            if paced {
                next_send += interval;
                // After a stall, do not burst to catch up more than a second's worth.
                let now = Instant::now();
                if next_send + Duration::from_secs(1) < now {
                    next_send = now;
                }
            }
        }
        if let Some(e) = send_failed {
            break Err(e);
        }
        let ack_deadline = inflight
            .front()
            .map(|(_, at, _)| *at + ACK_TIMEOUT)
            .unwrap_or_else(|| Instant::now() + ACK_TIMEOUT);
        tokio::select! {
            _ = stop.changed() => break Ok(()),
            frame = agent.rx.next() => match frame {
                Ok(Some(Out::Ack(a))) => {
                    if a.seq > acked {
                        totals.acked.fetch_add(a.seq - acked, Ordering::Relaxed);
                        acked = a.seq;
                    }
                    while inflight.front().is_some_and(|(last, _, _)| *last <= a.seq) {
                        if let Some((_, at, at_us)) = inflight.pop_front() {
                            let took = at.elapsed();
                            for (w, h) in windows.iter().zip(hists.iter_mut()) {
                                if w.contains(at_us) {
                                    h.record(took);
                                }
                            }
                        }
                    }
                }
                Ok(Some(Out::Stop(s))) => break Err(BenchError::new("stream", "stopped", s.reason)),
                Ok(Some(_)) => {}
                Ok(None) => break Err(BenchError::new("stream", "ended", "control plane ended the stream")),
                Err(e) => break Err(BenchError::from_sim("stream", &e)),
            },
            _ = tokio::time::sleep_until(next_send), if paced && inflight.len() < cfg.window => {}
            _ = tokio::time::sleep_until(ack_deadline), if !inflight.is_empty() => {
                break Err(BenchError::timeout("ack", ACK_TIMEOUT));
            }
        }
    };
    if let Err(e) = result {
        errors.record(&e);
    }
    totals.live.fetch_sub(1, Ordering::Relaxed);
    drop(agent);
    hists
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_time_round_trips_through_the_line() {
        let records = batch(7, 3, &filler(200));
        assert_eq!(
            records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![7, 8, 9]
        );
        let t = sent_us(&records[0]).unwrap();
        assert!(t <= now_us());
        let l = line(0xabc, "yy");
        assert_eq!(l, "0000000000000abc yy");
        let r = Record {
            seq: 1,
            ts_unix_ms: 0,
            body: Some(Body::Log(LogLine { stream: 1, line: l })),
        };
        assert_eq!(sent_us(&r), Some(0xabc));
        let encoded = prost::Message::encoded_len(&records[0]);
        assert!((195..=205).contains(&encoded), "{encoded}");
    }
}
