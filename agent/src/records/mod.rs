//! The session's record stream: seq assignment, redaction, spooling and batching.

pub mod codec;
pub mod spool;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use kortix_proto::v1::{
    CommitRecord, LogLine, LogStream, OpencodeEvent, Record, SessionStatus, StateChange,
    record::Body,
};
use tokio::sync::{Notify, watch};

use crate::redact::Redactor;
pub use spool::{Spool, SpoolError, SpoolOptions, now_ms};

/// Batch limits from the protocol: at most 1024 records and 4 MiB per `RecordBatch`.
pub const MAX_BATCH_RECORDS: usize = 1024;
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;
/// How long the first unsent record may wait for company before a batch goes out.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Longest log line kept; longer ones are cut with a marker.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Cheap, cloneable handle every producer writes records through.
#[derive(Clone)]
pub struct RecordSink {
    shared: Arc<Shared>,
}

struct Shared {
    spool: Mutex<Spool>,
    redactor: RwLock<Arc<Redactor>>,
    appended: Notify,
    acked: watch::Sender<u64>,
    io_errors: AtomicU64,
}

impl RecordSink {
    pub fn new(spool: Spool) -> Self {
        let (acked, _) = watch::channel(spool.acked());
        RecordSink {
            shared: Arc::new(Shared {
                spool: Mutex::new(spool),
                redactor: RwLock::new(Arc::new(Redactor::default())),
                appended: Notify::new(),
                acked,
                io_errors: AtomicU64::new(0),
            }),
        }
    }

    fn spool(&self) -> MutexGuard<'_, Spool> {
        // A panic while holding the lock leaves the spool consistent enough to keep going
        // (every mutation is a single append or delete); refusing all records would be worse.
        self.shared.spool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Redacts and appends one record.
    pub fn push(&self, mut body: Body) {
        redact_body(&self.redactor(), &mut body);
        self.append(body);
    }

    /// Appends a record that is already redacted.
    fn append(&self, body: Body) {
        let result = self.spool().append(now_ms(), body);
        match result {
            Ok(_) => self.shared.appended.notify_one(),
            Err(e) => self.io_error(&e),
        }
    }

    fn io_error(&self, e: &SpoolError) {
        // Log the first few and then every thousandth, so a full disk does not flood stderr.
        let n = self.shared.io_errors.fetch_add(1, Ordering::Relaxed);
        if n < 5 || n.is_multiple_of(1000) {
            crate::diag::warn(&format!("record spool error (#{}): {e}", n + 1));
        }
    }

    pub fn log(&self, stream: LogStream, line: impl Into<String>) {
        let line = line.into();
        let len = line.len();
        self.log_cut(stream, line, len);
    }

    /// A line of which only the start was kept (`line`; `total` bytes were read). Redacts
    /// before cutting to [`MAX_LINE_BYTES`], so a secret that straddles the cut is never left
    /// half-redacted: readers keep [`Self::redaction_window`] bytes beyond the cap for this.
    pub fn log_cut(&self, stream: LogStream, mut line: String, total: usize) {
        self.redactor().redact(&mut line);
        self.append_log(stream, line, total);
    }

    fn append_log(&self, stream: LogStream, mut redacted: String, total: usize) {
        truncate_line(&mut redacted, total);
        self.append(Body::Log(LogLine {
            stream: stream as i32,
            line: redacted,
        }));
    }

    /// Bytes a line reader must keep past [`MAX_LINE_BYTES`] so that redaction sees every
    /// secret that starts before the cut whole.
    pub fn redaction_window(&self) -> usize {
        self.redactor().longest()
    }

    /// The agent's own diagnostics: to stderr and into the stream.
    pub fn agent(&self, line: impl Into<String>) {
        let mut line = line.into();
        self.redactor().redact(&mut line);
        crate::diag::info(&line);
        let total = line.len();
        self.append_log(LogStream::Agent, line, total);
    }

    pub fn event(&self, r#type: impl Into<String>, json: impl Into<String>) {
        let r#type = r#type.into();
        let mut json = json.into();
        if json.len() > codec::MAX_RECORD_BYTES - 4096 {
            // Cutting JSON would make it unparseable; say what was there instead.
            json = serde_json::json!({ "type": r#type, "truncated": true, "bytes": json.len() })
                .to_string();
        }
        self.push(Body::Event(OpencodeEvent { r#type, json }));
    }

    pub fn commit(&self, commit: CommitRecord) {
        self.push(Body::Commit(commit));
    }

    pub fn state(&self, status: SessionStatus, phase: &str, reason: impl Into<String>) {
        self.push(Body::State(StateChange {
            status: status as i32,
            phase: phase.to_owned(),
            reason: reason.into(),
        }));
    }

    /// New secret values to keep out of the stream from now on.
    pub fn set_secrets(&self, secrets: &BTreeMap<String, String>) {
        *self
            .shared
            .redactor
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(Redactor::new(secrets));
    }

    /// Redact these (name, value) pairs, replacing what was redacted before.
    pub fn set_redactions(&self, pairs: Vec<(String, String)>) {
        let redactor = Redactor::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        *self
            .shared
            .redactor
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(redactor);
    }

    pub fn redactor(&self) -> Arc<Redactor> {
        self.shared
            .redactor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn last_assigned(&self) -> u64 {
        self.spool().last_assigned()
    }

    pub fn acked(&self) -> u64 {
        self.spool().acked()
    }

    pub fn is_active(&self) -> bool {
        self.spool().is_active()
    }

    /// Called with the first `Bootstrap`'s `acked_seq`: seq assignment starts.
    pub fn activate(&self, acked: u64) -> Result<(), SpoolError> {
        let result = self.spool().activate(acked, now_ms());
        self.shared.acked.send_replace(acked);
        self.shared.appended.notify_one();
        result
    }

    /// A (re)connection: resend everything after `acked`.
    pub fn rewind(&self, acked: u64) {
        let mut spool = self.spool();
        spool.rewind(acked);
        if let Err(e) = spool.ack(acked) {
            drop(spool);
            self.io_error(&e);
        }
        self.shared.appended.notify_one();
    }

    pub fn ack(&self, seq: u64) {
        let result = {
            let mut spool = self.spool();
            let r = spool.ack(seq);
            self.shared.acked.send_replace(spool.acked());
            r
        };
        if let Err(e) = result {
            self.io_error(&e);
        }
    }

    pub fn unsent(&self) -> u64 {
        self.spool().unsent()
    }

    pub fn has_unsent(&self) -> bool {
        self.spool().has_unsent()
    }

    pub fn next_batch(&self) -> Vec<Record> {
        let result = self.spool().next_batch(MAX_BATCH_RECORDS, MAX_BATCH_BYTES);
        result.unwrap_or_else(|e| {
            self.io_error(&e);
            Vec::new()
        })
    }

    pub fn flush(&self) {
        let result = self.spool().flush();
        if let Err(e) = result {
            self.io_error(&e);
        }
    }

    pub fn sync(&self) {
        let result = self.spool().sync();
        if let Err(e) = result {
            self.io_error(&e);
        }
    }

    /// Resolves after new records were appended (or immediately if some were since the last
    /// call: a stored permit).
    pub async fn appended(&self) {
        self.shared.appended.notified().await;
    }

    pub fn wake_sender(&self) {
        self.shared.appended.notify_one();
    }

    /// Waits until every record assigned so far is acked, or `timeout` passes.
    pub async fn wait_all_acked(&self, timeout: Duration) -> bool {
        let target = self.last_assigned();
        let mut rx = self.shared.acked.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|a| *a >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Cuts `line` to [`MAX_LINE_BYTES`] (on a character boundary), saying how long the line was
/// (`total`, which may exceed what was kept).
fn truncate_line(line: &mut String, total: usize) {
    if line.len() > MAX_LINE_BYTES || total > line.len() {
        let mut cut = MAX_LINE_BYTES.min(line.len());
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str(&format!(" …[truncated, {total} bytes]"));
    }
}

fn redact_body(redactor: &Redactor, body: &mut Body) {
    if redactor.is_empty() {
        return;
    }
    match body {
        Body::Log(l) => {
            redactor.redact(&mut l.line);
        }
        Body::Event(e) => {
            redactor.redact(&mut e.json);
        }
        Body::Commit(c) => {
            redactor.redact(&mut c.message);
            redactor.redact(&mut c.author_name);
            redactor.redact(&mut c.author_email);
        }
        Body::State(s) => {
            redactor.redact(&mut s.reason);
        }
        Body::Gap(g) => {
            redactor.redact(&mut g.reason);
        }
        Body::Approval(a) => {
            redactor.redact(&mut a.args_preview);
            redactor.redact(&mut a.reason);
        }
        Body::ConnectorCall(c) => {
            redactor.redact(&mut c.args_preview);
            redactor.redact(&mut c.error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_never_reach_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let sink = RecordSink::new(Spool::open(dir.path(), SpoolOptions::default()).unwrap());
        sink.activate(0).unwrap();
        sink.set_secrets(
            &[("API_KEY".to_string(), "sk-live-123456".to_string())]
                .into_iter()
                .collect(),
        );
        sink.log(LogStream::Stdout, "using sk-live-123456 now");
        sink.event("message.part.updated", r#"{"text":"key=sk-live-123456"}"#);
        sink.state(SessionStatus::Failed, "x", "crashed with sk-live-123456");
        let batch = sink.next_batch();
        assert_eq!(batch.len(), 3);
        let dump = format!("{batch:?}");
        assert!(!dump.contains("sk-live-123456"), "{dump}");
        assert_eq!(dump.matches("[REDACTED:API_KEY]").count(), 3);
        sink.sync();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(14).any(|w| w == b"sk-live-123456"));
        }
    }

    #[tokio::test]
    async fn long_lines_and_huge_events_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let sink = RecordSink::new(Spool::open(dir.path(), SpoolOptions::default()).unwrap());
        sink.activate(0).unwrap();
        sink.log(LogStream::Stdout, "é".repeat(MAX_LINE_BYTES));
        sink.event("big", format!("{{\"x\":\"{}\"}}", "a".repeat(2 << 20)));
        let batch = sink.next_batch();
        match &batch[0].body {
            Some(Body::Log(l)) => {
                assert!(l.line.len() < MAX_LINE_BYTES + 64 && l.line.contains("truncated"))
            }
            other => panic!("{other:?}"),
        }
        match &batch[1].body {
            Some(Body::Event(e)) => assert!(e.json.contains("\"truncated\":true")),
            other => panic!("{other:?}"),
        }
        assert!(!sink.wait_all_acked(Duration::from_millis(10)).await);
        sink.ack(2);
        assert!(sink.wait_all_acked(Duration::from_millis(10)).await);
    }
}
