//! PostgreSQL's records: one row per run of a session's consecutive records
//! (`record_batches`, migration 0015), not one row per record.
//!
//! At 100,000 records/s a row per record cost PostgreSQL about a core on its own (a heap
//! tuple, a btree entry and ~450 bytes of WAL per 200-byte record). An agent's batch of 100
//! records is now one row: the same 300,000 records went in 5× faster with 6× less WAL
//! (BENCHMARKS.md, "PostgreSQL, round 5").
//!
//! Invariants the writer keeps, under the lock of each session's row:
//! - a row holds seqs `first_seq..=last_seq`, all of them, no other;
//! - no two rows of a session share a seq;
//! - so a row lies wholly at or below the session's `acked_seq` (the end of the run from 1)
//!   or wholly above it, and the rows above it are those with `first_seq > acked_seq`.

use std::collections::HashMap;

use super::records::RecordRow;
use super::{DbContext, Error, Result};

/// A row holds at most this many records or (past its first record) this many encoded bytes,
/// so one row stays a bounded read.
const ROW_RECORDS: usize = 1_000;
const ROW_BYTES: usize = 1 << 20;
/// Rows read per statement at first while filling a read; doubled up to `MAX_PAGE_ROWS`.
const FIRST_PAGE_ROWS: i64 = 8;
const MAX_PAGE_ROWS: i64 = 64;

/// Per record, in seq order: `ts_ms` (i64), the kind's length (u32) and UTF-8 bytes, the
/// body's length (u32) and bytes, integers big-endian. Migration 0015 writes the same
/// encoding in SQL (`int8send`, `int4send`); the seq is the row's `first_seq` plus the index.
fn encode_into(out: &mut Vec<u8>, r: &RecordRow) {
    out.extend_from_slice(&r.ts_ms.to_be_bytes());
    out.extend_from_slice(&(r.kind.len() as u32).to_be_bytes());
    out.extend_from_slice(r.kind.as_bytes());
    out.extend_from_slice(&(r.body.len() as u32).to_be_bytes());
    out.extend_from_slice(&r.body);
}

fn encoded_len(r: &RecordRow) -> usize {
    16 + r.kind.len() + r.body.len()
}

/// The first `n` bytes of `rest`, advancing it; `None` when it is shorter.
fn split_off<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

/// Decodes the records of a row holding `first_seq..=last_seq`, keeping those with seq ≥
/// `from`. Anything but exactly that many well-formed records is [`Error::Corrupt`].
fn decode(
    session_id: &str,
    first_seq: i64,
    last_seq: i64,
    bytes: &[u8],
    from: i64,
    out: &mut Vec<RecordRow>,
) -> Result<()> {
    let corrupt = |reason: &str| Error::Corrupt {
        what: "record batch",
        reason: format!("session {session_id}, seqs {first_seq}..={last_seq}: {reason}"),
    };
    let mut rest = bytes;
    let mut take = |n: usize| split_off(&mut rest, n).ok_or_else(|| corrupt("truncated"));
    let mut seq = first_seq;
    while seq <= last_seq {
        let ts_ms = i64::from_be_bytes(take(8)?.try_into().expect("8 bytes"));
        let kind_len = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        let kind = take(kind_len)?;
        let body_len = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        let body = take(body_len)?;
        if seq >= from {
            let kind = std::str::from_utf8(kind).map_err(|_| corrupt("a kind is not UTF-8"))?;
            out.push(RecordRow {
                seq,
                ts_ms,
                kind: kind.to_string(),
                body: body.to_vec(),
            });
        }
        seq += 1;
    }
    if !rest.is_empty() {
        return Err(corrupt("bytes after the last record"));
    }
    Ok(())
}

/// One row to insert.
#[derive(Debug, PartialEq, Eq)]
struct NewRow {
    first_seq: i64,
    last_seq: i64,
    records: Vec<u8>,
}

/// What one session's share of a group comes to: the rows to insert and the new
/// `acked_seq`. `acked` is the session's `acked_seq`, `stored` the `(first, last)` seqs of its
/// rows above it, `records` its records in the group's order (the first of a seq wins, and a
/// stored seq is never stored again).
fn plan(acked: i64, stored: &[(i64, i64)], records: &[&RecordRow]) -> (Vec<NewRow>, i64) {
    let is_stored = |seq: i64| stored.iter().any(|&(f, l)| f <= seq && seq <= l);
    let mut fresh: Vec<&RecordRow> = Vec::with_capacity(records.len());
    let mut seen = std::collections::HashSet::with_capacity(records.len());
    for r in records {
        if r.seq > acked && seen.insert(r.seq) && !is_stored(r.seq) {
            fresh.push(r);
        }
    }
    fresh.sort_by_key(|r| r.seq);
    let mut rows: Vec<NewRow> = Vec::new();
    let mut count = 0;
    for r in fresh {
        let extends = rows.last().is_some_and(|row| {
            row.last_seq + 1 == r.seq
                && count < ROW_RECORDS
                && row.records.len() + encoded_len(r) <= ROW_BYTES
        });
        if !extends {
            rows.push(NewRow {
                first_seq: r.seq,
                last_seq: r.seq,
                records: Vec::with_capacity(encoded_len(r)),
            });
            count = 0;
        }
        let row = rows.last_mut().expect("a row was just pushed");
        row.last_seq = r.seq;
        encode_into(&mut row.records, r);
        count += 1;
    }
    let mut spans: Vec<(i64, i64)> = stored.to_vec();
    spans.extend(rows.iter().map(|r| (r.first_seq, r.last_seq)));
    spans.sort_unstable();
    let mut end = acked;
    for (first, last) in spans {
        if first == end + 1 {
            end = last;
        } else if first > end + 1 {
            break;
        }
    }
    (rows, end)
}

/// PostgreSQL's group commit, in four statements whatever the number of sessions: lock the
/// sessions' rows in id order (concurrent writers wait instead of deadlocking) and read their
/// `acked_seq`; read their rows above it (nearly always none: only past a gap); insert the
/// new runs; advance the `acked_seq`s that moved. Under the lock the writer knows exactly
/// what is stored, so a resend stores nothing twice. (With a row per record the sessions
/// were locked after the insert so writers could insert at the same time; a batch row makes
/// the insert a small part of a commit.)
pub(super) async fn insert(
    pool: &sqlx::PgPool,
    batches: &[(&str, &[RecordRow])],
) -> std::result::Result<Vec<Option<i64>>, sqlx::Error> {
    let mut ids: Vec<&str> = batches.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut tx = pool.begin().await?;
    let locked: Vec<(String, i64)> = sqlx::query_as(
        "SELECT id, acked_seq FROM sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let (known, ackeds): (Vec<&str>, Vec<i64>) =
        locked.iter().map(|(id, a)| (id.as_str(), *a)).unzip();
    let mut stored: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    if !known.is_empty() {
        // `OFFSET 0` keeps the planner from flattening the subquery into a join, which it
        // planned as a scan of the whole table while the table was small: this way it is an
        // index walk per session, starting at its acked_seq.
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT u.id, b.first_seq, b.last_seq
             FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS u(id, acked)
             CROSS JOIN LATERAL (SELECT first_seq, last_seq FROM record_batches
                                 WHERE session_id = u.id AND first_seq > u.acked
                                 OFFSET 0) b",
        )
        .bind(&known)
        .bind(&ackeds)
        .fetch_all(&mut *tx)
        .await?;
        for (id, first, last) in rows {
            stored.entry(id).or_default().push((first, last));
        }
    }
    let mut by_session: HashMap<&str, Vec<&RecordRow>> = HashMap::new();
    for (id, records) in batches {
        by_session.entry(id).or_default().extend(records.iter());
    }
    let (mut sids, mut firsts, mut lasts, mut bodies) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut moved_ids, mut moved_to) = (Vec::new(), Vec::new());
    let mut acked: HashMap<&str, i64> = HashMap::with_capacity(locked.len());
    for (id, prev) in &locked {
        let id = id.as_str();
        let records = by_session.get(id).map(Vec::as_slice).unwrap_or_default();
        let above = stored.get(id).map(Vec::as_slice).unwrap_or_default();
        let (rows, end) = plan(*prev, above, records);
        for row in rows {
            sids.push(id);
            firsts.push(row.first_seq);
            lasts.push(row.last_seq);
            bodies.push(row.records);
        }
        if end != *prev {
            moved_ids.push(id);
            moved_to.push(end);
        }
        acked.insert(id, end);
    }
    if !sids.is_empty() {
        sqlx::query(
            "INSERT INTO record_batches (session_id, first_seq, last_seq, records)
             SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BYTEA[])",
        )
        .bind(&sids)
        .bind(&firsts)
        .bind(&lasts)
        .bind(&bodies)
        .execute(&mut *tx)
        .await?;
    }
    if !moved_ids.is_empty() {
        sqlx::query(
            "UPDATE sessions AS s SET acked_seq = u.acked
             FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS u(id, acked) WHERE s.id = u.id",
        )
        .bind(&moved_ids)
        .bind(&moved_to)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(batches
        .iter()
        .map(|(id, _)| acked.get(*id).copied())
        .collect())
}

/// Up to `limit` records of the session with seq ≥ `from_seq`, in seq order: from the row
/// holding `from_seq` (or the first after it) on, a few rows per statement.
pub(super) async fn read(
    pool: &sqlx::PgPool,
    session_id: &str,
    from_seq: i64,
    limit: usize,
) -> Result<Vec<RecordRow>> {
    let ctx = || format!("reading records of session {session_id} from seq {from_seq}");
    let mut out = Vec::new();
    // The first statement starts at the row holding from_seq, found by the index walk back
    // from it; the later ones after the last row read.
    let mut after: Option<i64> = None;
    let mut page = FIRST_PAGE_ROWS;
    while out.len() < limit {
        let rows: Vec<(i64, i64, Vec<u8>)> = match after {
            None => sqlx::query_as(
                "SELECT first_seq, last_seq, records FROM record_batches
                 WHERE session_id = $1 AND first_seq >= COALESCE(
                     (SELECT first_seq FROM record_batches
                      WHERE session_id = $1 AND first_seq <= $2
                      ORDER BY first_seq DESC LIMIT 1), $2)
                 ORDER BY first_seq LIMIT $3",
            )
            .bind(session_id)
            .bind(from_seq)
            .bind(page),
            Some(after) => sqlx::query_as(
                "SELECT first_seq, last_seq, records FROM record_batches
                 WHERE session_id = $1 AND first_seq > $2 ORDER BY first_seq LIMIT $3",
            )
            .bind(session_id)
            .bind(after)
            .bind(page),
        }
        .fetch_all(pool)
        .await
        .ctx(ctx)?;
        let done = (rows.len() as i64) < page;
        for (first, last, bytes) in &rows {
            decode(session_id, *first, *last, bytes, from_seq, &mut out)?;
            after = Some(*first);
        }
        if done {
            break;
        }
        page = (page * 2).min(MAX_PAGE_ROWS);
    }
    out.truncate(limit);
    Ok(out)
}

/// Highest stored seq of the session (0 when none): the last row's `last_seq`, rows being
/// ordered the same by first and last seq.
pub(super) async fn max_seq(pool: &sqlx::PgPool, session_id: &str) -> Result<i64> {
    sqlx::query_scalar::<_, i64>(
        "SELECT last_seq FROM record_batches WHERE session_id = $1
         ORDER BY first_seq DESC LIMIT 1",
    )
    .bind(session_id)
    .fetch_optional(pool)
    .await
    .map(|m| m.unwrap_or(0))
    .ctx(|| format!("reading the last seq of session {session_id}"))
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn rec(seq: i64) -> RecordRow {
        RecordRow {
            seq,
            ts_ms: 1_000 + seq,
            kind: if seq % 2 == 0 { "log" } else { "event" }.to_string(),
            body: format!("body {seq}").into_bytes(),
        }
    }

    fn decoded(row: &NewRow, from: i64) -> Result<Vec<RecordRow>> {
        let mut out = Vec::new();
        decode(
            "s",
            row.first_seq,
            row.last_seq,
            &row.records,
            from,
            &mut out,
        )?;
        Ok(out)
    }

    #[test]
    fn a_batch_becomes_runs_that_decode_back() {
        let records: Vec<RecordRow> = [5, 3, 4, 9, 3, 10, 12].into_iter().map(rec).collect();
        let refs: Vec<&RecordRow> = records.iter().collect();
        let (rows, acked) = plan(2, &[], &refs);
        let spans: Vec<_> = rows.iter().map(|r| (r.first_seq, r.last_seq)).collect();
        assert_eq!(spans, [(3, 5), (9, 10), (12, 12)]);
        assert_eq!(acked, 5);
        assert_eq!(decoded(&rows[0], 0).unwrap(), [rec(3), rec(4), rec(5)]);
        assert_eq!(decoded(&rows[0], 4).unwrap(), [rec(4), rec(5)]);
        assert_eq!(decoded(&rows[1], 11).unwrap(), []);
    }

    #[test]
    fn stored_and_acked_seqs_are_left_out_and_the_first_of_a_seq_wins() {
        let mut changed = rec(7);
        changed.body = b"changed".to_vec();
        let records = [rec(1), rec(6), rec(7), changed, rec(8), rec(11)];
        let refs: Vec<&RecordRow> = records.iter().collect();
        // 1..=4 acked; 7..=8 and 10..=10 stored past the gap at 5 and 9.
        let (rows, acked) = plan(4, &[(7, 8), (10, 10)], &refs);
        let spans: Vec<_> = rows.iter().map(|r| (r.first_seq, r.last_seq)).collect();
        assert_eq!(spans, [(6, 6), (11, 11)]);
        assert_eq!(acked, 4, "5 is still missing");
        let (rows, acked) = plan(4, &[(6, 8), (10, 11)], &[&rec(5), &rec(9)]);
        assert_eq!(rows.len(), 2);
        assert_eq!(acked, 11, "the resend fills both gaps");
    }

    #[test]
    fn rows_are_bounded() {
        let records: Vec<RecordRow> = (1..=2_500).map(rec).collect();
        let refs: Vec<&RecordRow> = records.iter().collect();
        let (rows, acked) = plan(0, &[], &refs);
        let spans: Vec<_> = rows.iter().map(|r| (r.first_seq, r.last_seq)).collect();
        assert_eq!(spans, [(1, 1_000), (1_001, 2_000), (2_001, 2_500)]);
        assert_eq!(acked, 2_500);
        let big = |seq| RecordRow {
            body: vec![7; ROW_BYTES / 2 - 32],
            ..rec(seq)
        };
        let records = [big(1), big(2), big(3)];
        let refs: Vec<&RecordRow> = records.iter().collect();
        let spans: Vec<_> = plan(0, &[], &refs)
            .0
            .iter()
            .map(|r| (r.first_seq, r.last_seq))
            .collect();
        assert_eq!(
            spans,
            [(1, 2), (3, 3)],
            "two fit in a row, a third does not"
        );
    }

    #[test]
    fn damaged_rows_are_errors_not_panics() {
        let (rows, _) = plan(0, &[], &[&rec(1), &rec(2)]);
        let bytes = &rows[0].records;
        let mut out = Vec::new();
        for cut in 0..bytes.len() {
            assert!(decode("s", 1, 2, &bytes[..cut], 0, &mut out).is_err());
        }
        assert!(
            decode("s", 1, 1, bytes, 0, &mut out).is_err(),
            "extra bytes"
        );
        assert!(decode("s", 1, 3, bytes, 0, &mut out).is_err(), "too few");
        let mut huge = bytes.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode("s", 1, 2, &huge, 0, &mut out).is_err());
    }
}
