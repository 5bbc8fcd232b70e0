//! Session containers' exits, from the engine's event stream: one stream for every session
//! this replica follows, instead of a `wait` request per container.
//!
//! Podman up to 4.4 answers `POST /containers/{id}/wait` by polling the container's state in
//! a loop, which keeps its service busy for as long as the container runs (podman#18150).
//! Measured on Podman 4.3 here: 0.7–0.9 of a core per live session, taken from the session's
//! own OpenCode while it started. The event stream costs nothing while nothing happens.
//!
//! A stream can drop and an exit can come between a container's start and its follow, so
//! every (re)subscription and every newly followed session is also checked once with an
//! inspect. Whoever takes the session out of the followed set reports its exit, so it is
//! reported once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptionsBuilder, InspectContainerOptions};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::engine::DockerEngine;
use super::provider::{container_name, remove, session_of_container};
use crate::backoff::{Backoff, Jitter};
use crate::sandbox::SandboxExit;

/// The wait before subscribing again after the stream failed: doubling from 0.2 s to 10 s,
/// half of it random, so replicas do not subscribe in lockstep.
const RESUBSCRIBE: Backoff = Backoff::new(
    Duration::from_millis(200),
    Duration::from_secs(10),
    Jitter::Half,
);

/// How a container ended, as reported to the sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ended {
    status: String,
    success: bool,
}

impl Ended {
    fn exit_code(code: i64) -> Self {
        Self {
            status: format!("exit status {code}"),
            success: code == 0,
        }
    }

    fn removed() -> Self {
        Self {
            status: "container removed".into(),
            success: false,
        }
    }
}

/// The sessions followed, and the one task reading the engine's events for them.
pub(crate) struct ExitWatch {
    engine: DockerEngine,
    exits: mpsc::Sender<SandboxExit>,
    followed: Mutex<HashSet<String>>,
    started: AtomicBool,
}

impl ExitWatch {
    pub(crate) fn new(engine: DockerEngine, exits: mpsc::Sender<SandboxExit>) -> Arc<Self> {
        Arc::new(Self {
            engine,
            exits,
            followed: Mutex::default(),
            started: AtomicBool::new(false),
        })
    }

    fn followed(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.followed.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_followed(&self, session_id: &str) -> bool {
        self.followed().contains(session_id)
    }

    /// Follows a session's container until it exits; then it is removed and the exit sent.
    pub(crate) fn follow(self: &Arc<Self>, session_id: &str) {
        if !self.followed().insert(session_id.to_owned()) {
            return;
        }
        if !self.started.swap(true, Ordering::SeqCst) {
            tokio::spawn(self.clone().read_events());
        }
        // It may have exited before the stream could see it.
        let (watch, id) = (self.clone(), session_id.to_owned());
        tokio::spawn(async move { watch.check(&id).await });
    }

    /// Reads the engine's container events for as long as the control plane runs.
    async fn read_events(self: Arc<Self>) {
        let mut failures = 0;
        loop {
            let filters = std::collections::HashMap::from([("type", vec!["container"])]);
            let options = EventsOptionsBuilder::new().filters(&filters).build();
            let mut events = Box::pin(self.engine.docker.events(Some(options)));
            // What ended while nobody listened.
            let ids: Vec<String> = self.followed().iter().cloned().collect();
            for id in ids {
                self.check(&id).await;
            }
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) => {
                        failures = 0;
                        if let Some((id, ended)) = self.exit_in(&event) {
                            self.finish(&id, ended).await;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "container events; subscribing again");
                        break;
                    }
                }
            }
            RESUBSCRIBE.sleep(failures).await;
            failures = failures.saturating_add(1);
        }
    }

    /// The followed session and how its container ended, if `event` says one did.
    fn exit_in(&self, event: &EventMessage) -> Option<(String, Ended)> {
        if event.typ != Some(EventMessageTypeEnum::CONTAINER) {
            return None;
        }
        let attributes = event.actor.as_ref()?.attributes.as_ref()?;
        let id = session_of_container(attributes.get("name")?)?.to_owned();
        if !self.is_followed(&id) {
            return None;
        }
        let ended = match event.action.as_deref()? {
            // Docker and Podman alike; both put the exit code in `exitCode`.
            "die" => Ended::exit_code(
                attributes
                    .get("exitCode")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(-1),
            ),
            // Removed without a `die` first (it was not running): Docker says destroy,
            // Podman remove.
            "destroy" | "remove" => Ended::removed(),
            _ => return None,
        };
        Some((id, ended))
    }

    /// Asks the engine whether a followed session's container still runs.
    async fn check(&self, session_id: &str) {
        let name = container_name(session_id);
        let ended = match self
            .engine
            .docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => {
                let state = c.state.unwrap_or_default();
                if state.running == Some(true) {
                    return;
                }
                // Created but not started yet is not an exit.
                if state.status == Some(bollard::models::ContainerStateStatusEnum::CREATED) {
                    return;
                }
                Ended::exit_code(state.exit_code.unwrap_or(-1))
            }
            Err(e) if super::engine::is_not_found(&e) => Ended::removed(),
            Err(e) => {
                tracing::debug!(session = %session_id, error = %e, "inspecting a container");
                return;
            }
        };
        self.finish(session_id, ended).await;
    }

    /// Reports an exit once: removes the container and sends the exit.
    async fn finish(&self, session_id: &str, ended: Ended) {
        if !self.followed().remove(session_id) {
            return;
        }
        let _ = remove(&self.engine, &container_name(session_id)).await;
        let _ = self
            .exits
            .send(SandboxExit {
                session_id: session_id.to_owned(),
                status: ended.status,
                success: ended.success,
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn event(action: &str, name: &str, code: Option<&str>) -> EventMessage {
        let mut attributes = std::collections::HashMap::from([("name".into(), name.into())]);
        if let Some(c) = code {
            attributes.insert("exitCode".into(), c.into());
        }
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some("c0ffee".into()),
                attributes: Some(attributes),
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn only_a_followed_sessions_death_or_removal_is_an_exit() {
        // An engine that is never reached: `exit_in` only reads the event.
        let engine = DockerEngine::unconnected();
        let (tx, _rx) = mpsc::channel(1);
        let watch = ExitWatch::new(engine, tx);
        watch.followed().insert("a".into());
        assert_eq!(
            watch.exit_in(&event("die", "kortix-session-a", Some("3"))),
            Some(("a".into(), Ended::exit_code(3)))
        );
        assert!(
            watch
                .exit_in(&event("die", "kortix-session-a", Some("0")))
                .unwrap()
                .1
                .success
        );
        assert_eq!(
            watch.exit_in(&event("remove", "kortix-session-a", None)),
            Some(("a".into(), Ended::removed()))
        );
        assert_eq!(
            watch.exit_in(&event("destroy", "kortix-session-a", None)),
            Some(("a".into(), Ended::removed()))
        );
        // Not an exit, not followed, not a session's container.
        assert_eq!(
            watch.exit_in(&event("start", "kortix-session-a", None)),
            None
        );
        assert_eq!(
            watch.exit_in(&event("die", "kortix-session-b", Some("1"))),
            None
        );
        assert_eq!(watch.exit_in(&event("die", "other", Some("1"))), None);
        // A die without a code still ends the session, as a failure.
        assert_eq!(
            watch
                .exit_in(&event("die", "kortix-session-a", None))
                .unwrap()
                .1,
            Ended::exit_code(-1)
        );
    }
}
