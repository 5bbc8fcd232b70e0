//! `sessions new --wait`: poll the session until it runs, fails, or the deadline passes.

use std::time::Duration;

use kortix_proto::v1::{GetSessionRequest, Session, SessionStatus};
use rand::Rng as _;
use tokio::time::Instant;

use crate::client::{CliError, Client, Context, unary};
use crate::output::json::session_status;
use crate::output::terminal;

const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(5);
/// Consecutive failed polls tolerated (server restarting, network blip) before giving up.
const MAX_POLL_FAILURES: u32 = 5;

/// Returns the session once it is running or has settled in any other state (the caller
/// decides what that means); errors when `limit` passes first.
pub async fn until_running(
    ctx: &Context,
    client: &Client,
    id: &str,
    limit: Duration,
) -> Result<Session, CliError> {
    let deadline = Instant::now() + limit;
    let spinner = terminal::spinner(!ctx.json, format!("session {id}: provisioning"));
    let mut delay = FIRST_DELAY;
    let mut failures = 0;
    let mut last_status = "provisioning";
    let result = loop {
        let request = GetSessionRequest { id: id.to_owned() };
        match client
            .call("GetSession", client.sessions().get_session(unary(request)))
            .await
        {
            Ok(session) => {
                failures = 0;
                if is_settled(session.status) {
                    break Ok(session);
                }
                last_status = session_status(session.status);
                spinner.set_message(format!("session {id}: {last_status}"));
            }
            Err(err) if err.is_transient() && failures < MAX_POLL_FAILURES => failures += 1,
            Err(err) => break Err(err),
        }
        let pause = jittered(delay);
        if Instant::now() + pause >= deadline {
            break Err(CliError::Refused(format!(
                "session {id} is still {last_status} after {}s (see `kortix sessions info {id}`)",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(pause).await;
        delay = next_delay(delay);
    };
    spinner.finish_and_clear();
    result
}

/// Every status except the two on the way up: provisioning (and unknown values) keep waiting.
fn is_settled(status: i32) -> bool {
    match SessionStatus::try_from(status) {
        Ok(SessionStatus::Provisioning | SessionStatus::Unspecified) | Err(_) => false,
        Ok(_) => true,
    }
}

fn next_delay(delay: Duration) -> Duration {
    delay.mul_f64(1.5).min(MAX_DELAY)
}

/// ±20 % so many waiting clients do not poll in lockstep.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::rng().random_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_provisioning_keeps_waiting() {
        assert!(!is_settled(SessionStatus::Provisioning as i32));
        assert!(!is_settled(SessionStatus::Unspecified as i32));
        assert!(!is_settled(42));
        for s in [
            SessionStatus::Running,
            SessionStatus::Failed,
            SessionStatus::Stopping,
            SessionStatus::Stopped,
            SessionStatus::Hibernated,
        ] {
            assert!(is_settled(s as i32), "{s:?}");
        }
    }

    #[test]
    fn backoff_grows_to_a_cap() {
        let mut d = FIRST_DELAY;
        for _ in 0..20 {
            d = next_delay(d);
        }
        assert_eq!(d, MAX_DELAY);
        assert_eq!(
            next_delay(Duration::from_millis(100)),
            Duration::from_millis(150)
        );
        let j = jittered(Duration::from_secs(1));
        assert!(
            j >= Duration::from_millis(800) && j <= Duration::from_millis(1200),
            "{j:?}"
        );
    }
}
