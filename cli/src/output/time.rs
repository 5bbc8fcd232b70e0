//! Timestamps: RFC 3339 (UTC, milliseconds) for JSON, local time and "in 5m"/"3h ago" for people.

use chrono::{DateTime, Local, SecondsFormat, Utc};

/// Milliseconds since the epoch as RFC 3339; 0 (proto3 "unset") and out-of-range are `None`.
pub fn rfc3339_ms(unix_ms: i64) -> Option<String> {
    if unix_ms == 0 {
        return None;
    }
    DateTime::<Utc>::from_timestamp_millis(unix_ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Seconds since the epoch as RFC 3339.
pub fn rfc3339_s(unix_s: i64) -> Option<String> {
    if unix_s == 0 {
        return None;
    }
    DateTime::<Utc>::from_timestamp(unix_s, 0).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// Local wall-clock time for tables; `-` when unset.
pub fn human_ms(unix_ms: i64) -> String {
    if unix_ms == 0 {
        return "-".to_owned();
    }
    match DateTime::<Utc>::from_timestamp_millis(unix_ms) {
        Some(t) => t
            .with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        None => "-".to_owned(),
    }
}

/// Local time plus how far away it is, e.g. `2025-01-02 09:00:00 (in 3h)`.
pub fn human_with_relative(unix_ms: i64) -> String {
    if unix_ms == 0 {
        return "-".to_owned();
    }
    format!(
        "{} ({})",
        human_ms(unix_ms),
        relative(unix_ms, Utc::now().timestamp_millis())
    )
}

/// `in 5m`, `3h ago`, `now`: the largest whole unit.
pub fn relative(unix_ms: i64, now_ms: i64) -> String {
    let delta = unix_ms.saturating_sub(now_ms);
    let secs = (delta / 1000).unsigned_abs();
    if secs < 1 {
        return "now".to_owned();
    }
    let amount = match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    };
    if delta > 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// A DURATION argument: a whole number and a unit, `90s`, `30m`, `12h`, `7d`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write e.g. 90s, 30m, 12h or 7d"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use s, m, h or d"
            ));
        }
    };
    n.checked_mul(secs)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// An RFC 3339 timestamp as local wall-clock `HH:MM:SS` (`--timestamps`).
pub fn local_clock(rfc3339: &str) -> Option<String> {
    DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.with_timezone(&Local).format("%H:%M:%S").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_a_number_and_a_unit() {
        use std::time::Duration;
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration(" 7d "), Ok(Duration::from_secs(604_800)));
        for bad in ["", "5", "m", "5w", "-5s", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_clock_reads_rfc3339() {
        let shown = local_clock("2025-01-02T03:04:05.678Z").expect("valid");
        assert_eq!(shown.len(), 8, "{shown}");
        assert!(local_clock("yesterday").is_none());
    }

    #[test]
    fn rfc3339_is_utc_with_millis_and_zero_is_null() {
        assert_eq!(rfc3339_ms(0), None);
        assert_eq!(
            rfc3339_ms(1_700_000_000_123).as_deref(),
            Some("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(
            rfc3339_s(1_700_000_000).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(rfc3339_ms(i64::MAX), None);
    }

    #[test]
    fn relative_picks_the_largest_unit() {
        let now = 1_000_000_000;
        assert_eq!(relative(now + 300, now), "now");
        assert_eq!(relative(now + 45_000, now), "in 45s");
        assert_eq!(relative(now + 5 * 60_000, now), "in 5m");
        assert_eq!(relative(now - 3 * 3_600_000, now), "3h ago");
        assert_eq!(relative(now - 2 * 86_400_000, now), "2d ago");
    }

    #[test]
    fn human_unset_is_dash() {
        assert_eq!(human_ms(0), "-");
        assert_eq!(human_with_relative(0), "-");
    }
}
