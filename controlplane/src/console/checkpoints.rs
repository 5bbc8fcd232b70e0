//! Saved interpretations of sessions, so a viewer does not re-read a session from its first
//! record. A session's timeline state (open tool calls, half-written lines) depends on every
//! record before, so a stream starting at seq S needs the state after S-1: it takes the newest
//! checkpoint at or before its position from this process's cache and reads on from there.
//! Streams write checkpoints as they interpret (every [`EVERY`] records and when they have
//! caught up with the stored records), pages where they were rendered up to. The same cache,
//! generic over what it keeps, holds pages' views ([`super::page_view`]) for the next render.
//!
//! The cache is per process and bounded (count and bytes, least recently used first out):
//! another replica, or an evicted session, simply starts from the first record again, which
//! gives the same result, only slower. Interpretation is deterministic and a checkpoint is an
//! exact copy of the state ([`Timeline`] is `Clone`), so resuming has no gap and no duplicate.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kortix_proto::v1::Record;
use kortix_timeline::{Entry, Timeline};

use super::timeline::{new_timeline, push};

/// Records interpreted between two checkpoints of one stream: a reconnect re-reads at most
/// this many.
pub const EVERY: usize = 256;
/// Checkpoints kept at once, over all sessions.
const MAX_COUNT: usize = 512;
/// Bytes of checkpoints kept at once (by [`Timeline::footprint`]).
const MAX_BYTES: usize = 64 * 1024 * 1024;

/// How much a cache may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub count: usize,
    pub bytes: usize,
}

impl Limits {
    /// For pages' views: each holds up to a few thousand rendered items, so fewer of them.
    pub const PAGES: Limits = Limits {
        count: 64,
        bytes: MAX_BYTES,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            count: MAX_COUNT,
            bytes: MAX_BYTES,
        }
    }
}

/// What a checkpoint costs to keep, in bytes (roughly).
pub trait Footprint {
    fn footprint(&self) -> usize;
}

impl Footprint for Timeline {
    fn footprint(&self) -> usize {
        Timeline::footprint(self)
    }
}

/// States `V` of sessions at given seqs (a [`Timeline`] by default); cheap to clone
/// (shared).
pub struct Checkpoints<V = Timeline> {
    limits: Limits,
    state: Arc<Mutex<State<V>>>,
}

impl<V> Clone for Checkpoints<V> {
    fn clone(&self) -> Self {
        Checkpoints {
            limits: self.limits,
            state: self.state.clone(),
        }
    }
}

struct State<V> {
    /// Per session, its checkpoints by seq.
    sessions: HashMap<String, BTreeMap<u64, Slot<V>>>,
    /// Use order: tick → (session, seq); the smallest tick is the least recently used.
    lru: BTreeMap<u64, (String, u64)>,
    tick: u64,
    bytes: usize,
}

struct Slot<V> {
    value: Arc<V>,
    bytes: usize,
    tick: u64,
}

impl<V> State<V> {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn remove(&mut self, session: &str, seq: u64) {
        let Some(slots) = self.sessions.get_mut(session) else {
            return;
        };
        if let Some(slot) = slots.remove(&seq) {
            self.bytes -= slot.bytes;
            self.lru.remove(&slot.tick);
        }
        if slots.is_empty() {
            self.sessions.remove(session);
        }
    }
}

impl<V: Footprint> Checkpoints<V> {
    pub fn new(limits: Limits) -> Self {
        Checkpoints {
            limits,
            state: Arc::new(Mutex::new(State {
                sessions: HashMap::new(),
                lru: BTreeMap::new(),
                tick: 0,
                bytes: 0,
            })),
        }
    }

    /// A poisoned lock only means another viewer panicked mid-update of plain maps; the
    /// cache is an optimisation, so it carries on with what is there.
    fn state(&self) -> std::sync::MutexGuard<'_, State<V>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest checkpoint of `session` at or before `seq`, and its seq.
    pub fn at_or_before(&self, session: &str, seq: u64) -> Option<(u64, Arc<V>)> {
        let mut state = self.state();
        let tick = state.next_tick();
        let slots = state.sessions.get_mut(session)?;
        let (&at, slot) = slots.range_mut(..=seq).next_back()?;
        let old = std::mem::replace(&mut slot.tick, tick);
        let value = slot.value.clone();
        state.lru.remove(&old);
        state.lru.insert(tick, (session.to_owned(), at));
        Some((at, value))
    }

    /// Keeps `value` as `session`'s state after record `seq`, evicting the least recently
    /// used checkpoints past the limits. A state larger than the whole budget is not kept.
    pub fn put(&self, session: &str, seq: u64, value: V) {
        let bytes = value.footprint();
        if bytes > self.limits.bytes || self.limits.count == 0 {
            return;
        }
        let mut state = self.state();
        state.remove(session, seq);
        let tick = state.next_tick();
        state
            .sessions
            .entry(session.to_owned())
            .or_default()
            .insert(
                seq,
                Slot {
                    value: Arc::new(value),
                    bytes,
                    tick,
                },
            );
        state.lru.insert(tick, (session.to_owned(), seq));
        state.bytes += bytes;
        while state.lru.len() > self.limits.count || state.bytes > self.limits.bytes {
            let Some((_, (s, at))) = state.lru.pop_first() else {
                break;
            };
            state.remove(&s, at);
        }
    }

    /// Checkpoints held and their bytes.
    #[cfg(test)]
    fn usage(&self) -> (usize, usize) {
        let state = self.state();
        (state.lru.len(), state.bytes)
    }
}

/// One viewer's interpretation of a session: where it is, and when it last saved a
/// checkpoint.
pub struct Interpretation {
    cache: Checkpoints,
    session: String,
    timeline: Timeline,
    /// The seq of the last record interpreted (0: none).
    at: u64,
    /// Records interpreted since the last checkpoint.
    unsaved: usize,
}

impl Interpretation {
    /// The state after record `seq` if a checkpoint has it, else the newest state before it,
    /// else a fresh one; read on from [`Self::next_seq`].
    pub fn resume(cache: &Checkpoints, session: &str, seq: u64) -> Self {
        let (at, timeline) = cache
            .at_or_before(session, seq)
            .map_or_else(|| (0, new_timeline()), |(at, t)| (at, (*t).clone()));
        Interpretation {
            cache: cache.clone(),
            session: session.to_owned(),
            timeline,
            at,
            unsaved: 0,
        }
    }

    /// The first seq this interpretation has not read.
    pub fn next_seq(&self) -> u64 {
        self.at + 1
    }

    /// The seq of the last record read (0 when none was).
    pub fn at(&self) -> u64 {
        self.at
    }

    /// The entries `record` completes; a checkpoint every [`EVERY`] records. A record at
    /// or before the position was read already and completes nothing again.
    pub fn push(&mut self, record: &Record) -> Vec<Entry> {
        if record.seq <= self.at {
            return Vec::new();
        }
        self.at = record.seq;
        self.unsaved += 1;
        let entries = push(&mut self.timeline, record);
        if self.unsaved >= EVERY {
            self.save();
        }
        entries
    }

    /// Saves the current state as a checkpoint, unless it is saved already.
    pub fn save(&mut self) {
        if self.unsaved == 0 || self.at == 0 {
            return;
        }
        self.cache
            .put(&self.session, self.at, self.timeline.clone());
        self.unsaved = 0;
    }

    /// What is still held back, when the records end (the state is not saved after this).
    pub fn finish(mut self) -> Vec<Entry> {
        self.timeline.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::timeline::render;
    use kortix_proto::v1::record::Body;
    use kortix_proto::v1::{LogLine, LogStream, OpencodeEvent, SessionStatus, StateChange};
    use serde_json::{Value, json};

    fn event(ty: &str, props: Value) -> Body {
        Body::Event(OpencodeEvent {
            r#type: ty.into(),
            json: json!({"type": ty, "properties": props}).to_string(),
        })
    }

    fn delta(part: &str, s: &str) -> Body {
        event(
            "message.part.delta",
            json!({"field": "text", "partID": part, "messageID": "m", "delta": s}),
        )
    }

    fn tool(id: &str, status: &str, output: &str) -> Body {
        let mut state = json!({"status": status, "input": {"command": format!("run {id}")}});
        if status == "completed" {
            state["output"] = json!(output);
            state["metadata"] = json!({"exit": 0});
        }
        event(
            "message.part.updated",
            json!({"part": {"id": id, "callID": id, "type": "tool", "tool": "bash", "state": state}}),
        )
    }

    /// A session as the agent records it, cut at awkward places: lines half-written across
    /// deltas, tool calls left running across many records, state repeats, a prompt, logs,
    /// and a last line without its newline.
    fn recorded() -> Vec<Record> {
        let mut bodies = vec![
            Body::State(StateChange {
                status: SessionStatus::Running as i32,
                phase: "running".into(),
                reason: String::new(),
            }),
            event(
                "message.updated",
                json!({"info": {"id": "u", "role": "user"}}),
            ),
            event(
                "message.part.updated",
                json!({"part": {"id": "q", "messageID": "u", "type": "text", "text": "Go"}}),
            ),
            event(
                "message.updated",
                json!({"info": {"id": "m", "role": "assistant"}}),
            ),
        ];
        for i in 0..12 {
            let call = format!("t{i}");
            bodies.push(delta("p", &format!("line {i} sta")));
            bodies.push(tool(&call, "running", ""));
            bodies.push(delta("p", "rted\nhalf "));
            bodies.push(Body::Log(LogLine {
                stream: LogStream::Stderr as i32,
                line: format!("log {i}"),
            }));
            bodies.push(Body::State(StateChange {
                status: SessionStatus::Running as i32,
                phase: "running".into(),
                reason: String::new(),
            }));
            bodies.push(delta("p", "done\n"));
            if i % 3 != 0 {
                bodies.push(tool(&call, "completed", &format!("out {i}\n")));
            }
        }
        bodies.push(delta("p", "no newline at the end"));
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Record {
                seq: i as u64 + 1,
                ts_unix_ms: 1_700_000_000_000 + i as i64,
                body: Some(body),
            })
            .collect()
    }

    /// What a viewer at `after` is sent: (seq, HTML) of what later records complete, then
    /// what the end releases — reading from wherever the cache lets it start.
    fn view(cache: &Checkpoints, records: &[Record], after: u64) -> Vec<(u64, String)> {
        let mut reading = Interpretation::resume(cache, "s", after);
        let from = reading.next_seq();
        let mut sent = Vec::new();
        for record in records.iter().filter(|r| r.seq >= from) {
            let entries = reading.push(record);
            if record.seq > after && !entries.is_empty() {
                sent.push((record.seq, entries.iter().map(render).collect()));
            }
        }
        let last = reading.at();
        let rest: String = reading.finish().iter().map(render).collect();
        if !rest.is_empty() {
            sent.push((last, rest));
        }
        sent
    }

    #[test]
    fn resuming_from_any_checkpoint_sends_what_reading_from_the_first_record_sends() {
        let records = recorded();
        let n = records.len() as u64;
        for after in 0..=n {
            let expected = view(&Checkpoints::new(Limits::default()), &records, after);
            // A checkpoint at every possible place at or before the viewer's position.
            for at in 1..=after {
                let cache = Checkpoints::new(Limits::default());
                let mut fill = Interpretation::resume(&cache, "s", 0);
                for r in &records[..at as usize] {
                    fill.push(r);
                }
                fill.save();
                assert_eq!(cache.at_or_before("s", after).map(|(seq, _)| seq), Some(at));
                assert_eq!(
                    view(&cache, &records, after),
                    expected,
                    "checkpoint at {at}, viewer at {after}"
                );
            }
        }
        // The test means something: the viewers were sent held-back text and open calls.
        let all = view(&Checkpoints::new(Limits::default()), &records, 0);
        let html: String = all.iter().map(|(_, h)| h.as_str()).collect();
        assert!(html.contains("half done") && html.contains("no newline at the end"));
    }

    #[test]
    fn streams_save_every_so_many_records_and_a_viewer_past_them_starts_there() {
        let cache = Checkpoints::new(Limits::default());
        let mut reading = Interpretation::resume(&cache, "s", 0);
        let record = |seq| Record {
            seq,
            ts_unix_ms: 0,
            body: Some(Body::Log(LogLine {
                stream: LogStream::Stdout as i32,
                line: format!("line {seq}"),
            })),
        };
        for seq in 1..=(EVERY as u64 * 2 + 10) {
            reading.push(&record(seq));
        }
        // A repeat of a record already read completes nothing.
        assert!(reading.push(&record(3)).is_empty());
        assert_eq!(cache.usage().0, 2);
        let resumed = Interpretation::resume(&cache, "s", EVERY as u64 * 2 + 5);
        assert_eq!(resumed.next_seq(), EVERY as u64 * 2 + 1);
        assert_eq!(Interpretation::resume(&cache, "s", 5).next_seq(), 1);
        assert_eq!(Interpretation::resume(&cache, "other", 900).next_seq(), 1);
    }

    #[test]
    fn the_cache_evicts_the_least_recently_used_within_its_bounds() {
        let one = new_timeline().footprint();
        let cache = Checkpoints::new(Limits {
            count: 3,
            bytes: one * 10,
        });
        for seq in 1..=3 {
            cache.put("a", seq, new_timeline());
        }
        // Reading a's first checkpoint makes a's second the least recently used.
        assert!(cache.at_or_before("a", 1).is_some());
        cache.put("b", 1, new_timeline());
        assert_eq!(cache.usage(), (3, one * 3));
        assert_eq!(cache.at_or_before("a", 2).map(|(s, _)| s), Some(1));
        assert_eq!(cache.at_or_before("a", 3).map(|(s, _)| s), Some(3));

        // By bytes: a state holding a long half-written line counts for its size.
        let mut big = Interpretation::resume(&cache, "c", 0);
        let line = "x".repeat(one * 2);
        big.push(&Record {
            seq: 1,
            ts_unix_ms: 0,
            body: Some(delta("p", &line)),
        });
        big.save();
        let (count, bytes) = cache.usage();
        assert!(count <= 3 && bytes <= one * 10, "{count} {bytes}");
        assert!(cache.at_or_before("c", 1).is_some(), "the newest stays");

        // A state bigger than the whole budget is not kept; nothing else is lost for it.
        let before = cache.usage();
        let mut huge = Interpretation::resume(&cache, "d", 0);
        huge.push(&Record {
            seq: 1,
            ts_unix_ms: 0,
            body: Some(delta("p", &"y".repeat(one * 20))),
        });
        huge.save();
        assert!(cache.at_or_before("d", 1).is_none());
        assert_eq!(cache.usage(), before);
    }
}
