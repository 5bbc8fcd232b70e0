//! One Daytona sandbox per session, from the session's snapshot.
//!
//! - `POST /sandbox` with the snapshot, the agent's bootstrap environment, labels
//!   `kortix.session`, `kortix.project`, `kortix.snapshot` and `kortix.managed`,
//!   `autoStopInterval: 0` (the control plane owns idleness) and `autoDeleteInterval: 0`
//!   (ephemeral: deleted as soon as it stops); then `GET /sandbox/{id}` until `started`.
//!   `error` or `build_failed` fail the boot with Daytona's `errorReason`. CPU, memory and
//!   disk are the snapshot's (Daytona refuses them beside a snapshot).
//! - Kill, stop and hibernate delete the sandbox (`DELETE /sandbox/{id}`; the branch stays).
//! - The inventory lists every sandbox labelled `kortix.managed=true`, complete, so the
//!   reconciler removes strays and fails a running session whose sandbox is gone
//!   ("sandbox lost"). A sandbox found stopped or failed is deleted and its session told
//!   (an exit with Daytona's state and reason). Daytona's list is eventually consistent: a
//!   sandbox this replica knows but the list lacks is looked up by id before it counts as
//!   gone.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::api::{CreateSandbox, Sandbox, SandboxPage, SandboxPhase};
use super::client::{ApiError, DaytonaClient};
use crate::sandbox::{
    Inventory, LABEL_DEPLOYMENT, SandboxError, SandboxExit, SandboxProvider, SandboxSpec,
    belongs_to,
};

pub const LABEL_SESSION: &str = "kortix.session";
pub const LABEL_PROJECT: &str = "kortix.project";
pub const LABEL_SNAPSHOT: &str = "kortix.snapshot";
/// The label the inventory lists by (Daytona filters on label values, not on keys).
pub const LABEL_MANAGED: &str = "kortix.managed";

/// How long a sandbox may take to reach `started`.
const BOOT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const BOOT_POLL: Duration = Duration::from_secs(1);
/// Sandboxes asked for per page, and pages read at the most.
const PAGE: &str = "100";
const MAX_PAGES: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct DaytonaConfig {
    /// Extra environment for every sandbox.
    pub extra_env: Vec<(String, String)>,
    /// This deployment's id (`sandbox::deployment_id`), on every sandbox it makes.
    pub deployment: String,
}

/// A sandbox this replica knows to be live.
#[derive(Debug, Clone)]
struct Live {
    id: String,
}

pub struct DaytonaProvider {
    client: Arc<DaytonaClient>,
    config: DaytonaConfig,
    exits: mpsc::Sender<SandboxExit>,
    live: Arc<Mutex<HashMap<String, Live>>>,
}

/// The sandbox's name: one per session, so a retried create finds the first one.
pub fn sandbox_name(session_id: &str) -> String {
    format!("kortix-session-{session_id}")
}

/// The `POST /sandbox` body of a session.
pub(crate) fn create_request(
    spec: &SandboxSpec,
    snapshot: &str,
    config: &DaytonaConfig,
) -> CreateSandbox {
    let mut env = spec.env.clone();
    env.extend(config.extra_env.iter().cloned());
    CreateSandbox {
        name: sandbox_name(&spec.session_id),
        snapshot: snapshot.to_owned(),
        env,
        labels: BTreeMap::from([
            (LABEL_SESSION.to_owned(), spec.session_id.clone()),
            (LABEL_PROJECT.to_owned(), spec.resources.project_id.clone()),
            (LABEL_SNAPSHOT.to_owned(), snapshot.to_owned()),
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_DEPLOYMENT.to_owned(), config.deployment.clone()),
        ]),
        public: false,
        auto_stop_interval: 0,
        auto_delete_interval: 0,
    }
}

impl DaytonaProvider {
    pub fn new(
        client: Arc<DaytonaClient>,
        config: DaytonaConfig,
        exits: mpsc::Sender<SandboxExit>,
    ) -> Self {
        Self {
            client,
            config,
            exits,
            live: Arc::default(),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().expect("live lock")
    }

    /// Creates the session's sandbox, or finds the one a retried request already created.
    async fn create(&self, body: &CreateSandbox, session_id: &str) -> Result<Sandbox, String> {
        match self.client.post::<Sandbox>("/sandbox", body).await {
            Ok(s) => Ok(s),
            Err(e) if e.is_conflict() => {
                let found: Sandbox = self
                    .client
                    .get(&format!("/sandbox/{}", body.name), &[])
                    .await
                    .map_err(|e| e.to_string())?;
                if found.labels.get(LABEL_SESSION).map(String::as_str) == Some(session_id) {
                    Ok(found)
                } else {
                    Err(e.to_string())
                }
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn wait_started(&self, sandbox: Sandbox) -> Result<Sandbox, String> {
        wait_started(&self.client, sandbox).await
    }

    async fn delete(&self, id_or_name: &str) -> Result<(), ApiError> {
        delete(&self.client, id_or_name).await
    }

    /// Every sandbox labelled as this provider's.
    async fn list(&self) -> Result<Vec<Sandbox>, ApiError> {
        list_labelled(&self.client, &BTreeMap::from([(LABEL_MANAGED, "true")])).await
    }

    async fn report_exit(&self, session_id: &str, status: String) {
        let _ = self
            .exits
            .send(SandboxExit {
                session_id: session_id.to_owned(),
                status,
                success: false,
            })
            .await;
    }
}

/// Waits for `started`; a sandbox that fails or ends on the way is deleted.
pub(crate) async fn wait_started(
    client: &DaytonaClient,
    mut sandbox: Sandbox,
) -> Result<Sandbox, String> {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let why = match sandbox.phase() {
            SandboxPhase::Started => return Ok(sandbox),
            SandboxPhase::Failed(why) | SandboxPhase::Ended(why) => why,
            SandboxPhase::Starting if Instant::now() >= deadline => format!(
                "Daytona sandbox {} is still {} after {} s",
                sandbox.name,
                sandbox.state.as_deref().unwrap_or("unknown"),
                BOOT_TIMEOUT.as_secs()
            ),
            SandboxPhase::Starting => {
                tokio::time::sleep(BOOT_POLL).await;
                match client
                    .get::<Sandbox>(&format!("/sandbox/{}", sandbox.id), &[])
                    .await
                {
                    Ok(now) => {
                        sandbox = now;
                        continue;
                    }
                    Err(e) if e.is_not_found() => {
                        return Err(format!(
                            "Daytona sandbox {} disappeared while starting",
                            sandbox.name
                        ));
                    }
                    Err(e) => e.to_string(),
                }
            }
        };
        if let Err(e) = delete(client, &sandbox.id).await {
            tracing::warn!(sandbox = %sandbox.name, error = %e, "deleting a sandbox that did not start");
        }
        return Err(why);
    }
}

/// Deletes a sandbox by id or name; one already gone is fine.
pub(crate) async fn delete(client: &DaytonaClient, id_or_name: &str) -> Result<(), ApiError> {
    match client.delete(&format!("/sandbox/{id_or_name}")).await {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

/// Every sandbox with all of `labels`, every page.
pub(crate) async fn list_labelled(
    client: &DaytonaClient,
    labels: &BTreeMap<&str, &str>,
) -> Result<Vec<Sandbox>, ApiError> {
    let labels = serde_json::to_string(labels).map_err(|e| ApiError::Transport {
        call: "GET /sandbox".into(),
        reason: format!("encoding the labels: {e}"),
    })?;
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query = vec![("labels", labels.as_str()), ("limit", PAGE)];
        if let Some(c) = &cursor {
            query.push(("cursor", c.as_str()));
        }
        let page: SandboxPage = client.get("/sandbox", &query).await?;
        out.extend(page.items);
        match page.next_cursor.filter(|c| !c.is_empty()) {
            Some(next) => cursor = Some(next),
            None => return Ok(out),
        }
    }
    Err(ApiError::Transport {
        call: "GET /sandbox".into(),
        reason: format!("more than {MAX_PAGES} pages of sandboxes"),
    })
}

impl SandboxProvider for DaytonaProvider {
    fn name(&self) -> &'static str {
        "daytona"
    }

    fn boot(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<(), SandboxError>> {
        Box::pin(async move {
            let boot_err = |message: String| spec.boot_error(message);
            let snapshot = spec.snapshot()?;
            let body = create_request(&spec, &snapshot, &self.config);
            let created = self
                .create(&body, &spec.session_id)
                .await
                .map_err(&boot_err)?;
            // Live from here: a kill while it starts deletes it.
            self.live().insert(
                spec.session_id.clone(),
                Live {
                    id: created.id.clone(),
                },
            );
            match self.wait_started(created).await {
                Ok(_) => Ok(()),
                Err(why) => {
                    self.live().remove(&spec.session_id);
                    Err(boot_err(why))
                }
            }
        })
    }

    fn kill<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            let known = self.live().remove(session_id);
            let target = known.map_or_else(|| sandbox_name(session_id), |l| l.id);
            self.delete(&target)
                .await
                .map_err(|e| SandboxError::Engine(e.to_string()))
        })
    }

    fn is_running(&self, session_id: &str) -> bool {
        self.live().contains_key(session_id)
    }

    fn inventory(&self) -> BoxFuture<'_, Result<Inventory, SandboxError>> {
        Box::pin(async move {
            let listed = self
                .list()
                .await
                .map_err(|e| SandboxError::Engine(format!("listing sandboxes: {e}")))?;
            let mut sandboxes = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for s in listed {
                let Some(session) = s.labels.get(LABEL_SESSION).cloned() else {
                    continue;
                };
                let deployment = s.labels.get(LABEL_DEPLOYMENT).map(String::as_str);
                if !belongs_to(deployment, &self.config.deployment) {
                    continue;
                }
                seen.insert(session.clone());
                match s.phase() {
                    SandboxPhase::Started | SandboxPhase::Starting => {
                        // Booted by an earlier run of the control plane or another replica.
                        self.live()
                            .entry(session.clone())
                            .or_insert(Live { id: s.id.clone() });
                        sandboxes.push(session);
                    }
                    SandboxPhase::Failed(why) | SandboxPhase::Ended(why) => {
                        if let Err(e) = self.delete(&s.id).await {
                            tracing::warn!(sandbox = %s.name, error = %e, "deleting an ended sandbox");
                        }
                        if self.live().remove(&session).is_some() {
                            self.report_exit(&session, why).await;
                        }
                    }
                }
            }
            // Known here but not listed: Daytona's list may lag behind a sandbox just
            // created, so ask for it by id before declaring it gone.
            let unlisted: Vec<(String, Live)> = self
                .live()
                .iter()
                .filter(|(session, _)| !seen.contains(*session))
                .map(|(session, l)| (session.clone(), l.clone()))
                .collect();
            for (session, l) in unlisted {
                match self
                    .client
                    .get::<Sandbox>(&format!("/sandbox/{}", l.id), &[])
                    .await
                {
                    Ok(s) => match s.phase() {
                        SandboxPhase::Started | SandboxPhase::Starting => sandboxes.push(session),
                        SandboxPhase::Failed(why) | SandboxPhase::Ended(why) => {
                            if let Err(e) = self.delete(&s.id).await {
                                tracing::warn!(sandbox = %s.name, error = %e, "deleting an ended sandbox");
                            }
                            if self.live().remove(&session).is_some() {
                                self.report_exit(&session, why).await;
                            }
                        }
                    },
                    // Gone: the reconciler fails its session as lost.
                    Err(e) if e.is_not_found() => {
                        self.live().remove(&session);
                    }
                    // Unknown: counted as there, asked again next time.
                    Err(e) => {
                        tracing::warn!(session = %session, error = %e, "looking up an unlisted sandbox");
                        sandboxes.push(session);
                    }
                }
            }
            Ok(Inventory {
                sandboxes,
                complete: true,
            })
        })
    }

    fn ends_with_control_plane(&self) -> bool {
        false
    }

    fn limits_disk(&self) -> bool {
        true
    }

    fn discard<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        self.kill(session_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::SandboxResources;

    #[test]
    fn a_session_asks_for_an_ephemeral_labelled_sandbox() {
        let spec = SandboxSpec {
            session_id: "s1".into(),
            env: BTreeMap::from([
                ("KORTIX_SESSION_ID".to_owned(), "s1".to_owned()),
                ("KORTIX_HEARTBEAT_SECS".to_owned(), "5".to_owned()),
            ]),
            resources: SandboxResources {
                project_id: "p1".into(),
                cpu: Some(2),
                memory_gib: Some(4),
                ..Default::default()
            },
            opencode_npm: Vec::new(),
        };
        let body = create_request(
            &spec,
            "kortix-snap-a-b",
            &DaytonaConfig {
                extra_env: vec![("KORTIX_HEARTBEAT_SECS".into(), "1".into())],
                deployment: "0123456789abcdef".into(),
            },
        );
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "name": "kortix-session-s1",
                "snapshot": "kortix-snap-a-b",
                "env": {"KORTIX_SESSION_ID": "s1", "KORTIX_HEARTBEAT_SECS": "1"},
                "labels": {
                    "kortix.session": "s1",
                    "kortix.project": "p1",
                    "kortix.snapshot": "kortix-snap-a-b",
                    "kortix.managed": "true",
                    "kortix.deployment": "0123456789abcdef"
                },
                "public": false,
                "autoStopInterval": 0,
                "autoDeleteInterval": 0
            }),
            "resources stay on the snapshot; Daytona refuses them beside one"
        );
    }
}
