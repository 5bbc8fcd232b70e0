//! One deployment, start to end, and rollbacks.
//!
//! A deployment is recorded as `building` (claimed by this replica) before anything runs,
//! then: fetch the source → run the build command → copy the output directory into the
//! deployment's directory → move the app's served pointer → `succeeded`. Any failure ends it
//! `failed` with the reason, and the pointer never moves, so the previous deployment keeps
//! serving. While it runs, the claim is renewed and the log so far stored every few
//! seconds, so `kortix apps logs` follows a build on any replica and a build whose replica
//! died is declared abandoned by the sweep.

use std::path::Path;
use std::time::Duration;

use kortix_manifest::App;
use tokio::task::JoinHandle;

use super::build::{self, BuildJob, LogTail};
use super::source::{self, FetchLimits};
use super::{Apps, content, hash};
use crate::clock::now_ms;
use crate::error::{DomainError, DomainResult};
use crate::store::{Activation, Deployment, DeploymentStatus, NewDeployment, Project};

/// How often a running build renews its claim and stores its log.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// A build whose claim is older than this was abandoned (its replica stopped).
pub const ABANDONED_AFTER: Duration = Duration::from_secs(120);

/// Why a deployment was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The deploy sweep saw a new hash.
    Sweep,
    /// `kortix apps deploy`.
    Manual,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Sweep => "sweep",
            Reason::Manual => "manual",
        }
    }
}

impl Apps {
    /// Records a deployment of `app` and builds it in the background (to its end, whoever
    /// waits). The handle resolves to the deployment as it ended.
    pub async fn start_deployment(
        &self,
        project: &Project,
        app: &App,
        reason: Reason,
        requested_by: &str,
    ) -> DomainResult<(Deployment, JoinHandle<Deployment>)> {
        let hash = hash::of(app);
        let config = hash::config_json(app);
        let deployment = self
            .store()
            .insert_deployment(
                &NewDeployment {
                    project_id: &project.id,
                    slug: &app.slug,
                    hash: &hash,
                    config: &config,
                    reason: reason.as_str(),
                    builder: self.builder_id(),
                    requested_by,
                },
                now_ms(),
            )
            .await?;
        tracing::info!(project = %project.name, app = %app.slug, deployment = %deployment.id, reason = reason.as_str(), "deploying app");
        let (apps, project, app, started) = (
            self.clone(),
            project.clone(),
            app.clone(),
            deployment.clone(),
        );
        let handle =
            tokio::spawn(async move { apps.run_deployment(&project, &app, started).await });
        Ok((deployment, handle))
    }

    async fn run_deployment(
        &self,
        project: &Project,
        app: &App,
        deployment: Deployment,
    ) -> Deployment {
        let log = LogTail::default();
        log.line(&format!(
            "==> deployment {} of app {} (hash {})",
            deployment.id, app.slug, deployment.hash
        ));
        let work = self.root().join(".builds").join(&deployment.id);
        let renewer = {
            let (store, id, builder, log) = (
                self.store().clone(),
                deployment.id.clone(),
                self.builder_id().to_string(),
                log.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    match store
                        .renew_deployment(&id, &builder, &log.text(), now_ms())
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            tracing::warn!(deployment = %id, error = %e, "renewing a build's claim")
                        }
                    }
                }
            })
        };
        // Renewed while it waits for a build slot too, or the sweep would call it abandoned.
        let permit = self.build_slots().acquire().await;
        let target = content::deployment_dir(self.root(), &project.id, &app.slug, &deployment.id);
        let built = self
            .build_into(project, app, &deployment, &work, &target, &log)
            .await;
        renewer.abort();
        let outcome = match built {
            Ok(revision) => self.activate_built(app, &deployment, revision, &log).await,
            Err(reason) => Err(reason),
        };
        let (result, revision) = match &outcome {
            Ok(revision) => (Ok(()), revision.clone()),
            Err(reason) => {
                log.line(&format!("==> failed: {reason}"));
                let _ = tokio::fs::remove_dir_all(&target).await;
                (Err(reason.as_str()), String::new())
            }
        };
        match self
            .store()
            .finish_deployment(
                &deployment.id,
                self.builder_id(),
                result,
                &revision,
                &log.text(),
                now_ms(),
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(deployment = %deployment.id, "a build ended after it was declared abandoned")
            }
            Err(e) => {
                tracing::error!(deployment = %deployment.id, error = %e, "recording the end of a build")
            }
        }
        drop(permit);
        let _ = tokio::fs::remove_dir_all(&work).await;
        if outcome.is_ok() {
            self.prune_content(project, &app.slug).await;
        }
        match outcome {
            Ok(_) => tracing::info!(app = %app.slug, deployment = %deployment.id, "app deployed"),
            Err(reason) => {
                tracing::warn!(app = %app.slug, deployment = %deployment.id, %reason, "app deployment failed")
            }
        }
        self.store()
            .get_deployment(&deployment.id)
            .await
            .ok()
            .flatten()
            .unwrap_or(deployment)
    }

    /// Fetch, build, copy: the deployment's content at `target`, or why not. Returns the
    /// source revision.
    async fn build_into(
        &self,
        project: &Project,
        app: &App,
        deployment: &Deployment,
        work: &Path,
        target: &Path,
        log: &LogTail,
    ) -> Result<String, String> {
        let settings = self.settings();
        let src = work.join("src");
        tokio::fs::create_dir_all(&src)
            .await
            .map_err(|e| format!("creating the build directory: {e}"))?;
        let sink = log.clone();
        let fetched = source::fetch(
            self.repos(),
            project,
            app,
            &src,
            FetchLimits {
                timeout: settings.fetch_timeout,
                max_tarball_bytes: settings.max_tarball_bytes,
                max_extracted_bytes: settings.max_content_bytes,
            },
            &move |line| sink.line(&line),
        )
        .await
        .map_err(|e| e.to_string())?;
        let build = app.build.clone().unwrap_or(kortix_manifest::AppBuild {
            command: None,
            out_dir: None,
        });
        let mut base = fetched.base.clone();
        if let Some(command) = &build.command {
            let job = BuildJob {
                name: &format!("app-{}", short(&deployment.id)),
                command,
                base: &fetched.base,
                scratch: &work.join("scratch"),
                env: &app.env,
                timeout: settings.build_timeout,
            };
            let end = match self.snapshot_builds() {
                Some(builds) => {
                    let built = self
                        .run_in_snapshot(builds, project, &deployment.id, &src, job, log)
                        .await?;
                    if let Some(after) = built.base {
                        base = after;
                    }
                    built.end
                }
                None => build::run(self.confinement(), job, log).await?,
            };
            if !end.success() {
                return Err(format!("the build command {}", end.describe()));
            }
        } else {
            log.line("==> no build command: serving the source as it is");
        }
        let out_dir = build.out_dir.unwrap_or_else(|| ".".to_string());
        let out = content::output_dir(&base, &out_dir).map_err(|e| e.to_string())?;
        let (to, max_bytes, max_files) = (
            target.to_path_buf(),
            settings.max_content_bytes,
            settings.max_content_files,
        );
        let sink = log.clone();
        let copied = tokio::task::spawn_blocking(move || {
            content::copy_output(&out, &to, max_bytes, max_files, |l| sink.line(l))
        })
        .await
        .map_err(|e| format!("copying the build's output: {e}"))?
        .map_err(|e| e.to_string())?;
        log.line(&format!(
            "==> kept {out_dir}: {} files, {} bytes",
            copied.files, copied.bytes
        ));
        Ok(fetched.revision)
    }

    /// Serves a built deployment, unless this replica lost its claim or a newer deployment
    /// is already served.
    async fn activate_built(
        &self,
        app: &App,
        deployment: &Deployment,
        revision: String,
        log: &LogTail,
    ) -> Result<String, String> {
        let still_ours = self
            .store()
            .renew_deployment(&deployment.id, self.builder_id(), &log.text(), now_ms())
            .await
            .map_err(|e| format!("renewing the build's claim: {e}"))?;
        if !still_ours {
            return Err("the build was declared abandoned before it ended".into());
        }
        let moved = self
            .store()
            .activate_deployment(deployment, &hash::domains(app), Activation::Newer, now_ms())
            .await
            .map_err(|e| format!("serving the deployment: {e}"))?;
        if moved {
            log.line("==> serving this deployment");
        } else {
            log.line("==> built, but a newer deployment is already served: not switching");
        }
        Ok(revision)
    }

    /// Removes the content of deployments no rollback would reach: the app keeps the served
    /// one and its newest successful ones.
    async fn prune_content(&self, project: &Project, slug: &str) {
        let Ok(Some(row)) = self.store().get_app(&project.id, slug).await else {
            return;
        };
        let Ok(deployments) = self.store().list_deployments(&project.id, slug, 200).await else {
            return;
        };
        let mut keep: Vec<String> = deployments
            .iter()
            .filter(|d| d.status == DeploymentStatus::Succeeded)
            .take(self.settings().keep_deployments.max(1))
            .map(|d| d.id.clone())
            .collect();
        // Builds still running have no content directory yet, but keep their names anyway.
        keep.extend(
            deployments
                .iter()
                .filter(|d| d.status == DeploymentStatus::Building)
                .map(|d| d.id.clone()),
        );
        keep.extend(row.active_deployment);
        let dir = self.root().join(&project.id).join(slug);
        let result = tokio::task::spawn_blocking(move || {
            let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
            content::prune(&dir, &keep)
        })
        .await;
        if let Ok(Err(e)) = result {
            tracing::warn!(app = %slug, error = %e, "pruning old deployments");
        }
    }

    /// Serves the app's previous successful deployment (the newest one older than the one
    /// served whose content is still kept).
    pub async fn rollback(&self, project: &Project, slug: &str) -> DomainResult<Deployment> {
        let row = self
            .store()
            .get_app(&project.id, slug)
            .await?
            .ok_or_else(|| {
                DomainError::NotFound(format!(
                    "app '{slug}' of project '{}' has no deployments",
                    project.name
                ))
            })?;
        let Some(active) = row.active_deployment.clone() else {
            return Err(DomainError::Precondition(format!(
                "app '{slug}' has no served deployment to roll back from"
            )));
        };
        let deployments = self
            .store()
            .list_deployments(&project.id, slug, 200)
            .await?;
        let previous = deployments.into_iter().find(|d| {
            d.id < active
                && d.status == DeploymentStatus::Succeeded
                && content::deployment_dir(self.root(), &project.id, slug, &d.id).is_dir()
        });
        let Some(previous) = previous else {
            return Err(DomainError::Precondition(format!(
                "app '{slug}' has no earlier successful deployment to roll back to"
            )));
        };
        let config = hash::parse_config(&previous.config)?;
        let moved = self
            .store()
            .activate_deployment(
                &previous,
                &hash::domains(&config),
                Activation::Replacing(&active),
                now_ms(),
            )
            .await?;
        if !moved {
            return Err(DomainError::Aborted(format!(
                "app '{slug}' started serving another deployment meanwhile; look again and retry"
            )));
        }
        tracing::info!(app = %slug, from = %active, to = %previous.id, "app rolled back");
        Ok(previous)
    }
}

/// The last 12 characters of an id (a UUIDv7's random tail), for names.
fn short(id: &str) -> String {
    id.chars()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}
