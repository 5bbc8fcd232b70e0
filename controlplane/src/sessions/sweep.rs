//! Periodic checks that end sessions nobody else will end: agents that never connect, agents
//! whose heartbeats stop, and sessions idle past the hibernation timeout.

use super::{Sessions, now_ms};
use crate::store::SessionStatus;

const BATCH: u32 = 500;

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

    /// One pass of every check; errors are logged and retried on the next pass.
    pub async fn sweep_once(&self) {
        let now = now_ms();
        let deadline = now - self.config.connect_deadline.as_millis() as i64;
        match self
            .store
            .stale_provisioning_sessions(deadline, BATCH)
            .await
        {
            Ok(sessions) => {
                for s in sessions {
                    // An agent that connected is cloning or starting OpenCode: not a zombie.
                    if self.hub.is_connected(&s.id) {
                        continue;
                    }
                    let reason = format!(
                        "agent never connected (waited {} s)",
                        self.config.connect_deadline.as_secs()
                    );
                    self.fail(&s.id, &reason).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweep: provisioning sessions"),
        }

        let lost_before = now - self.config.heartbeat_timeout.as_millis() as i64;
        match self.store.stale_running_sessions(lost_before, BATCH).await {
            Ok(sessions) => {
                for s in sessions {
                    if self.hub.is_connected(&s.id) {
                        continue;
                    }
                    let reason = format!(
                        "agent lost: no heartbeat for {} s",
                        self.config.heartbeat_timeout.as_secs()
                    );
                    self.fail(&s.id, &reason).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweep: running sessions"),
        }

        if !self.config.idle_timeout.is_zero() {
            let idle = self.config.idle_timeout.as_millis() as i64;
            match self.store.idle_running_sessions(idle, BATCH).await {
                Ok(sessions) => {
                    for s in sessions {
                        let reason = format!("idle for {} s", s.idle_ms / 1000);
                        if let Err(e) = self.stop(&s.id, true, &reason).await {
                            tracing::warn!(session = %s.id, error = %e, "hibernating idle session");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "sweep: idle sessions"),
            }
        }

        // Sessions left `stopping` by a replica that died mid-stop.
        let stuck_before = now - (self.config.stop_grace.as_millis() as i64) * 2;
        match self
            .store
            .list_sessions_in_status(&[SessionStatus::Stopping], BATCH)
            .await
        {
            Ok(sessions) => {
                for s in sessions {
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
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweep: stopping sessions"),
        }
    }
}
