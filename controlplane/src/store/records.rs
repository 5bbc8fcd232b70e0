//! A session's record stream, keyed by (session, seq) and stored idempotently, with the
//! session's `acked_seq` kept at the highest seq below which nothing is missing. SQLite keeps
//! a row per record (here and in `sqlite_records.rs`); PostgreSQL a row per run of
//! consecutive records (`pg_records.rs`).

use super::{
    Backend, DbContext, Error, Result, Store, clamp_limit, pg_records, sqlite_records, with_pool,
};

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
/// only those.
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
                Backend::Postgres(pool) => pg_records::insert(pool, &sorted)
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
        let limit = clamp_limit(limit, MAX_READ);
        match self.backend() {
            Backend::Sqlite(pool, _) => sqlx::query_as::<_, RecordRow>(
                "SELECT seq, ts_ms, kind, body FROM records
                 WHERE session_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
            )
            .bind(session_id)
            .bind(from_seq)
            .bind(limit)
            .fetch_all(pool)
            .await
            .ctx(|| format!("reading records of session {session_id} from seq {from_seq}")),
            Backend::Postgres(pool) => {
                pg_records::read(pool, session_id, from_seq, limit as usize).await
            }
        }
    }

    /// Highest stored seq of the session (0 when none), gaps or not.
    pub async fn max_seq(&self, session_id: &str) -> Result<i64> {
        match self.backend() {
            Backend::Sqlite(pool, _) => sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MAX(seq) FROM records WHERE session_id = $1",
            )
            .bind(session_id)
            .fetch_one(pool)
            .await
            .map(|m| m.unwrap_or(0))
            .ctx(|| format!("reading the last seq of session {session_id}")),
            Backend::Postgres(pool) => pg_records::max_seq(pool, session_id).await,
        }
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
