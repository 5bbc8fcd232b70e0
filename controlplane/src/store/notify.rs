//! PostgreSQL `NOTIFY`/`LISTEN`, for hints between control-plane replicas that share the
//! database: wake-ups of session viewers ([`WAKE_CHANNEL`]) and token revocations
//! (`auth::token_cache`). SQLite has one process per data file, so it has no channels.
//!
//! A notification is a hint that something changed, never data: receivers read what changed
//! from the tables, and a lost notification costs latency (the next poll), not correctness.

use super::{Backend, DbContext, Result, Store};
use crate::backoff::{Backoff, Jitter};
use sqlx::postgres::{PgListener, PgNotification};
use std::time::Duration;

/// The channel every replica listens on.
pub const WAKE_CHANNEL: &str = "kortix_wake";
/// PostgreSQL refuses payloads of 8000 bytes or more.
pub const MAX_PAYLOAD: usize = 7_999;
/// Payloads sent per statement.
const BATCH: usize = 500;

/// What a listener hears.
#[derive(Debug)]
pub enum Heard {
    /// One notification's payload.
    Wake(String),
    /// The connection was lost and is re-established: notifications sent meanwhile are gone.
    Gap,
}

/// A dedicated connection listening on one channel.
pub struct WakeListener {
    inner: PgListener,
    channel: &'static str,
}

impl WakeListener {
    /// The next notification, or [`Heard::Gap`] after a lost connection. An error means the
    /// database cannot be reached now; calling again retries.
    pub async fn next(&mut self) -> Result<Heard> {
        match self.inner.try_recv().await {
            Ok(Some(n)) => Ok(Heard::Wake(payload(n))),
            Ok(None) => Ok(Heard::Gap),
            Err(e) => Err(e).ctx(|| format!("listening on {}", self.channel)),
        }
    }
}

fn payload(n: PgNotification) -> String {
    n.payload().to_string()
}

impl Store {
    /// Whether this store can carry wake-ups between processes.
    pub fn has_wake_channel(&self) -> bool {
        matches!(self.backend(), Backend::Postgres(_))
    }

    /// Sends each payload as one notification on [`WAKE_CHANNEL`]; payloads over
    /// [`MAX_PAYLOAD`] bytes are dropped. Does nothing on SQLite.
    pub async fn notify_wakeups(&self, payloads: &[String]) -> Result<()> {
        self.notify_on(WAKE_CHANNEL, payloads).await
    }

    /// Sends each payload as one notification on `channel`; payloads over [`MAX_PAYLOAD`]
    /// bytes are dropped. Does nothing on SQLite.
    pub async fn notify_on(&self, channel: &str, payloads: &[String]) -> Result<()> {
        let Backend::Postgres(pool) = self.backend() else {
            return Ok(());
        };
        let payloads: Vec<&str> = payloads
            .iter()
            .map(String::as_str)
            .filter(|p| p.len() <= MAX_PAYLOAD)
            .collect();
        for chunk in payloads.chunks(BATCH) {
            sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
                .bind(channel)
                .bind(chunk)
                .execute(pool)
                .await
                .ctx(|| format!("notifying {} payloads on {channel}", chunk.len()))?;
        }
        Ok(())
    }

    /// A listener on `channel`; `None` on SQLite.
    pub async fn listen_on(&self, channel: &'static str) -> Result<Option<WakeListener>> {
        let Backend::Postgres(pool) = self.backend() else {
            return Ok(None);
        };
        let mut inner = PgListener::connect_with(pool)
            .await
            .ctx(|| "connecting a listener".to_string())?;
        inner
            .listen(channel)
            .await
            .ctx(|| format!("LISTEN {channel}"))?;
        Ok(Some(WakeListener { inner, channel }))
    }

    /// Follows `channel` for as long as the caller runs it: each notification to `heard` as
    /// [`Heard::Wake`], and [`Heard::Gap`] whenever notifications may have been missed — when
    /// the listener is (re)established and when its connection is lost. Reconnects with
    /// backoff and jitter. Returns at once on SQLite.
    pub async fn follow_channel(&self, channel: &'static str, mut heard: impl FnMut(Heard)) {
        let mut failures = 0u32;
        loop {
            let mut listener = match self.listen_on(channel).await {
                Ok(Some(l)) => l,
                Ok(None) => return,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, channel, "listening for other replicas; retrying");
                    tokio::time::sleep(retry_delay(failures)).await;
                    continue;
                }
            };
            heard(Heard::Gap);
            loop {
                match listener.next().await {
                    Ok(h) => {
                        failures = 0;
                        heard(h);
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, channel, "lost a listener; reconnecting");
                        heard(Heard::Gap);
                        tokio::time::sleep(retry_delay(failures)).await;
                        break;
                    }
                }
            }
        }
    }
}

/// Doubling from 200 ms to 10 s, plus up to half again.
fn retry_delay(failures: u32) -> Duration {
    const RETRY: Backoff = Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(10),
        Jitter::Over(0.5),
    );
    RETRY.pause(failures)
}

#[cfg(test)]
mod tests {
    #[test]
    fn retries_back_off_within_bounds() {
        assert!(super::retry_delay(1) >= std::time::Duration::from_millis(400));
        assert!(super::retry_delay(50) <= std::time::Duration::from_secs(15));
    }
}
