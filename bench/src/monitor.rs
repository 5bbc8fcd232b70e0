//! Samples the control plane's memory every second (keeping the peak inside the measurement
//! window) and prints a progress line to stderr every few seconds.

use crate::clock::{Window, now_us};
use crate::procfs;
use crate::stats::fmt_mib;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const PRINT_EVERY: u32 = 5;

#[derive(Debug, Default, Clone, Copy)]
struct State {
    max_rss_in_window: u64,
    last: Option<procfs::Memory>,
}

pub struct Monitor {
    state: Arc<Mutex<State>>,
    handle: JoinHandle<()>,
}

impl Monitor {
    /// `progress` describes the load generator's side (agents up, records acked, ...).
    pub fn start(
        pid: Option<u32>,
        window: Arc<Window>,
        progress: impl Fn() -> String + Send + 'static,
    ) -> Monitor {
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            let mut n = 0u32;
            loop {
                tick.tick().await;
                let mem = pid.and_then(|p| procfs::memory(Some(p)));
                if let (Some(m), Ok(mut s)) = (mem, st.lock()) {
                    s.last = Some(m);
                    if window.contains(now_us()) {
                        s.max_rss_in_window = s.max_rss_in_window.max(m.rss);
                    }
                }
                n += 1;
                if n.is_multiple_of(PRINT_EVERY) {
                    let mem = mem
                        .map(|m| format!("server RSS {}", fmt_mib(m.rss)))
                        .unwrap_or_default();
                    eprintln!("  {} {mem}", progress());
                }
            }
        });
        Monitor { state, handle }
    }

    /// Highest VmRSS sampled while the window was open (0 without samples).
    pub fn max_rss_in_window(&self) -> u64 {
        self.state.lock().map(|s| s.max_rss_in_window).unwrap_or(0)
    }

    pub fn stop(self) {
        self.handle.abort();
    }
}
