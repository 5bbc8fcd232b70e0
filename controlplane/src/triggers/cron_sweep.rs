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
use super::{Triggers, schedule};
use crate::error::DomainError;
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
    /// Completed ticks, for health checks and tests that wait for a sweep.
    progress: tokio::sync::watch::Sender<u64>,
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
            progress: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The number of completed ticks, updated after each one.
    pub fn progress(&self) -> tokio::sync::watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// Sweeps every `interval`, aligned to whole seconds, until `shutdown` resolves. A tick
    /// in progress is finished first, so no claimed firing is left behind unrecorded.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let into_second = self.triggers.now().timestamp_subsec_nanos();
        let to_boundary =
            Duration::from_nanos(u64::from(1_000_000_000 - into_second.min(999_999_999)));
        let mut interval = tokio::time::interval_at(
            tokio::time::Instant::now() + to_boundary,
            self.config.interval,
        );
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
                tracing::warn!(
                    deferred = report.deferred,
                    "trigger sweep over its per-tick bound"
                );
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
                self.progress.send_replace(self.ticks);
                return report;
            }
        };
        let ids: HashSet<&str> = projects.iter().map(|p| p.id.as_str()).collect();
        self.known.retain(|id, _| ids.contains(id.as_str()));
        self.triggers.manifests().retain(&ids);

        let count = projects.len().min(self.config.max_projects_per_tick.max(1));
        let start = if projects.is_empty() {
            0
        } else {
            self.cursor % projects.len()
        };
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
        let results: Vec<(Job, Result<firing::FireOutcome, DomainError>)> =
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
                            reuse_after: None,
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

        if self
            .ticks
            .is_multiple_of(self.config.recovery_every_ticks.max(1))
        {
            self.recover_abandoned(now, &mut report).await;
        }
        self.progress.send_replace(self.ticks);
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
            let mut times: Vec<DateTime<Utc>> =
                seen.values().filter_map(|s| s.retired_at).collect();
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
    ) -> Result<DateTime<Utc>, DomainError> {
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
    ) -> Result<Option<DateTime<Utc>>, DomainError> {
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
                report
                    .errors
                    .push(format!("listing abandoned firings: {e}"));
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
    ) -> Result<Option<Firing>, DomainError> {
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
            // Cron keys fire once, so the key is the session service's idempotency key too:
            // a session the claimer did start is found, not duplicated.
            let key = stale.firing_key.clone();
            let done = firing::run_claimed(&self.triggers, stale, &trigger, &context, &key).await?;
            return Ok(Some(done));
        }
        let error = format!(
            "{ABANDONED_ERROR_PREFIX}the control plane that claimed this firing stopped before \
             recording its outcome"
        );
        let completed = store
            .complete_firing(&stale.id, FiringOutcome::Failed, None, Some(&error))
            .await?;
        if !completed {
            return Ok(None);
        }
        Ok(Some(Firing {
            outcome: FiringOutcome::Failed,
            error: Some(error),
            ..stale
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewFiring;
    use crate::triggers::testkit::{Fixture, utc};

    const MINUTELY: &str = r#"
[[triggers]]
slug = "minutely"
name = "Every minute"
type = "cron"
agent = "kortix"
cron = "0 * * * * *"
timezone = "America/Los_Angeles"
prompt = "Digest for {{ cron.fired_at }} ({{ trigger.name }})"

[[triggers]]
slug = "off"
type = "cron"
enabled = false
cron = "* * * * * *"
prompt = "never"
"#;

    fn keys(fired: &[Firing]) -> Vec<String> {
        fired
            .iter()
            .map(|f| format!("{}/{}", f.trigger_slug, f.firing_key))
            .collect()
    }

    #[tokio::test]
    async fn fires_each_due_occurrence_once_and_never_a_disabled_trigger() {
        let fx = Fixture::sqlite(MINUTELY, utc(2026, 3, 9, 16, 0, 30)).await;
        let mut sweeper = Sweeper::new(fx.triggers.clone());

        // First sight: the trigger starts with its next occurrence.
        let r = sweeper.tick().await;
        assert_eq!(
            (r.projects, r.fired.len(), r.errors.len()),
            (1, 0, 0),
            "{r:?}"
        );

        fx.clock.set(utc(2026, 3, 9, 16, 1, 0));
        let r = sweeper.tick().await;
        assert_eq!(keys(&r.fired), ["minutely/cron:1773072060"], "{r:?}");
        let f = &r.fired[0];
        assert_eq!(f.outcome, FiringOutcome::Started);
        assert_eq!(f.session_id.as_deref(), Some("session-1"));
        assert!(!f.catch_up);
        assert_eq!(f.scheduled_ms, Some(1_773_072_060_000));

        // The same second again, and the seconds up to the next minute: nothing.
        for s in [0, 1, 30, 59] {
            fx.clock.set(utc(2026, 3, 9, 16, 1, s));
            let r = sweeper.tick().await;
            assert!(r.fired.is_empty() && r.errors.is_empty(), "{r:?}");
        }
        // A tick that runs late still fires the occurrence, on time.
        fx.clock.set(utc(2026, 3, 9, 16, 2, 4));
        let r = sweeper.tick().await;
        assert_eq!(keys(&r.fired), ["minutely/cron:1773072120"]);
        assert!(!r.fired[0].catch_up);

        let calls = fx.starter.calls();
        assert_eq!(calls.len(), 2);
        assert!(
            calls.iter().all(|c| c.origin == "trigger:minutely"),
            "disabled fired: {calls:?}"
        );
        assert_eq!(
            calls[0].prompt,
            "Digest for 2026-03-09T09:01:00-07:00 (Every minute)"
        );
        assert_eq!(calls[0].agent, "kortix");
        assert_eq!(calls[0].idempotency_key, "cron:1773072060");
        assert_eq!(calls[0].project_id, fx.project.id);
        let stored = fx
            .store
            .list_firings(&fx.project.id, None, 10)
            .await
            .unwrap();
        assert_eq!(stored.len(), 2);
        assert!(stored.iter().all(|f| f.trigger_slug == "minutely"));
        fx.cleanup().await;
    }

    async fn two_replicas_fire_once_per_occurrence(fx: Fixture) {
        let every_second = r#"
[[triggers]]
slug = "tick"
type = "cron"
cron = "* * * * * *"
prompt = "tick {{ cron.fired_at }}"
"#;
        fx.commit_manifest(every_second);
        let mut a = Sweeper::new(fx.triggers.clone());
        let mut b = Sweeper::new(fx.replica().await);
        let (ra, rb) = tokio::join!(a.tick(), b.tick());
        assert!(ra.fired.is_empty() && rb.fired.is_empty());
        let occurrences = 30;
        for i in 1..=occurrences {
            fx.clock.advance(TimeDelta::seconds(1));
            let (ra, rb) = tokio::join!(a.tick(), b.tick());
            assert!(
                ra.errors.is_empty() && rb.errors.is_empty(),
                "{ra:?} {rb:?}"
            );
            assert_eq!(
                ra.fired.len() + rb.fired.len(),
                1,
                "occurrence {i}: {ra:?} {rb:?}"
            );
            assert_eq!(ra.lost + rb.lost, 1, "occurrence {i}");
        }
        let calls = fx.starter.calls();
        assert_eq!(calls.len(), occurrences);
        let mut keys: Vec<&str> = calls.iter().map(|c| c.idempotency_key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), occurrences, "a key was started twice");
        let stored = fx
            .store
            .list_firings(&fx.project.id, Some("tick"), 100)
            .await
            .unwrap();
        assert_eq!(stored.len(), occurrences);
        assert!(stored.iter().all(|f| f.outcome == FiringOutcome::Started));
        fx.cleanup().await;
    }

    #[tokio::test]
    async fn two_replicas_on_postgres_fire_once_per_occurrence() {
        if let Some(fx) = Fixture::postgres(MINUTELY, utc(2026, 1, 1, 0, 0, 0)).await {
            two_replicas_fire_once_per_occurrence(fx).await;
        }
    }

    #[tokio::test]
    async fn two_replicas_on_sqlite_fire_once_per_occurrence() {
        let fx = Fixture::sqlite(MINUTELY, utc(2026, 1, 1, 0, 0, 0)).await;
        two_replicas_fire_once_per_occurrence(fx).await;
    }

    /// Waits until the running sweeper has completed a whole tick that began after now.
    async fn two_more_ticks(progress: &mut tokio::sync::watch::Receiver<u64>) {
        let target = *progress.borrow_and_update() + 2;
        tokio::time::timeout(Duration::from_secs(20), progress.wait_for(|n| *n >= target))
            .await
            .expect("the sweeper stopped ticking")
            .unwrap();
    }

    #[tokio::test]
    async fn manifest_changes_while_the_sweeper_runs() {
        let a_only = r#"
[[triggers]]
slug = "a"
type = "cron"
cron = "0 * * * * *"
prompt = "A"
"#;
        let b_only = r#"
[[triggers]]
slug = "b"
type = "cron"
cron = "0 * * * * *"
prompt = "B"
"#;
        let both = format!("{a_only}\n{b_only}");
        let fx = Fixture::sqlite(a_only, utc(2026, 5, 1, 12, 0, 30)).await;
        let sweeper = Sweeper::new(fx.triggers.clone());
        let mut progress = sweeper.progress();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(sweeper.run(async {
            let _ = stopped.await;
        }));
        let fired = |slug: &'static str| {
            let store = fx.store.clone();
            let project = fx.project.id.clone();
            async move {
                let mut keys: Vec<String> = store
                    .list_firings(&project, Some(slug), 100)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|f| f.firing_key)
                    .collect();
                keys.sort();
                keys
            }
        };
        two_more_ticks(&mut progress).await;

        fx.clock.set(utc(2026, 5, 1, 12, 1, 0));
        two_more_ticks(&mut progress).await;
        assert_eq!(fired("a").await, ["cron:1777636860"]);

        // A commit on the default branch replaces a with b.
        fx.clock.set(utc(2026, 5, 1, 12, 1, 30));
        fx.commit_manifest(b_only);
        two_more_ticks(&mut progress).await;
        fx.clock.set(utc(2026, 5, 1, 12, 2, 0));
        two_more_ticks(&mut progress).await;
        assert_eq!(
            fired("a").await,
            ["cron:1777636860"],
            "a removed, yet it fired"
        );
        assert_eq!(
            fired("b").await,
            ["cron:1777636920"],
            "b added, starts at its next occurrence"
        );

        // a comes back: it starts afresh, no catch-up for the minute it was gone.
        fx.clock.set(utc(2026, 5, 1, 12, 2, 30));
        fx.commit_manifest(&both);
        two_more_ticks(&mut progress).await;
        fx.clock.set(utc(2026, 5, 1, 12, 3, 0));
        two_more_ticks(&mut progress).await;
        assert_eq!(fired("a").await, ["cron:1777636860", "cron:1777636980"]);
        assert_eq!(fired("b").await, ["cron:1777636920", "cron:1777636980"]);
        let all = fx
            .store
            .list_firings(&fx.project.id, None, 100)
            .await
            .unwrap();
        assert!(all.iter().all(|f| !f.catch_up), "{all:?}");

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(20), running)
            .await
            .expect("the sweeper did not stop")
            .unwrap();
        fx.cleanup().await;
    }

    async fn catch_up_after_downtime_fires_once(fx: Fixture) {
        let hourly = r#"
[[triggers]]
slug = "hourly"
type = "cron"
cron = "0 0 * * * *"
prompt = "catch up? {{ cron.catch_up }} at {{ cron.scheduled_at }}"
"#;
        fx.commit_manifest(hourly);
        let mut before = Sweeper::new(fx.triggers.clone());
        before.tick().await;
        fx.clock.set(utc(2026, 1, 1, 10, 0, 0));
        let r = before.tick().await;
        assert_eq!(keys(&r.fired), ["hourly/cron:1767261600"]);
        drop(before);

        // Down from 10:00 to 15:20; meanwhile a trigger is added that never fired.
        fx.commit_manifest(&format!(
            "{hourly}\n[[triggers]]\nslug = \"added\"\ntype = \"cron\"\ncron = \"0 0 * * * *\"\nprompt = \"x\"\n"
        ));
        fx.clock.set(utc(2026, 1, 1, 15, 20, 0));
        let mut after = Sweeper::new(fx.replica().await);
        let mut other = Sweeper::new(fx.replica().await);
        let (r, r2) = tokio::join!(after.tick(), other.tick());
        let fired: Vec<&Firing> = r.fired.iter().chain(&r2.fired).collect();
        assert_eq!(fired.len(), 1, "{r:?} {r2:?}");
        assert_eq!(fired[0].trigger_slug, "hourly");
        assert_eq!(
            fired[0].firing_key, "cron:1767279600",
            "the latest missed: 15:00"
        );
        assert!(fired[0].catch_up);
        let calls = fx.starter.calls();
        assert_eq!(
            calls.last().unwrap().prompt,
            "catch up? true at 2026-01-01T15:00:00Z"
        );

        for s in [1, 30, 39 * 60 + 59] {
            fx.clock
                .set(utc(2026, 1, 1, 15, 20, 0) + TimeDelta::seconds(s));
            let (r, r2) = tokio::join!(after.tick(), other.tick());
            assert!(r.fired.is_empty() && r2.fired.is_empty(), "{r:?} {r2:?}");
        }
        fx.clock.set(utc(2026, 1, 1, 16, 0, 0));
        let (r, r2) = tokio::join!(after.tick(), other.tick());
        let mut fired: Vec<(String, bool)> = r
            .fired
            .iter()
            .chain(&r2.fired)
            .map(|f| (format!("{}/{}", f.trigger_slug, f.firing_key), f.catch_up))
            .collect();
        fired.sort();
        assert_eq!(
            fired,
            [
                ("added/cron:1767283200".to_owned(), false),
                ("hourly/cron:1767283200".to_owned(), false)
            ]
        );
        assert_eq!(fx.starter.calls().len(), 4);
        fx.cleanup().await;
    }

    #[tokio::test]
    async fn catch_up_after_downtime_fires_once_sqlite() {
        let fx = Fixture::sqlite("", utc(2026, 1, 1, 9, 59, 30)).await;
        catch_up_after_downtime_fires_once(fx).await;
    }

    #[tokio::test]
    async fn catch_up_after_downtime_fires_once_postgres() {
        if let Some(fx) = Fixture::postgres("", utc(2026, 1, 1, 9, 59, 30)).await {
            catch_up_after_downtime_fires_once(fx).await;
        }
    }

    #[tokio::test]
    async fn template_errors_fail_the_firing_with_the_reason() {
        let broken = r#"
[[triggers]]
slug = "broken"
type = "cron"
cron = "0 * * * * *"
prompt = "{{#unclosed}} never"
"#;
        let fx = Fixture::sqlite(broken, utc(2026, 1, 1, 0, 0, 30)).await;
        let mut sweeper = Sweeper::new(fx.triggers.clone());
        sweeper.tick().await;
        fx.clock.set(utc(2026, 1, 1, 0, 1, 0));
        let r = sweeper.tick().await;
        assert_eq!(r.fired.len(), 1);
        assert_eq!(r.fired[0].outcome, FiringOutcome::Failed);
        let error = r.fired[0].error.clone().unwrap();
        assert!(
            error.starts_with("prompt template: ") && error.contains("unclosed"),
            "{error}"
        );
        assert!(fx.starter.calls().is_empty());
        let stored = fx
            .store
            .last_firing(&fx.project.id, "broken")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (stored.outcome, stored.error),
            (FiringOutcome::Failed, Some(error))
        );
        fx.cleanup().await;
    }

    #[tokio::test]
    async fn refused_starts_are_recorded_as_failed() {
        let fx = Fixture::sqlite(MINUTELY, utc(2026, 1, 1, 0, 0, 30)).await;
        let mut sweeper = Sweeper::new(fx.triggers.clone());
        sweeper.tick().await;
        fx.starter.refuse(Some("no sandbox capacity"));
        fx.clock.set(utc(2026, 1, 1, 0, 1, 0));
        let r = sweeper.tick().await;
        assert_eq!(r.fired[0].outcome, FiringOutcome::Failed);
        assert_eq!(
            r.fired[0].error.as_deref(),
            Some("session start: no sandbox capacity")
        );
        fx.cleanup().await;
    }

    #[tokio::test]
    async fn abandoned_firings_are_completed() {
        let fx = Fixture::sqlite(MINUTELY, utc(2026, 1, 1, 1, 0, 0)).await;
        let claim = |key: &str, fired: DateTime<Utc>| NewFiring {
            project_id: fx.project.id.clone(),
            trigger_slug: "minutely".into(),
            firing_key: key.into(),
            fired_ms: fired.timestamp_millis(),
            scheduled_ms: Some(fired.timestamp_millis()),
            catch_up: false,
        };
        // Claimed by replicas that died before recording an outcome.
        let old = utc(2026, 1, 1, 0, 30, 0);
        fx.store
            .claim_firing(&claim("cron:1767227400", old))
            .await
            .unwrap();
        fx.store
            .claim_firing(&claim("delivery:gone", old))
            .await
            .unwrap();
        // Claimed a moment ago: its claimer is still working on it.
        let recent = utc(2026, 1, 1, 0, 59, 0);
        fx.store
            .claim_firing(&claim("cron:1767229140", recent))
            .await
            .unwrap();

        let mut sweeper = Sweeper::with_config(
            fx.triggers.clone(),
            SweepConfig {
                recovery_every_ticks: 1,
                ..SweepConfig::default()
            },
        );
        let r = sweeper.tick().await;
        let mut recovered: Vec<(String, FiringOutcome)> = r
            .recovered
            .iter()
            .map(|f| (f.firing_key.clone(), f.outcome))
            .collect();
        recovered.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            recovered,
            [
                ("cron:1767227400".to_owned(), FiringOutcome::Started),
                ("delivery:gone".to_owned(), FiringOutcome::Failed)
            ]
        );
        // The re-driven cron firing keeps its key and its scheduled time; the delivery is
        // not re-driven. (01:00 itself fires normally in the same tick.)
        let calls = fx.starter.calls();
        let keys: Vec<&str> = calls.iter().map(|c| c.idempotency_key.as_str()).collect();
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(keys.contains(&"cron:1767229200"), "{keys:?}");
        let redriven: Vec<_> = calls
            .iter()
            .filter(|c| c.idempotency_key == "cron:1767227400")
            .collect();
        assert_eq!(redriven.len(), 1);
        assert_eq!(
            redriven[0].prompt,
            "Digest for 2025-12-31T16:30:00-08:00 (Every minute)"
        );
        let pending = fx.store.stale_pending_firings(i64::MAX, 10).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].firing_key, "cron:1767229140");
        fx.cleanup().await;
    }
}
