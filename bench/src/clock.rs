//! One monotonic clock for the whole process (microseconds since the first use), and the
//! measurement window: samples are counted only when their event falls inside it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Microseconds since this process first asked. Agents and viewers of one load generator
/// share it, so a timestamp written into a record by the agent can be compared with the time
/// a viewer receives it.
pub fn now_us() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

const UNSET: u64 = u64::MAX;

/// The measurement window `[start, end)` in [`now_us`] time; empty until opened.
#[derive(Debug)]
pub struct Window {
    start: AtomicU64,
    end: AtomicU64,
}

impl Default for Window {
    fn default() -> Self {
        Self::new()
    }
}

impl Window {
    pub const fn new() -> Self {
        Self {
            start: AtomicU64::new(UNSET),
            end: AtomicU64::new(UNSET),
        }
    }

    pub fn open_at(&self, us: u64) {
        self.end.store(UNSET, Ordering::SeqCst);
        self.start.store(us, Ordering::SeqCst);
    }

    pub fn close_at(&self, us: u64) {
        self.end.store(us, Ordering::SeqCst);
    }

    pub fn open(&self) {
        self.open_at(now_us());
    }

    pub fn close(&self) {
        self.close_at(now_us());
    }

    /// Whether `us` is inside the window (an open window has no end yet).
    pub fn contains(&self, us: u64) -> bool {
        let start = self.start.load(Ordering::SeqCst);
        start != UNSET && us >= start && us < self.end.load(Ordering::SeqCst)
    }

    /// Whether `us` is before the window opened (or the window never opened).
    pub fn before(&self, us: u64) -> bool {
        let start = self.start.load(Ordering::SeqCst);
        start == UNSET || us < start
    }

    /// Length of the closed window in seconds (0 while open or unset).
    pub fn secs(&self) -> f64 {
        let (s, e) = (
            self.start.load(Ordering::SeqCst),
            self.end.load(Ordering::SeqCst),
        );
        if s == UNSET || e == UNSET || e < s {
            0.0
        } else {
            (e - s) as f64 / 1e6
        }
    }
}

/// A well-mixed 64-bit hash of `i` (splitmix64), for spreading agents' heartbeat phases.
pub fn spread(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_membership() {
        let w = Window::new();
        assert!(!w.contains(5) && w.before(5));
        w.open_at(10);
        assert!(w.before(9) && !w.contains(9));
        assert!(w.contains(10) && w.contains(1_000_000));
        w.close_at(20);
        assert!(w.contains(19) && !w.contains(20) && !w.before(20));
        assert_eq!(w.secs(), 10.0 / 1e6);
    }

    #[test]
    fn spread_is_roughly_uniform() {
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            buckets[(spread(i) % 10) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (800..1200).contains(&b)),
            "{buckets:?}"
        );
        assert!(now_us() <= now_us());
    }
}
