//! Which occurrences of a cron trigger are due at a sweep.
//!
//! An occurrence is *on time* when it was scheduled within [`ON_TIME_WINDOW`] of the sweep;
//! those all fire (a sweep that ran a few seconds late loses nothing). Older ones were
//! *missed* — the control plane was down or stalled — and only the latest of them fires, as a
//! single catch-up, and only when nothing is on time (an on-time firing already does what a
//! catch-up would). So a restart after a day of downtime fires at most once per trigger.
//!
//! Missed is measured from an *anchor*: the scheduled time of the trigger's last recorded
//! cron firing, or when the trigger became active (see `cron_sweep`).

use chrono::{DateTime, TimeDelta, Utc};
use kortix_manifest::CronSchedule;

/// How late an occurrence may be found and still count as on time: several sweep ticks, so a
/// slow tick or a short pause does not turn punctual firings into a catch-up.
pub const ON_TIME_WINDOW: TimeDelta = TimeDelta::seconds(10);
/// Defensive cap on on-time occurrences per sweep (a seconds-resolution schedule has at most
/// eleven in the window).
const MAX_ON_TIME: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Due {
    /// Occurrences to fire normally, oldest first.
    pub on_time: Vec<DateTime<Utc>>,
    /// The one missed occurrence to fire as a catch-up.
    pub catch_up: Option<DateTime<Utc>>,
}

impl Due {
    pub fn is_empty(&self) -> bool {
        self.on_time.is_empty() && self.catch_up.is_none()
    }
}

/// What of `schedule` is due at `now`, given that nothing at or before `anchor` may fire.
pub fn due(schedule: &CronSchedule, anchor: DateTime<Utc>, now: DateTime<Utc>) -> Due {
    let mut out = Due::default();
    if now <= anchor {
        return out;
    }
    let late_cutoff = now - ON_TIME_WINDOW;
    let mut cursor = anchor.max(late_cutoff);
    while out.on_time.len() < MAX_ON_TIME {
        match schedule.next_after(cursor) {
            Some(t) if t <= now => {
                out.on_time.push(t);
                cursor = t;
            }
            _ => break,
        }
    }
    if out.on_time.is_empty() && anchor < late_cutoff {
        out.catch_up = latest_in(schedule, anchor, late_cutoff);
    }
    out
}

/// The latest occurrence `t` with `lo < t <= hi`.
///
/// "Is there an occurrence in `(s, hi]`" is monotone in `s`, so a binary search over `s`
/// finds the latest one in about fifty `next_after` calls however long the range and however
/// dense the schedule, where walking forward from `lo` would take one call per occurrence
/// (86 400 a day for a per-second schedule).
pub fn latest_in(
    schedule: &CronSchedule,
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let exists_after = |s: DateTime<Utc>| schedule.next_after(s).is_some_and(|t| t <= hi);
    if lo >= hi || !exists_after(lo) {
        return None;
    }
    // Invariant: exists_after(good) && !exists_after(bad).
    let (mut good, mut bad) = (lo, hi);
    while bad - good > TimeDelta::milliseconds(1) {
        let mid = good + (bad - good) / 2;
        if exists_after(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    schedule.next_after(good).filter(|t| *t <= hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn sched(expr: &str, tz: &str) -> CronSchedule {
        CronSchedule::new(expr, tz).unwrap()
    }

    fn occurrences(s: &CronSchedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut cursor = from;
        while let Some(t) = s.next_after(cursor).filter(|t| *t <= to) {
            out.push(t);
            cursor = t;
        }
        out
    }

    #[test]
    fn dst_spring_forward_los_angeles() {
        // 2026-03-08: at 02:00 PST the clock jumps to 03:00 PDT; 02:xx does not exist.
        let from = utc(2026, 3, 6, 12, 0, 0);
        let to = utc(2026, 3, 10, 12, 0, 0);
        let half_past_one = sched("0 30 1 * * *", "America/Los_Angeles");
        assert_eq!(
            occurrences(&half_past_one, from, to),
            vec![
                utc(2026, 3, 7, 9, 30, 0),  // 01:30 PST
                utc(2026, 3, 8, 9, 30, 0),  // 01:30 PST, half an hour before the jump
                utc(2026, 3, 9, 8, 30, 0),  // 01:30 PDT
                utc(2026, 3, 10, 8, 30, 0), // 01:30 PDT
            ]
        );
        let two = sched("0 0 2 * * *", "America/Los_Angeles");
        assert_eq!(
            occurrences(&two, from, to),
            vec![
                utc(2026, 3, 7, 10, 0, 0), // 02:00 PST
                // 02:00 does not exist on the 8th: croner fires at the first instant after the
                // gap (03:00 PDT = 10:00 UTC), once, rather than skipping the day.
                utc(2026, 3, 8, 10, 0, 0),
                utc(2026, 3, 9, 9, 0, 0),  // 02:00 PDT
                utc(2026, 3, 10, 9, 0, 0), // 02:00 PDT
            ]
        );
    }

    #[test]
    fn dst_fall_back_los_angeles() {
        // 2026-11-01: at 02:00 PDT the clock goes back to 01:00 PST; 01:xx happens twice.
        let from = utc(2026, 10, 30, 12, 0, 0);
        let to = utc(2026, 11, 3, 12, 0, 0);
        let half_past_one = sched("0 30 1 * * *", "America/Los_Angeles");
        assert_eq!(
            occurrences(&half_past_one, from, to),
            vec![
                utc(2026, 10, 31, 8, 30, 0), // 01:30 PDT
                // The repeated 01:30 fires once, at its first (PDT) instant.
                utc(2026, 11, 1, 8, 30, 0),
                utc(2026, 11, 2, 9, 30, 0), // 01:30 PST
                utc(2026, 11, 3, 9, 30, 0), // 01:30 PST
            ]
        );
        let two = sched("0 0 2 * * *", "America/Los_Angeles");
        assert_eq!(
            occurrences(&two, from, to),
            vec![
                utc(2026, 10, 31, 9, 0, 0), // 02:00 PDT
                utc(2026, 11, 1, 10, 0, 0), // 02:00 PST (first 02:00 after the repeat)
                utc(2026, 11, 2, 10, 0, 0),
                utc(2026, 11, 3, 10, 0, 0),
            ]
        );
    }

    #[test]
    fn on_time_occurrences_all_fire() {
        let every_3s = sched("*/3 * * * * *", "UTC");
        let anchor = utc(2026, 1, 1, 0, 0, 0);
        let due = due(&every_3s, anchor, utc(2026, 1, 1, 0, 0, 7));
        assert_eq!(
            due.on_time,
            vec![utc(2026, 1, 1, 0, 0, 3), utc(2026, 1, 1, 0, 0, 6)]
        );
        assert_eq!(due.catch_up, None);
        // Nothing after the anchor: nothing due, even if the anchor itself matches.
        assert!(
            super::due(
                &every_3s,
                utc(2026, 1, 1, 0, 0, 6),
                utc(2026, 1, 1, 0, 0, 8)
            )
            .is_empty()
        );
        assert!(super::due(&every_3s, anchor, anchor).is_empty());
    }

    #[test]
    fn missed_occurrences_become_one_catch_up() {
        let hourly = sched("0 0 * * * *", "UTC");
        let last_fired = utc(2026, 1, 1, 0, 0, 0);
        // Down for a day and a half: 36 occurrences missed, only the latest comes back.
        let now = utc(2026, 1, 2, 12, 30, 0);
        let due = due(&hourly, last_fired, now);
        assert!(due.on_time.is_empty());
        assert_eq!(due.catch_up, Some(utc(2026, 1, 2, 12, 0, 0)));
        // Once that catch-up is the anchor, nothing more until the next hour.
        assert!(super::due(&hourly, utc(2026, 1, 2, 12, 0, 0), now).is_empty());
    }

    #[test]
    fn on_time_supersedes_catch_up() {
        let every_second = sched("* * * * * *", "UTC");
        let now = utc(2026, 1, 2, 0, 0, 0);
        let due = due(&every_second, utc(2026, 1, 1, 0, 0, 0), now);
        assert_eq!(due.catch_up, None);
        assert_eq!(due.on_time.len(), 10);
        assert_eq!(due.on_time.last(), Some(&now));
    }

    #[test]
    fn latest_in_agrees_with_walking() {
        let cases = [
            ("0 0 9 * * 1-5", "America/Los_Angeles"),
            ("*/7 * * * * *", "UTC"),
            ("0 30 1 * * *", "America/Los_Angeles"),
            ("0 0 2 * * *", "America/Los_Angeles"),
            ("0 0 0 29 2 *", "Europe/Berlin"),
        ];
        let lo = utc(2026, 2, 20, 0, 0, 0);
        for (expr, tz) in cases {
            let s = sched(expr, tz);
            for hi in [
                utc(2026, 3, 8, 10, 0, 0),
                utc(2026, 3, 9, 0, 0, 1),
                utc(2026, 11, 1, 9, 15, 0),
            ] {
                let walked = if expr.starts_with("*/7") {
                    // Too dense to walk from `lo`; walk the last hour instead.
                    occurrences(&s, hi - TimeDelta::hours(1), hi)
                        .last()
                        .copied()
                } else {
                    occurrences(&s, lo, hi).last().copied()
                };
                assert_eq!(latest_in(&s, lo, hi), walked, "{expr} {tz} up to {hi}");
            }
        }
        let feb29 = sched("0 0 0 29 2 *", "UTC");
        assert_eq!(
            latest_in(&feb29, utc(2025, 1, 1, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0)),
            None
        );
        assert_eq!(
            latest_in(&feb29, utc(2000, 1, 1, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0)),
            Some(utc(2024, 2, 29, 0, 0, 0))
        );
    }
}
