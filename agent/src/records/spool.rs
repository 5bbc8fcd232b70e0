//! The bounded on-disk spool of records not yet acknowledged by the control plane.
//!
//! Records live in append-only segment files named after the first seq they hold
//! (`00000000000000000042.seg`). A segment is deleted once every record in it is acked; the
//! newest segment is never deleted, so its name (or its last record) tells a restarted agent
//! where seq numbering continues.
//!
//! Durability policy: every record is handed to the kernel (`write(2)`) before it is ever
//! sent, so a record the control plane has seen always survives an agent crash and its seq is
//! never reused. Segments are fsynced when they are closed and on [`Spool::sync`] (stop); a
//! kernel crash can lose the unsynced tail, but a sandbox whose kernel dies loses its disk with
//! it, so fsync per record would buy nothing and cost throughput.
//!
//! Overflow: when unacked records would exceed `max_bytes`, new records are dropped before they
//! get a seq, so the seq space stays strictly contiguous (the control plane's "highest
//! contiguous seq" never stalls on a hole). Once acks free space (below 3/4 of the cap) one
//! [`Gap`] record is written at the next seq, saying how many records were dropped and when;
//! its `from_seq` and `to_seq` are its own seq. Nothing is dropped silently.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use kortix_proto::v1::{Gap, LogLine, LogStream, Record, record::Body};
use prost::Message;

use super::codec::{self, Frame, covers_to};

#[derive(Clone, Debug)]
pub struct SpoolOptions {
    /// Cap on the bytes of all segment files.
    pub max_bytes: u64,
    /// A segment is closed once it reaches this size.
    pub segment_bytes: u64,
    /// Recent records kept decoded in memory so live sending never reads the disk.
    pub mem_bytes: usize,
    /// Records accepted before the stream is activated (bootstrap not yet received).
    pub max_pending: usize,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            max_bytes: 64 << 20,
            segment_bytes: 4 << 20,
            mem_bytes: 4 << 20,
            max_pending: 4096,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug)]
struct Segment {
    first: u64,
    /// Highest seq covered by a record in the segment; `first - 1` when empty.
    last: u64,
    bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Overflow {
    dropped: u64,
    first_ts_ms: i64,
    last_ts_ms: i64,
}

#[derive(Debug)]
struct DiskCursor {
    segment_first: u64,
    offset: u64,
    /// The seq the next frame at `offset` is expected to cover.
    want: u64,
}

pub struct Spool {
    dir: PathBuf,
    opts: SpoolOptions,
    segments: VecDeque<Segment>,
    writer: BufWriter<File>,
    disk_bytes: u64,
    next_seq: u64,
    acked: u64,
    /// Highest seq sent on the current connection.
    sent: u64,
    mem: VecDeque<(Record, usize)>,
    mem_bytes: usize,
    /// Records dropped for lack of room since the spool filled up.
    overflow: Option<Overflow>,
    active: bool,
    pending: Vec<(i64, Body)>,
    pending_dropped: u64,
    cursor: Option<DiskCursor>,
    /// Problems found while opening (damaged frames); reported once the stream is active.
    warnings: Vec<String>,
    frame_buf: Vec<u8>,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, recovering seq numbering from what is on
    /// disk and cutting off a torn tail.
    pub fn open(dir: &Path, opts: SpoolOptions) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        set_private(dir);
        let mut firsts = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut warnings = Vec::new();
        let mut segments = VecDeque::new();
        for first in firsts {
            let path = segment_path(dir, first);
            let (last, good_len, problem) = scan_segment(&path, first)?;
            if let Some(problem) = problem {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                file.set_len(good_len).map_err(io_err(&path))?;
                file.sync_all().map_err(io_err(&path))?;
                warnings.push(format!(
                    "spool segment {}: {problem}; cut at byte {good_len}",
                    path.display()
                ));
            }
            segments.push_back(Segment {
                first,
                last,
                bytes: good_len,
            });
        }
        let last_assigned = segments.iter().map(|s| s.last).max().unwrap_or(0);
        let next_seq = last_assigned + 1;
        let writer = match segments.back() {
            Some(seg) if seg.bytes < opts.segment_bytes => {
                open_append(&segment_path(dir, seg.first))?
            }
            _ => {
                let file = open_append(&segment_path(dir, next_seq))?;
                segments.push_back(Segment {
                    first: next_seq,
                    last: next_seq - 1,
                    bytes: 0,
                });
                file
            }
        };
        let disk_bytes = segments.iter().map(|s| s.bytes).sum();
        Ok(Spool {
            dir: dir.to_owned(),
            opts,
            segments,
            writer: BufWriter::with_capacity(64 * 1024, writer),
            disk_bytes,
            next_seq,
            acked: 0,
            sent: 0,
            mem: VecDeque::new(),
            mem_bytes: 0,
            overflow: None,
            active: false,
            pending: Vec::new(),
            pending_dropped: 0,
            cursor: None,
            warnings,
            frame_buf: Vec::with_capacity(4096),
        })
    }

    /// Highest seq ever assigned (0 if none), as announced in `Hello`.
    pub fn last_assigned(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Starts seq assignment once the control plane has said what it holds (`acked`), and
    /// writes the records that were waiting for it.
    pub fn activate(&mut self, acked: u64, now_ms: i64) -> Result<(), SpoolError> {
        if acked > self.last_assigned() {
            // The control plane holds more than this spool remembers (the spool was lost):
            // continue above it rather than reuse seqs it already stored.
            self.warnings.push(format!(
                "control plane acknowledged seq {acked} beyond the spool's last seq {}; continuing after it",
                self.last_assigned()
            ));
            self.writer.flush().map_err(io_err(&self.dir))?;
            let old: Vec<u64> = self.segments.iter().map(|s| s.first).collect();
            self.next_seq = acked + 1;
            self.start_segment(self.next_seq)?;
            for first in old {
                self.remove_segment_file(first)?;
            }
            self.segments.retain(|s| s.first == acked + 1);
            self.disk_bytes = self.segments.iter().map(|s| s.bytes).sum();
        }
        self.active = true;
        self.rewind(acked);
        self.ack(acked)?;
        for warning in std::mem::take(&mut self.warnings) {
            self.append(now_ms, agent_line(warning))?;
        }
        if self.pending_dropped > 0 {
            let n = self.pending_dropped;
            self.pending_dropped = 0;
            self.append(
                now_ms,
                agent_line(format!(
                    "{n} records were dropped before the session stream opened"
                )),
            )?;
        }
        for (ts, body) in std::mem::take(&mut self.pending) {
            self.append(ts, body)?;
        }
        Ok(())
    }

    /// Assigns the next seq and writes the record. Returns its seq, or `None` while the spool
    /// is not active yet (the record waits) or when the record was dropped for lack of room
    /// (it is counted in the next gap record).
    pub fn append(&mut self, ts_unix_ms: i64, body: Body) -> Result<Option<u64>, SpoolError> {
        if !self.active {
            if self.pending.len() < self.opts.max_pending {
                self.pending.push((ts_unix_ms, body));
            } else {
                self.pending_dropped += 1;
            }
            return Ok(None);
        }
        self.close_gap_if_room(ts_unix_ms)?;
        if let Some(o) = &mut self.overflow {
            o.dropped += 1;
            o.last_ts_ms = ts_unix_ms;
            return Ok(None);
        }
        let record = Record {
            seq: self.next_seq,
            ts_unix_ms,
            body: Some(body),
        };
        let frame_len = codec::HEADER_LEN + record.encoded_len();
        if self.disk_bytes + frame_len as u64 > self.opts.max_bytes {
            self.overflow = Some(Overflow {
                dropped: 1,
                first_ts_ms: ts_unix_ms,
                last_ts_ms: ts_unix_ms,
            });
            return Ok(None);
        }
        let seq = record.seq;
        self.write_record(record, frame_len)?;
        Ok(Some(seq))
    }

    fn write_record(&mut self, record: Record, frame_len: usize) -> Result<(), SpoolError> {
        if self
            .segments
            .back()
            .is_some_and(|s| s.bytes >= self.opts.segment_bytes)
        {
            self.rotate(record.seq)?;
        }
        self.frame_buf.clear();
        codec::encode_frame(&record, &mut self.frame_buf);
        let path = self.current_path();
        self.writer
            .write_all(&self.frame_buf)
            .map_err(io_err(&path))?;
        let covered = covers_to(&record);
        if let Some(seg) = self.segments.back_mut() {
            seg.bytes += frame_len as u64;
            seg.last = covered;
        }
        self.disk_bytes += frame_len as u64;
        self.next_seq = self.next_seq.max(covered + 1);
        self.mem_bytes += frame_len;
        self.mem.push_back((record, frame_len));
        while self.mem_bytes > self.opts.mem_bytes {
            match self.mem.pop_front() {
                Some((_, len)) => self.mem_bytes -= len,
                None => break,
            }
        }
        Ok(())
    }

    /// Writes the gap record once acks have freed a quarter of the cap.
    fn close_gap_if_room(&mut self, now_ms: i64) -> Result<(), SpoolError> {
        let Some(o) = self.overflow else {
            return Ok(());
        };
        if self.disk_bytes > self.opts.max_bytes / 4 * 3 {
            return Ok(());
        }
        self.overflow = None;
        let seq = self.next_seq;
        let record = Record {
            seq,
            ts_unix_ms: now_ms,
            body: Some(Body::Gap(Gap {
                from_seq: seq,
                to_seq: seq,
                reason: format!(
                    "spool overflow: {} records produced between unix ms {} and {} were dropped while {} bytes were unacknowledged",
                    o.dropped, o.first_ts_ms, o.last_ts_ms, self.opts.max_bytes
                ),
            })),
        };
        let frame_len = codec::HEADER_LEN + record.encoded_len();
        self.write_record(record, frame_len)
    }

    /// Everything up to `seq` is durable at the control plane.
    pub fn ack(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq <= self.acked && self.acked != 0 {
            return Ok(());
        }
        self.acked = self.acked.max(seq.min(self.last_assigned()));
        self.sent = self.sent.max(self.acked);
        while let Some((r, len)) = self.mem.front() {
            if covers_to(r) > self.acked {
                break;
            }
            self.mem_bytes -= *len;
            self.mem.pop_front();
        }
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.last <= self.acked)
        {
            if let Some(seg) = self.segments.pop_front() {
                self.disk_bytes -= seg.bytes;
                self.remove_segment_file(seg.first)?;
                if self
                    .cursor
                    .as_ref()
                    .is_some_and(|c| c.segment_first == seg.first)
                {
                    self.cursor = None;
                }
            }
        }
        if self.active {
            self.close_gap_if_room(now_ms())?;
        }
        Ok(())
    }

    /// A new connection: resend everything after `acked`.
    pub fn rewind(&mut self, acked: u64) {
        self.sent = acked.min(self.last_assigned());
        self.cursor = None;
    }

    /// Whether records after the last sent one are ready to go.
    pub fn has_unsent(&self) -> bool {
        self.active && self.sent < self.written_up_to()
    }

    /// Seqs written but not yet sent on the current connection.
    pub fn unsent(&self) -> u64 {
        if self.active {
            self.written_up_to().saturating_sub(self.sent)
        } else {
            0
        }
    }

    /// Highest seq covered by a written record.
    fn written_up_to(&self) -> u64 {
        self.last_assigned()
    }

    /// The next records to send, in seq order, within the batch limits; marks them sent.
    pub fn next_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, SpoolError> {
        let mut out = Vec::new();
        if !self.has_unsent() {
            return Ok(out);
        }
        // Write-ahead: what is sent must be in the file, so a restart never reuses its seq.
        let path = self.current_path();
        self.writer.flush().map_err(io_err(&path))?;
        let want = self.sent + 1;
        let in_mem = self.mem.front().is_some_and(|(r, _)| r.seq <= want);
        let mut bytes = 0usize;
        if in_mem {
            for (record, len) in &self.mem {
                if covers_to(record) < want {
                    continue;
                }
                if out.len() >= max_records || (bytes + len > max_bytes && !out.is_empty()) {
                    break;
                }
                bytes += len;
                out.push(record.clone());
            }
        } else {
            out = self.read_disk(want, max_records, max_bytes)?;
        }
        if let Some(last) = out.last() {
            self.sent = covers_to(last);
        }
        Ok(out)
    }

    fn read_disk(
        &mut self,
        want: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, SpoolError> {
        let Some(seg) = self
            .segments
            .iter()
            .rev()
            .find(|s| s.first <= want && s.last >= want)
        else {
            // `want` fell into a range no segment holds (deleted after an ack raced ahead):
            // resume at the oldest segment we still have.
            if let Some(seg) = self.segments.iter().find(|s| s.last >= want && s.bytes > 0) {
                self.sent = seg.first - 1;
                return self.read_disk(seg.first, max_records, max_bytes);
            }
            return Ok(Vec::new());
        };
        let first = seg.first;
        let path = segment_path(&self.dir, first);
        let start = match &self.cursor {
            Some(c) if c.segment_first == first && c.want == want => c.offset,
            _ => 0,
        };
        let mut file = File::open(&path).map_err(io_err(&path))?;
        file.seek(SeekFrom::Start(start)).map_err(io_err(&path))?;
        let mut reader = io::BufReader::with_capacity(256 * 1024, file);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut offset = start;
        let mut header = [0u8; codec::HEADER_LEN];
        let mut frame = Vec::new();
        loop {
            if out.len() >= max_records {
                break;
            }
            match reader.read_exact(&mut header) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(io_err(&path)(e)),
            }
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            frame.clear();
            frame.extend_from_slice(&header);
            frame.resize(
                codec::HEADER_LEN + len.min(codec::MAX_RECORD_BYTES + 1024),
                0,
            );
            if reader.read_exact(&mut frame[codec::HEADER_LEN..]).is_err() {
                break;
            }
            let Frame::Record { record, frame_len } = codec::decode_frame(&frame) else {
                break;
            };
            if covers_to(&record) < want {
                offset += frame_len as u64;
                continue;
            }
            if bytes + frame_len > max_bytes && !out.is_empty() {
                break;
            }
            bytes += frame_len;
            offset += frame_len as u64;
            out.push(record);
        }
        let next_want = out.last().map_or(want, |r| covers_to(r) + 1);
        self.cursor = Some(DiskCursor {
            segment_first: first,
            offset,
            want: next_want,
        });
        Ok(out)
    }

    /// Flushes and fsyncs the current segment (used at stop).
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        let path = self.current_path();
        self.writer.flush().map_err(io_err(&path))?;
        self.writer.get_ref().sync_data().map_err(io_err(&path))
    }

    /// Hands buffered records to the kernel (cheap; called on the batching tick).
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        let path = self.current_path();
        self.writer.flush().map_err(io_err(&path))
    }

    fn rotate(&mut self, first: u64) -> Result<(), SpoolError> {
        self.sync()?;
        self.start_segment(first)?;
        if let Ok(dir) = File::open(&self.dir) {
            // Make the new segment's directory entry durable with the data it follows.
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn start_segment(&mut self, first: u64) -> Result<(), SpoolError> {
        let path = segment_path(&self.dir, first);
        self.writer = BufWriter::with_capacity(64 * 1024, open_append(&path)?);
        self.segments.push_back(Segment {
            first,
            last: first - 1,
            bytes: 0,
        });
        Ok(())
    }

    fn remove_segment_file(&self, first: u64) -> Result<(), SpoolError> {
        let path = segment_path(&self.dir, first);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn current_path(&self) -> PathBuf {
        segment_path(
            &self.dir,
            self.segments.back().map_or(self.next_seq, |s| s.first),
        )
    }
}

fn agent_line(line: String) -> Body {
    Body::Log(LogLine {
        stream: LogStream::Agent as i32,
        line,
    })
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn open_append(path: &Path) -> Result<File, SpoolError> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))
}

fn set_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
}

/// Reads a segment: the highest covered seq, the length of the intact prefix, and what was
/// wrong after it (if anything).
fn scan_segment(path: &Path, first: u64) -> Result<(u64, u64, Option<String>), SpoolError> {
    let data = fs::read(path).map_err(io_err(path))?;
    let mut offset = 0usize;
    let mut last = first - 1;
    while offset < data.len() {
        match codec::decode_frame(&data[offset..]) {
            Frame::Record { record, frame_len } => {
                last = last.max(covers_to(&record));
                offset += frame_len;
            }
            Frame::Incomplete => {
                return Ok((
                    last,
                    offset as u64,
                    Some(format!("torn record at byte {offset}")),
                ));
            }
            Frame::Corrupt(why) => {
                return Ok((last, offset as u64, Some(format!("{why} at byte {offset}"))));
            }
        }
    }
    Ok((last, offset as u64, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: u64) -> Body {
        Body::Log(LogLine {
            stream: LogStream::Stdout as i32,
            line: format!("line {i} {}", "x".repeat(100)),
        })
    }

    fn drain(spool: &mut Spool) -> Vec<Record> {
        let mut all = Vec::new();
        loop {
            let batch = spool.next_batch(1024, 4 << 20).unwrap();
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }

    fn small() -> SpoolOptions {
        SpoolOptions {
            max_bytes: 64 * 1024,
            segment_bytes: 8 * 1024,
            mem_bytes: 4 * 1024,
            max_pending: 10,
        }
    }

    #[test]
    fn seq_continues_after_restart_and_unacked_records_are_resent() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), small()).unwrap();
            assert_eq!(s.last_assigned(), 0);
            s.activate(0, 1).unwrap();
            for i in 0..100 {
                s.append(1, line(i)).unwrap();
            }
            let sent = drain(&mut s);
            assert_eq!(sent.len(), 100);
            assert_eq!(sent.first().unwrap().seq, 1);
            s.ack(40).unwrap();
            // No sync: a crash after write(2) must still keep what was sent.
        }
        let mut s = Spool::open(dir.path(), small()).unwrap();
        assert_eq!(s.last_assigned(), 100);
        s.activate(40, 1).unwrap();
        let resent = drain(&mut s);
        assert_eq!(
            resent.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (41..=100).collect::<Vec<_>>()
        );
        assert_eq!(s.append(1, line(0)).unwrap(), Some(101));
        s.ack(101).unwrap();
        drop(s);
        // Everything acked and old segments gone: numbering still continues.
        let s = Spool::open(dir.path(), small()).unwrap();
        assert_eq!(s.last_assigned(), 101);
        assert!(fs::read_dir(dir.path()).unwrap().count() <= 2);
    }

    #[test]
    fn torn_tail_is_cut_and_seq_resumes_after_last_intact_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
            s.activate(0, 1).unwrap();
            for i in 0..5 {
                s.append(1, line(i)).unwrap();
            }
            s.sync().unwrap();
        }
        let seg = fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let mut s = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
        assert_eq!(s.last_assigned(), 4);
        s.activate(0, 1).unwrap();
        let sent = drain(&mut s);
        // Four intact records, then the agent's own note about the cut.
        assert_eq!(sent.len(), 5);
        assert!(matches!(&sent[4].body, Some(Body::Log(l)) if l.line.contains("torn record")));
    }

    #[test]
    fn overflow_drops_new_records_and_reports_them_in_one_gap_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), small()).unwrap();
        s.activate(0, 1).unwrap();
        let mut stored = 0u64;
        for i in 0..2000 {
            if let Some(seq) = s.append(1_000 + i as i64, line(i)).unwrap() {
                stored += 1;
                assert_eq!(seq, stored, "seqs stay contiguous");
            }
        }
        assert!(stored < 2000);
        assert!(s.disk_bytes() <= 64 * 1024);
        assert_eq!(s.overflow.unwrap().dropped, 2000 - stored);
        // Disconnected: only the stored records are sendable.
        let sent = drain(&mut s);
        assert_eq!(sent.last().unwrap().seq, stored);
        // The control plane catches up; the gap record takes the next seq.
        s.ack(stored).unwrap();
        assert!(s.overflow.is_none());
        assert_eq!(s.append(1, line(0)).unwrap(), Some(stored + 2));
        let sent = drain(&mut s);
        assert_eq!(sent.len(), 2);
        match &sent[0].body {
            Some(Body::Gap(g)) => {
                assert_eq!(
                    (sent[0].seq, g.from_seq, g.to_seq),
                    (stored + 1, stored + 1, stored + 1)
                );
                assert!(
                    g.reason.contains(&format!("{} records", 2000 - stored)),
                    "{}",
                    g.reason
                );
                assert!(g.reason.contains("overflow"));
            }
            other => panic!("expected gap, got {other:?}"),
        }
        drop(s);
        let s = Spool::open(dir.path(), small()).unwrap();
        assert_eq!(s.last_assigned(), stored + 2);
    }

    #[test]
    fn resend_from_disk_when_memory_cache_was_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), small()).unwrap();
        s.activate(0, 1).unwrap();
        for i in 0..300 {
            s.append(1, line(i)).unwrap();
        }
        assert_eq!(drain(&mut s).len(), 300);
        s.ack(10).unwrap();
        // Reconnect: the memory cache only holds the newest ~4 KiB.
        s.rewind(10);
        let again: Vec<u64> = drain(&mut s).iter().map(|r| r.seq).collect();
        assert_eq!(again, (11..=300).collect::<Vec<_>>());
    }

    #[test]
    fn records_wait_for_activation_and_ack_beyond_spool_moves_seq_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), small()).unwrap();
        assert_eq!(s.append(1, line(1)).unwrap(), None);
        for i in 0..20 {
            s.append(1, line(i)).unwrap();
        }
        s.activate(500, 1).unwrap();
        let sent = drain(&mut s);
        assert_eq!(sent[0].seq, 501);
        let texts: Vec<String> = sent
            .iter()
            .filter_map(|r| match &r.body {
                Some(Body::Log(l)) if l.stream == LogStream::Agent as i32 => Some(l.line.clone()),
                _ => None,
            })
            .collect();
        assert!(
            texts.iter().any(|t| t.contains("beyond the spool")),
            "{texts:?}"
        );
        assert!(
            texts.iter().any(|t| t.contains("11 records were dropped")),
            "{texts:?}"
        );
        assert_eq!(sent.len(), 2 + 10);
    }
}
