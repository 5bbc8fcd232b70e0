//! Records between the wire (`kortix.v1.Record`) and the store (kind + encoded body).

use crate::store::RecordRow;
use kortix_proto::v1::{LogStream, Record, SessionStatus, record::Body};
use prost::Message;
use serde_json::{Value, json};

/// Records in one agent batch, and the largest single record body we accept.
pub const MAX_BATCH_RECORDS: usize = 1024;
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record batch has {0} records; at most {MAX_BATCH_RECORDS} allowed")]
    TooMany(usize),
    #[error("record {seq} has no body")]
    Empty { seq: u64 },
    #[error("record seq 0 is invalid: seqs start at 1")]
    ZeroSeq,
    #[error("record {seq} is {len} bytes; at most {MAX_RECORD_BYTES} allowed")]
    TooLarge { seq: u64, len: usize },
    #[error("stored record {seq} does not decode: {reason}")]
    Corrupt { seq: i64, reason: String },
}

pub fn kind(body: &Body) -> &'static str {
    match body {
        Body::Log(_) => "log",
        Body::Event(_) => "event",
        Body::Commit(_) => "commit",
        Body::State(_) => "state",
        Body::Gap(_) => "gap",
        Body::Approval(_) => "approval",
        Body::ConnectorCall(_) => "connector_call",
    }
}

/// Validates an agent's batch and turns it into store rows.
pub fn to_rows(records: &[Record]) -> Result<Vec<RecordRow>, RecordError> {
    if records.len() > MAX_BATCH_RECORDS {
        return Err(RecordError::TooMany(records.len()));
    }
    records
        .iter()
        .map(|r| {
            if r.seq == 0 {
                return Err(RecordError::ZeroSeq);
            }
            let body = r.body.as_ref().ok_or(RecordError::Empty { seq: r.seq })?;
            let encoded = r.encode_to_vec();
            if encoded.len() > MAX_RECORD_BYTES {
                return Err(RecordError::TooLarge {
                    seq: r.seq,
                    len: encoded.len(),
                });
            }
            Ok(RecordRow {
                seq: i64::try_from(r.seq).map_err(|_| RecordError::ZeroSeq)?,
                ts_ms: r.ts_unix_ms,
                kind: kind(body).to_string(),
                body: encoded,
            })
        })
        .collect()
}

pub fn from_row(row: &RecordRow) -> Result<Record, RecordError> {
    let mut record = Record::decode(row.body.as_slice()).map_err(|e| RecordError::Corrupt {
        seq: row.seq,
        reason: e.to_string(),
    })?;
    // The row's key is authoritative.
    record.seq = row.seq as u64;
    Ok(record)
}

/// A proto enum's name without its prefix, in lower case (`SESSION_STATUS_RUNNING` →
/// `running`).
fn enum_name(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// `r` in the shape `kortix-timeline` reads (`kortix sessions attach --json`'s
/// `{"seq","ts","kind","data"}`); `None` for a record with no body.
pub fn timeline_record(r: &Record) -> Option<kortix_timeline::Record> {
    let (kind, data) = match r.body.as_ref()? {
        Body::Log(l) => {
            let stream = LogStream::try_from(l.stream).map_or_else(
                |_| "unknown".to_string(),
                |s| enum_name(s.as_str_name(), "LOG_STREAM_"),
            );
            ("log", json!({ "stream": stream, "line": l.line }))
        }
        Body::Event(e) => {
            let event = serde_json::from_str(&e.json).unwrap_or(Value::Null);
            ("event", json!({ "type": e.r#type, "data": event }))
        }
        Body::Commit(c) => (
            "commit",
            json!({
                "sha": c.sha, "message": c.message, "files_changed": c.files_changed,
                "insertions": c.insertions, "deletions": c.deletions, "pushed": c.pushed,
            }),
        ),
        Body::State(s) => {
            let status = SessionStatus::try_from(s.status).map_or_else(
                |_| "unknown".to_string(),
                |st| enum_name(st.as_str_name(), "SESSION_STATUS_"),
            );
            (
                "state",
                json!({ "status": status, "phase": s.phase, "reason": s.reason }),
            )
        }
        Body::Gap(g) => (
            "gap",
            json!({ "from_seq": g.from_seq, "to_seq": g.to_seq, "reason": g.reason }),
        ),
        Body::Approval(a) => (
            "approval",
            json!({
                "approval_id": a.approval_id, "connector": a.connector, "tool": a.tool,
                "state": a.state, "reason": a.reason, "args_preview": a.args_preview,
            }),
        ),
        Body::ConnectorCall(c) => (
            "connector_call",
            json!({
                "connector": c.connector, "tool": c.tool, "status": c.status,
                "duration_ms": c.duration_ms, "error": c.error, "args_preview": c.args_preview,
            }),
        ),
    };
    let ts = chrono::DateTime::from_timestamp_millis(r.ts_unix_ms)
        .filter(|_| r.ts_unix_ms > 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    Some(kortix_timeline::Record {
        seq: r.seq,
        ts,
        kind: kind.to_string(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kortix_proto::v1::{LogLine, LogStream};

    fn log(seq: u64, line: &str) -> Record {
        Record {
            seq,
            ts_unix_ms: 7,
            body: Some(Body::Log(LogLine {
                stream: LogStream::Stdout as i32,
                line: line.into(),
            })),
        }
    }

    #[test]
    fn round_trips_and_validates() {
        let rows = to_rows(&[log(1, "a"), log(2, "b")]).unwrap();
        assert_eq!(rows[1].kind, "log");
        assert_eq!(from_row(&rows[1]).unwrap(), log(2, "b"));
        assert_eq!(to_rows(&[log(0, "x")]), Err(RecordError::ZeroSeq));
        let empty = Record {
            seq: 3,
            ts_unix_ms: 0,
            body: None,
        };
        assert_eq!(to_rows(&[empty]), Err(RecordError::Empty { seq: 3 }));
        let big = log(4, &"x".repeat(MAX_RECORD_BYTES));
        assert!(matches!(to_rows(&[big]), Err(RecordError::TooLarge { .. })));
        let many: Vec<_> = (1..=MAX_BATCH_RECORDS as u64 + 1)
            .map(|i| log(i, ""))
            .collect();
        assert!(matches!(to_rows(&many), Err(RecordError::TooMany(_))));
        let corrupt = RecordRow {
            seq: 1,
            ts_ms: 0,
            kind: "log".into(),
            body: vec![0xff, 0xff],
        };
        assert!(from_row(&corrupt).is_err());
    }
}
