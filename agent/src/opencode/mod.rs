//! Running OpenCode: the process, its loopback HTTP API and event stream, and supervision.

pub mod child;
pub mod health;
pub mod http;
pub mod packages;
pub mod sse;
pub mod supervisor;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use supervisor::{
    Export, Import, PromptRequest, RestartPolicy, Supervisor, SupervisorConfig, SupervisorState,
};

/// What heartbeats report about OpenCode, updated lock-free by the output pumps, the event
/// stream and the supervisor.
#[derive(Debug)]
pub struct Liveness {
    start: Instant,
    last_activity_ms: AtomicU64,
    pub alive: AtomicBool,
    pub busy: AtomicBool,
    pub restarts: AtomicU32,
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

impl Liveness {
    pub fn new() -> Self {
        Liveness {
            start: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            alive: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            restarts: AtomicU32::new(0),
        }
    }

    /// OpenCode did something (event, output, prompt).
    pub fn touch(&self) {
        self.last_activity_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn idle(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_activity_ms.load(Ordering::Relaxed)))
    }

    /// How long the session has had nothing to do, as heartbeats report it for idle
    /// hibernation: zero while a prompt is in flight — a tool that runs for minutes without
    /// a line of output (a build, a test suite, a `sleep`) is work, not idleness.
    pub fn quiet(&self) -> Duration {
        if self.busy.load(Ordering::Relaxed) {
            Duration::ZERO
        } else {
            self.idle()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_session_is_never_quiet() {
        // Last active when it started, five seconds ago.
        let liveness = Liveness {
            start: Instant::now() - Duration::from_secs(5),
            ..Liveness::new()
        };
        assert!(liveness.quiet() >= Duration::from_secs(5));
        liveness.busy.store(true, Ordering::Relaxed);
        assert_eq!(liveness.quiet(), Duration::ZERO);
        assert!(
            liveness.idle() >= Duration::from_secs(5),
            "idle still counts output"
        );
        liveness.busy.store(false, Ordering::Relaxed);
        assert!(liveness.quiet() >= Duration::from_secs(5));
    }
}
