//! A session's live tail: its most recent durable records, in memory, for attached viewers.
//!
//! Without it every viewer re-read the store at every wake-up, so a hundred viewers of one
//! session cost a hundred queries per commit and starved the writer. The tail holds a run of
//! consecutive seqs, every one of them already durable (records enter only after their group
//! commit, and only up to the session's contiguous `acked_seq`). A viewer whose next seq is
//! inside the run is served from memory; one that is behind it (it attached from an old seq,
//! or fell behind) reads the store, exactly as before, until it reaches the run. So the seam
//! between history and live stays the same seq arithmetic, with no gap and no duplicate.
//!
//! Only watched sessions keep a tail, and it is bounded in records and bytes.

use kortix_proto::v1::Record;
use prost::Message;
use std::collections::VecDeque;

/// Records kept per watched session. About a second of a busy session: viewers that fall
/// behind by less are still served from memory, which is what keeps a hundred viewers of one
/// session from turning into a hundred store readers.
pub const TAIL_RECORDS: usize = 32_768;
/// Encoded bytes kept per watched session.
pub const TAIL_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct Tail {
    /// Consecutive durable records, oldest first.
    records: VecDeque<Record>,
    bytes: usize,
}

impl Tail {
    /// Seq after the newest record held (0 when empty).
    fn next(&self) -> u64 {
        self.records.back().map_or(0, |r| r.seq + 1)
    }

    /// Seq of the newest record held (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.records.back().map_or(0, |r| r.seq)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Takes the records of `batch` that are durable now that the session's contiguous seq
    /// is `acked`: the run of consecutive seqs ending at `acked`. If that run continues the
    /// tail it is appended; otherwise (the records between were stored earlier, out of
    /// order, or by another replica) it replaces the tail.
    pub fn publish(&mut self, acked: u64, batch: &[Record]) {
        if acked < self.next() {
            return;
        }
        let mut seqs: Vec<(u64, usize)> = batch
            .iter()
            .enumerate()
            .filter(|(_, r)| r.seq >= 1 && r.seq <= acked)
            .map(|(i, r)| (r.seq, i))
            .collect();
        seqs.sort_unstable();
        seqs.dedup_by_key(|(seq, _)| *seq);
        // The consecutive run that ends at `acked`.
        let mut start = seqs.len();
        let mut want = acked;
        while start > 0 && seqs[start - 1].0 == want {
            start -= 1;
            want -= 1;
        }
        let run = &seqs[start..];
        let Some(&(first, _)) = run.first() else {
            // Nothing of this batch is the newest durable part: the tail no longer reaches
            // `acked`, so it would only ever send viewers to the store. Drop it.
            self.clear();
            return;
        };
        let next = self.next();
        if next == 0 || first > next {
            self.clear();
        }
        let from = if self.is_empty() { first } else { next };
        for &(seq, i) in run {
            if seq >= from {
                let record = batch[i].clone();
                self.bytes += record.encoded_len();
                self.records.push_back(record);
            }
        }
        while self.records.len() > TAIL_RECORDS
            || (self.bytes > TAIL_BYTES && self.records.len() > 1)
        {
            if let Some(old) = self.records.pop_front() {
                self.bytes -= old.encoded_len();
            }
        }
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.bytes = 0;
    }

    /// Up to `max` records from `from_seq`; empty when `from_seq` is just past the newest
    /// (the viewer has everything this replica published — another replica may have stored
    /// more, which the viewer's periodic store read finds); `None` when the tail does not
    /// reach `from_seq`: the viewer must read the store.
    pub fn read(&self, from_seq: u64, max: usize) -> Option<Vec<Record>> {
        let first = self.records.front()?.seq;
        if from_seq < first || from_seq > self.next() {
            return None;
        }
        let skip = usize::try_from(from_seq - first).unwrap_or(usize::MAX);
        Some(self.records.iter().skip(skip).take(max).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kortix_proto::v1::{LogLine, record::Body};

    fn rec(seq: u64) -> Record {
        Record {
            seq,
            ts_unix_ms: 0,
            body: Some(Body::Log(LogLine {
                stream: 1,
                line: format!("line {seq}"),
            })),
        }
    }

    fn recs(seqs: impl IntoIterator<Item = u64>) -> Vec<Record> {
        seqs.into_iter().map(rec).collect()
    }

    fn seqs(records: Option<Vec<Record>>) -> Option<Vec<u64>> {
        records.map(|v| v.iter().map(|r| r.seq).collect())
    }

    #[test]
    fn appends_consecutive_batches_and_serves_from_any_held_seq() {
        let mut t = Tail::default();
        assert_eq!(seqs(t.read(1, 10)), None);
        t.publish(3, &recs(1..=3));
        t.publish(5, &recs(4..=5));
        assert_eq!(seqs(t.read(1, 10)), Some(vec![1, 2, 3, 4, 5]));
        assert_eq!(seqs(t.read(4, 1)), Some(vec![4]));
        assert_eq!(seqs(t.read(6, 10)), Some(vec![]), "caught up");
        assert_eq!(seqs(t.read(7, 10)), None, "beyond the end: ask the store");
        // Resent duplicates change nothing.
        t.publish(5, &recs(3..=5));
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn only_the_durable_run_ending_at_acked_enters() {
        let mut t = Tail::default();
        // 1..=3 durable, 5 stored out of order but not durable yet.
        t.publish(3, &recs([1, 2, 3, 5]));
        assert_eq!(seqs(t.read(1, 10)), Some(vec![1, 2, 3]));
        // 4 arrives and makes 4..=5 durable; 5 came in an earlier batch, so the run in this
        // batch (just 4) does not end at acked: the tail is dropped, viewers use the store.
        t.publish(5, &recs([4]));
        assert_eq!(seqs(t.read(4, 10)), None);
        // The next batch starts a fresh run.
        t.publish(7, &recs(6..=7));
        assert_eq!(seqs(t.read(5, 10)), None);
        assert_eq!(seqs(t.read(6, 10)), Some(vec![6, 7]));
    }

    #[test]
    fn a_run_that_does_not_continue_the_tail_replaces_it() {
        let mut t = Tail::default();
        t.publish(2, &recs(1..=2));
        // Another replica stored 3..=10; this one sees only the batch 11..=12.
        t.publish(12, &recs(11..=12));
        assert_eq!(seqs(t.read(1, 10)), None);
        assert_eq!(seqs(t.read(11, 10)), Some(vec![11, 12]));
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut t = Tail::default();
        let mut next = 1;
        for _ in 0..40 {
            let batch = recs(next..next + 1000);
            next += 1000;
            t.publish(next - 1, &batch);
        }
        assert_eq!(t.len(), TAIL_RECORDS);
        assert_eq!(t.records.front().unwrap().seq, next - TAIL_RECORDS as u64);
        let big = Record {
            seq: next,
            ts_unix_ms: 0,
            body: Some(Body::Log(LogLine {
                stream: 1,
                line: "x".repeat(TAIL_BYTES),
            })),
        };
        t.publish(next, &[big]);
        assert_eq!(t.len(), 1, "one oversized record is kept alone");
        assert_eq!(seqs(t.read(next, 1)), Some(vec![next]));
    }
}
