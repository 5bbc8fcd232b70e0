//! Periodic checks that end sessions nobody else will end: agents that never connect, agents
//! whose heartbeats stop, and sessions idle past the hibernation timeout.

use super::{Sessions, now_ms};
use crate::store::{Session, SessionStatus};
use std::future::Future;

pub(super) const BATCH: u32 = 500;

impl Sessions {
    /// Runs the sweep every `sweep_interval` until `shutdown` resolves.
    pub async fn run_sweeper(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.config.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => self.sweep_once().await,
            }
        }
    }

    /// One pass of every check; errors are logged and retried on the next pass. Each check
    /// walks all matching sessions page by page, so sessions it skips (connected agents)
    /// never hide the ones after them.
    pub async fn sweep_once(&self) {
        let now = now_ms();
        self.sweep_unconnected(now).await;
        self.sweep_slow_starts(now).await;
        if !self.config.idle_timeout.is_zero() {
            let idle = self.config.idle_timeout.as_millis() as i64;
            paged(
                "idle sessions",
                |after| {
                    let store = self.store.clone();
                    async move {
                        store
                            .idle_running_sessions(idle, after.as_ref(), BATCH)
                            .await
                    }
                },
                |s| async move {
                    let reason = format!("idle for {} s", s.idle_ms / 1000);
                    if let Err(e) = self.stop(&s.id, true, &reason).await {
                        tracing::warn!(session = %s.id, error = %e, "hibernating idle session");
                    }
                },
            )
            .await;
        }

        // Sessions left `stopping` by a replica that died mid-stop.
        let stuck_before = now - (self.config.stop_grace.as_millis() as i64) * 2;
        paged(
            "stopping sessions",
            |after| {
                let store = self.store.clone();
                async move {
                    store
                        .list_sessions_in_status(&[SessionStatus::Stopping], after.as_ref(), BATCH)
                        .await
                }
            },
            |s| async move {
                let since = s.last_heartbeat_ms.unwrap_or(s.created_ms);
                if since < stuck_before
                    && !self.hub.is_connected(&s.id)
                    && !self.provider.is_running(&s.id)
                {
                    self.end(
                        &s.id,
                        &[SessionStatus::Stopping],
                        SessionStatus::Stopped,
                        Some("stop completed by sweep"),
                    )
                    .await;
                }
            },
        )
        .await;

        self.purge_expired_credentials_if_due().await;
    }

    /// Whether a session's missing agent may be held against it yet. Agents of a control
    /// plane that was down back off up to their longest delay before they reconnect, and their
    /// last heartbeat may be far older than the outage: sessions from before this process
    /// started are judged only once the heartbeat timeout plus that grace has passed since.
    fn may_judge(&self, s: &Session) -> bool {
        s.created_ms >= self.started_ms
            || self.started.elapsed() >= self.config.heartbeat_timeout + self.config.reconnect_grace
    }

    /// Agents that never connected, and agents whose heartbeats stopped.
    async fn sweep_unconnected(&self, now: i64) {
        let deadline = now - self.config.connect_deadline.as_millis() as i64;
        let lost_before = now - self.config.heartbeat_timeout.as_millis() as i64;
        let never_connected = &format!(
            "agent never connected (waited {} s)",
            self.config.connect_deadline.as_secs()
        );
        paged(
            "provisioning sessions",
            |after| {
                let store = self.store.clone();
                async move {
                    store
                        .stale_provisioning_sessions(deadline, after.as_ref(), BATCH)
                        .await
                }
            },
            |s| async move {
                // An agent that connected is cloning or starting OpenCode: not a zombie —
                // connected here, or heartbeating to another replica (its heartbeats are in
                // the store), or reconnecting within the heartbeat timeout.
                let heartbeating = s.last_heartbeat_ms.is_some_and(|at| at >= lost_before);
                if self.may_judge(&s) && !heartbeating && !self.hub.is_connected(&s.id) {
                    self.fail(&s.id, never_connected).await;
                }
            },
        )
        .await;

        let lost = &format!(
            "agent lost: no heartbeat for {} s",
            self.config.heartbeat_timeout.as_secs()
        );
        paged(
            "running sessions",
            |after| {
                let store = self.store.clone();
                async move {
                    store
                        .stale_running_sessions(lost_before, after.as_ref(), BATCH)
                        .await
                }
            },
            |s| async move {
                if self.may_judge(&s) && !self.hub.is_connected(&s.id) {
                    self.fail(&s.id, lost).await;
                }
            },
        )
        .await;
    }

    /// Sessions whose agent connected but that are not `running` within the start deadline
    /// (after the connect deadline): OpenCode never became ready and the agent did not say so.
    async fn sweep_slow_starts(&self, now: i64) {
        let limit = self.config.connect_deadline + self.config.start_deadline;
        let before = now - limit.as_millis() as i64;
        let slow = &format!(
            "the session did not become ready within {} s",
            limit.as_secs()
        );
        paged(
            "slow-starting sessions",
            |after| {
                let store = self.store.clone();
                async move {
                    store
                        .stale_provisioning_sessions(before, after.as_ref(), BATCH)
                        .await
                }
            },
            |s| async move {
                self.fail(&s.id, slow).await;
            },
        )
        .await;
    }
}

/// Runs `each` on every session `fetch` lists, a page of [`BATCH`] at a time (keyset paging
/// on `(created_ms, id)`).
pub(super) async fn paged<F, FFut, E, EFut>(what: &str, mut fetch: F, mut each: E)
where
    F: FnMut(Option<Session>) -> FFut,
    FFut: Future<Output = crate::store::Result<Vec<Session>>>,
    E: FnMut(Session) -> EFut,
    EFut: Future<Output = ()>,
{
    let mut after: Option<Session> = None;
    loop {
        let page = match fetch(after.take()).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "sweep: {what}");
                return;
            }
        };
        let full = page.len() >= BATCH as usize;
        after = page.last().cloned();
        for s in page {
            each(s).await;
        }
        if !full {
            return;
        }
    }
}
