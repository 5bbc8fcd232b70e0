//! Pauses between retries: a step that doubles from `base` up to `max`, with jitter, so that
//! callers that failed together (replicas resubscribing, sessions reconnecting, deliveries
//! rescheduled) spread out instead of retrying in lockstep.

use std::time::Duration;

/// How much of a pause is drawn at random.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Anywhere from nothing to the step ("full jitter"): the widest spread, for callers
    /// that may retry at once without harm.
    Full,
    /// Half the step fixed, half random: never much sooner than the step says.
    Half,
    /// The step, plus up to this fraction of it again: never sooner than the step.
    Over(f64),
}

/// A retry schedule. Cheap to copy; usable in constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub jitter: Jitter,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration, jitter: Jitter) -> Self {
        Self { base, max, jitter }
    }

    /// The step before retry `retry` (0 for the first): `base · 2^retry`, capped at `max`.
    pub fn step(&self, retry: u32) -> Duration {
        self.base
            .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
            .min(self.max)
    }

    /// The pause before retry `retry`, with `random` (in 0..=1) as the draw.
    pub fn pause_with(&self, retry: u32, random: f64) -> Duration {
        let step = self.step(retry);
        let random = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            0.0
        };
        match self.jitter {
            Jitter::Full => step.mul_f64(random),
            Jitter::Half => step / 2 + step.mul_f64(random / 2.0),
            Jitter::Over(fraction) => step + step.mul_f64(random * fraction.max(0.0)),
        }
    }

    /// The pause before retry `retry`.
    pub fn pause(&self, retry: u32) -> Duration {
        self.pause_with(retry, rand::random::<f64>())
    }

    /// Sleeps the pause before retry `retry`.
    pub async fn sleep(&self, retry: u32) {
        tokio::time::sleep(self.pause(retry)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn steps_double_and_stop_at_the_cap() {
        let b = Backoff::new(100 * MS, 1000 * MS, Jitter::Full);
        let steps: Vec<_> = (0..6).map(|r| b.step(r)).collect();
        assert_eq!(steps, [100, 200, 400, 800, 1000, 1000].map(|m| m * MS));
        assert_eq!(
            b.step(u32::MAX),
            1000 * MS,
            "no overflow however many retries"
        );
    }

    #[test]
    fn each_jitter_keeps_to_its_range() {
        let full = Backoff::new(100 * MS, 1000 * MS, Jitter::Full);
        assert_eq!(full.pause_with(2, 0.0), Duration::ZERO);
        assert_eq!(full.pause_with(2, 1.0), 400 * MS);
        let half = Backoff {
            jitter: Jitter::Half,
            ..full
        };
        assert_eq!(half.pause_with(2, 0.0), 200 * MS);
        assert_eq!(half.pause_with(2, 1.0), 400 * MS);
        let over = Backoff {
            jitter: Jitter::Over(0.5),
            ..full
        };
        assert_eq!(over.pause_with(2, 0.0), 400 * MS);
        assert_eq!(over.pause_with(2, 1.0), 600 * MS);
        // A draw out of range is clamped; one that is not a number counts as none.
        assert_eq!(over.pause_with(2, 7.0), 600 * MS);
        assert_eq!(over.pause_with(2, f64::NAN), 400 * MS);
        for retry in 0..40 {
            let p = over.pause(retry);
            assert!(p >= over.step(retry) && p <= over.step(retry).mul_f64(1.5));
        }
    }
}
