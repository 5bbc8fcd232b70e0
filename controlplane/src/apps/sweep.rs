//! The deploy sweep: every few seconds, every project's `[[apps]]` from the manifest on its
//! default branch. An enabled app whose manifest-derived hash differs from the one last
//! swept is deployed; nothing else is, ever (a new commit that leaves the entry alone does
//! not redeploy: `kortix apps deploy` does).
//!
//! Replicas agree through the store: moving an app's swept hash is a conditional update
//! (`UPDATE … WHERE swept_hash <> $new`) that exactly one of them wins, and only the winner
//! records and builds the deployment. A disabled app, or one that left the manifest, stops
//! being served (its swept hash is forgotten, so it deploys again when it comes back). A
//! manifest that cannot be read changes nothing: a typo must not take sites down.
//!
//! With the flag off the sweep skips every project.

use std::collections::HashSet;
use std::future::Future;

use super::Apps;
use super::deploy::{ABANDONED_AFTER, Reason};
use crate::clock::now_ms;
use crate::manifests::ManifestState;

/// Look for abandoned builds every this many ticks.
const ABANDONED_EVERY_TICKS: u64 = 15;

/// What one tick did.
#[derive(Debug, Default)]
pub struct SweepReport {
    pub projects: usize,
    /// `(project id, slug, deployment id)` of the deployments this tick started.
    pub started: Vec<(String, String, String)>,
    /// Apps that stopped being served (disabled or removed).
    pub retired: u64,
    pub errors: Vec<String>,
}

pub struct DeploySweep {
    apps: Apps,
    ticks: u64,
}

impl DeploySweep {
    pub fn new(apps: Apps) -> Self {
        DeploySweep { apps, ticks: 0 }
    }

    /// Sweeps every `sweep_interval` until `shutdown` resolves. Builds started by a tick run
    /// on by themselves.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        if !self.apps.enabled() {
            tracing::debug!("apps are off: no deploy sweep");
            return shutdown.await;
        }
        tokio::pin!(shutdown);
        let mut interval = tokio::time::interval(self.apps.settings().sweep_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = interval.tick() => {}
            }
            let report = self.tick().await;
            for error in &report.errors {
                tracing::warn!(%error, "app deploy sweep");
            }
        }
    }

    /// One pass over every project.
    pub async fn tick(&mut self) -> SweepReport {
        let mut report = SweepReport::default();
        if !self.apps.enabled() {
            return report;
        }
        self.ticks += 1;
        let store = self.apps.store().clone();
        if self.ticks % ABANDONED_EVERY_TICKS == 1 {
            let now = now_ms();
            match store
                .fail_abandoned_deployments(now - ABANDONED_AFTER.as_millis() as i64, now)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    builds = n,
                    "failed app builds abandoned by a stopped replica"
                ),
                Err(e) => report.errors.push(format!("failing abandoned builds: {e}")),
            }
            if let Err(e) = self.apps.remove_stale_builds().await {
                report.errors.push(e);
            }
        }
        let projects = match store.list_all_projects().await {
            Ok(p) => p,
            Err(e) => {
                report.errors.push(format!("listing projects: {e}"));
                return report;
            }
        };
        for project in projects {
            report.projects += 1;
            let manifest = match self
                .apps
                .manifests()
                .get(&project.id, &project.default_branch)
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    report.errors.push(format!("project {}: {e}", project.name));
                    continue;
                }
            };
            let manifest = match &manifest.state {
                ManifestState::Parsed(m) => m,
                ManifestState::Absent => {
                    // No kortix.toml at all: no apps.
                    if let Err(e) = store.retire_missing_apps(&project.id, &[], now_ms()).await {
                        report.errors.push(format!("project {}: {e}", project.name));
                    }
                    continue;
                }
                ManifestState::Unusable(_) => continue,
            };
            // Entries that failed to parse keep being served as they were.
            let mut present: HashSet<&str> =
                manifest.apps.iter().map(|a| a.slug.as_str()).collect();
            present.extend(
                manifest
                    .errors
                    .iter()
                    .filter(|d| d.section == "apps")
                    .filter_map(|d| d.slug.as_deref()),
            );
            let present: Vec<&str> = present.into_iter().collect();
            match store
                .retire_missing_apps(&project.id, &present, now_ms())
                .await
            {
                Ok(n) => report.retired += n,
                Err(e) => report.errors.push(format!("project {}: {e}", project.name)),
            }
            for app in &manifest.apps {
                let now = now_ms();
                let hash = super::hash::of(app);
                let claimed = async {
                    store
                        .ensure_app(&project.id, &app.slug, &app.name, now)
                        .await?;
                    store
                        .claim_app_hash(&project.id, &app.slug, &hash, app.enabled, &app.name, now)
                        .await
                }
                .await;
                match claimed {
                    Ok(true) if app.enabled => {
                        match self
                            .apps
                            .start_deployment(&project, app, Reason::Sweep, "deploy-sweep")
                            .await
                        {
                            Ok((deployment, _)) => {
                                crate::audit::record_as(
                                    &store,
                                    "apps:deploy-sweep",
                                    crate::audit::Event::in_project(
                                        "app.deploy",
                                        &project,
                                        &app.slug,
                                    )
                                    .with_detail(&deployment.id),
                                )
                                .await;
                                report.started.push((
                                    project.id.clone(),
                                    app.slug.clone(),
                                    deployment.id,
                                ));
                            }
                            Err(e) => report
                                .errors
                                .push(format!("project {} app {}: {e}", project.name, app.slug)),
                        }
                    }
                    Ok(true) => report.retired += 1,
                    Ok(false) => {}
                    Err(e) => report
                        .errors
                        .push(format!("project {} app {}: {e}", project.name, app.slug)),
                }
            }
        }
        report
    }
}
