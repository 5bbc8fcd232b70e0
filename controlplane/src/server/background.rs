//! The replica's background work: sandbox exits into session states, the sweepers, and the
//! shutdown sequence that ends this replica's sandboxes before the listeners close.

use super::composition::Services;
use super::signalled;
use crate::sandbox::{SandboxExit, SandboxProvider};
use crate::sessions::Sessions;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Starts the sweepers and the sandbox-exit consumer. The consumer keeps running after
/// shutdown until `sandboxes_done` fires, so exits of the sandboxes this replica ends at
/// shutdown still move their sessions.
pub(super) fn spawn(
    services: &mut Services,
    mut exits: mpsc::Receiver<SandboxExit>,
    mut sandboxes_done: oneshot::Receiver<()>,
    shutdown: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let sessions = &services.sessions;
    let mut tasks = Vec::new();
    {
        let sessions = sessions.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    exit = exits.recv() => match exit {
                        Some(exit) => sessions.sandbox_exited(exit).await,
                        None => return,
                    },
                    _ = &mut sandboxes_done => break,
                }
            }
            while let Ok(exit) = exits.try_recv() {
                sessions.sandbox_exited(exit).await;
            }
        }));
    }
    // Jobs that must not run on two replicas at once take turns through leases.
    let leases = crate::leases::Leases::new(sessions.store().clone());
    {
        let (leases, sessions) = (leases.clone(), sessions.clone());
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            leases
                .run_singleton("session-sweeper", shutdown, |until| {
                    sessions.clone().run_sweeper(until)
                })
                .await
        }));
    }
    tasks.push(tokio::spawn(
        sessions
            .clone()
            .run_heartbeat_flusher(signalled(shutdown.clone())),
    ));
    tasks.push(tokio::spawn(
        sessions.clone().run_reconciler(signalled(shutdown.clone())),
    ));
    if let Some(cluster) = services.cluster.take() {
        tracing::info!(
            replica = cluster.replica(),
            "waking viewers on other replicas through PostgreSQL"
        );
        tasks.push(tokio::spawn(cluster.run()));
    }
    tasks.push(tokio::spawn(
        services
            .slack
            .clone()
            .run_outbox(signalled(shutdown.clone())),
    ));
    tasks.push(tokio::spawn(
        services
            .slack
            .clone()
            .run_followers(signalled(shutdown.clone())),
    ));
    tasks.push(tokio::spawn(
        services
            .sessions
            .clone()
            .run_command_relay(signalled(shutdown.clone())),
    ));
    {
        let (leases, triggers) = (leases.clone(), services.triggers.clone());
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            leases
                .run_singleton("trigger-sweep", shutdown, |until| {
                    crate::triggers::Sweeper::new(triggers.clone()).run(until)
                })
                .await
        }));
    }
    {
        let (leases, apps) = (leases.clone(), services.apps.clone());
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            leases
                .run_singleton("apps-deploy-sweep", shutdown, |until| {
                    crate::apps::DeploySweep::new(apps.clone()).run(until)
                })
                .await
        }));
    }
    {
        let connectors = services.connectors.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            leases
                .run_singleton("approval-expiry", shutdown, |until| {
                    connectors.clone().run_approval_expiry(until)
                })
                .await
        }));
    }
    tasks.push(tokio::spawn(
        services
            .connectors
            .clone()
            .close_call_log(signalled(shutdown.clone())),
    ));
    tasks
}

/// On shutdown: refuse new sessions, end this replica's sandboxes (their agents push and
/// flush first), then end live streams and let the listeners close.
pub(super) fn spawn_shutdown(
    services: &Services,
    mut shutdown: watch::Receiver<bool>,
    sandboxes_done: oneshot::Sender<()>,
    drained: watch::Sender<bool>,
) -> JoinHandle<()> {
    let sessions = services.sessions.clone();
    let provider = services.provider.clone();
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|s| *s).await;
        sessions.drain();
        if provider.ends_with_control_plane() {
            end_sandboxes(&sessions, provider.as_ref()).await;
        }
        provider.release_spares().await;
        let _ = sandboxes_done.send(());
        sessions.hub().close();
        let _ = drained.send(true);
    })
}

async fn end_sandboxes(sessions: &Sessions, provider: &dyn SandboxProvider) {
    use crate::store::SessionStatus;
    let live = match sessions
        .store()
        .list_sessions_in_status(&SessionStatus::ACTIVE, None, 10_000)
        .await
    {
        Ok(live) => live,
        Err(e) => {
            tracing::error!(error = %e, "listing live sessions at shutdown");
            return;
        }
    };
    let mine: Vec<_> = live
        .into_iter()
        .filter(|s| provider.is_running(&s.id))
        .collect();
    let stops = mine
        .iter()
        .map(|s| sessions.stop(&s.id, false, "control plane shutting down"));
    for result in futures::future::join_all(stops).await {
        if let Err(e) = result {
            tracing::warn!(error = %e, "stopping a session at shutdown");
        }
    }
    // Give agents the grace period to push and flush, then make sure nothing is left.
    let deadline = tokio::time::Instant::now() + sessions.config().stop_grace;
    while mine.iter().any(|s| provider.is_running(&s.id)) && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for s in &mine {
        let _ = provider.kill(&s.id).await;
    }
}
