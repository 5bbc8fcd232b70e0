//! One firing, from claim to record: claim the key in the store, render the prompt, start
//! the session, record the outcome. The claim comes first so a replica that loses it never
//! renders or starts anything.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use kortix_manifest::{DEFAULT_TIMEZONE, Trigger, TriggerKind};
use serde_json::{Map, Value, json};

use super::{TriggerStart, Triggers, template};
use crate::error::DomainError;
use crate::store::{Claim, Firing, FiringOutcome, NewFiring};

/// How long the session service may take to start a session for a firing.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Error texts of failed firings start with one of these, so a redelivery can answer the way
/// the first delivery did.
pub const TEMPLATE_ERROR_PREFIX: &str = "prompt template: ";
pub const START_ERROR_PREFIX: &str = "session start: ";
pub const ABANDONED_ERROR_PREFIX: &str = "abandoned: ";

/// Where a firing came from, and the data its prompt may use.
#[derive(Debug, Clone)]
pub enum Source {
    /// A cron occurrence.
    Cron {
        scheduled: DateTime<Utc>,
        catch_up: bool,
    },
    /// `FireTrigger`.
    Manual,
    /// A verified webhook delivery.
    Webhook {
        /// Lower-cased names with `-` → `_`.
        headers: Map<String, Value>,
        /// Parsed JSON, or the body as text when it is not JSON.
        body: Value,
        delivery_id: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct FireRequest {
    pub project_id: String,
    pub trigger: Trigger,
    pub key: String,
    pub source: Source,
    /// A key claimed longer ago than this may fire again (its old firing keeps the key with
    /// `@<fired_ms>` appended); `None`: a key fires once, ever.
    pub reuse_after: Option<Duration>,
}

/// What became of a fire attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireOutcome {
    /// The firing row: this call's (completed) or, when `claimed` is false, the one whoever
    /// claimed the key first recorded (possibly still `pending`).
    pub firing: Firing,
    /// Whether this call claimed the key and so did the work.
    pub claimed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Template,
    Start,
    Abandoned,
}

/// Why a failed firing failed, read back from its recorded error.
pub fn failure_kind(firing: &Firing) -> Option<FailureKind> {
    if firing.outcome != FiringOutcome::Failed {
        return None;
    }
    let error = firing.error.as_deref().unwrap_or("");
    Some(if error.starts_with(TEMPLATE_ERROR_PREFIX) {
        FailureKind::Template
    } else if error.starts_with(ABANDONED_ERROR_PREFIX) {
        FailureKind::Abandoned
    } else {
        FailureKind::Start
    })
}

pub fn cron_key(scheduled: DateTime<Utc>) -> String {
    format!("cron:{}", scheduled.timestamp())
}

pub fn manual_key() -> String {
    format!("manual:{}", uuid::Uuid::new_v4())
}

/// The key of a delivery that names itself (`X-GitHub-Delivery`, `X-Kortix-Delivery`).
pub fn delivery_key(delivery_id: &str) -> String {
    format!("delivery:{delivery_id}")
}

/// The key of a signed delivery without a delivery id: the digest of its signature and body,
/// so an identical request (a replay) is recognised.
pub fn signed_key(signature: &[u8], body: &[u8]) -> String {
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    digest.update(&(signature.len() as u64).to_be_bytes());
    digest.update(signature);
    digest.update(body);
    format!("signed:{}", hex::encode(digest.finish()))
}

/// Claims `req.key` and, if this call won it, starts the session and records the outcome.
pub async fn fire(triggers: &Triggers, req: FireRequest) -> Result<FireOutcome, DomainError> {
    let now = triggers.now();
    let (scheduled, catch_up) = match &req.source {
        Source::Cron {
            scheduled,
            catch_up,
        } => (Some(*scheduled), *catch_up),
        Source::Manual | Source::Webhook { .. } => (None, false),
    };
    let new = NewFiring {
        project_id: req.project_id.clone(),
        trigger_slug: req.trigger.slug.clone(),
        firing_key: req.key.clone(),
        fired_ms: now.timestamp_millis(),
        scheduled_ms: Some(scheduled.unwrap_or(now).timestamp_millis()),
        catch_up,
    };
    let id = match triggers.store().claim_firing(&new).await? {
        Claim::Claimed(id) => id,
        Claim::AlreadyClaimed(existing) => {
            let stale = req.reuse_after.is_some_and(|window| {
                now.timestamp_millis() - existing.fired_ms > window.as_millis() as i64
            });
            if !stale {
                return Ok(FireOutcome {
                    firing: existing,
                    claimed: false,
                });
            }
            let retired = format!("{}@{}", existing.firing_key, existing.fired_ms);
            triggers
                .store()
                .retire_firing_key(&existing.id, &existing.firing_key, &retired)
                .await?;
            // Whoever renamed it, the key is free now; the claim decides who fires.
            match triggers.store().claim_firing(&new).await? {
                Claim::Claimed(id) => id,
                Claim::AlreadyClaimed(existing) => {
                    return Ok(FireOutcome {
                        firing: existing,
                        claimed: false,
                    });
                }
            }
        }
    };
    let pending = Firing {
        id,
        project_id: new.project_id,
        trigger_slug: new.trigger_slug,
        firing_key: new.firing_key,
        fired_ms: new.fired_ms,
        scheduled_ms: new.scheduled_ms,
        outcome: FiringOutcome::Pending,
        session_id: None,
        error: None,
        catch_up,
    };
    let context = prompt_context(&req.trigger, &req.source, now);
    // The session service is idempotent on this. A key that may fire again after its window
    // needs one per firing, or the second firing would be answered with the first's session.
    let idempotency_key = match req.reuse_after {
        Some(_) => format!("{}@{}", pending.firing_key, pending.fired_ms),
        None => pending.firing_key.clone(),
    };
    let firing = run_claimed(triggers, pending, &req.trigger, &context, &idempotency_key).await?;
    Ok(FireOutcome {
        firing,
        claimed: true,
    })
}

/// Renders, starts and records a firing this replica holds the claim of.
pub(crate) async fn run_claimed(
    triggers: &Triggers,
    mut firing: Firing,
    trigger: &Trigger,
    context: &Value,
    idempotency_key: &str,
) -> Result<Firing, DomainError> {
    let result = match template::render(&trigger.prompt, context) {
        Err(e) => Err(format!("{TEMPLATE_ERROR_PREFIX}{e}")),
        Ok(prompt) => {
            let start = triggers.starter().start(TriggerStart {
                project_id: firing.project_id.clone(),
                prompt,
                agent: trigger.agent.clone(),
                origin: format!("trigger:{}", trigger.slug),
                idempotency_key: idempotency_key.to_owned(),
            });
            match tokio::time::timeout(START_TIMEOUT, start).await {
                Ok(Ok(session_id)) => Ok(session_id),
                Ok(Err(reason)) => Err(format!("{START_ERROR_PREFIX}{reason}")),
                Err(_) => Err(format!(
                    "{START_ERROR_PREFIX}no answer within {}s",
                    START_TIMEOUT.as_secs()
                )),
            }
        }
    };
    let (outcome, session_id, error) = match &result {
        Ok(session) => (FiringOutcome::Started, Some(session.as_str()), None),
        Err(error) => (FiringOutcome::Failed, None, Some(error.as_str())),
    };
    crate::metrics::metrics().firing(
        trigger.kind.as_str(),
        if result.is_ok() { "started" } else { "failed" },
    );
    let completed = triggers
        .store()
        .complete_firing(&firing.id, outcome, session_id, error)
        .await?;
    if !completed {
        // Someone recovering abandoned firings completed it first; theirs is the record.
        return Ok(triggers.store().get_firing(&firing.id).await?);
    }
    match result {
        Ok(session) => {
            tracing::info!(project = %firing.project_id, trigger = %firing.trigger_slug,
                key = %firing.firing_key, session = %session, catch_up = firing.catch_up,
                "trigger fired");
            firing.session_id = Some(session);
        }
        Err(error) => {
            tracing::warn!(project = %firing.project_id, trigger = %firing.trigger_slug,
                key = %firing.firing_key, %error, "trigger firing failed");
            firing.error = Some(error);
        }
    }
    firing.outcome = outcome;
    Ok(firing)
}

/// The values a prompt template sees.
///
/// `cron.fired_at` and `cron.scheduled_at` are RFC 3339 in the trigger's timezone: the
/// scheduled occurrence for cron firings (so every replica renders the same prompt), the
/// moment of firing for manual and webhook ones.
pub fn prompt_context(trigger: &Trigger, source: &Source, now: DateTime<Utc>) -> Value {
    let tz_name = trigger.timezone.as_deref().unwrap_or(DEFAULT_TIMEZONE);
    let (at, catch_up) = match source {
        Source::Cron {
            scheduled,
            catch_up,
        } => (*scheduled, *catch_up),
        Source::Manual | Source::Webhook { .. } => (now, false),
    };
    let at_text = format_in_timezone(at, trigger);
    let mut context = json!({
        "trigger": {
            "slug": trigger.slug,
            "name": trigger.name,
            "type": trigger.kind.as_str(),
            "agent": trigger.agent,
        },
        "cron": {
            "fired_at": at_text,
            "scheduled_at": at_text,
            "timezone": tz_name,
            "catch_up": catch_up,
        },
        "fired_at": format_in_timezone(now, trigger),
    });
    if let (
        Source::Webhook {
            headers,
            body,
            delivery_id,
        },
        Some(map),
    ) = (source, context.as_object_mut())
    {
        map.insert("headers".into(), Value::Object(headers.clone()));
        map.insert("body".into(), body.clone());
        map.insert("delivery".into(), json!({ "id": delivery_id }));
    }
    context
}

fn format_in_timezone(at: DateTime<Utc>, trigger: &Trigger) -> String {
    let tz = match trigger.kind {
        TriggerKind::Cron => trigger.schedule().map(|s| s.timezone()),
        TriggerKind::Webhook => None,
    };
    match tz {
        Some(tz) => at
            .with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::Secs, true),
        None => at.to_rfc3339_opts(SecondsFormat::Secs, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn cron_trigger(prompt: &str) -> Trigger {
        Trigger {
            slug: "digest".into(),
            name: "Daily digest".into(),
            kind: TriggerKind::Cron,
            agent: "kortix".into(),
            enabled: true,
            cron: Some("0 0 9 * * *".into()),
            timezone: Some("America/Los_Angeles".into()),
            secret_env: None,
            prompt: prompt.into(),
        }
    }

    #[test]
    fn cron_context_uses_the_scheduled_time_in_the_trigger_timezone() {
        let t = cron_trigger("");
        let scheduled = Utc.with_ymd_and_hms(2026, 3, 9, 16, 0, 0).unwrap();
        let now = scheduled + chrono::TimeDelta::seconds(3);
        let ctx = prompt_context(
            &t,
            &Source::Cron {
                scheduled,
                catch_up: true,
            },
            now,
        );
        assert_eq!(ctx["cron"]["fired_at"], "2026-03-09T09:00:00-07:00");
        assert_eq!(ctx["cron"]["scheduled_at"], "2026-03-09T09:00:00-07:00");
        assert_eq!(ctx["cron"]["catch_up"], true);
        assert_eq!(ctx["fired_at"], "2026-03-09T09:00:03-07:00");
        assert_eq!(ctx["trigger"]["name"], "Daily digest");
        assert_eq!(
            template::render(
                "notes/digest-{{ cron.fired_at }}.md by {{trigger.slug}}",
                &ctx
            )
            .unwrap(),
            "notes/digest-2026-03-09T09:00:00-07:00.md by digest"
        );
    }

    #[test]
    fn keys() {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(cron_key(at), "cron:1767225600");
        assert_eq!(delivery_key("abc"), "delivery:abc");
        let key = signed_key(b"sha256=ab", b"{}");
        assert!(
            key.starts_with("signed:") && key.len() == "signed:".len() + 64,
            "{key}"
        );
        assert_eq!(key, signed_key(b"sha256=ab", b"{}"), "identical requests");
        assert_ne!(key, signed_key(b"sha256=ab", b"{} "), "another body");
        assert_ne!(
            key,
            signed_key(b"sha256=a", b"b{}"),
            "the boundary is part of it"
        );
        assert_ne!(manual_key(), manual_key());
    }
}
