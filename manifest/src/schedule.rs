//! Cron schedules: the 6-field (seconds-first) croner form evaluated in an
//! IANA timezone. The trigger sweep uses [`CronSchedule::next_after`].

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// The timezone a cron trigger uses when it names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// Why a cron expression or timezone is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron {expr:?} is invalid: {reason}")]
    Cron { expr: String, reason: String },
    #[error("timezone {0:?} is not an IANA timezone name")]
    Timezone(String),
}

/// A validated cron expression bound to its timezone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    timezone: Tz,
}

impl CronSchedule {
    /// Validates `expr` (exactly six fields: second minute hour
    /// day-of-month month day-of-week) and `timezone` (an IANA name).
    pub fn new(expr: &str, timezone: &str) -> Result<Self, ScheduleError> {
        Ok(CronSchedule {
            cron: parse_cron(expr)?,
            timezone: parse_timezone(timezone)?,
        })
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The first firing strictly after `after`, computed on the wall clock
    /// of the schedule's timezone (so "09:00" stays 09:00 across DST).
    /// `None` when the pattern never fires again (e.g. 31 February).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Up to `count` consecutive firings after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(count.min(64));
        let mut cursor = after;
        while out.len() < count {
            match self.next_after(cursor) {
                Some(t) => {
                    out.push(t);
                    cursor = t;
                }
                None => break,
            }
        }
        out
    }
}

/// Six whitespace-separated fields, seconds first, no year. Croner would
/// also take 5 or 7 fields and `@daily`-style nicknames; the manifest
/// format is the 6-field one only, so a 5-field crontab line (which would
/// silently mean something else) is refused.
pub(crate) fn parse_cron(expr: &str) -> Result<Cron, ScheduleError> {
    let err = |reason: String| ScheduleError::Cron {
        expr: expr.to_owned(),
        reason,
    };
    let fields = expr.split_whitespace().count();
    if fields != 6 {
        return Err(err(format!(
            "expected 6 fields (second minute hour day month weekday), found {fields}"
        )));
    }
    if expr.contains('@') {
        return Err(err("nicknames like @daily are not supported".to_owned()));
    }
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| err(e.to_string()))
}

pub(crate) fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name).map_err(|_| ScheduleError::Timezone(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn six_fields_required() {
        assert!(parse_cron("0 0 9 * * 1-5").is_ok());
        assert!(parse_cron("*/10 * * * * *").is_ok());
        assert!(parse_cron("0 9 * * 1-5").is_err(), "5-field crontab");
        assert!(parse_cron("0 0 9 * * 1-5 2030").is_err(), "7 fields");
        assert!(parse_cron("@daily").is_err());
        assert!(parse_cron("61 0 9 * * *").is_err(), "second out of range");
        assert!(parse_cron("0 0 25 * * *").is_err(), "hour out of range");
        assert!(parse_cron("a b c d e f").is_err());
        assert!(parse_cron("").is_err());
    }

    #[test]
    fn timezones_are_iana() {
        assert!(parse_timezone("UTC").is_ok());
        assert!(parse_timezone("America/Los_Angeles").is_ok());
        assert!(parse_timezone("Mars/Olympus").is_err());
        assert!(parse_timezone("").is_err());
    }

    #[test]
    fn next_after_uses_the_timezone() {
        // 09:00 Mon–Fri in Los Angeles. 2025-01-06 is a Monday; PST = UTC-8.
        let s = CronSchedule::new("0 0 9 * * 1-5", "America/Los_Angeles").unwrap();
        assert_eq!(
            s.next_after(utc(2025, 1, 6, 0, 0, 0)),
            Some(utc(2025, 1, 6, 17, 0, 0))
        );
        // Strictly after: a firing instant yields the next day.
        assert_eq!(
            s.next_after(utc(2025, 1, 6, 17, 0, 0)),
            Some(utc(2025, 1, 7, 17, 0, 0))
        );
        // Friday 17:00 UTC fired → next is Monday.
        assert_eq!(
            s.next_after(utc(2025, 1, 10, 17, 0, 0)),
            Some(utc(2025, 1, 13, 17, 0, 0))
        );
        // Summer: PDT = UTC-7.
        assert_eq!(
            s.next_after(utc(2025, 7, 7, 0, 0, 0)),
            Some(utc(2025, 7, 7, 16, 0, 0))
        );
    }

    #[test]
    fn seconds_field_is_first() {
        let s = CronSchedule::new("30 * * * * *", "UTC").unwrap();
        assert_eq!(
            s.next_after(utc(2025, 1, 1, 0, 0, 0)),
            Some(utc(2025, 1, 1, 0, 0, 30))
        );
        assert_eq!(
            s.upcoming(utc(2025, 1, 1, 0, 0, 0), 3),
            vec![
                utc(2025, 1, 1, 0, 0, 30),
                utc(2025, 1, 1, 0, 1, 30),
                utc(2025, 1, 1, 0, 2, 30)
            ]
        );
    }
}
