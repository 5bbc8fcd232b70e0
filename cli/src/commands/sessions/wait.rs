//! `--wait`: follow the session's state (`SessionService.WatchSession`) until it reaches what
//! the command waits for, so the command returns as soon as the server has stored the change.
//! A control plane without WatchSession (an older version) is polled instead.

use std::time::Duration;

use kortix_proto::v1::{GetSessionRequest, Session, SessionStatus, WatchSessionRequest};
use rand::Rng as _;
use tokio::time::Instant;
use tonic::Code;

use crate::client::{CliError, Client, Context, UNARY_TIMEOUT, unary};
use crate::output::json::session_status;
use crate::output::terminal;

/// Reconnections (server restarting, network blip) tolerated in a row before giving up.
const MAX_FAILURES: u32 = 5;
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// What a `--wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Out of `provisioning` (or `resuming`): running, or failed (the caller tells them
    /// apart).
    Started,
    /// Stopped, hibernated or failed.
    Ended,
}

impl Until {
    fn reached(self, status: i32) -> bool {
        let status = SessionStatus::try_from(status).unwrap_or(SessionStatus::Unspecified);
        match self {
            Until::Started => !matches!(
                status,
                SessionStatus::Provisioning | SessionStatus::Resuming | SessionStatus::Unspecified
            ),
            Until::Ended => matches!(
                status,
                SessionStatus::Stopped | SessionStatus::Hibernated | SessionStatus::Failed
            ),
        }
    }
}

/// The session once `until` is reached; errors when `limit` passes first.
pub async fn until(
    ctx: &Context,
    client: &Client,
    id: &str,
    until: Until,
    limit: Duration,
) -> Result<Session, CliError> {
    let deadline = Instant::now() + limit;
    let spinner = terminal::spinner(!ctx.json, format!("session {id}: waiting"));
    let mut last_status = "unknown";
    let mut note = |s: &Session| {
        last_status = session_status(s.status);
        spinner.set_message(format!("session {id}: {last_status}"));
    };
    let result = match tokio::time::timeout_at(deadline, follow(client, id, until, &mut note)).await
    {
        Ok(Err(err)) if err.code() == Some(Code::Unimplemented) => {
            match tokio::time::timeout_at(deadline, poll(client, id, until, &mut note)).await {
                Ok(result) => result.map_err(Some),
                Err(_) => Err(None),
            }
        }
        Ok(result) => result.map_err(Some),
        Err(_) => Err(None),
    };
    spinner.finish_and_clear();
    result.map_err(|err| {
        err.unwrap_or_else(|| {
            CliError::Refused(format!(
                "session {id} is still {last_status} after {}s (see `kortix sessions info {id}`)",
                limit.as_secs()
            ))
        })
    })
}

/// Follows WatchSession, reopening it after transport failures.
async fn follow(
    client: &Client,
    id: &str,
    until: Until,
    note: &mut impl FnMut(&Session),
) -> Result<Session, CliError> {
    let mut failures = 0;
    loop {
        let opened = tokio::time::timeout(
            UNARY_TIMEOUT,
            client
                .sessions()
                .watch_session(WatchSessionRequest { id: id.to_owned() }),
        )
        .await;
        let status = match opened {
            Err(_) => tonic::Status::unavailable(format!(
                "no answer to WatchSession within {}s",
                UNARY_TIMEOUT.as_secs()
            )),
            Ok(Err(status)) => status,
            Ok(Ok(response)) => {
                let mut updates = response.into_inner();
                loop {
                    match updates.message().await {
                        Ok(Some(session)) => {
                            failures = 0;
                            note(&session);
                            if until.reached(session.status) {
                                return Ok(session);
                            }
                        }
                        // The server ends the stream after a terminal state, which every wait
                        // counts as reached; an early end is a replica going away.
                        Ok(None) => break tonic::Status::unavailable("watch ended early"),
                        Err(status) => break status,
                    }
                }
            }
        };
        let err = CliError::rpc(client.url(), status);
        if !err.is_transient() || failures >= MAX_FAILURES {
            return Err(err);
        }
        failures += 1;
        tokio::time::sleep(jittered(FIRST_DELAY * failures)).await;
    }
}

/// GetSession with a growing interval, for control planes without WatchSession.
async fn poll(
    client: &Client,
    id: &str,
    until: Until,
    note: &mut impl FnMut(&Session),
) -> Result<Session, CliError> {
    let mut delay = FIRST_DELAY;
    let mut failures = 0;
    loop {
        let request = GetSessionRequest { id: id.to_owned() };
        match client
            .call("GetSession", client.sessions().get_session(unary(request)))
            .await
        {
            Ok(session) => {
                failures = 0;
                note(&session);
                if until.reached(session.status) {
                    return Ok(session);
                }
            }
            Err(err) if err.is_transient() && failures < MAX_FAILURES => failures += 1,
            Err(err) => return Err(err),
        }
        tokio::time::sleep(jittered(delay)).await;
        delay = delay.mul_f64(1.5).min(MAX_DELAY);
    }
}

/// ±20 % so many waiting clients do not retry in lockstep.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::rng().random_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_each_wait_counts_as_reached() {
        use SessionStatus::*;
        let started = |s: SessionStatus| Until::Started.reached(s as i32);
        let ended = |s: SessionStatus| Until::Ended.reached(s as i32);
        assert!(!started(Provisioning) && !started(Unspecified) && !Until::Started.reached(42));
        for s in [Running, Failed, Stopping, Stopped, Hibernated] {
            assert!(started(s), "{s:?}");
        }
        assert!(!started(Resuming));
        for s in [Provisioning, Resuming, Running, Stopping, Unspecified] {
            assert!(!ended(s), "{s:?}");
        }
        for s in [Stopped, Hibernated, Failed] {
            assert!(ended(s), "{s:?}");
        }
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        let j = jittered(Duration::from_secs(1));
        assert!(
            j >= Duration::from_millis(800) && j <= Duration::from_millis(1200),
            "{j:?}"
        );
    }
}
