//! A viewer following one session (`SessionService.Attach`, follow) on its own connection:
//! counts records delivered inside the window, their lag (agent send → viewer receive, on
//! the shared process clock), and any gap or duplicate in the seq order.

use crate::api::Api;
use crate::clock::{Window, now_us};
use crate::errors::{BenchError, ErrorLog};
use crate::stats::Latency;
use crate::streamer::sent_us;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A followed stream silent this long is counted as an error and ended.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Default)]
pub struct ViewerStats {
    pub delivered_in_window: u64,
    pub delivered_total: u64,
    pub lag: Latency,
    /// Records whose seq skipped ahead of the next expected one.
    pub gaps: u64,
    /// Records at or below a seq already received.
    pub duplicates: u64,
    /// Whether the stream ended (error or end) before the run did.
    pub ended_early: bool,
}

pub async fn run(
    url: String,
    token: String,
    session_id: String,
    from_seq: u64,
    window: Arc<Window>,
    errors: ErrorLog,
    mut stop: watch::Receiver<bool>,
) -> ViewerStats {
    let mut st = ViewerStats::default();
    let mut stream = match async {
        let api = Api::connect(&url, &token).await?;
        api.attach(&session_id, from_seq).await
    }
    .await
    {
        Ok(s) => s,
        Err(e) => {
            errors.record(&e);
            st.ended_early = true;
            return st;
        }
    };
    let mut expected = from_seq.max(1);
    let result: Result<(), BenchError> = loop {
        tokio::select! {
            _ = stop.changed() => break Ok(()),
            msg = tokio::time::timeout(IDLE_TIMEOUT, stream.message()) => match msg {
                Err(_) => break Err(BenchError::timeout("viewer", IDLE_TIMEOUT)),
                Ok(Err(status)) => break Err(BenchError::from_status("viewer", &status)),
                Ok(Ok(None)) => break Err(BenchError::new("viewer", "ended", "attach stream ended")),
                Ok(Ok(Some(record))) => {
                    let now = now_us();
                    if record.seq > expected {
                        st.gaps += 1;
                    } else if record.seq < expected {
                        st.duplicates += 1;
                        continue;
                    }
                    expected = record.seq + 1;
                    st.delivered_total += 1;
                    if window.contains(now) {
                        st.delivered_in_window += 1;
                        if let Some(sent) = sent_us(&record) {
                            st.lag.record_us(now.saturating_sub(sent));
                        }
                    }
                }
            },
        }
    };
    if let Err(e) = result {
        st.ended_early = true;
        errors.record(&e);
    }
    st
}
