//! Web API calls: `call_now` for what is worth a few tries now (the placeholder, the first
//! reaction), and the outbox for what must arrive (final answers, the last reactions): a row
//! per call, claimed with a lease so one replica sends it, retried at Slack's `Retry-After`
//! or with backoff and jitter, given up after [`MAX_ATTEMPTS`] or [`MAX_AGE`].

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use super::Slack;
use super::web::WebError;
use crate::backoff::{Backoff, Jitter};
use crate::clock::now_ms;
use crate::error::DomainResult;
use crate::store::OutboxItem;

/// Tries of one queued call.
pub const MAX_ATTEMPTS: i64 = 40;
/// A queued call older than this is given up.
pub const MAX_AGE: Duration = Duration::from_secs(6 * 60 * 60);
/// Calls claimed per pass.
const BATCH: u32 = 32;
/// How long a claimed call is reserved for the replica sending it.
const LEASE: Duration = Duration::from_secs(60);
/// The outbox is looked at this often even without a wake-up (calls queued elsewhere,
/// retries coming due).
const POLL: Duration = Duration::from_millis(500);
/// Longest backoff between tries of a failing call.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Tries of a `call_now`, and the longest it waits for a rate limit in all.
const NOW_ATTEMPTS: usize = 4;
const NOW_MAX_WAIT: Duration = Duration::from_secs(20);
/// Claimed event ids are kept this long (Slack retries within the hour).
const EVENT_IDS_KEPT: Duration = Duration::from_secs(24 * 60 * 60);
const PRUNE_EVERY: Duration = Duration::from_secs(10 * 60);

/// Backoff before try `attempt + 1`: doubling from one second, capped, plus up to half again.
fn backoff(attempt: i64) -> Duration {
    const BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), MAX_BACKOFF, Jitter::Over(0.5));
    BACKOFF.pause(u32::try_from(attempt.max(0)).unwrap_or(u32::MAX))
}

impl Slack {
    /// Calls `method` now, retrying rate limits and transient failures a few times; the
    /// answer, or `None` (logged) when it did not go through.
    pub(super) async fn call_now(
        &self,
        project_id: &str,
        method: &str,
        body: Value,
    ) -> Option<Value> {
        let token = match self.bot_token(project_id).await {
            Ok(Some(t)) => t,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(project = %project_id, error = %e, "Slack bot token");
                return None;
            }
        };
        let mut waited = Duration::ZERO;
        for attempt in 0..NOW_ATTEMPTS {
            match self.web().call(&token, method, &body).await {
                Ok(answer) => return Some(answer),
                Err(e) if e.is_transient() && attempt + 1 < NOW_ATTEMPTS => {
                    let wait = match &e {
                        WebError::RateLimited { retry_after, .. } => *retry_after,
                        _ => backoff(attempt as i64),
                    };
                    if waited + wait > NOW_MAX_WAIT {
                        tracing::warn!(project = %project_id, error = %e, "Slack call given up");
                        return None;
                    }
                    waited += wait;
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    tracing::warn!(project = %project_id, error = %e, "Slack call failed");
                    return None;
                }
            }
        }
        None
    }

    /// Queues `method` for delivery and wakes the outbox.
    pub(super) async fn enqueue(
        &self,
        project_id: &str,
        method: &str,
        body: &Value,
    ) -> DomainResult<()> {
        self.store()
            .enqueue_slack_call(project_id, method, &body.to_string())
            .await?;
        self.inner.outbox_kick.notify_one();
        Ok(())
    }

    /// Delivers queued calls until `shutdown` resolves; also forgets old event ids.
    pub async fn run_outbox(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                let before = now_ms() - EVENT_IDS_KEPT.as_millis() as i64;
                if let Err(e) = self.store().prune_slack_events(before).await {
                    tracing::warn!(error = %e, "pruning Slack event ids");
                }
            }
            match self
                .store()
                .claim_due_slack_calls(BATCH, LEASE.as_millis() as i64)
                .await
            {
                Ok(items) => {
                    let full = items.len() == BATCH as usize;
                    for item in items {
                        self.deliver(item).await;
                    }
                    if full {
                        continue;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading the Slack outbox"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = self.inner.outbox_kick.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn deliver(&self, item: OutboxItem) {
        let token = match self.bot_token(&item.project_id).await {
            Ok(Some(token)) => token,
            Ok(None) => {
                tracing::warn!(project = %item.project_id, method = %item.method,
                    "Slack call dropped: the project is no longer bound to Slack");
                self.forget(&item.id).await;
                return;
            }
            Err(e) => {
                self.reschedule(&item, backoff(item.attempts), &e.to_string())
                    .await;
                return;
            }
        };
        let body: Value = match serde_json::from_str(&item.payload) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(id = %item.id, error = %e, "Slack call with a damaged payload dropped");
                self.forget(&item.id).await;
                return;
            }
        };
        match self.web().call(&token, &item.method, &body).await {
            Ok(_) => self.forget(&item.id).await,
            // Reactions already in the wanted state are done.
            Err(WebError::Refused { error, .. })
                if matches!(error.as_str(), "already_reacted" | "no_reaction") =>
            {
                self.forget(&item.id).await
            }
            Err(e) => {
                let too_old = now_ms() - item.created_ms > MAX_AGE.as_millis() as i64;
                if !e.is_transient() || item.attempts >= MAX_ATTEMPTS || too_old {
                    tracing::warn!(id = %item.id, method = %item.method, attempts = item.attempts,
                        error = %e, "Slack call given up");
                    self.forget(&item.id).await;
                    return;
                }
                let wait = match &e {
                    WebError::RateLimited { retry_after, .. } => *retry_after,
                    _ => backoff(item.attempts),
                };
                self.reschedule(&item, wait, &e.to_string()).await;
            }
        }
    }

    async fn forget(&self, id: &str) {
        if let Err(e) = self.store().finish_slack_call(id).await {
            tracing::warn!(id = %id, error = %e, "removing a delivered Slack call");
        }
    }

    async fn reschedule(&self, item: &OutboxItem, wait: Duration, error: &str) {
        let due = now_ms() + wait.as_millis() as i64;
        if let Err(e) = self.store().retry_slack_call(&item.id, due, error).await {
            tracing::warn!(id = %item.id, error = %e, "rescheduling a Slack call");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        assert!(backoff(0) >= Duration::from_secs(1) && backoff(0) <= Duration::from_millis(1500));
        assert!(backoff(3) >= Duration::from_secs(8));
        for attempt in [6, 20, i64::MAX] {
            let b = backoff(attempt);
            assert!(
                b >= MAX_BACKOFF && b <= MAX_BACKOFF + MAX_BACKOFF / 2,
                "{b:?}"
            );
        }
    }
}
