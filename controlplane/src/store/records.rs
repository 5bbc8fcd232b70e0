//! A session's record stream: rows keyed by (session, seq), stored idempotently, with the
//! session's `acked_seq` kept at the highest seq below which nothing is missing.

use super::{
    Backend, DbContext, Error, Result, Store, clamp_limit, is_unique_violation, sqlite_records,
    with_pool,
};
use std::collections::HashMap;

const MAX_READ: u32 = 10_000;

/// One stored record. `kind` names the body's variant ("log", "event", "commit", "state",
/// "gap"); `body` is its encoding, opaque to the store.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RecordRow {
    pub seq: i64,
    pub ts_ms: i64,
    pub kind: String,
    pub body: Vec<u8>,
}

/// The end of the run of consecutive seqs that starts right after `prev`, counting `prev`
/// itself and `seqs`.
pub(super) fn contiguous_end(prev: i64, seqs: impl IntoIterator<Item = i64>) -> i64 {
    let mut seqs: Vec<i64> = seqs.into_iter().filter(|s| *s > prev).collect();
    seqs.sort_unstable();
    let mut end = prev;
    for seq in seqs {
        if seq == end + 1 {
            end = seq;
        } else if seq > end + 1 {
            break;
        }
    }
    end
}

/// The new `acked_seq` of session `$id`, given `$known`, a seq known to be stored with
/// everything before it: the end of the run of stored seqs that continues it, which may go on
/// through rows stored earlier out of order. The index walk starts at `$known`, so it reads
/// only those. One text for both backends' group commits.
macro_rules! advanced_acked_seq {
    ($id:literal, $known:literal) => {
        concat!(
            "CASE WHEN EXISTS (SELECT 1 FROM records WHERE session_id = ",
            $id,
            " AND seq = ",
            $known,
            " + 1)
             THEN (SELECT r.seq FROM records r
                   WHERE r.session_id = ",
            $id,
            " AND r.seq > ",
            $known,
            "
                     AND NOT EXISTS (SELECT 1 FROM records n
                                     WHERE n.session_id = ",
            $id,
            " AND n.seq = r.seq + 1)
                   ORDER BY r.seq LIMIT 1)
             ELSE ",
            $known,
            " END"
        )
    };
}

/// Advances one session's `acked_seq` past `?2` (see [`advanced_acked_seq`]), with SQLite's
/// numbered placeholders.
pub(super) const ADVANCE_ACKED_SQLITE_SQL: &str = concat!(
    "UPDATE sessions SET acked_seq = ",
    advanced_acked_seq!("?1", "?2"),
    " WHERE id = ?1 RETURNING acked_seq"
);

/// Advances the `acked_seq` of every session `$1[i]` past `$2[i]`, in one statement.
const ADVANCE_ACKED_MANY_SQL: &str = concat!(
    "UPDATE sessions AS s SET acked_seq = ",
    advanced_acked_seq!("u.id", "u.known"),
    " FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS u(id, known)
      WHERE s.id = u.id RETURNING s.id, s.acked_seq"
);

/// How a group's insert treats rows stored already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// A plain `INSERT`: one index descent per row. A row stored already fails the statement.
    Fails,
    /// `ON CONFLICT DO NOTHING`: PostgreSQL probes the index before the heap insert and
    /// descends it again to insert, which made a row cost 1.7× as much (500,000 rows: 4.7 s
    /// against 2.6 s, same run).
    Skipped,
}

/// PostgreSQL's group commit. Rows at or below a session's `acked_seq` are stored already
/// and are left out, so a group nearly always holds new rows only and goes in with a plain
/// `INSERT`. Only an agent's resend of rows stored past a gap (after a reconnect), or one
/// batch queued twice, meets a stored row; that group is stored again, skipping them.
async fn insert_postgres(
    pool: &sqlx::PgPool,
    batches: &[(&str, &[RecordRow])],
) -> std::result::Result<Vec<Option<i64>>, sqlx::Error> {
    match insert_postgres_as(pool, batches, Stored::Fails).await {
        Err(e) if is_unique_violation(&e) => {
            tracing::debug!("a group met records stored already; storing it again, skipping them");
            insert_postgres_as(pool, batches, Stored::Skipped).await
        }
        other => other,
    }
}

/// One attempt in three statements whatever the number of sessions: lock the sessions' rows
/// and read their `acked_seq`, insert every row as arrays in one `UNNEST`, advance every
/// `acked_seq`. Per-session statements made small paced groups cost a round trip and an
/// executor start per session.
async fn insert_postgres_as(
    pool: &sqlx::PgPool,
    batches: &[(&str, &[RecordRow])],
    stored: Stored,
) -> std::result::Result<Vec<Option<i64>>, sqlx::Error> {
    let mut ids: Vec<&str> = batches.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut tx = pool.begin().await?;
    // Read without a lock: acked_seq only grows, so rows at or below it are stored already
    // whatever other writers do meanwhile.
    let seen: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT id, acked_seq FROM sessions WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    let rows = batches.iter().flat_map(|(id, records)| {
        let acked = seen.get(*id).copied();
        records
            .iter()
            .filter(move |r| acked.is_some_and(|acked| r.seq > acked))
            .map(move |r| (*id, r))
    });
    let (mut sids, mut seqs, mut ts, mut kinds, mut bodies) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, r) in rows {
        sids.push(id);
        seqs.push(r.seq);
        ts.push(r.ts_ms);
        kinds.push(r.kind.as_str());
        bodies.push(r.body.as_slice());
    }
    if !sids.is_empty() {
        macro_rules! insert {
            () => {
                "INSERT INTO records (session_id, seq, ts_ms, kind, body)
                 SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::BYTEA[])"
            };
        }
        sqlx::query(match stored {
            Stored::Fails => insert!(),
            Stored::Skipped => concat!(insert!(), " ON CONFLICT DO NOTHING"),
        })
        .bind(&sids)
        .bind(&seqs)
        .bind(&ts)
        .bind(&kinds)
        .bind(&bodies)
        .execute(&mut *tx)
        .await?;
    }
    // Sessions are locked only now, after the insert, so writers insert at the same time and
    // wait for each other only to advance acked_seq and commit. Locked before the insert, a
    // group holding most sessions made every other writer wait for its whole insert:
    // PostgreSQL's writers ran one at a time. The lock is taken in id order (no cycles) and
    // returns the acked_seq other writers committed meanwhile; the statements after it see
    // their rows.
    let prev: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT id, acked_seq FROM sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    // A session deleted between the two reads took its records with it before these were
    // inserted; they must not outlive it.
    let gone: Vec<&str> = seen
        .keys()
        .filter(|id| !prev.contains_key(*id))
        .map(String::as_str)
        .collect();
    if !gone.is_empty() {
        sqlx::query("DELETE FROM records WHERE session_id = ANY($1)")
            .bind(&gone)
            .execute(&mut *tx)
            .await?;
    }
    let mut session_seqs: HashMap<&str, Vec<i64>> = HashMap::new();
    for (id, seq) in sids.iter().zip(&seqs) {
        session_seqs.entry(*id).or_default().push(*seq);
    }
    let (known_ids, knowns): (Vec<&str>, Vec<i64>) = ids
        .iter()
        .filter_map(|id| {
            let prev = *prev.get(*id)?;
            let seqs = session_seqs.remove(id).unwrap_or_default();
            Some((*id, contiguous_end(prev, seqs)))
        })
        .unzip();
    let acked: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(ADVANCE_ACKED_MANY_SQL)
        .bind(&known_ids)
        .bind(&knowns)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    tx.commit().await?;
    Ok(batches
        .iter()
        .map(|(id, _)| acked.get(*id).copied())
        .collect())
}

/// What a failed group commit was storing, for its error.
pub(super) fn storing(batches: &[(&str, &[RecordRow])]) -> String {
    let rows: usize = batches.iter().map(|(_, r)| r.len()).sum();
    match batches {
        [(id, _)] => format!("storing {rows} records of session {id}"),
        _ => format!("storing {rows} records of {} sessions", batches.len()),
    }
}

/// What one session's share of a group commit came to.
pub type BatchOutcome = Result<i64>;

fn check_seqs(session_id: &str, records: &[RecordRow]) -> Result<()> {
    match records.iter().find(|r| r.seq < 1) {
        Some(bad) => Err(Error::Invalid {
            what: "record seq",
            reason: format!("{} in session {session_id}: seqs start at 1", bad.seq),
        }),
        None => Ok(()),
    }
}

impl Store {
    /// Stores `records` for the session in one transaction, ignoring seqs already stored,
    /// and returns the new `acked_seq`: the highest seq such that 1..=seq are all stored.
    /// Seqs start at 1. An unknown session is [`Error::NotFound`].
    pub async fn insert_records(&self, session_id: &str, records: &[RecordRow]) -> Result<i64> {
        let mut outcomes = self.insert_record_batches(&[(session_id, records)]).await?;
        outcomes.pop().unwrap_or(Ok(0))
    }

    /// Group commit: stores several sessions' batches in one transaction (one fsync for all
    /// of them) and returns each batch's outcome in input order — the session's new
    /// `acked_seq`, or why that batch alone was refused (unknown session, bad seq). The outer
    /// error means the transaction failed and nothing was stored.
    ///
    /// Session rows are locked in id order, so concurrent group commits (several writers on
    /// PostgreSQL) wait for each other instead of deadlocking.
    pub async fn insert_record_batches(
        &self,
        batches: &[(&str, &[RecordRow])],
    ) -> Result<Vec<BatchOutcome>> {
        let mut outcomes: Vec<Option<BatchOutcome>> = batches
            .iter()
            .map(|(id, rows)| check_seqs(id, rows).err().map(Err))
            .collect();
        let mut order: Vec<usize> = (0..batches.len())
            .filter(|&i| outcomes[i].is_none())
            .collect();
        order.sort_by_key(|&i| batches[i].0);
        if !order.is_empty() {
            let sorted: Vec<(&str, &[RecordRow])> = order.iter().map(|&i| batches[i]).collect();
            let acked = match self.backend() {
                Backend::Sqlite(_, writer) => {
                    sqlite_records::run_blocking(|| writer.insert(&sorted))?
                }
                Backend::Postgres(pool) => insert_postgres(pool, &sorted)
                    .await
                    .ctx(|| storing(&sorted))?,
            };
            for (&i, seq) in order.iter().zip(acked) {
                outcomes[i] =
                    Some(seq.ok_or_else(|| Error::NotFound(format!("session {}", batches[i].0))));
            }
        }
        Ok(outcomes.into_iter().map(|o| o.unwrap_or(Ok(0))).collect())
    }

    /// Up to `limit` records with seq ≥ `from_seq`, in seq order.
    pub async fn read_records(
        &self,
        session_id: &str,
        from_seq: i64,
        limit: u32,
    ) -> Result<Vec<RecordRow>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, RecordRow>(
                "SELECT seq, ts_ms, kind, body FROM records
                 WHERE session_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
            )
            .bind(session_id)
            .bind(from_seq)
            .bind(clamp_limit(limit, MAX_READ))
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("reading records of session {session_id} from seq {from_seq}"))
    }

    /// Highest stored seq of the session (0 when none), gaps or not.
    pub async fn max_seq(&self, session_id: &str) -> Result<i64> {
        with_pool!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MAX(seq) FROM records WHERE session_id = $1",
            )
            .bind(session_id)
            .fetch_one(pool)
            .await
        })
        .map(|m| m.unwrap_or(0))
        .ctx(|| format!("reading the last seq of session {session_id}"))
    }

    /// The session's highest contiguous stored seq.
    pub async fn acked_seq(&self, session_id: &str) -> Result<i64> {
        with_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT acked_seq FROM sessions WHERE id = $1")
                .bind(session_id)
                .fetch_optional(pool)
                .await
        })
        .ctx(|| format!("reading acked seq of session {session_id}"))?
        .ok_or_else(|| Error::NotFound(format!("session {session_id}")))
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn finds_the_contiguous_end_of_a_batch() {
        assert_eq!(contiguous_end(0, []), 0);
        assert_eq!(contiguous_end(0, [3, 1, 2, 2, 5]), 3);
        assert_eq!(contiguous_end(4, [1, 2, 5, 6, 8]), 6);
        assert_eq!(contiguous_end(4, [6, 7]), 4);
    }
}
