//! The cron sweep: once a second, fire the due occurrences of every project's enabled cron
//! triggers, as read from the manifest on the default branch.
//!
//! Every replica runs a sweeper. They agree without talking to each other: an occurrence's
//! key is `cron:<scheduled-unix-s>`, claimed in the store before the session starts, so
//! exactly one replica starts it and the others find it claimed.
//!
//! What fires is decided per trigger from an *anchor*, the latest occurrence already dealt
//! with (see [`super::schedule`] for on-time versus missed):
//! - The first time this process sees a trigger, the anchor is the scheduled time of the
//!   trigger's last recorded cron firing, so a restart after downtime fires one catch-up and
//!   no burst. A trigger never fired before is anchored at the moment it is first seen: it
//!   starts with its next occurrence. First-seen lives in memory on purpose: a trigger added
//!   while every replica was down has no occurrence it "should" have fired, and a replica
//!   that first sees it later than another only misses occurrences the earlier one claims.
//! - A trigger that goes away (removed, disabled, or its cron or timezone changed) and comes
//!   back while this process watches is anchored anew at the moment it returns, so an old
//!   recorded firing never turns a re-added trigger into a catch-up.
//! - After each occurrence is claimed (by anyone), the anchor moves to it.
//!
//! Work per tick is bounded: at most `max_projects_per_tick` projects (rotating through the
//! rest on later ticks) and `max_firings_per_tick` firings, `concurrency` at a time.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use kortix_manifest::{Trigger, TriggerKind};

use super::firing::{self, ABANDONED_ERROR_PREFIX, FireRequest, Source};
use super::{TriggerError, Triggers, schedule};
use crate::store::{Firing, FiringOutcome};

/// How many of a trigger's recent firings are searched for its last cron firing when this
/// process first sees it (manual and webhook firings are interleaved with cron ones).
const ANCHOR_SEARCH: u32 = 500;
/// Triggers no longer active that a project keeps remembering (to recognise re-adds).
const MAX_RETIRED_PER_PROJECT: usize = 256;

#[derive(Debug, Clone)]
pub struct SweepConfig {
    pub interval: Duration,
    pub max_projects_per_tick: usize,
    pub max_firings_per_tick: usize,
    /// Firings started at once within a tick.
    pub concurrency: usize,
    /// A firing still `pending` this long after it was claimed was abandoned by a replica
    /// that stopped; it is far beyond the session start timeout.
    pub abandoned_after: TimeDelta,
    /// Look for abandoned firings every this many ticks.
    pub recovery_every_ticks: u64,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            interval: Duration::from_secs(1),
            max_projects_per_tick: 256,
            max_firings_per_tick: 64,
            concurrency: 4,
            abandoned_after: TimeDelta::minutes(5),
            recovery_every_ticks: 30,
        }
    }
}

/// What one tick did.
#[derive(Debug, Default)]
pub struct SweepReport {
    pub projects: usize,
    /// Firings this sweeper claimed and completed.
    pub fired: Vec<Firing>,
    /// Occurrences another replica had claimed first.
    pub lost: usize,
    /// Due occurrences left for the next tick by the per-tick bound.
    pub deferred: usize,
    /// Abandoned firings this sweeper completed.
    pub recovered: Vec<Firing>,
    pub errors: Vec<String>,
}

/// What this process remembers of one trigger.
#[derive(Debug, Clone)]
struct Seen {
    /// Cron expression and timezone the anchor belongs to.
    definition: (String, String),
    active: bool,
    anchor: DateTime<Utc>,
    /// When it stopped being active, to forget the oldest retired triggers first.
    retired_at: Option<DateTime<Utc>>,
}

struct Job {
    project_id: String,
    trigger: Trigger,
    scheduled: DateTime<Utc>,
    catch_up: bool,
}

pub struct Sweeper {
    triggers: Triggers,
    config: SweepConfig,
    /// Index into the sorted project list where the next tick starts.
    cursor: usize,
    /// Project id → slug → what this process knows of the trigger.
    known: HashMap<String, HashMap<String, Seen>>,
    ticks: u64,
}

impl Sweeper {
    pub fn new(triggers: Triggers) -> Self {
        Self::with_config(triggers, SweepConfig::default())
    }

    pub fn with_config(triggers: Triggers, config: SweepConfig) -> Self {
        Sweeper {
            triggers,
            config,
            cursor: 0,
            known: HashMap::new(),
            ticks: 0,
        }
    }

    /// Sweeps every `interval`, aligned to whole seconds, until `shutdown` resolves. A tick
    /// in progress is finished first, so no claimed firing is left behind unrecorded.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let into_second = self.triggers.now().timestamp_subsec_nanos();
        let to_boundary = Duration::from_nanos(u64::from(1_000_000_000 - into_second.min(999_999_999)));
        let mut interval =
            tokio::time::interval_at(tokio::time::Instant::now() + to_boundary, self.config.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = interval.tick() => {}
            }
            let report = self.tick().await;
            for error in &report.errors {
                tracing::warn!(%error, "trigger sweep");
            }
            if report.deferred > 0 {
                tracing::warn!(deferred = report.deferred, "trigger sweep over its per-tick bound");
            }
        }
        tracing::debug!("trigger sweep stopped");
    }

    /// One sweep at the clock's current time.
    pub async fn tick(&mut self) -> SweepReport {
        let now = self.triggers.now();
        let mut report = SweepReport::default();
        self.ticks += 1;

        let projects = match self.triggers.store().list_all_projects().await {
            Ok(p) => p,
            Err(e) => {
                report.errors.push(format!("listing projects: {e}"));
                return report;
            }
        };
        let ids: HashSet<&str> = projects.iter().map(|p| p.id.as_str()).collect();
        self.known.retain(|id, _| ids.contains(id.as_str()));
        self.triggers.manifests().retain(&ids);

        let count = projects.len().min(self.config.max_projects_per_tick.max(1));
        let start = if projects.is_empty() { 0 } else { self.cursor % projects.len() };
        self.cursor = start + count;
        let mut jobs = Vec::new();
        for project in projects.iter().cycle().skip(start).take(count) {
            report.projects += 1;
            let manifest = match self
                .triggers
                .manifests()
                .get(&project.id, &project.default_branch)
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    report.errors.push(e.to_string());
                    continue;
                }
            };
            let live: Vec<&Trigger> = manifest
                .triggers()
                .iter()
                .filter(|t| t.enabled && t.kind == TriggerKind::Cron)
                .collect();
            self.retire_missing(&project.id, &live, now);
            for trigger in live {
                let Some(schedule) = trigger.schedule() else {
                    continue;
                };
                let anchor = match self.anchor(&project.id, trigger, now).await {
                    Ok(a) => a,
                    Err(e) => {
                        report.errors.push(e.to_string());
                        continue;
                    }
                };
                let due = schedule::due(&schedule, anchor, now);
                let occurrences = due
                    .on_time
                    .iter()
                    .map(|t| (*t, false))
                    .chain(due.catch_up.map(|t| (t, true)));
                for (scheduled, catch_up) in occurrences {
                    if jobs.len() >= self.config.max_firings_per_tick {
                        report.deferred += 1;
                        continue;
                    }
                    jobs.push(Job {
                        project_id: project.id.clone(),
                        trigger: trigger.clone(),
                        scheduled,
                        catch_up,
                    });
                }
            }
        }

        let triggers = &self.triggers;
        let results: Vec<(Job, Result<firing::FireOutcome, TriggerError>)> =
            futures::stream::iter(jobs)
                .map(|job| async move {
                    let outcome = firing::fire(
                        triggers,
                        FireRequest {
                            project_id: job.project_id.clone(),
                            trigger: job.trigger.clone(),
                            key: firing::cron_key(job.scheduled),
                            source: Source::Cron {
                                scheduled: job.scheduled,
                                catch_up: job.catch_up,
                            },
                        },
                    )
                    .await;
                    (job, outcome)
                })
                .buffer_unordered(self.config.concurrency.max(1))
                .collect()
                .await;
        for (job, outcome) in results {
            match outcome {
                Ok(outcome) => {
                    if let Some(seen) = self
                        .known
                        .get_mut(&job.project_id)
                        .and_then(|m| m.get_mut(&job.trigger.slug))
                    {
                        seen.anchor = seen.anchor.max(job.scheduled);
                    }
                    if outcome.claimed {
                        report.fired.push(outcome.firing);
                    } else {
                        report.lost += 1;
                    }
                }
                // Left unanchored: the next tick tries again (on time, or as the catch-up).
                Err(e) => report.errors.push(format!(
                    "firing {} of trigger {} in project {}: {e}",
                    firing::cron_key(job.scheduled),
                    job.trigger.slug,
                    job.project_id
                )),
            }
        }

        if self.ticks % self.config.recovery_every_ticks.max(1) == 0 {
            self.recover_abandoned(now, &mut report).await;
        }
        report
    }

    /// Marks remembered triggers that are not live any more as retired, and bounds how many
    /// retired ones are remembered.
    fn retire_missing(&mut self, project_id: &str, live: &[&Trigger], now: DateTime<Utc>) {
        let Some(seen) = self.known.get_mut(project_id) else {
            return;
        };
        for (slug, s) in seen.iter_mut() {
            if s.active && !live.iter().any(|t| &t.slug == slug) {
                s.active = false;
                s.retired_at = Some(now);
            }
        }
        let retired = seen.values().filter(|s| !s.active).count();
        if retired > MAX_RETIRED_PER_PROJECT {
            let mut times: Vec<DateTime<Utc>> = seen.values().filter_map(|s| s.retired_at).collect();
            times.sort_unstable();
            let cutoff = times[retired - MAX_RETIRED_PER_PROJECT - 1];
            seen.retain(|_, s| s.active || s.retired_at.is_some_and(|t| t > cutoff));
        }
    }

    /// The trigger's anchor, establishing it on first sight, re-adding and redefinition.
    async fn anchor(
        &mut self,
        project_id: &str,
        trigger: &Trigger,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, TriggerError> {
        let definition = (
            trigger.cron.clone().unwrap_or_default(),
            trigger.timezone.clone().unwrap_or_default(),
        );
        if let Some(seen) = self
            .known
            .get_mut(project_id)
            .and_then(|m| m.get_mut(&trigger.slug))
        {
            if !seen.active || seen.definition != definition {
                *seen = Seen {
                    definition,
                    active: true,
                    anchor: now,
                    retired_at: None,
                };
            }
            return Ok(seen.anchor);
        }
        let anchor = self
            .last_cron_occurrence(project_id, &trigger.slug)
            .await?
            .unwrap_or(now);
        self.known.entry(project_id.to_owned()).or_default().insert(
            trigger.slug.clone(),
            Seen {
                definition,
                active: true,
                anchor,
                retired_at: None,
            },
        );
        Ok(anchor)
    }

    /// Scheduled time of the trigger's most recent recorded cron firing.
    async fn last_cron_occurrence(
        &self,
        project_id: &str,
        slug: &str,
    ) -> Result<Option<DateTime<Utc>>, TriggerError> {
        let recent = self
            .triggers
            .store()
            .list_firings(project_id, Some(slug), ANCHOR_SEARCH)
            .await?;
        Ok(recent
            .iter()
            .filter(|f| f.firing_key.starts_with("cron:"))
            .filter_map(|f| f.scheduled_ms)
            .max()
            .and_then(DateTime::<Utc>::from_timestamp_millis))
    }

    /// Completes firings whose claimer stopped before recording an outcome. A cron firing is
    /// re-driven with its key (the session service is idempotent on it, so a session the
    /// claimer did start is found, not duplicated). Other firings cannot be re-rendered —
    /// their request is gone — so they are recorded as abandoned.
    async fn recover_abandoned(&self, now: DateTime<Utc>, report: &mut SweepReport) {
        let before = (now - self.config.abandoned_after).timestamp_millis();
        let stale = match self
            .triggers
            .store()
            .stale_pending_firings(before, self.config.max_firings_per_tick as u32)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                report.errors.push(format!("listing abandoned firings: {e}"));
                return;
            }
        };
        for firing in stale {
            match self.recover_one(firing, now).await {
                Ok(Some(done)) => report.recovered.push(done),
                Ok(None) => {}
                Err(e) => report.errors.push(e.to_string()),
            }
        }
    }

    async fn recover_one(
        &self,
        stale: Firing,
        now: DateTime<Utc>,
    ) -> Result<Option<Firing>, TriggerError> {
        let store = self.triggers.store();
        let scheduled = stale
            .firing_key
            .strip_prefix("cron:")
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0));
        let trigger = match (scheduled, store.find_project(&stale.project_id).await) {
            (Some(_), Ok(project)) => self
                .triggers
                .manifests()
                .get(&project.id, &project.default_branch)
                .await?
                .trigger(&stale.trigger_slug)
                .cloned(),
            _ => None,
        };
        if let (Some(scheduled), Some(trigger)) = (scheduled, trigger) {
            let context = firing::prompt_context(
                &trigger,
                &Source::Cron {
                    scheduled,
                    catch_up: stale.catch_up,
                },
                now,
            );
            let done = firing::run_claimed(&self.triggers, stale, &trigger, &context).await?;
            return Ok(Some(done));
        }
        let error = format!(
            "{ABANDONED_ERROR_PREFIX}the control plane that claimed this firing stopped before \
             recording its outcome"
        );
        let completed = store
            .complete_firing(&stale.id, FiringOutcome::Failed, None, Some(&error))
            .await?;
        Ok(completed.then(|| Firing {
            outcome: FiringOutcome::Failed,
            error: Some(error),
            ..stale
        }))
    }
}
