//! Errors are counted by kind and reported, never fatal to the run (and never a panic).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Distinct error kinds kept; further kinds are counted under `other`.
const MAX_KINDS: usize = 64;
/// Length of the example message kept per kind.
const MAX_EXAMPLE: usize = 300;

/// One failed step: where (`stage`), a short bounded kind (gRPC code, `timeout`, ...) and the
/// full message of this occurrence.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{stage}: {kind}: {detail}")]
pub struct BenchError {
    pub stage: &'static str,
    pub kind: String,
    pub detail: String,
}

impl BenchError {
    pub fn new(stage: &'static str, kind: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            stage,
            kind: kind.into(),
            detail: detail.into(),
        }
    }

    pub fn from_status(stage: &'static str, status: &tonic::Status) -> Self {
        Self::new(stage, format!("{:?}", status.code()), status.message())
    }

    pub fn from_sim(stage: &'static str, e: &crate::sim_agent::SimError) -> Self {
        use crate::sim_agent::SimError;
        match e {
            SimError::Status(s) => Self::from_status(stage, s),
            SimError::Transport(t) => Self::new(stage, "transport", format!("{t:?}")),
            SimError::Key(k) => Self::new(stage, "key", k.to_string()),
            SimError::Protocol(p) => Self::new(stage, "protocol", p.clone()),
        }
    }

    pub fn timeout(stage: &'static str, after: Duration) -> Self {
        Self::new(stage, "timeout", format!("no answer within {after:?}"))
    }
}

/// Runs `fut` with a deadline; a late answer is a `timeout` error of `stage`.
pub async fn timed<T, E>(
    stage: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
    convert: impl FnOnce(&'static str, &E) -> BenchError,
) -> Result<T, BenchError> {
    match tokio::time::timeout(limit, fut).await {
        Err(_) => Err(BenchError::timeout(stage, limit)),
        Ok(Err(e)) => Err(convert(stage, &e)),
        Ok(Ok(v)) => Ok(v),
    }
}

#[derive(Debug, Clone, Default)]
struct Kind {
    count: u64,
    example: String,
}

/// Error counts by `stage: kind`, shared by every task of a run.
#[derive(Clone, Default)]
pub struct ErrorLog {
    inner: Arc<Mutex<BTreeMap<String, Kind>>>,
}

impl ErrorLog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&self, e: &BenchError) {
        let Ok(mut map) = self.inner.lock() else {
            return;
        };
        let mut key = format!("{}: {}", e.stage, e.kind);
        if !map.contains_key(&key) && map.len() >= MAX_KINDS {
            key = "other".to_string();
        }
        let entry = map.entry(key).or_default();
        entry.count += 1;
        if entry.example.is_empty() {
            entry.example = e.detail.chars().take(MAX_EXAMPLE).collect();
        }
    }

    pub fn total(&self) -> u64 {
        self.inner
            .lock()
            .map(|m| m.values().map(|k| k.count).sum())
            .unwrap_or(0)
    }

    /// `(stage: kind, count, first message)` sorted by count, largest first.
    pub fn snapshot(&self) -> Vec<(String, u64, String)> {
        let mut v: Vec<_> = self
            .inner
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.count, v.example.clone()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// One line per kind, for the report.
    pub fn summary(&self) -> String {
        let snap = self.snapshot();
        if snap.is_empty() {
            return "none".to_string();
        }
        snap.iter()
            .map(|(k, n, _)| format!("{k} ×{n}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_and_caps_the_number_of_kinds() {
        let log = ErrorLog::new();
        log.record(&BenchError::new("enroll", "Unavailable", "first"));
        log.record(&BenchError::new("enroll", "Unavailable", "second"));
        log.record(&BenchError::timeout("connect", Duration::from_secs(1)));
        let snap = log.snapshot();
        assert_eq!(snap[0], ("enroll: Unavailable".into(), 2, "first".into()));
        assert_eq!(snap[1].0, "connect: timeout");
        for i in 0..200 {
            log.record(&BenchError::new("x", format!("k{i}"), ""));
        }
        assert!(log.snapshot().len() <= MAX_KINDS + 1);
        assert_eq!(log.total(), 203);
        assert!(log.summary().contains("enroll: Unavailable ×2"));
    }

    #[tokio::test]
    async fn timed_turns_slowness_into_an_error() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, String>(())
        };
        let e = timed("slow", Duration::from_millis(10), slow, |s, e: &String| {
            BenchError::new(s, "x", e.clone())
        })
        .await
        .unwrap_err();
        assert_eq!(e.kind, "timeout");
    }
}
