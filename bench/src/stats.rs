//! Latency histograms (microsecond resolution) and their percentile summaries.

use hdrhistogram::Histogram;
use std::time::Duration;

/// Highest latency a histogram tracks; larger samples are clamped to it (and so still count).
pub const MAX_TRACKED: Duration = Duration::from_secs(600);

/// A latency histogram in microseconds, 3 significant digits.
#[derive(Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Latency({:?})", self.summary())
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, MAX_TRACKED.as_micros() as u64, 3)
            .expect("static histogram bounds are valid");
        Self { hist }
    }

    pub fn record(&mut self, d: Duration) {
        self.record_us(d.as_micros().min(u128::from(u64::MAX)) as u64);
    }

    pub fn record_us(&mut self, us: u64) {
        self.hist.saturating_record(us.max(1));
    }

    /// Adds every sample of `other` (both use the same bounds, so this cannot fail).
    pub fn merge(&mut self, other: &Latency) {
        let _ = self.hist.add(&other.hist);
    }

    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    pub fn summary(&self) -> Summary {
        if self.hist.is_empty() {
            return Summary::default();
        }
        Summary {
            count: self.hist.len(),
            p50_us: self.hist.value_at_quantile(0.50),
            p90_us: self.hist.value_at_quantile(0.90),
            p99_us: self.hist.value_at_quantile(0.99),
            p999_us: self.hist.value_at_quantile(0.999),
            max_us: self.hist.max(),
            mean_us: self.hist.mean(),
        }
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Summary {
    /// `p50 / p90 / p99 / max` in milliseconds, or `n/a` without samples.
    pub fn percentiles_ms(&self) -> String {
        if self.count == 0 {
            return "n/a (no samples)".to_string();
        }
        format!(
            "{} / {} / {} / {}",
            fmt_ms(self.p50_us),
            fmt_ms(self.p90_us),
            fmt_ms(self.p99_us),
            fmt_ms(self.max_us)
        )
    }
}

/// Microseconds as milliseconds with a precision that suits the magnitude.
pub fn fmt_ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// Bytes as MiB (one decimal).
pub fn fmt_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A rate with thousands separators, e.g. `123,456/s`.
pub fn fmt_rate(per_sec: f64) -> String {
    format!("{}/s", thousands(per_sec.round().max(0.0) as u64))
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `a / b` or 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Latency::new();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        // 3 significant digits: within 0.1 % of the exact value.
        let close = |got: u64, want_ms: u64| {
            let want = want_ms * 1000;
            got.abs_diff(want) * 1000 <= want
        };
        assert!(close(s.p50_us, 50), "{s:?}");
        assert!(close(s.p90_us, 90), "{s:?}");
        assert!(close(s.p99_us, 99), "{s:?}");
        assert!(close(s.max_us, 100), "{s:?}");
    }

    #[test]
    fn merging_and_clamping() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        a.record(Duration::from_micros(0));
        b.record(Duration::from_secs(3600));
        a.merge(&b);
        assert_eq!(a.len(), 2);
        let s = a.summary();
        assert!(s.max_us >= MAX_TRACKED.as_micros() as u64 * 999 / 1000);
        assert!(Latency::new().summary().percentiles_ms().starts_with("n/a"));
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_ms(1234), "1.23 ms");
        assert_eq!(fmt_ms(45_600), "45.6 ms");
        assert_eq!(fmt_ms(1_234_000), "1234 ms");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(fmt_rate(100_000.4), "100,000/s");
        assert_eq!(fmt_mib(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(ratio(1.0, 0.0), 0.0);
    }
}
