//! What can go wrong in a client command, rendered as one line for stderr.

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tonic::{Code, Status};

/// A failed client command. `Display` is the complete one-line message (no `source()` chain,
/// so `{:#}` does not repeat it).
#[derive(Debug)]
pub enum CliError {
    /// The control plane answered with a gRPC error.
    Rpc { url: String, status: Status },
    /// No connection could be made (refused, DNS, TLS handshake, connect timeout).
    Connect { url: String, detail: String },
    /// The call did not complete within the client's deadline.
    Timeout {
        url: String,
        what: String,
        after: Duration,
    },
    /// `--url` is not something we can dial.
    BadUrl { url: String, reason: String },
    /// A local file could not be read or written.
    File {
        path: PathBuf,
        action: &'static str,
        detail: String,
    },
    /// Bad input given to the command (empty secret, malformed token, ...).
    Input(String),
    /// The server did what was asked but the outcome is a failure the user must see
    /// (merge conflict, session failed to start, trigger firing failed).
    Refused(String),
    /// stdout was closed by the reader (`kortix ... | head`): stop quietly.
    BrokenPipe,
}

impl CliError {
    pub fn rpc(url: &str, status: Status) -> Self {
        CliError::Rpc {
            url: url.to_owned(),
            status,
        }
    }

    pub fn file(path: impl Into<PathBuf>, action: &'static str, err: &dyn StdError) -> Self {
        CliError::File {
            path: path.into(),
            action,
            detail: chain(err),
        }
    }

    /// Failures where the request may not have reached the server or its answer was lost, so
    /// an idempotent call is worth repeating.
    pub fn is_transient(&self) -> bool {
        matches!(self, CliError::Timeout { .. }) || self.code() == Some(Code::Unavailable)
    }

    /// The gRPC code when this is an RPC error.
    pub fn code(&self) -> Option<Code> {
        match self {
            CliError::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Rpc { url, status } => f.write_str(&status_message(url, status)),
            CliError::Connect { url, detail } => {
                write!(f, "cannot reach the control plane at {url}: {detail}")
            }
            CliError::Timeout { url, what, after } => write!(
                f,
                "timed out after {}s waiting for {what} from {url}",
                after.as_secs()
            ),
            CliError::BadUrl { url, reason } => write!(f, "invalid --url {url:?}: {reason}"),
            CliError::File {
                path,
                action,
                detail,
            } => {
                write!(f, "cannot {action} {}: {detail}", path.display())
            }
            CliError::Input(msg) | CliError::Refused(msg) => f.write_str(msg),
            CliError::BrokenPipe => f.write_str("stdout closed"),
        }
    }
}

impl StdError for CliError {}

/// One clear line per gRPC status. The server's message names the object and what is wrong
/// with it ("project 'demo' not found"), so it stands alone: repeating the code in front of it
/// would say things twice. Only what the message cannot know is added: how to authenticate,
/// which URL was unreachable, that the server is older, that the fault is the server's.
pub fn status_message(url: &str, status: &Status) -> String {
    let msg = status_detail(status);
    match status.code() {
        Code::Unauthenticated => {
            format!("not authenticated: {msg} (pass --token or run kortix login)")
        }
        // The server answered; its database did not (its message says so).
        Code::Unavailable if msg.starts_with("the database is unavailable") => {
            format!("the control plane at {url} answered, but {msg}; try again shortly")
        }
        Code::Unavailable => format!("cannot reach the control plane at {url}: {msg}"),
        Code::Unimplemented => format!(
            "the control plane at {url} does not implement this call ({msg}); is it an older version?"
        ),
        Code::Unknown | Code::Internal | Code::DataLoss => {
            format!("server error ({}): {msg}", code_name(status.code()))
        }
        _ if status.message().trim().is_empty() => {
            format!("{}: {msg}", code_name(status.code()))
        }
        _ => msg,
    }
}

/// The status message, or its transport cause when the message is empty.
fn status_detail(status: &Status) -> String {
    let msg = status.message().trim();
    let cause = status.source().map(chain);
    match (msg.is_empty(), cause) {
        (true, Some(cause)) => cause,
        (true, None) => "no details given".to_owned(),
        (false, Some(cause)) if !msg.contains(&cause) && status.code() == Code::Unavailable => {
            format!("{msg}: {cause}")
        }
        (false, _) => msg.to_owned(),
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// An error and its causes as `a: b: c`, skipping causes whose text the previous one already
/// contains (hyper and tonic often repeat themselves).
pub fn chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:8008";

    #[test]
    fn unauthenticated_tells_how_to_fix_it() {
        let msg = status_message(URL, &Status::unauthenticated("missing bearer token"));
        assert_eq!(
            msg,
            "not authenticated: missing bearer token (pass --token or run kortix login)"
        );
    }

    #[test]
    fn a_database_outage_is_not_an_unreachable_server() {
        let msg = status_message(
            URL,
            &Status::unavailable("the database is unavailable (reading session s: pool timed out)"),
        );
        assert_eq!(
            msg,
            "the control plane at http://127.0.0.1:8008 answered, but the database is unavailable (reading session s: pool timed out); try again shortly"
        );
    }

    #[test]
    fn unavailable_names_the_url() {
        let msg = status_message(URL, &Status::unavailable("connection refused"));
        assert_eq!(
            msg,
            "cannot reach the control plane at http://127.0.0.1:8008: connection refused"
        );
    }

    #[test]
    fn the_servers_message_is_said_once() {
        let cases = [
            (
                Status::not_found("project 'nope' not found"),
                "project 'nope' not found",
            ),
            (
                Status::already_exists("project 'demo' already exists"),
                "project 'demo' already exists",
            ),
            (
                Status::failed_precondition("session s1 is running"),
                "session s1 is running",
            ),
            (Status::internal("boom"), "server error (internal): boom"),
        ];
        for (status, want) in cases {
            assert_eq!(status_message(URL, &status), want);
        }
    }

    #[test]
    fn empty_message_names_the_code() {
        let msg = status_message(URL, &Status::not_found(""));
        assert_eq!(msg, "not found: no details given");
    }

    #[test]
    fn chain_skips_repeated_causes() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl fmt::Display for E {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        impl StdError for E {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                self.1.as_deref().map(|e| e as &(dyn StdError + 'static))
            }
        }
        let e = E(
            "transport error",
            Some(Box::new(E(
                "tcp connect error: refused",
                Some(Box::new(E("refused", None))),
            ))),
        );
        assert_eq!(chain(&e), "transport error: tcp connect error: refused");
    }
}
