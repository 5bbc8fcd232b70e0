//! The Slack Web API, outbound: `POST <api-url>/<method>` with the bot token as
//! `Authorization: Bearer` and a JSON body; Slack answers 200 `{"ok":true,…}` or
//! `{"ok":false,"error":"…"}`, and 429 with `Retry-After` (seconds) when rate limited.

use std::time::Duration;

use serde_json::{Value, json};

use crate::secrets::SecretValue;

/// Slack's own Web API.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";
/// Every call gives up after this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A Retry-After larger than this is capped (Slack's are seconds to a minute).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Largest answer read from Slack.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// Slack cuts `text` at 40 000 characters; stay well inside.
pub const MAX_TEXT_CHARS: usize = 3_500;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("Slack {method}: rate limited; retry after {}s", retry_after.as_secs())]
    RateLimited {
        method: String,
        retry_after: Duration,
    },
    #[error("Slack {method} refused the call: {error}")]
    Refused { method: String, error: String },
    #[error("Slack {method}: HTTP {status}")]
    Http { method: String, status: u16 },
    #[error("Slack {method}: {reason}")]
    Transport { method: String, reason: String },
}

impl WebError {
    /// Worth trying again later (rate limits, Slack's or the network's trouble), as opposed
    /// to a refusal that will not change (`channel_not_found`, `invalid_auth`).
    pub fn is_transient(&self) -> bool {
        match self {
            WebError::RateLimited { .. } | WebError::Transport { .. } => true,
            WebError::Http { status, .. } => *status >= 500,
            WebError::Refused { error, .. } => {
                matches!(
                    error.as_str(),
                    "ratelimited" | "internal_error" | "fatal_error" | "service_unavailable"
                )
            }
        }
    }
}

/// A client for one Web API base URL. Cheap to clone.
#[derive(Clone)]
pub struct WebApi {
    base: String,
    http: reqwest::Client,
}

impl WebApi {
    pub fn new(base_url: &str) -> Result<Self, WebError> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| WebError::Transport {
                method: "client".into(),
                reason: e.to_string(),
            })?;
        Ok(WebApi {
            base: base_url.trim_end_matches('/').to_string(),
            http,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Calls `method` with a JSON body; the answer's JSON when Slack says `ok`.
    pub async fn call(
        &self,
        token: &SecretValue,
        method: &str,
        body: &Value,
    ) -> Result<Value, WebError> {
        let transport = |reason: String| WebError::Transport {
            method: method.to_string(),
            reason,
        };
        let response = self
            .http
            .post(format!("{}/{method}", self.base))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            )
            .header(
                http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| transport(e.without_url().to_string()))?;
        let status = response.status();
        if status == http::StatusCode::TOO_MANY_REQUESTS {
            return Err(WebError::RateLimited {
                method: method.to_string(),
                retry_after: retry_after(response.headers()),
            });
        }
        if !status.is_success() {
            return Err(WebError::Http {
                method: method.to_string(),
                status: status.as_u16(),
            });
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(transport(format!("answer over {MAX_ANSWER_BYTES} bytes")));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport(e.without_url().to_string()))?;
        if bytes.len() > MAX_ANSWER_BYTES {
            return Err(transport(format!("answer over {MAX_ANSWER_BYTES} bytes")));
        }
        let answer: Value = serde_json::from_slice(&bytes)
            .map_err(|e| transport(format!("answer is not JSON: {e}")))?;
        if answer["ok"].as_bool() == Some(true) {
            Ok(answer)
        } else {
            Err(WebError::Refused {
                method: method.to_string(),
                error: answer["error"]
                    .as_str()
                    .unwrap_or("unknown_error")
                    .to_string(),
            })
        }
    }
}

/// `Retry-After` in seconds, capped; one second when absent or unreadable.
fn retry_after(headers: &http::HeaderMap) -> Duration {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_secs(1), MAX_RETRY_AFTER)
}

/// The JSON bodies of the methods used, in the shapes Slack documents.
pub mod body {
    use super::*;

    /// `chat.postMessage`, in a thread when `thread_ts` is given.
    pub fn post_message(channel: &str, thread_ts: Option<&str>, text: &str) -> Value {
        let mut body = json!({ "channel": channel, "text": cut(text) });
        if let Some(ts) = thread_ts {
            body["thread_ts"] = json!(ts);
        }
        body
    }

    /// `chat.update` of message `ts`.
    pub fn update(channel: &str, ts: &str, text: &str) -> Value {
        json!({ "channel": channel, "ts": ts, "text": cut(text) })
    }

    /// `reactions.add` / `reactions.remove`: emoji `name` (without colons) on message `ts`.
    pub fn reaction(channel: &str, ts: &str, name: &str) -> Value {
        json!({ "channel": channel, "timestamp": ts, "name": name })
    }

    /// `chat.postEphemeral`: visible to `user` only.
    pub fn ephemeral(channel: &str, user: &str, thread_ts: Option<&str>, text: &str) -> Value {
        let mut body = json!({ "channel": channel, "user": user, "text": cut(text) });
        if let Some(ts) = thread_ts {
            body["thread_ts"] = json!(ts);
        }
        body
    }

    fn cut(text: &str) -> String {
        kortix_timeline::cut_chars(text, MAX_TEXT_CHARS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_and_bounded() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), Duration::from_secs(1));
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Duration::from_secs(7));
        h.insert(http::header::RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(retry_after(&h), MAX_RETRY_AFTER);
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), Duration::from_secs(1));
    }

    #[test]
    fn bodies_have_slacks_shapes() {
        assert_eq!(
            body::post_message("C1", Some("1.2"), "hi"),
            json!({"channel": "C1", "thread_ts": "1.2", "text": "hi"})
        );
        assert_eq!(
            body::reaction("C1", "1.2", "white_check_mark"),
            json!({"channel": "C1", "timestamp": "1.2", "name": "white_check_mark"})
        );
        let long = "x".repeat(MAX_TEXT_CHARS + 10);
        let cut = body::update("C1", "1.2", &long);
        assert!(cut["text"].as_str().unwrap().chars().count() <= MAX_TEXT_CHARS + 1);
    }

    #[test]
    fn transient_errors() {
        let refused = |e: &str| WebError::Refused {
            method: "m".into(),
            error: e.into(),
        };
        assert!(!refused("channel_not_found").is_transient());
        assert!(refused("internal_error").is_transient());
        assert!(
            WebError::Http {
                method: "m".into(),
                status: 503
            }
            .is_transient()
        );
    }
}
