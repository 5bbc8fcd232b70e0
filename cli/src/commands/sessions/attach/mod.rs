//! `sessions attach`: stream a session's records, reattaching after a dropped connection or a
//! slow-viewer cut-off from the last seq seen, so the output has no gap or duplicate.
//!
//! `--json` prints each record as it is; the human view reads them through
//! [`kortix_timeline`] and prints its entries ([`view`]).

mod view;

use std::cell::Cell;
use std::process::ExitCode;
use std::time::Duration;

use kortix_proto::v1::{AttachRequest, GetSessionRequest, Record};
use kortix_timeline::Timeline;
use rand::Rng as _;
use tonic::{Code, Status};

use crate::client::{CliError, Client, Context, UNARY_TIMEOUT, unary};
use crate::output::json::RecordJson;
use crate::output::{self, DIM, paint, terminal};

/// Reattach attempts in a row without receiving a record before giving up.
const MAX_REATTACH: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct Options {
    pub id: String,
    /// First seq to show; `None` is the beginning (or `tail` from the end).
    pub from: Option<u64>,
    pub follow: bool,
    pub verbose: bool,
    pub timestamps: bool,
    /// Start this many records before the newest.
    pub tail: Option<u64>,
    /// Only records stamped within this long before now.
    pub since: Option<Duration>,
}

/// Streams until the server ends the stream (exit 0), Ctrl-C (exit 0, saying how to come
/// back), or an error that reattaching cannot fix (exit 1).
pub async fn run(ctx: &Context, client: &Client, opts: Options) -> Result<ExitCode, CliError> {
    let first = match (opts.from, opts.tail) {
        (Some(from), _) => from,
        (None, Some(n)) => {
            let session = client
                .call(
                    "GetSession",
                    client.sessions().get_session(unary(GetSessionRequest {
                        id: opts.id.clone(),
                    })),
                )
                .await?;
            session.last_seq.saturating_sub(n) + 1
        }
        (None, None) => 0,
    };
    let cutoff_ms = opts.since.map(|d| {
        let now = chrono::Utc::now().timestamp_millis();
        now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    });
    let mut out = Printer {
        json: ctx.json,
        cutoff_ms,
        timeline: Timeline::new(kortix_timeline::Options {
            verbose: opts.verbose,
            ..kortix_timeline::Options::default()
        }),
        view: view::View {
            timestamps: opts.timestamps,
            width: terminal::stdout_width(),
        },
    };
    let next = Cell::new(first);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let result = tokio::select! {
        result = stream(client, &opts, &next, &mut out) => result,
        // If the handler cannot be installed the branch is disabled; the default SIGINT
        // action still ends the process.
        Ok(()) = &mut ctrl_c => {
            output::note(&paint(DIM, &format!(
                "detached from session {id}; it keeps running (resume with: kortix sessions attach {id} --from {})",
                next.get().max(1),
                id = opts.id,
            )));
            return Ok(ExitCode::SUCCESS);
        }
    };
    out.finish()?;
    result
}

/// Writes records as JSON lines, or as the timeline's entries for people.
struct Printer {
    json: bool,
    cutoff_ms: Option<i64>,
    timeline: Timeline,
    view: view::View,
}

impl Printer {
    fn record(&mut self, rec: &Record) -> Result<(), CliError> {
        // A record this build does not know has no JSON shape to show.
        let Some(json) = RecordJson::from_record(rec) else {
            return Ok(());
        };
        let shown = self.cutoff_ms.is_none_or(|cut| rec.ts_unix_ms >= cut);
        if self.json {
            return if shown {
                output::print_json_line(&json)
            } else {
                Ok(())
            };
        }
        let record = serde_json::to_value(&json)
            .and_then(serde_json::from_value::<kortix_timeline::Record>)
            .map_err(|e| CliError::Input(format!("record {}: {e}", rec.seq)))?;
        // Earlier records still go through the timeline: they say whose message is whose.
        let entries = self.timeline.push(&record);
        if shown {
            self.entries(entries)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), CliError> {
        if self.json {
            return Ok(());
        }
        let entries = self.timeline.finish();
        self.entries(entries)
    }

    fn entries(&self, entries: Vec<kortix_timeline::Entry>) -> Result<(), CliError> {
        for entry in entries {
            for line in self.view.lines(&entry) {
                output::print_text(&line)?;
            }
        }
        Ok(())
    }
}

async fn stream(
    client: &Client,
    opts: &Options,
    next: &Cell<u64>,
    out: &mut Printer,
) -> Result<ExitCode, CliError> {
    let mut failures = 0;
    loop {
        let status = match open(client, opts, next.get()).await {
            Ok(mut records) => loop {
                match records.message().await {
                    Ok(Some(rec)) => {
                        // A reattach may replay the seam record; seq is gap-free per session.
                        if rec.seq < next.get() {
                            continue;
                        }
                        failures = 0;
                        next.set(rec.seq + 1);
                        out.record(&rec)?;
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
                "attach interrupted ({}); reattaching from record {} in {}ms",
                status.message(),
                next.get(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
