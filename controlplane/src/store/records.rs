//! A session's record stream: rows keyed by (session, seq), stored idempotently, with the
//! session's `acked_seq` kept at the highest seq below which nothing is missing.

use super::{BeginWrite, DbContext, Error, Result, Store, clamp_limit, with_pool};
use std::future::Future;

/// Largest multi-row INSERT on SQLite: 256 rows x 5 placeholders stays far below its limit
/// of 32766 bind parameters.
const MAX_ROWS_PER_INSERT: usize = 256;
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

/// `INSERT … VALUES (?,?,?,?,?),(?,?,?,?,?),… ON CONFLICT DO NOTHING` for `rows` rows (SQLite
/// only), `rows` a power of two. Only these nine statements ever exist, so all of them stay in
/// the prepared-statement cache.
///
/// The placeholders are anonymous on purpose: sqlx looks up every numbered parameter's name
/// with `sqlite3_bind_parameter_name`, a linear scan of the statement's names, which made
/// binding a 256-row statement quadratic — 44 % of the writer's time in a profile of 100
/// sessions streaming. Anonymous parameters have no names to scan.
fn insert_sql(rows: usize) -> &'static str {
    use std::sync::OnceLock;
    static SQL: [OnceLock<String>; 9] = [const { OnceLock::new() }; 9];
    debug_assert!(rows.is_power_of_two() && rows <= MAX_ROWS_PER_INSERT);
    let slot = rows.trailing_zeros() as usize;
    SQL[slot].get_or_init(|| {
        let mut sql =
            String::from("INSERT INTO records (session_id, seq, ts_ms, kind, body) VALUES ");
        for i in 0..rows {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?,?,?,?,?)");
        }
        sql.push_str(" ON CONFLICT DO NOTHING");
        sql
    })
}

/// Splits `records` into INSERT statements: chunks of the largest size, the last one padded
/// up to a power of two by repeating its last row. The repeats are duplicates the INSERT
/// ignores; they buy one statement per chunk instead of one per set bit of its length.
fn chunks(records: &[RecordRow]) -> impl Iterator<Item = (usize, &[RecordRow])> {
    records
        .chunks(MAX_ROWS_PER_INSERT)
        .map(|chunk| (chunk.len().next_power_of_two(), chunk))
}

/// The end of the run of consecutive seqs that starts right after `prev`, counting `prev`
/// itself and the seqs in `records`.
fn contiguous_end(prev: i64, records: &[RecordRow]) -> i64 {
    let mut seqs: Vec<i64> = records
        .iter()
        .map(|r| r.seq)
        .filter(|s| *s > prev)
        .collect();
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

/// Writes one session's rows inside an open transaction. SQLite takes multi-row `VALUES`
/// statements from the cache; PostgreSQL takes the whole batch as arrays in one `UNNEST`
/// statement, which costs one round trip and one plan instead of one per 256 rows.
pub(crate) trait InsertRows {
    fn insert_rows<'c>(
        &'c mut self,
        session_id: &'c str,
        records: &'c [RecordRow],
    ) -> impl Future<Output = std::result::Result<(), sqlx::Error>> + Send + 'c;
}

impl InsertRows for sqlx::SqliteConnection {
    async fn insert_rows(
        &mut self,
        session_id: &str,
        records: &[RecordRow],
    ) -> std::result::Result<(), sqlx::Error> {
        for (size, chunk) in chunks(records) {
            let mut q = sqlx::query(insert_sql(size));
            let padding = std::iter::repeat_n(chunk.last(), size - chunk.len()).flatten();
            for r in chunk.iter().chain(padding) {
                q = q
                    .bind(session_id)
                    .bind(r.seq)
                    .bind(r.ts_ms)
                    .bind(r.kind.as_str())
                    .bind(r.body.as_slice());
            }
            q.execute(&mut *self).await?;
        }
        Ok(())
    }
}

impl InsertRows for sqlx::PgConnection {
    async fn insert_rows(
        &mut self,
        session_id: &str,
        records: &[RecordRow],
    ) -> std::result::Result<(), sqlx::Error> {
        if records.is_empty() {
            return Ok(());
        }
        let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
        let ts: Vec<i64> = records.iter().map(|r| r.ts_ms).collect();
        let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
        let bodies: Vec<&[u8]> = records.iter().map(|r| r.body.as_slice()).collect();
        sqlx::query(
            "INSERT INTO records (session_id, seq, ts_ms, kind, body)
             SELECT $1, u.seq, u.ts_ms, u.kind, u.body
             FROM UNNEST($2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::BYTEA[])
                  AS u(seq, ts_ms, kind, body)
             ON CONFLICT DO NOTHING",
        )
        .bind(session_id)
        .bind(seqs)
        .bind(ts)
        .bind(kinds)
        .bind(bodies)
        .execute(&mut *self)
        .await?;
        Ok(())
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
            let acked = with_pool!(self, |pool| {
                async {
                    let mut tx = pool.begin_write().await?;
                    let mut acked = Vec::with_capacity(order.len());
                    for &i in &order {
                        let (session_id, records) = batches[i];
                        // Touching the session row first locks it (PostgreSQL), so two
                        // connections storing for the same session compute acked_seq one
                        // after the other.
                        let Some(prev) = sqlx::query_scalar::<_, i64>(
                            "UPDATE sessions SET acked_seq = acked_seq WHERE id = $1
                             RETURNING acked_seq",
                        )
                        .bind(session_id)
                        .fetch_optional(&mut *tx)
                        .await?
                        else {
                            acked.push(None);
                            continue;
                        };
                        tx.insert_rows(session_id, records).await?;
                        // 1..=known are all stored now: prev was, and so is the part of this
                        // batch that continues it. Past that, the run may go on through rows
                        // stored earlier out of order; the index walk from `known` reads
                        // only those.
                        let known = contiguous_end(prev, records);
                        let seq = sqlx::query_scalar::<_, i64>(
                            "UPDATE sessions SET acked_seq = CASE
                                 WHEN EXISTS (SELECT 1 FROM records
                                              WHERE session_id = $1 AND seq = $2 + 1)
                                 THEN (SELECT r.seq FROM records r
                                       WHERE r.session_id = $1 AND r.seq > $2
                                         AND NOT EXISTS (SELECT 1 FROM records n
                                                         WHERE n.session_id = $1
                                                           AND n.seq = r.seq + 1)
                                       ORDER BY r.seq LIMIT 1)
                                 ELSE $2 END
                             WHERE id = $1 RETURNING acked_seq",
                        )
                        .bind(session_id)
                        .bind(known)
                        .fetch_one(&mut *tx)
                        .await?;
                        acked.push(Some(seq));
                    }
                    tx.commit().await?;
                    Ok(acked)
                }
                .await
            })
            .ctx(|| {
                let rows: usize = order.iter().map(|&i| batches[i].1.len()).sum();
                match order.as_slice() {
                    [one] => format!("storing {rows} records of session {}", batches[*one].0),
                    _ => format!("storing {rows} records of {} sessions", order.len()),
                }
            })?;
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

    fn rows(n: i64) -> Vec<RecordRow> {
        (1..=n)
            .map(|seq| RecordRow {
                seq,
                ts_ms: 0,
                kind: String::new(),
                body: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn chunks_are_powers_of_two_and_cover_everything() {
        for n in [0i64, 1, 2, 3, 255, 256, 257, 500, 1000, 4097] {
            let records = rows(n);
            let parts: Vec<_> = chunks(&records).collect();
            let covered: Vec<i64> = parts
                .iter()
                .flat_map(|(_, c)| c.iter().map(|r| r.seq))
                .collect();
            assert_eq!(covered, (1..=n).collect::<Vec<_>>());
            for (size, chunk) in &parts {
                assert!(size.is_power_of_two() && *size <= MAX_ROWS_PER_INSERT);
                assert!(chunk.len() <= *size && chunk.len() * 2 > *size);
            }
        }
        let sizes: Vec<_> = chunks(&rows(500)).map(|(s, c)| (s, c.len())).collect();
        assert_eq!(sizes, [(256, 256), (256, 244)]);
    }

    #[test]
    fn finds_the_contiguous_end_of_a_batch() {
        let batch = |seqs: &[i64]| {
            seqs.iter()
                .map(|&seq| RecordRow {
                    seq,
                    ts_ms: 0,
                    kind: String::new(),
                    body: Vec::new(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(contiguous_end(0, &batch(&[])), 0);
        assert_eq!(contiguous_end(0, &batch(&[3, 1, 2, 2, 5])), 3);
        assert_eq!(contiguous_end(4, &batch(&[1, 2, 5, 6, 8])), 6);
        assert_eq!(contiguous_end(4, &batch(&[6, 7])), 4);
    }

    #[test]
    fn insert_sql_uses_anonymous_placeholders() {
        assert_eq!(
            insert_sql(2),
            "INSERT INTO records (session_id, seq, ts_ms, kind, body) VALUES \
             (?,?,?,?,?),(?,?,?,?,?) ON CONFLICT DO NOTHING"
        );
        assert_eq!(insert_sql(256).matches('?').count(), 256 * 5);
        assert!(!insert_sql(256).contains('$'));
    }
}
