//! Starting, stopping and ending sessions.
//!
//! Every status change is a conditional update in the store, so when an agent report, a
//! sandbox exit and a sweep race (possibly on different replicas), exactly one of them moves
//! the session and the others see that it already moved.

use super::{SessionError, Sessions, now_ms};
use crate::sandbox::{SandboxExit, SandboxResources, SandboxSpec};
use crate::store::{NewSession, Project, Session, SessionStatus};
use kortix_manifest::{Manifest, ResolvedTemplate};
use kortix_proto::v1::{ControlFrame, Stop, control_frame::Frame};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Where a session's sandbox image comes from when the manifest has nothing to say.
pub const PLATFORM_TEMPLATE: &str = "default";

/// What a caller asks for when starting a session.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// Project name or id; whoever starts the session has checked the launcher's right to.
    pub project: String,
    /// `person:<id>`, `token:<id>` or `trigger:<slug>`.
    pub launched_by: String,
    pub prompt: String,
    pub template: String,
    pub agent: String,
    pub idempotency_key: String,
    /// Cut the session branch from this branch instead of the default branch.
    pub resume_branch: String,
    pub origin: String,
}

/// What a sandbox for `template` gets, in project `project_id`.
pub(crate) fn resources_of(template: ResolvedTemplate<'_>, project_id: &str) -> SandboxResources {
    let mut resources = match template {
        ResolvedTemplate::PlatformDefault => SandboxResources {
            template: PLATFORM_TEMPLATE.to_string(),
            ..Default::default()
        },
        ResolvedTemplate::Template(t) => SandboxResources {
            template: t.slug.clone(),
            cpu: t.cpu,
            memory_gib: t.memory,
            disk_gib: t.disk,
            ..Default::default()
        },
    };
    resources.project_id = project_id.to_string();
    resources
}

/// Stops in flight on this replica: whether each ends as hibernated rather than stopped.
#[derive(Clone, Default)]
pub struct PendingStops(Arc<Mutex<HashMap<String, PendingStop>>>);

#[derive(Debug, Clone, Default)]
struct PendingStop {
    hibernate: bool,
    /// Set just before the stop path kills the sandbox, so whichever of the stop path and
    /// the sandbox's exit event ends the session records why.
    kill_reason: Option<String>,
}

impl PendingStops {
    fn insert(&self, id: &str, hibernate: bool) {
        self.0.lock().expect("stops lock").insert(
            id.to_string(),
            PendingStop {
                hibernate,
                kill_reason: None,
            },
        );
    }

    fn set_kill_reason(&self, id: &str, reason: &str) {
        if let Some(stop) = self.0.lock().expect("stops lock").get_mut(id) {
            stop.kill_reason = Some(reason.to_string());
        }
    }

    fn take(&self, id: &str) -> Option<PendingStop> {
        self.0.lock().expect("stops lock").remove(id)
    }

    fn peek(&self, id: &str) -> Option<PendingStop> {
        self.0.lock().expect("stops lock").get(id).cloned()
    }
}

impl Sessions {
    /// Looks up a project by name or id.
    pub async fn project_for(&self, project: &str) -> Result<Project, SessionError> {
        Ok(self.store.find_project(project).await?)
    }

    /// `kortix.toml` on the project's default branch, through the one reader
    /// ([`crate::manifests`]).
    pub async fn manifest(&self, project: &Project) -> Result<Manifest, SessionError> {
        self.manifests
            .get(&project.id, &project.default_branch)
            .await?
            .for_session()
            .map_err(|why| SessionError::Precondition(format!("project {}: {why}", project.name)))
    }

    /// Starts a session: inserts it (`provisioning`), cuts its branch, mints the bootstrap
    /// token and boots the sandbox. A retry with the same idempotency key returns the session
    /// the first call created, without booting anything.
    pub async fn start(&self, req: StartRequest) -> Result<Session, SessionError> {
        if self.draining.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SessionError::Unavailable(
                "this control plane is shutting down; start the session again (or at another replica)".into(),
            ));
        }
        let project = self.project_for(&req.project).await?;
        let manifest = self.manifest(&project).await?;
        let requested = (!req.template.is_empty()).then_some(req.template.as_str());
        let resolved = manifest
            .resolve_template(requested)
            .map_err(|e| SessionError::Invalid(e.to_string()))?;
        let mut resources = resources_of(resolved, &project.id);
        // Composed before the session exists, so a template whose Dockerfile is missing is
        // refused rather than started and failed.
        let recipe = match &self.snapshots {
            Some(snapshots) => Some(snapshots.recipe(&project, resolved).await?),
            None => None,
        };
        let from_branch = if req.resume_branch.is_empty() {
            project.default_branch.clone()
        } else {
            req.resume_branch.clone()
        };
        let agent = if req.agent.is_empty() {
            kortix_manifest::DEFAULT_AGENT.to_string()
        } else {
            req.agent.clone()
        };
        let (session, created) = self
            .store
            .create_session(&NewSession {
                id: None,
                project_id: project.id.clone(),
                template: resources.template.clone(),
                agent,
                prompt: req.prompt.clone(),
                origin: if req.origin.is_empty() {
                    "cli".into()
                } else {
                    req.origin.clone()
                },
                idempotency_key: req.idempotency_key.clone(),
                launched_by: req.launched_by.clone(),
            })
            .await?;
        if !created {
            return Ok(session);
        }
        let prepared = match &recipe {
            Some(recipe) => {
                self.prepare_snapshot(&session.id, recipe, &mut resources)
                    .await
            }
            None => self.note_unhonoured(&session.id, resolved).await,
        };
        if let Err(e) = prepared {
            self.fail(&session.id, &e.to_string()).await;
            return Err(e);
        }
        if let Err(e) = self
            .provision(
                &project,
                &session,
                &from_branch,
                resources,
                manifest.opencode_config_dir(),
            )
            .await
        {
            let reason = e.to_string();
            self.fail(&session.id, &reason).await;
            return Err(e);
        }
        Ok(self.store.get_session(&session.id).await?)
    }

    /// Waits for the session's snapshot (building it once if nobody has), with the build's
    /// output in the session's records, and says what the provider leaves out.
    pub(super) async fn prepare_snapshot(
        &self,
        id: &str,
        recipe: &crate::snapshots::Recipe,
        resources: &mut SandboxResources,
    ) -> Result<(), SessionError> {
        let snapshots = self.snapshots.as_ref().ok_or_else(|| {
            SessionError::Internal("no snapshot service for this provider".into())
        })?;
        self.store.set_session_snapshot(id, &recipe.name).await?;
        let (log, writer) = self.build_log_for(id);
        let ensured = snapshots
            .ensure(recipe, crate::snapshots::Rebuild::Never, Some(log))
            .await;
        // The lines are stored before the agent starts numbering its own records.
        let _ = writer.await;
        let snapshot = ensured?;
        resources.snapshot = Some(snapshot.name.clone());
        resources.snapshot_hash = Some(snapshot.hash.clone());
        let mut notes = Vec::new();
        if let Some(disk) = resources.disk_gib.filter(|_| !self.provider.limits_disk()) {
            notes.push(format!(
                "disk = {disk} GiB is not enforced: the {} provider sets no size limit on a sandbox's filesystem",
                self.provider.name()
            ));
        }
        notes.push(format!(
            "booting snapshot {} (template {})",
            snapshot.name, recipe.template
        ));
        self.append_build_log(id, &notes).await
    }

    /// For a provider that builds no snapshots: the session's records say which parts of
    /// the template it does not honour, rather than ignoring them silently.
    pub(super) async fn note_unhonoured(
        &self,
        id: &str,
        template: ResolvedTemplate<'_>,
    ) -> Result<(), SessionError> {
        let ResolvedTemplate::Template(t) = template else {
            return Ok(());
        };
        let provider = self.provider.name();
        let mut notes = Vec::new();
        if let Some(dockerfile) = &t.dockerfile {
            notes.push(format!(
                "template {:?}: dockerfile {dockerfile} is not built: the {provider} provider runs sessions on its own root filesystem, not on images (use --sandbox docker or daytona)",
                t.slug
            ));
        }
        if let Some(image) = &t.image {
            notes.push(format!(
                "template {:?}: image {image} is not used: the {provider} provider runs sessions on its own root filesystem, not on images (use --sandbox docker or daytona)",
                t.slug
            ));
        }
        for (name, value, unit) in [
            ("cpu", t.cpu, ""),
            ("memory", t.memory, " GiB"),
            ("disk", t.disk, " GiB"),
        ] {
            if let Some(v) = value {
                notes.push(format!(
                    "template {:?}: {name} = {v}{unit} is not enforced by the {provider} provider",
                    t.slug
                ));
            }
        }
        self.append_build_log(id, &notes).await
    }

    async fn provision(
        &self,
        project: &Project,
        session: &Session,
        from_branch: &str,
        resources: SandboxResources,
        opencode_config_dir: &str,
    ) -> Result<(), SessionError> {
        let repos = self.repos.clone();
        let (pid, from, id) = (
            project.id.clone(),
            from_branch.to_string(),
            session.id.clone(),
        );
        let head = tokio::task::spawn_blocking(move || repos.cut_branch(&pid, &from, &id))
            .await
            .map_err(|e| SessionError::Internal(format!("cutting the session branch: {e}")))?
            .map_err(|e| {
                SessionError::Precondition(format!(
                    "cutting branch {} from {from_branch}: {e}",
                    session.id
                ))
            })?;
        self.store
            .set_session_head(&session.id, &head.to_string())
            .await?;
        self.boot_sandbox(project, session, resources, opencode_config_dir)
            .await
    }

    /// Mints the session's single-use bootstrap token and boots a sandbox for it: a new
    /// session's first, or a resumed session's next.
    pub(super) async fn boot_sandbox(
        &self,
        project: &Project,
        session: &Session,
        resources: SandboxResources,
        opencode_config_dir: &str,
    ) -> Result<(), SessionError> {
        let token = crate::auth::generate_token(crate::auth::TokenKind::Bootstrap);
        let expires = now_ms() + self.config.bootstrap_ttl.as_millis() as i64;
        self.store
            .create_bootstrap_token(&crate::auth::hash_token(&token), &session.id, expires)
            .await?;
        let env = BTreeMap::from([
            (
                "KORTIX_CONTROL_PLANE".to_string(),
                self.config.agent_url.clone(),
            ),
            ("KORTIX_SESSION_ID".to_string(), session.id.clone()),
            ("KORTIX_BOOTSTRAP_TOKEN".to_string(), token),
            (
                "KORTIX_CA_CERT".to_string(),
                self.config.ca_cert_pem.clone(),
            ),
        ]);
        let opencode_npm = self
            .opencode_npm(&project.id, &session.id, opencode_config_dir)
            .await;
        self.provider
            .boot(SandboxSpec {
                session_id: session.id.clone(),
                env,
                resources,
                opencode_npm,
            })
            .await
            .map_err(|e| SessionError::Internal(format!("booting the sandbox: {e}")))
    }

    /// The provider packages the OpenCode config on the session's branch names and OpenCode
    /// does not bundle. Only an optimisation (OpenCode fetches what is missing), so a config
    /// that cannot be read counts as naming none.
    async fn opencode_npm(&self, project_id: &str, branch: &str, config_dir: &str) -> Vec<String> {
        let repos = self.repos.clone();
        let (project_id, branch) = (project_id.to_string(), branch.to_string());
        let dir = config_dir.trim_end_matches('/').to_string();
        let read = tokio::task::spawn_blocking(move || {
            let mut specs = Vec::new();
            for name in ["opencode.json", "opencode.jsonc"] {
                let path = format!("{dir}/{name}");
                match repos.read_file_at_branch(&project_id, &branch, &path) {
                    Ok(Some(bytes)) => specs.extend(
                        crate::sandbox::opencode_packages::provider_specs(
                            &String::from_utf8_lossy(&bytes),
                        ),
                    ),
                    Ok(None) => {}
                    Err(e) => tracing::debug!(project = %project_id, path, error = %e, "reading the OpenCode config for its provider packages"),
                }
            }
            specs.sort();
            specs.dedup();
            specs
        })
        .await;
        read.unwrap_or_default()
    }

    /// Asks the session's agent to stop (or hibernate), and makes sure the sandbox is gone
    /// within the grace period either way. Stopping an ended session returns it unchanged.
    pub async fn stop(
        &self,
        id: &str,
        hibernate: bool,
        reason: &str,
    ) -> Result<Session, SessionError> {
        let session = self.store.get_session(id).await?;
        if session.status.is_terminal() {
            return Ok(session);
        }
        self.store
            .transition_session(
                id,
                &[
                    SessionStatus::Provisioning,
                    SessionStatus::Resuming,
                    SessionStatus::Running,
                ],
                SessionStatus::Stopping,
                None,
            )
            .await?;
        self.stops.insert(id, hibernate);
        let frame = ControlFrame {
            frame: Some(Frame::Stop(Stop {
                reason: reason.to_string(),
                grace_ms: self.config.stop_grace.as_millis() as u64,
                hibernate,
                command: None,
            })),
        };
        // The stop is a command: kept until the agent acks it, so it reaches the agent through
        // whichever replica holds it (or takes it next, should that one die), and an agent
        // connected anywhere gets the whole grace period to save its work.
        let heard_lately = session
            .last_heartbeat_ms
            .or(session.started_ms)
            .is_some_and(|at| now_ms() - at < self.config.heartbeat_timeout.as_millis() as i64);
        let command = crate::store::new_id();
        let grace = match self
            .send_command(id, &command, frame, std::time::Duration::ZERO)
            .await
        {
            Ok(_) if self.hub.is_connected(id) || heard_lately => self.config.stop_grace,
            Ok(_) => std::time::Duration::ZERO,
            Err(e) => {
                // Nobody to ask: end the sandbox now.
                tracing::info!(session = %id, error = %e, "stop: no agent to ask; ending the sandbox");
                std::time::Duration::ZERO
            }
        };
        let this = self.clone();
        let id_owned = id.to_string();
        tokio::spawn(async move { this.enforce_stop(&id_owned, grace).await });
        Ok(self.store.get_session(id).await?)
    }

    /// Waits for the agent to end the session, then kills the sandbox if it has not.
    async fn enforce_stop(&self, id: &str, grace: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        let mut wake = self.hub.subscribe(id);
        loop {
            match self.store.get_session(id).await {
                Ok(s) if s.status.is_terminal() => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "checking a stopping session");
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            let tick = std::time::Duration::from_millis(250);
            let _ = tokio::time::timeout(
                tick.min(deadline - tokio::time::Instant::now()),
                wake.changed(),
            )
            .await;
        }
        let reason = if grace.is_zero() {
            format!(
                "no agent connected; sandbox ended; {}",
                self.loss_note(id).await
            )
        } else {
            format!(
                "agent did not stop within {} s; sandbox killed; {}",
                grace.as_secs(),
                self.loss_note(id).await
            )
        };
        self.stops.set_kill_reason(id, &reason);
        if let Err(e) = self.provider.kill(id).await {
            tracing::warn!(session = %id, error = %e, "killing the sandbox");
        }
        // The sandbox's exit event may end the session first; it finds the reason in the
        // pending stop, which is therefore forgotten only after the session has ended.
        let hibernate = self.stops.peek(id).is_some_and(|s| s.hibernate);
        let to = if hibernate {
            SessionStatus::Hibernated
        } else {
            SessionStatus::Stopped
        };
        self.end(id, &[SessionStatus::Stopping], to, Some(&reason))
            .await;
        self.stops.take(id);
    }

    /// The agent reported its final state and is exiting.
    pub async fn agent_finished(&self, id: &str, reported: SessionStatus, reason: &str) {
        let hibernate = self.stops.take(id).is_some_and(|s| s.hibernate);
        let to = match reported {
            SessionStatus::Failed => SessionStatus::Failed,
            SessionStatus::Stopped if hibernate => SessionStatus::Hibernated,
            SessionStatus::Hibernated => SessionStatus::Hibernated,
            _ => SessionStatus::Stopped,
        };
        let reason = (!reason.is_empty()).then_some(reason);
        self.end(id, &SessionStatus::ACTIVE, to, reason).await;
    }

    /// A sandbox ended. For a session that was not stopping, that is a failure.
    pub async fn sandbox_exited(&self, exit: SandboxExit) {
        let id = exit.session_id.as_str();
        if let Err(e) = self.store.set_session_exit_status(id, &exit.status).await {
            if !e.is_not_found() {
                tracing::warn!(session = %id, error = %e, "recording sandbox exit");
            }
            return;
        }
        if let Some(stop) = self.stops.take(id) {
            let to = if stop.hibernate {
                SessionStatus::Hibernated
            } else {
                SessionStatus::Stopped
            };
            self.end(
                id,
                &[SessionStatus::Stopping],
                to,
                stop.kill_reason.as_deref(),
            )
            .await;
        } else {
            self.end(id, &[SessionStatus::Stopping], SessionStatus::Stopped, None)
                .await;
        }
        let reason = format!(
            "sandbox exited unexpectedly ({}); {}",
            exit.status,
            self.loss_note(id).await
        );
        self.end(
            id,
            &SessionStatus::BOOTING
                .into_iter()
                .chain([SessionStatus::Running])
                .collect::<Vec<_>>(),
            SessionStatus::Failed,
            Some(&reason),
        )
        .await;
    }

    /// Fails a live session and ends its sandbox.
    pub async fn fail(&self, id: &str, reason: &str) {
        if self
            .end(
                id,
                &SessionStatus::ACTIVE,
                SessionStatus::Failed,
                Some(reason),
            )
            .await
            && let Err(e) = self.provider.kill(id).await
        {
            tracing::warn!(session = %id, error = %e, "killing the sandbox of a failed session");
        }
    }

    /// Moves a session to a terminal state and withdraws its credentials. Returns whether
    /// this call moved it.
    pub(crate) async fn end(
        &self,
        id: &str,
        from: &[SessionStatus],
        to: SessionStatus,
        reason: Option<&str>,
    ) -> bool {
        let moved = match self.store.transition_session(id, from, to, reason).await {
            Ok(moved) => moved,
            Err(e) => {
                tracing::error!(session = %id, error = %e, "ending session");
                return false;
            }
        };
        if moved {
            tracing::info!(session = %id, status = %to, reason = reason.unwrap_or(""), "session ended");
            if let Err(e) = self.store.revoke_session_certs(id, now_ms()).await {
                tracing::error!(session = %id, error = %e, "revoking session certificates");
            }
            if let Err(e) = self.store.revoke_session_git_tokens(id).await {
                tracing::error!(session = %id, error = %e, "revoking session git tokens");
            }
            if let Err(e) = self.store.clear_session_commands(id).await {
                tracing::warn!(session = %id, error = %e, "forgetting queued commands");
            }
            if let Err(e) = self.store.delete_renewal_secret(id).await {
                tracing::error!(session = %id, error = %e, "forgetting the agent's renewal secret");
            }
            // Wake viewers so they notice the end.
            let _ = self.hub.send_control(id, ended_frame(to));
            self.hub.bump(id);
        }
        moved
    }

    /// Deletes the record of an ended session (its branch stays).
    pub async fn delete(&self, id: &str) -> Result<Session, SessionError> {
        let session = self.store.get_session(id).await?;
        if !session.status.is_terminal() {
            return Err(SessionError::Precondition(format!(
                "session {id} is {}; stop it before deleting it",
                session.status
            )));
        }
        let deleted = self.store.delete_session(id).await?;
        self.hub.forget(id);
        // What the ended sandbox left (kept by a retention setting) goes with the record.
        if let Err(e) = self.provider.discard(id).await {
            tracing::warn!(session = %id, error = %e, "removing what the sandbox left");
        }
        Ok(deleted)
    }
}

/// What an agent is told when its session has ended (`to`): stop now.
pub(super) fn ended_frame(to: SessionStatus) -> ControlFrame {
    ControlFrame {
        frame: Some(Frame::Stop(Stop {
            reason: format!("session {to}"),
            grace_ms: 0,
            hibernate: to == SessionStatus::Hibernated,
            command: None,
        })),
    }
}
