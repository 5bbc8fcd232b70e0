//! Asking OpenCode's health endpoint whether it serves yet, without letting one lost request
//! hold up the answer.
//!
//! OpenCode binds its port a few hundred milliseconds before it serves requests, and a
//! request that arrives in between is accepted but never answered: measured with 1.18.33, a
//! check 300 ms before "server listening" timed out after its 300 ms, the next one got its
//! answer at once, and a client with a 30 s timeout waited the full 30 s. Checked one after
//! the other, that costs up to a whole check timeout of a session's start. So checks run side
//! by side: a new one starts on every tick and when OpenCode says it listens, and the first
//! that says healthy wins, however many earlier ones still hang.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use http::Method;
use serde_json::Value;

use super::http::Client;

/// How long one check may take; one that hangs is left to time out beside the others.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// Checks in flight at once: with the callers' ticks, more than this only means OpenCode is
/// slow to answer at all, and more checks would not make it faster.
pub const MAX_IN_FLIGHT: usize = 8;

/// Whether OpenCode's health endpoint says it is healthy, within `timeout`.
pub async fn healthy(client: &Client, timeout: Duration) -> bool {
    client
        .call(Method::GET, "/global/health", None, timeout)
        .await
        .is_ok_and(|body| {
            serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["healthy"] == Value::Bool(true))
        })
}

/// Health checks running side by side against one server.
pub struct HealthChecks<'a> {
    client: &'a Client,
    timeout: Duration,
    in_flight: FuturesUnordered<BoxFuture<'a, bool>>,
}

impl<'a> HealthChecks<'a> {
    pub fn new(client: &'a Client) -> Self {
        Self::with_timeout(client, CHECK_TIMEOUT)
    }

    pub fn with_timeout(client: &'a Client, timeout: Duration) -> Self {
        Self {
            client,
            timeout,
            in_flight: FuturesUnordered::new(),
        }
    }

    /// Starts one more check, unless [`MAX_IN_FLIGHT`] are running.
    pub fn start(&mut self) {
        if self.in_flight.len() < MAX_IN_FLIGHT {
            self.in_flight
                .push(Box::pin(healthy(self.client, self.timeout)));
        }
    }

    /// Checks still waiting for their answer.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Resolves when a check says healthy; pending while none is running or none has yet
    /// (so it can sit in a `select!` beside a timer that starts the next).
    pub async fn any_healthy(&mut self) {
        loop {
            match self.in_flight.next().await {
                Some(true) => return,
                Some(false) => {}
                None => std::future::pending::<()>().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that, like OpenCode before it serves, accepts the first connection and never
    /// answers it, then answers every later one.
    async fn server_that_loses_its_first_request() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (_lost, _) = listener.accept().await.unwrap();
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let body = r#"{"healthy":true,"version":"test"}"#;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(body.as_bytes()).await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn a_request_that_is_never_answered_does_not_hold_up_the_next() {
        let port = server_that_loses_its_first_request().await;
        let client = Client::new(port);
        // Long enough that the lost check cannot time out during the test.
        let mut checks = HealthChecks::with_timeout(&client, Duration::from_secs(600));
        checks.start();
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.tick().await;
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                tokio::select! {
                    _ = checks.any_healthy() => return,
                    _ = tick.tick() => checks.start(),
                }
            }
        })
        .await
        .expect("a later check got the answer");
        assert!(
            checks.in_flight() >= 1,
            "the lost check is still waiting: the answer did not wait for it"
        );
    }

    #[tokio::test]
    async fn no_more_than_the_cap_wait_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = Client::new(listener.local_addr().unwrap().port());
        let mut checks = HealthChecks::with_timeout(&client, Duration::from_secs(600));
        for _ in 0..MAX_IN_FLIGHT * 2 {
            checks.start();
        }
        assert_eq!(checks.in_flight(), MAX_IN_FLIGHT);
    }
}
