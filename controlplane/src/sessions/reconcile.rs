//! Keeping the provider's sandboxes and the store's sessions in agreement, at start and then
//! periodically: a sandbox whose session is not live is ended, and — where the provider can
//! list every sandbox — a session whose sandbox is gone fails as "sandbox lost". Neither a
//! zombie sandbox nor a zombie session survives a crash of either side.

use super::Sessions;
use crate::store::SessionStatus;
use std::collections::HashSet;

/// How often the reconcile loop runs after the first pass at start.
pub const RECONCILE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// The reason a session gets when its sandbox disappeared under it.
pub const SANDBOX_LOST: &str = "sandbox lost";

impl Sessions {
    /// Runs [`Sessions::reconcile_once`] now and every [`RECONCILE_INTERVAL`] until `shutdown`.
    pub async fn run_reconciler(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {
                    self.reconcile_once().await;
                    self.provider.housekeep().await;
                }
            }
        }
    }

    /// One pass. Sessions are read before the sandboxes are listed, so a session that is
    /// `running` in that read already had its sandbox when the list was taken.
    pub async fn reconcile_once(&self) {
        // A page that fails to load leaves this list short; that is safe: a sandbox is only
        // ended after its session is read again, and only listed sessions can be failed.
        let mut live = Vec::new();
        super::sweep::paged(
            "reconcile: live sessions",
            |after| {
                let store = self.store.clone();
                async move {
                    store
                        .list_sessions_in_status(
                            &SessionStatus::ACTIVE,
                            after.as_ref(),
                            super::sweep::BATCH,
                        )
                        .await
                }
            },
            |s| {
                live.push(s);
                std::future::ready(())
            },
        )
        .await;
        let live_ids: HashSet<&str> = live.iter().map(|s| s.id.as_str()).collect();
        let inventory = match self.provider.inventory().await {
            Ok(inventory) => inventory,
            Err(e) => {
                tracing::warn!(error = %e, "reconcile: listing sandboxes");
                return;
            }
        };
        let sandboxes: HashSet<&str> = inventory.sandboxes.iter().map(String::as_str).collect();
        for id in &inventory.sandboxes {
            if live_ids.contains(id.as_str()) {
                continue;
            }
            // Not in the first read: it may have started since. Ask again before killing.
            match self.store.get_session(id).await {
                Ok(s) if !s.status.is_terminal() => continue,
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "reconcile: reading a session");
                    continue;
                }
            }
            tracing::info!(session = %id, "reconcile: ending a sandbox whose session is not live");
            if let Err(e) = self.provider.kill(id).await {
                tracing::warn!(session = %id, error = %e, "reconcile: ending a sandbox");
            }
        }
        if !inventory.complete {
            return;
        }
        for s in &live {
            // A provisioning session may still be booting; the connect deadline covers it.
            if s.status == SessionStatus::Running && !sandboxes.contains(s.id.as_str()) {
                tracing::warn!(session = %s.id, "reconcile: the session's sandbox is gone");
                self.fail(&s.id, SANDBOX_LOST).await;
            }
        }
    }
}
