//! Running OpenCode: the process, its loopback HTTP API and event stream, and supervision.

pub mod child;
pub mod http;
pub mod packages;
pub mod sse;
pub mod supervisor;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use supervisor::{PromptRequest, RestartPolicy, Supervisor, SupervisorConfig, SupervisorState};

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
}
