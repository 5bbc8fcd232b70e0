//! `sessions attach`: stream a session's records, reattaching after a dropped connection or a
//! slow-viewer cut-off from the last seq seen, so the output has no gap or duplicate.

use std::process::ExitCode;
use std::time::Duration;

use kortix_proto::v1::{AttachRequest, Record, record};
use rand::Rng as _;
use tonic::{Code, Status};

use crate::client::{CliError, Client, Context, UNARY_TIMEOUT};
use crate::output::json::{RecordJson, log_stream, session_status};
use crate::output::{self, CYAN, DIM, GREEN, RED, YELLOW, paint, short_sha, status_style, subject};

/// Reattach attempts in a row without receiving a record before giving up.
const MAX_REATTACH: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct Options {
    pub id: String,
    pub from: u64,
    pub follow: bool,
}

/// Streams until the server ends the stream (exit 0), Ctrl-C (exit 0), or an error that
/// reattaching cannot fix (exit 1).
pub async fn run(ctx: &Context, client: &Client, opts: Options) -> Result<ExitCode, CliError> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    tokio::select! {
        result = stream(ctx, client, &opts) => result,
        // If the handler cannot be installed the branch is disabled; the default SIGINT
        // action still ends the process.
        Ok(()) = &mut ctrl_c => Ok(ExitCode::SUCCESS),
    }
}

async fn stream(ctx: &Context, client: &Client, opts: &Options) -> Result<ExitCode, CliError> {
    let mut next = opts.from;
    let mut failures = 0;
    loop {
        let status = match open(client, opts, next).await {
            Ok(mut records) => loop {
                match records.message().await {
                    Ok(Some(rec)) => {
                        // A reattach may replay the seam record; seq is gap-free per session.
                        if rec.seq < next {
                            continue;
                        }
                        failures = 0;
                        next = rec.seq + 1;
                        print(ctx.json, &rec)?;
                    }
                    Ok(None) => return Ok(ExitCode::SUCCESS),
                    Err(status) => break status,
                }
            },
            Err(status) => status,
        };
        if !is_resumable(&status) || failures >= MAX_REATTACH {
            return Err(CliError::rpc(client.url(), status));
        }
        failures += 1;
        let pause = backoff(failures);
        output::note(&paint(
            DIM,
            &format!(
                "attach interrupted ({}); reattaching from record {next} in {}ms",
                status.message(),
                pause.as_millis()
            ),
        ));
        tokio::time::sleep(pause).await;
    }
}

async fn open(
    client: &Client,
    opts: &Options,
    from_seq: u64,
) -> Result<tonic::Streaming<Record>, Status> {
    let request = AttachRequest {
        session_id: opts.id.clone(),
        from_seq,
        follow: opts.follow,
    };
    // The stream itself has no deadline; only waiting for the server to accept it does.
    match tokio::time::timeout(UNARY_TIMEOUT, client.sessions().attach(request)).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(Status::unavailable(format!(
            "no answer to Attach within {}s",
            UNARY_TIMEOUT.as_secs()
        ))),
    }
}

/// Slow-viewer cut-offs and transport failures are worth a reattach; a status the server
/// chose to send (NOT_FOUND, PERMISSION_DENIED, ...) is final.
fn is_resumable(status: &Status) -> bool {
    match status.code() {
        Code::ResourceExhausted | Code::Unavailable | Code::Aborted => true,
        // Broken connections surface as UNKNOWN/INTERNAL carrying the h2/io error as source;
        // statuses decoded from the server's trailers have no source.
        Code::Unknown | Code::Internal | Code::Cancelled => {
            std::error::Error::source(status).is_some()
        }
        _ => false,
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1 << attempt.min(10))
        .min(MAX_BACKOFF);
    base.mul_f64(rand::rng().random_range(0.8..1.2))
}

fn print(json: bool, rec: &Record) -> Result<(), CliError> {
    if json {
        match RecordJson::from_record(rec) {
            Some(line) => output::print_json_line(&line),
            None => Ok(()),
        }
    } else {
        match human_line(rec) {
            Some(line) => output::print_text(&line),
            None => Ok(()),
        }
    }
}

/// The readable log view: log lines as they are, everything else tagged. `None` for records
/// this build does not know.
pub fn human_line(rec: &Record) -> Option<String> {
    let line = match rec.body.as_ref()? {
        record::Body::Log(l) => match log_stream(l.stream) {
            "agent" => paint(DIM, &format!("[agent] {}", l.line)),
            _ => l.line.clone(),
        },
        record::Body::Event(e) => format!("{} {}", paint(CYAN, "[event]"), e.r#type),
        record::Body::Commit(c) => format!(
            "{} {} {} (+{} -{}, {} file{})",
            paint(GREEN, "[commit]"),
            short_sha(&c.sha),
            subject(&c.message),
            c.insertions,
            c.deletions,
            c.files_changed,
            if c.files_changed == 1 { "" } else { "s" }
        ),
        record::Body::State(s) => {
            let status = session_status(s.status);
            let mut text = format!(
                "{} {}",
                paint(YELLOW, "[state]"),
                paint(status_style(status), status)
            );
            if !s.phase.is_empty() {
                text.push_str(&format!(" ({})", s.phase));
            }
            if !s.reason.is_empty() {
                text.push_str(&format!(": {}", s.reason));
            }
            text
        }
        record::Body::Gap(g) => {
            let mut text = format!(
                "{} records {}..{} lost",
                paint(RED, "[gap]"),
                g.from_seq,
                g.to_seq
            );
            if !g.reason.is_empty() {
                text.push_str(&format!(": {}", g.reason));
            }
            text
        }
    };
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kortix_proto::v1::{CommitRecord, Gap, LogLine, OpencodeEvent, StateChange};

    fn plain(body: record::Body) -> String {
        let rec = Record {
            seq: 1,
            ts_unix_ms: 0,
            body: Some(body),
        };
        let text = human_line(&rec).expect("known body");
        // Strip ANSI styles for comparison.
        let mut out = String::new();
        let mut in_escape = false;
        for c in text.chars() {
            match (in_escape, c) {
                (false, '\u{1b}') => in_escape = true,
                (true, 'm') => in_escape = false,
                (false, c) => out.push(c),
                (true, _) => {}
            }
        }
        out
    }

    #[test]
    fn human_view_of_each_kind() {
        assert_eq!(
            plain(record::Body::Log(LogLine {
                stream: 1,
                line: "hello".into()
            })),
            "hello"
        );
        assert_eq!(
            plain(record::Body::Log(LogLine {
                stream: 3,
                line: "cloned".into()
            })),
            "[agent] cloned"
        );
        assert_eq!(
            plain(record::Body::Event(OpencodeEvent {
                r#type: "session.idle".into(),
                json: "{}".into()
            })),
            "[event] session.idle"
        );
        assert_eq!(
            plain(record::Body::Commit(CommitRecord {
                sha: "0123456789abcdef".into(),
                message: "Add parser\n\nDetails".into(),
                files_changed: 3,
                insertions: 40,
                deletions: 2,
                ..Default::default()
            })),
            "[commit] 0123456 Add parser (+40 -2, 3 files)"
        );
        assert_eq!(
            plain(record::Body::State(StateChange {
                status: 6,
                phase: "cloning".into(),
                reason: "auth failed".into()
            })),
            "[state] failed (cloning): auth failed"
        );
        assert_eq!(
            plain(record::Body::State(StateChange {
                status: 2,
                ..Default::default()
            })),
            "[state] running"
        );
        assert_eq!(
            plain(record::Body::Gap(Gap {
                from_seq: 5,
                to_seq: 9,
                reason: "spool overflow".into()
            })),
            "[gap] records 5..9 lost: spool overflow"
        );
    }

    #[test]
    fn unknown_body_prints_nothing() {
        assert!(
            human_line(&Record {
                seq: 1,
                ts_unix_ms: 0,
                body: None
            })
            .is_none()
        );
    }

    #[test]
    fn resumable_statuses() {
        assert!(is_resumable(&Status::resource_exhausted("viewer too slow")));
        assert!(is_resumable(&Status::unavailable("connection reset")));
        assert!(!is_resumable(&Status::not_found("session s1")));
        assert!(!is_resumable(&Status::permission_denied("not yours")));
        // A server-sent UNKNOWN has no transport cause behind it.
        assert!(!is_resumable(&Status::unknown("handler panicked")));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(is_resumable(&Status::from_error(Box::new(io))));
    }

    #[test]
    fn backoff_is_bounded() {
        for attempt in 0..40 {
            assert!(backoff(attempt) <= MAX_BACKOFF.mul_f64(1.2));
        }
    }
}
