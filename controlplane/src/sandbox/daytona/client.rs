//! Daytona's REST API: `Authorization: Bearer <key>` (and `X-Daytona-Organization-ID` when
//! configured) on every call, a timeout on every call, responses read up to a cap, and
//! bounded retries with exponential backoff and jitter on 429, 5xx and transport errors.
//! Errors name Daytona, the call and the status with Daytona's message; the key is never in
//! one.

use crate::backoff::{Backoff, Jitter};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::api::ErrorBody;

/// How long one API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest API response read (a page of 100 sandboxes is far below it).
pub(crate) const MAX_RESPONSE: usize = 4 << 20;
/// Longest error message kept from a response.
const MAX_MESSAGE: usize = 2048;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Daytona answered with an error status.
    #[error("Daytona API {call}: {status} {error}: {message}")]
    Status {
        call: String,
        status: u16,
        error: String,
        message: String,
    },
    /// No usable answer (connection, timeout, an unreadable or oversized body).
    #[error("Daytona API {call}: {reason}")]
    Transport { call: String, reason: String },
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Transport { .. } => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }
}

/// Bounded retries with exponential backoff and jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            base: Duration::from_millis(250),
            max: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// Whether an answer with `status` (`None`: no answer) is worth another attempt.
    pub fn retryable(status: Option<u16>) -> bool {
        match status {
            None => true,
            Some(s) => s == 429 || (500..=599).contains(&s),
        }
    }

    /// The pause before retry number `retry` (0 for the first): the exponential step
    /// `base * 2^retry` capped at `max`, half of it fixed and half drawn at random
    /// (`jitter` in 0..=1), so callers that failed together spread out. A server's
    /// `Retry-After` is honoured up to `max`.
    pub fn delay(&self, retry: u32, jitter: f64, retry_after: Option<Duration>) -> Duration {
        let backoff = Backoff::new(self.base, self.max, Jitter::Half).pause_with(retry, jitter);
        match retry_after {
            Some(after) => backoff.max(after.min(self.max)),
            None => backoff,
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts run out.
    pub async fn run<T, F, Fut>(&self, attempt: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, (ApiError, Option<Duration>)>>,
    {
        self.run_if(Self::retryable, attempt).await
    }

    /// [`RetryPolicy::run`], retrying only the failures `retryable` accepts (a call that
    /// must not run twice retries only what was refused before it ran).
    pub async fn run_if<T, F, Fut>(
        &self,
        retryable: fn(Option<u16>) -> bool,
        mut attempt: F,
    ) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, (ApiError, Option<Duration>)>>,
    {
        let mut retry = 0;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err((e, after)) => {
                    if retry + 1 >= self.attempts || !retryable(e.status()) {
                        return Err(e);
                    }
                    let pause = self.delay(retry, rand::random::<f64>(), after);
                    tracing::debug!(error = %e, ?pause, "Daytona API call failed; retrying");
                    tokio::time::sleep(pause).await;
                    retry += 1;
                }
            }
        }
    }
}

/// The API key; shown nowhere.
#[derive(Clone)]
struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A Daytona API endpoint. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DaytonaClient {
    http: reqwest::Client,
    api_url: String,
    key: ApiKey,
    organization: Option<String>,
    retry: RetryPolicy,
}

impl DaytonaClient {
    pub fn new(
        api_url: &str,
        api_key: String,
        organization: Option<String>,
    ) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("kortix-controlplane/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Transport {
                call: "client".into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            http,
            api_url: api_url.trim_end_matches('/').to_owned(),
            key: ApiKey(api_key),
            organization: organization.filter(|o| !o.is_empty()),
            retry: RetryPolicy::default(),
        })
    }

    /// The same client with another retry policy (tests).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// The raw HTTP client (object storage uploads go through it too).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        self.request_url(method, &format!("{}{path}", self.api_url), query)
    }

    /// A request to `url`, which may be outside the API (the toolbox proxy), with the same
    /// credentials.
    pub(crate) fn request_url(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(&self.key.0)
            .header("X-Daytona-Source", "kortix");
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(org) = &self.organization {
            req = req.header("X-Daytona-Organization-ID", org);
        }
        req
    }

    /// One call, retried as the policy says; the body of a success, up to the cap.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> Result<Bytes, ApiError> {
        let call = format!("{method} {path}");
        let body = body.map(|b| Bytes::from(b.to_string()));
        self.retry
            .run(|| {
                let mut req = self
                    .request(method.clone(), path, query)
                    .timeout(CALL_TIMEOUT);
                if let Some(body) = &body {
                    req = req
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone());
                }
                let call = call.clone();
                async move {
                    let resp = req.send().await.map_err(|e| (transport(&call, &e), None))?;
                    let status = resp.status();
                    let after = retry_after(&resp);
                    let bytes = read_capped(resp, MAX_RESPONSE).await.map_err(|reason| {
                        (
                            ApiError::Transport {
                                call: call.clone(),
                                reason,
                            },
                            None,
                        )
                    })?;
                    if status.is_success() {
                        Ok(bytes)
                    } else {
                        Err((status_error(&call, status, &bytes), after))
                    }
                }
            })
            .await
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ApiError> {
        let bytes = self.call(Method::GET, path, query, None).await?;
        decode(&format!("GET {path}"), &bytes)
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ApiError> {
        let body = serde_json::to_value(body).map_err(|e| ApiError::Transport {
            call: format!("POST {path}"),
            reason: format!("encoding the request: {e}"),
        })?;
        let bytes = self.call(Method::POST, path, &[], Some(body)).await?;
        decode(&format!("POST {path}"), &bytes)
    }

    pub async fn delete(&self, path: &str) -> Result<(), ApiError> {
        self.call(Method::DELETE, path, &[], None).await.map(drop)
    }

    /// Follows a text stream (build logs) line by line until it ends or `limit` bytes have
    /// come; not retried, and bounded only by whoever drops the future.
    pub async fn follow_lines(
        &self,
        path: &str,
        query: &[(&str, &str)],
        limit: usize,
        mut line: impl FnMut(&str),
    ) -> Result<(), ApiError> {
        let call = format!("GET {path}");
        let resp = self
            .request(Method::GET, path, query)
            .send()
            .await
            .map_err(|e| transport(&call, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = read_capped(resp, MAX_RESPONSE).await.unwrap_or_default();
            return Err(status_error(&call, status, &bytes));
        }
        let mut stream = resp.bytes_stream();
        let (mut partial, mut seen) = (Vec::new(), 0usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| transport(&call, &e))?;
            seen += chunk.len();
            partial.extend_from_slice(&chunk);
            while let Some(end) = partial.iter().position(|b| *b == b'\n') {
                let text: Vec<u8> = partial.drain(..=end).collect();
                let text = String::from_utf8_lossy(&text);
                let text = text.trim_end();
                if !text.is_empty() {
                    line(text);
                }
            }
            if seen > limit {
                break;
            }
        }
        let rest = String::from_utf8_lossy(&partial);
        if !rest.trim().is_empty() {
            line(rest.trim_end());
        }
        Ok(())
    }
}

pub(crate) fn transport(call: &str, e: &reqwest::Error) -> ApiError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's message names the URL (never the key, which is a header).
    ApiError::Transport {
        call: call.to_owned(),
        reason: format!("{kind}: {e}"),
    }
}

pub(crate) fn status_error(call: &str, status: StatusCode, body: &[u8]) -> ApiError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let error = parsed
        .as_ref()
        .and_then(|b| b.error.clone())
        .or_else(|| status.canonical_reason().map(str::to_owned))
        .unwrap_or_default();
    let mut message = parsed.map_or_else(
        || String::from_utf8_lossy(body).trim().to_owned(),
        |b| b.message(),
    );
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    ApiError::Status {
        call: call.to_owned(),
        status: status.as_u16(),
        error,
        message,
    }
}

pub(crate) fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Reads a body, refusing one larger than `limit`.
pub(crate) async fn read_capped(resp: reqwest::Response, limit: usize) -> Result<Bytes, String> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!("the response is larger than {limit} bytes"));
    }
    let mut stream = resp.bytes_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading the response: {e}"))?;
        if out.len() + chunk.len() > limit {
            return Err(format!("the response is larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

pub(crate) fn decode<T: DeserializeOwned>(call: &str, bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Transport {
        call: call.to_owned(),
        reason: format!("an answer not in Daytona's shape: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_only_what_may_succeed_later() {
        for status in [None, Some(429), Some(500), Some(502), Some(503), Some(504)] {
            assert!(RetryPolicy::retryable(status), "{status:?}");
        }
        for status in [Some(400), Some(401), Some(403), Some(404), Some(409)] {
            assert!(!RetryPolicy::retryable(status), "{status:?}");
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(p.delay(0, 0.0, None), Duration::from_millis(50));
        assert_eq!(p.delay(0, 1.0, None), Duration::from_millis(100));
        assert_eq!(p.delay(2, 0.0, None), Duration::from_millis(200));
        assert_eq!(p.delay(2, 1.0, None), Duration::from_millis(400));
        // Capped at max, however many retries.
        assert_eq!(p.delay(10, 1.0, None), Duration::from_secs(1));
        assert_eq!(p.delay(40, 0.0, None), Duration::from_millis(500));
        // Retry-After is honoured, up to max.
        assert_eq!(
            p.delay(0, 0.0, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        assert_eq!(
            p.delay(0, 0.0, Some(Duration::from_secs(60))),
            Duration::from_secs(1)
        );
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let p = RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let mut calls = 0;
        let out: Result<(), ApiError> = p
            .run(|| {
                calls += 1;
                async {
                    Err((
                        ApiError::Status {
                            call: "GET /x".into(),
                            status: 503,
                            error: "Service Unavailable".into(),
                            message: String::new(),
                        },
                        None,
                    ))
                }
            })
            .await;
        assert_eq!(out.unwrap_err().status(), Some(503));
        assert_eq!(calls, 3);
        // A refusal is not retried.
        let mut calls = 0;
        let _ = p
            .run(|| {
                calls += 1;
                async {
                    Err::<(), _>((
                        ApiError::Status {
                            call: "GET /x".into(),
                            status: 401,
                            error: "Unauthorized".into(),
                            message: String::new(),
                        },
                        None,
                    ))
                }
            })
            .await;
        assert_eq!(calls, 1);
    }

    #[test]
    fn errors_name_daytona_and_the_status_never_the_key() {
        let e = status_error(
            "GET /sandbox",
            StatusCode::UNAUTHORIZED,
            br#"{"path":"/api/sandbox","timestamp":"t","statusCode":401,"error":"Unauthorized","message":"Invalid API key"}"#,
        );
        assert_eq!(
            e.to_string(),
            "Daytona API GET /sandbox: 401 Unauthorized: Invalid API key"
        );
        let client = DaytonaClient::new("http://x/api/", "secret-key".into(), None).unwrap();
        assert!(!format!("{client:?}").contains("secret-key"));
        assert_eq!(client.api_url(), "http://x/api");
    }
}
