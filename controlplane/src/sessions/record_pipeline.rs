//! The record pipeline: agents' record batches → one durable group commit → per-session acks.
//!
//! Every `Connect` stream hands its batches to one bounded queue. Writer tasks take whatever
//! is queued (up to a row budget) and store it in a single transaction, so a hundred sessions
//! streaming cost one commit — one fsync — instead of a hundred. Nothing waits to fill a
//! group: a writer commits what is there the moment it is free, so an idle system commits
//! single batches at the latency of one transaction, and a loaded one commits larger groups.
//!
//! SQLite gets one writer: it admits one writer at a time, and more connections would only
//! sleep on its lock. PostgreSQL gets several, which insert at the same time; the store locks
//! the sessions' rows only after its insert, to advance `acked_seq`, and in id order, so
//! concurrent groups never deadlock.

use crate::error::DomainError;
use crate::store::{BackendKind, RecordRow, Store};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Batches queued for the writers, over all sessions. A full queue makes `submit` wait,
/// which stops reading from that agent's stream (HTTP/2 flow control then slows the agent).
const QUEUE: usize = 2048;
/// Rows one group commit takes at most; more waits for the next commit.
const MAX_ROWS_PER_COMMIT: usize = 16_384;
/// Concurrent group commits on PostgreSQL (each holds one pooled connection).
const POSTGRES_WRITERS: usize = 3;

/// Why a batch was not stored. A store that fails a write is UNAVAILABLE whatever the
/// cause: the agent keeps its records and resends them after reconnecting.
fn ingest_error(e: crate::store::Error) -> DomainError {
    match DomainError::from(e) {
        e @ (DomainError::NotFound(_) | DomainError::Invalid(_)) => e,
        other => DomainError::Unavailable(format!("storing records: {other}")),
    }
}

fn pipeline_stopped() -> DomainError {
    DomainError::Unavailable("the record pipeline has stopped".into())
}

/// The session's `acked_seq` after the batch was stored.
pub type Durable = oneshot::Receiver<Result<i64, DomainError>>;

struct Job {
    session_id: Arc<str>,
    rows: Vec<RecordRow>,
    reply: oneshot::Sender<Result<i64, DomainError>>,
}

/// Handle to the pipeline; cheap to clone. The writers stop once every handle is gone and
/// the queue is drained.
#[derive(Clone)]
pub struct RecordPipeline {
    tx: mpsc::Sender<Job>,
}

impl RecordPipeline {
    /// Starts the writers on the current runtime.
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let writers = match store.kind() {
            BackendKind::Sqlite => 1,
            BackendKind::Postgres => POSTGRES_WRITERS,
        };
        for _ in 0..writers {
            tokio::spawn(writer(store.clone(), rx.clone()));
        }
        Self { tx }
    }

    /// Queues `rows` of one session; the receiver resolves once they are durable. Waits only
    /// for room in the queue.
    pub async fn submit(
        &self,
        session_id: Arc<str>,
        rows: Vec<RecordRow>,
    ) -> Result<Durable, DomainError> {
        let (reply, durable) = oneshot::channel();
        self.tx
            .send(Job {
                session_id,
                rows,
                reply,
            })
            .await
            .map_err(|_| pipeline_stopped())?;
        Ok(durable)
    }
}

async fn writer(store: Store, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let group = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut rows = first.rows.len();
            let mut group = vec![first];
            while rows < MAX_ROWS_PER_COMMIT {
                match rx.try_recv() {
                    Ok(job) => {
                        rows += job.rows.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            group
        };
        commit(&store, group).await;
    }
}

/// One session's part of a group: its batches in arrival order, merged.
struct Part {
    session_id: Arc<str>,
    rows: Vec<RecordRow>,
    replies: Vec<oneshot::Sender<Result<i64, DomainError>>>,
}

fn merge(group: Vec<Job>) -> Vec<Part> {
    let mut index: HashMap<Arc<str>, usize> = HashMap::new();
    let mut parts: Vec<Part> = Vec::new();
    for job in group {
        match index.get(&job.session_id) {
            Some(&i) => {
                parts[i].rows.extend(job.rows);
                parts[i].replies.push(job.reply);
            }
            None => {
                index.insert(job.session_id.clone(), parts.len());
                parts.push(Part {
                    session_id: job.session_id,
                    rows: job.rows,
                    replies: vec![job.reply],
                });
            }
        }
    }
    parts
}

async fn commit(store: &Store, group: Vec<Job>) {
    let parts = merge(group);
    let rows: usize = parts.iter().map(|p| p.rows.len()).sum();
    let started = std::time::Instant::now();
    let batches: Vec<(&str, &[RecordRow])> = parts
        .iter()
        .map(|p| (&*p.session_id, p.rows.as_slice()))
        .collect();
    let outcomes = match store.insert_record_batches(&batches).await {
        Ok(outcomes) => outcomes
            .into_iter()
            .map(|o| o.map_err(ingest_error))
            .collect(),
        // The whole transaction failed. If one session's rows were the cause, committing
        // each session on its own keeps the others from failing with it.
        Err(e) if parts.len() > 1 => {
            tracing::warn!(error = %e, sessions = parts.len(), rows, "group commit failed; storing sessions one by one");
            let mut outcomes = Vec::with_capacity(parts.len());
            for batch in &batches {
                outcomes.push(
                    match store
                        .insert_record_batches(std::slice::from_ref(batch))
                        .await
                    {
                        Ok(mut one) => one.pop().unwrap_or(Ok(0)).map_err(ingest_error),
                        Err(e) => Err(ingest_error(e)),
                    },
                );
            }
            outcomes
        }
        Err(e) => vec![Err(ingest_error(e))],
    };
    crate::metrics::metrics().observe_commit(rows, started.elapsed());
    for (part, outcome) in parts.into_iter().zip(outcomes) {
        for reply in part.replies {
            // A dropped receiver is an agent stream that ended meanwhile; its rows are stored.
            let _ = reply.send(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::TestDb;

    fn rows(seqs: std::ops::RangeInclusive<i64>) -> Vec<RecordRow> {
        seqs.map(|seq| RecordRow {
            seq,
            ts_ms: seq,
            kind: "log".into(),
            body: seq.to_le_bytes().to_vec(),
        })
        .collect()
    }

    #[test]
    fn merges_a_sessions_batches_in_arrival_order() {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let job = |id: &Arc<str>, r| Job {
            session_id: id.clone(),
            rows: rows(r),
            reply: oneshot::channel().0,
        };
        let parts = merge(vec![job(&a, 1..=2), job(&b, 1..=1), job(&a, 3..=4)]);
        assert_eq!(parts.len(), 2);
        assert_eq!(&*parts[0].session_id, "a");
        let seqs: Vec<i64> = parts[0].rows.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert_eq!(parts[0].replies.len(), 2);
        assert_eq!(parts[1].rows.len(), 1);
    }

    async fn sessions(db: &TestDb, n: usize) -> Vec<Arc<str>> {
        let mut ids = Vec::new();
        let (_, project) = crate::store::tests::account_and_project(&db.store, "web").await;
        for _ in 0..n {
            ids.push(
                crate::store::tests::session_in(&db.store, &project)
                    .await
                    .id
                    .into(),
            );
        }
        ids
    }

    async fn many_sessions_concurrently(db: TestDb) {
        let pipeline = RecordPipeline::start(db.store.clone());
        let ids = sessions(&db, 20).await;
        // Every session submits 10 batches without waiting; all of them must come back in
        // order with the session's contiguous seq.
        let mut waits = Vec::new();
        for id in &ids {
            for b in 0..10i64 {
                let durable = pipeline
                    .submit(id.clone(), rows(b * 50 + 1..=b * 50 + 50))
                    .await
                    .unwrap();
                waits.push((id.clone(), b, durable));
            }
        }
        // On PostgreSQL a later batch may commit first (several writers); it then sees the
        // gap and acks less, and the earlier batch's commit covers both. The highest ack a
        // session gets is always everything it sent.
        let mut best: HashMap<Arc<str>, i64> = HashMap::new();
        for (id, b, durable) in waits {
            let acked = durable.await.unwrap().unwrap();
            assert!(
                (0..=500).contains(&acked),
                "session {id} batch {b}: acked {acked}"
            );
            let top = best.entry(id).or_default();
            *top = (*top).max(acked);
        }
        assert!(best.values().all(|&a| a == 500), "{best:?}");
        for id in &ids {
            assert_eq!(db.store.acked_seq(id).await.unwrap(), 500);
            let stored = db.store.read_records(id, 1, 1000).await.unwrap();
            assert_eq!(stored, rows(1..=500));
        }
    }

    async fn one_bad_batch_fails_alone(db: TestDb) {
        let pipeline = RecordPipeline::start(db.store.clone());
        let ids = sessions(&db, 2).await;
        let ghost: Arc<str> = "no-such-session".into();
        let bad = pipeline.submit(ids[0].clone(), rows(0..=3)).await.unwrap();
        let unknown = pipeline.submit(ghost, rows(1..=3)).await.unwrap();
        let good = pipeline.submit(ids[1].clone(), rows(1..=3)).await.unwrap();
        assert!(matches!(bad.await.unwrap(), Err(DomainError::Invalid(_))));
        assert!(matches!(
            unknown.await.unwrap(),
            Err(DomainError::NotFound(_))
        ));
        assert_eq!(good.await.unwrap(), Ok(3));
        assert_eq!(db.store.acked_seq(&ids[0]).await.unwrap(), 0);
    }

    crate::store::tests::both_backends!(many_sessions_concurrently, one_bad_batch_fails_alone);
}
