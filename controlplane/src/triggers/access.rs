//! Triggers as people see them: the triggers of one of the caller's projects with their next
//! fire time and last firing, firing one by hand, and the firing history. Another account's
//! project is NOT_FOUND, exactly like a missing one.

use chrono::{DateTime, Utc};
use kortix_manifest::{Trigger, TriggerKind};

use super::firing::{self, FireRequest, Source};
use super::{Triggers, webhook_path};
use crate::auth::Caller;
use crate::error::{DomainError, DomainResult, check_len};
use crate::store::Firing;

/// Largest page of firings returned at once.
const MAX_FIRINGS_PAGE: u32 = 500;
const DEFAULT_FIRINGS_PAGE: u32 = 50;
/// Longest trigger slug looked up.
const MAX_SLUG: usize = 128;

/// One trigger of the manifest and where it stands.
pub struct TriggerView {
    pub trigger: Trigger,
    /// Cron triggers that are enabled: the next occurrence after now.
    pub next_fire: Option<DateTime<Utc>>,
    pub last_firing: Option<Firing>,
    /// Where deliveries go (webhook triggers).
    pub webhook_path: String,
}

pub struct TriggerList {
    pub triggers: Vec<TriggerView>,
    /// The manifest's problems with `[[triggers]]`, as "slug: message".
    pub errors: Vec<String>,
}

impl Triggers {
    pub async fn list_for(&self, caller: &Caller, project: &str) -> DomainResult<TriggerList> {
        let project = crate::permissions::project(self.store(), caller, project).await?;
        let manifest = self
            .manifests()
            .get(&project.id, &project.default_branch)
            .await?;
        let now = self.now();
        let mut triggers = Vec::with_capacity(manifest.triggers().len());
        for t in manifest.triggers() {
            let last_firing = self.store().last_firing(&project.id, &t.slug).await?;
            let next_fire = match t.kind {
                TriggerKind::Cron if t.enabled => t.next_after(now),
                _ => None,
            };
            triggers.push(TriggerView {
                trigger: t.clone(),
                next_fire,
                last_firing,
                webhook_path: webhook_path(&project.name, &t.slug),
            });
        }
        Ok(TriggerList {
            triggers,
            errors: manifest.trigger_errors(),
        })
    }

    /// Fires an enabled trigger now (a session starts), whatever its kind.
    pub async fn fire_for(
        &self,
        caller: &Caller,
        project: &str,
        slug: &str,
    ) -> DomainResult<Firing> {
        check_len("the trigger slug", slug, MAX_SLUG)?;
        let project = crate::permissions::project(self.store(), caller, project).await?;
        let manifest = self
            .manifests()
            .get(&project.id, &project.default_branch)
            .await?;
        let trigger = manifest.trigger(slug).cloned().ok_or_else(|| {
            DomainError::NotFound(format!("project {} has no trigger {slug:?}", project.name))
        })?;
        if !trigger.enabled {
            return Err(DomainError::Precondition(format!(
                "trigger {slug} is disabled"
            )));
        }
        let outcome = firing::fire(
            self,
            FireRequest {
                project_id: project.id.clone(),
                trigger,
                key: firing::manual_key(),
                source: Source::Manual,
                reuse_after: None,
            },
        )
        .await?;
        Ok(outcome.firing)
    }

    /// The newest firings, of one trigger or all of them.
    pub async fn firings_for(
        &self,
        caller: &Caller,
        project: &str,
        slug: &str,
        limit: u32,
    ) -> DomainResult<Vec<Firing>> {
        check_len("the trigger slug", slug, MAX_SLUG)?;
        let project = crate::permissions::project(self.store(), caller, project).await?;
        let slug = Some(slug).filter(|s| !s.is_empty());
        let limit = match limit {
            0 => DEFAULT_FIRINGS_PAGE,
            n => n.min(MAX_FIRINGS_PAGE),
        };
        Ok(self.store().list_firings(&project.id, slug, limit).await?)
    }
}
