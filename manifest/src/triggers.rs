//! `[[triggers]]`: cron- and webhook-started sessions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use toml::Value;

use crate::env::Env;
use crate::error::Diagnostics;
use crate::fields::{Fields, Slugged, parse_entries};
use crate::names::{self, RESERVED_SECRET_PREFIX};
use crate::schedule::{self, CronSchedule, DEFAULT_TIMEZONE};

/// The agent a trigger runs when it names none.
pub const DEFAULT_AGENT: &str = "default";

const SECTION: &str = "triggers";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    Cron,
    Webhook,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Cron => "cron",
            TriggerKind::Webhook => "webhook",
        }
    }
}

impl std::fmt::Display for TriggerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One normalized trigger. Flat, like its JSON form: `cron` and `timezone`
/// are set exactly for cron triggers, `secret_env` only ever for webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub slug: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: TriggerKind,
    pub agent: String,
    pub enabled: bool,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub secret_env: Option<String>,
    /// Mustache-style template for the session's first message.
    pub prompt: String,
}

impl Slugged for Trigger {
    fn slug(&self) -> &str {
        &self.slug
    }
}

impl Trigger {
    /// The cron schedule of a cron trigger (`None` for webhooks, or for a
    /// hand-built trigger whose cron/timezone do not validate).
    pub fn schedule(&self) -> Option<CronSchedule> {
        let expr = self.cron.as_deref()?;
        let tz = self.timezone.as_deref().unwrap_or(DEFAULT_TIMEZONE);
        CronSchedule::new(expr, tz).ok()
    }

    /// The next firing strictly after `after`, in the trigger's timezone.
    /// Ignores `enabled`: whether to act on it is the sweep's decision.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule()?.next_after(after)
    }
}

pub(crate) fn parse(value: Option<&Value>, env: &Env, diags: &mut Diagnostics) -> Vec<Trigger> {
    let mut triggers = parse_entries(value, SECTION, diags, |f| trigger(f, env));
    // Stable UI ordering; slugs are unique so the order is total.
    triggers.sort_by(|a, b| a.slug.cmp(&b.slug));
    triggers
}

fn trigger(f: &mut Fields<'_>, env: &Env) -> Option<Trigger> {
    let slug = f.slug();
    let name = slug.as_deref().map(|s| f.name_or(s));
    let kind_raw = f.take("type");
    let kind = match f.required_string("type", kind_raw).as_deref() {
        Some("cron") => Some(TriggerKind::Cron),
        Some("webhook") => Some(TriggerKind::Webhook),
        Some(other) => {
            f.problem(format!(
                "`type` must be \"cron\" or \"webhook\", found {other:?}"
            ));
            None
        }
        None => None,
    };
    let agent_raw = f.take_aliased("agent", "agent_name");
    let agent = f
        .string("agent", agent_raw)
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_AGENT.to_owned());
    let enabled = f.flag("enabled", true);
    let prompt_raw = f.take_aliased("prompt", "prompt_template");
    let prompt = f.required_string("prompt", prompt_raw);
    if prompt.as_deref().is_some_and(|p| p.trim().is_empty()) {
        f.problem("`prompt` must not be empty");
    }

    let cron_raw = f.take_aliased("cron", "schedule");
    let tz_raw = f.take("timezone");
    let secret_raw = f.take_aliased("secret_env", "secretEnv");
    let (mut cron, mut timezone, mut secret_env) = (None, None, None);
    match kind {
        Some(TriggerKind::Cron) => {
            cron = f.required_string("cron", cron_raw);
            timezone = Some(
                f.string("timezone", tz_raw)
                    .unwrap_or_else(|| DEFAULT_TIMEZONE.to_owned()),
            );
            if let Some(expr) = &cron
                && let Err(e) = schedule::parse_cron(expr)
            {
                f.problem(e.to_string());
            }
            if let Some(tz) = &timezone
                && let Err(e) = schedule::parse_timezone(tz)
            {
                f.problem(e.to_string());
            }
            if secret_raw.is_some() {
                f.note("`secret_env` is ignored on a cron trigger");
            }
        }
        Some(TriggerKind::Webhook) => {
            secret_env = f.string("secret_env", secret_raw);
            match &secret_env {
                Some(s) if !names::is_secret_name(s) => f.problem(format!(
                    "`secret_env` {s:?} must be a secret name matching ^[A-Z_][A-Z0-9_]{{0,63}}$"
                )),
                Some(s) if s.starts_with(RESERVED_SECRET_PREFIX) => f.note(format!(
                    "`secret_env` {s:?} uses the reserved {RESERVED_SECRET_PREFIX}* prefix; it can never have a value"
                )),
                // The reference's advice: declared names are what the
                // Secrets Manager offers to fill in.
                Some(s) if !env.required.contains(s) && !env.optional.contains(s) => f.note(format!(
                    "`secret_env` {s:?} is not declared in [env]; add it to [env].optional so it shows up in the Secrets Manager"
                )),
                Some(_) => {}
                None => f.note("no `secret_env`: webhook deliveries cannot be signature-checked"),
            }
            if cron_raw.is_some() {
                f.note("`cron` is ignored on a webhook trigger");
            }
            if tz_raw.is_some() {
                f.note("`timezone` is ignored on a webhook trigger");
            }
        }
        None => {}
    }

    Some(Trigger {
        slug: slug?,
        name: name?,
        kind: kind?,
        agent,
        enabled,
        cron,
        timezone,
        secret_env,
        prompt: prompt?,
    })
}
