//! How a session ends on the agent's side: why, by when, and what it reports.

use std::time::Duration;

use kortix_proto::v1::{SessionStatus, Stop};
use tokio::time::Instant;

use crate::stop::Final;

/// Shutdown budget after SIGTERM (container runtimes usually allow 10 s).
pub(super) const SIGNAL_GRACE: Duration = Duration::from_secs(9);
pub(super) const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(30);

/// How the daemon ended (it exits 0 for every clean end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The control plane sent `Stop`.
    Stopped { hibernate: bool, reason: String },
    /// SIGTERM or SIGINT.
    Signalled(String),
    /// The session failed (OpenCode crash loop, clone failure, ...).
    Failed(String),
    /// The control plane refuses this agent for good (its session ended while the agent was
    /// cut off, its certificate was revoked or expired): it wound down on its own.
    Refused(String),
}

/// Why the daemon winds down, and by when it must be done.
pub(super) struct End {
    pub reason: ExitReason,
    pub deadline: Instant,
}

impl End {
    pub fn stopped(stop: &Stop) -> Self {
        let grace = Some(stop.grace_ms)
            .filter(|ms| *ms > 0)
            .map_or(DEFAULT_STOP_GRACE, Duration::from_millis);
        End {
            reason: ExitReason::Stopped {
                hibernate: stop.hibernate,
                reason: stop.reason.clone(),
            },
            // Leave a margin before the sandbox is killed.
            deadline: Instant::now() + grace.mul_f32(0.9),
        }
    }

    pub fn signalled(signal: &str) -> Self {
        End {
            reason: ExitReason::Signalled(signal.to_owned()),
            deadline: Instant::now() + SIGNAL_GRACE,
        }
    }

    pub fn failed(reason: impl Into<String>) -> Self {
        End {
            reason: ExitReason::Failed(reason.into()),
            deadline: Instant::now() + DEFAULT_STOP_GRACE.mul_f32(0.9),
        }
    }

    /// Nobody is listening any more: only what can be done locally (and a push, which may
    /// still be let through) is worth the wait.
    pub fn refused(reason: String) -> Self {
        End {
            reason: ExitReason::Refused(reason),
            deadline: Instant::now() + SIGNAL_GRACE,
        }
    }

    pub fn final_report(&self) -> Final {
        match &self.reason {
            ExitReason::Stopped {
                hibernate: true,
                reason,
            } => Final {
                status: SessionStatus::Hibernated,
                phase: "hibernated",
                reason: reason.clone(),
            },
            ExitReason::Stopped {
                hibernate: false,
                reason,
            } => Final {
                status: SessionStatus::Stopped,
                phase: "stopped",
                reason: reason.clone(),
            },
            ExitReason::Signalled(sig) => Final {
                status: SessionStatus::Stopped,
                phase: "stopped",
                reason: format!("agent received {sig}"),
            },
            ExitReason::Failed(reason) => Final {
                status: SessionStatus::Failed,
                phase: "failed",
                reason: reason.clone(),
            },
            ExitReason::Refused(reason) => Final {
                status: SessionStatus::Failed,
                phase: "refused",
                reason: format!("the control plane refused this agent: {reason}"),
            },
        }
    }
}
