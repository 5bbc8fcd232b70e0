//! A strict stand-in for the Slack Web API on 127.0.0.1:0, for tests that cannot reach Slack.
//!
//! It speaks the methods the control plane uses — `chat.postMessage`, `chat.update`,
//! `reactions.add`, `reactions.remove`, `chat.postEphemeral` — the way Slack documents them
//! (messages may carry Block Kit `blocks`: sections, and actions of buttons, checked against
//! Block Kit's documented limits):
//! `POST /api/<method>` with `Authorization: Bearer <bot token>` and a JSON body, answered
//! 200 `{"ok":true,…}` or `{"ok":false,"error":"…"}` (`invalid_auth`, `not_authed`,
//! `invalid_arguments` for a missing, mistyped or unknown field, `message_not_found`,
//! `already_reacted`, `no_reaction`), 404 `unknown_method`. [`SlackApi::rate_limit_next`]
//! makes the next calls answer 429 with `Retry-After`. Everything accepted is kept for the
//! test to inspect: messages by channel and ts (with their edits), reactions, ephemerals.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::{HarnessError, io_context};

/// A message as the stand-in holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    /// The latest text; `edits` counts `chat.update`s.
    pub text: String,
    pub edits: usize,
    /// The latest Block Kit blocks (`Null` when the message has none).
    pub blocks: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ephemeral {
    pub channel: String,
    pub user: String,
    pub thread_ts: Option<String>,
    pub text: String,
}

/// One call as received, accepted or not.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    /// The answer's `error`, or "ratelimited" for a 429; `None` when accepted.
    pub error: Option<String>,
    /// When it arrived.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Inner {
    messages: Vec<Message>,
    /// (channel, ts, name)
    reactions: BTreeSet<(String, String, String)>,
    ephemerals: Vec<Ephemeral>,
    calls: Vec<Call>,
    next_ts: u64,
    rate_limited: u32,
    retry_after_secs: u64,
}

struct Shared {
    token: String,
    inner: Mutex<Inner>,
}

/// The running stand-in; it stops when dropped.
pub struct SlackApi {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SlackApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SlackApi {
    /// Starts the stand-in accepting bot token `token`. Must be called on a Tokio runtime.
    pub async fn start(token: &str) -> Result<SlackApi, HarnessError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(io_context("binding the Slack stand-in"))?;
        let addr = listener
            .local_addr()
            .map_err(io_context("the Slack stand-in's address"))?;
        let shared = Arc::new(Shared {
            token: token.to_string(),
            inner: Mutex::new(Inner {
                next_ts: 1,
                ..Inner::default()
            }),
        });
        let app = Router::new()
            .route("/api/{method}", post(call))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(SlackApi {
            url: format!("http://{addr}/api"),
            shared,
            task,
        })
    }

    /// The base URL to pass as `--slack-api-url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next `calls` calls answer 429 with `Retry-After: retry_after_secs`.
    pub fn rate_limit_next(&self, calls: u32, retry_after_secs: u64) {
        let mut inner = self.shared.inner.lock().expect("stand-in lock");
        inner.rate_limited = calls;
        inner.retry_after_secs = retry_after_secs;
    }

    pub fn messages(&self) -> Vec<Message> {
        self.shared
            .inner
            .lock()
            .expect("stand-in lock")
            .messages
            .clone()
    }

    /// Messages in thread `thread_ts` of `channel` (replies, not the thread's first message).
    pub fn thread(&self, channel: &str, thread_ts: &str) -> Vec<Message> {
        self.messages()
            .into_iter()
            .filter(|m| m.channel == channel && m.thread_ts.as_deref() == Some(thread_ts))
            .collect()
    }

    /// Reaction names on message `ts`.
    pub fn reactions(&self, channel: &str, ts: &str) -> Vec<String> {
        self.shared
            .inner
            .lock()
            .expect("stand-in lock")
            .reactions
            .iter()
            .filter(|(c, t, _)| c == channel && t == ts)
            .map(|(_, _, n)| n.clone())
            .collect()
    }

    pub fn ephemerals(&self) -> Vec<Ephemeral> {
        self.shared
            .inner
            .lock()
            .expect("stand-in lock")
            .ephemerals
            .clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared
            .inner
            .lock()
            .expect("stand-in lock")
            .calls
            .clone()
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refuse(error: &str) -> Result<Value, String> {
    Err(error.to_string())
}

/// `fields` must be exactly the body's keys: `(name, required)`, all strings.
fn check_fields(body: &Value, fields: &[(&str, bool)]) -> Result<(), String> {
    let Some(obj) = body.as_object() else {
        return refuse("invalid_arguments").map(drop);
    };
    for key in obj.keys() {
        if !fields.iter().any(|(name, _)| name == key) {
            return refuse("invalid_arguments").map(drop);
        }
    }
    for (name, required) in fields {
        match obj.get(*name) {
            Some(Value::String(s)) if !s.is_empty() => {}
            None if !required => {}
            _ => return refuse("invalid_arguments").map(drop),
        }
    }
    Ok(())
}

/// Messages hold at most 50 blocks; an actions block at most 25 elements.
const MAX_BLOCKS: usize = 50;
const MAX_ACTION_ELEMENTS: usize = 25;

/// Checks a message's optional `blocks` the way Slack's Block Kit documents them (the kinds
/// the control plane sends): `section` with a `text` object (≤ 3000 characters), `actions`
/// with `button`s (`plain_text` label ≤ 75, `action_id` ≤ 255 and unique in the message,
/// `value` ≤ 2000, `style` `primary` or `danger`). `invalid_blocks` otherwise.
fn check_blocks(body: &Value) -> Result<(), String> {
    let Some(blocks) = body.get("blocks") else {
        return Ok(());
    };
    let invalid = || refuse("invalid_blocks").map(drop);
    let Some(blocks) = blocks.as_array() else {
        return invalid();
    };
    if blocks.is_empty() || blocks.len() > MAX_BLOCKS {
        return invalid();
    }
    let text_ok = |t: &Value, kinds: &[&str], max: usize| {
        kinds.contains(&t["type"].as_str().unwrap_or_default())
            && t["text"]
                .as_str()
                .is_some_and(|s| !s.is_empty() && s.chars().count() <= max)
    };
    let mut action_ids = BTreeSet::new();
    for block in blocks {
        match block["type"].as_str() {
            Some("section") if text_ok(&block["text"], &["mrkdwn", "plain_text"], 3000) => {}
            Some("actions") => {
                let Some(elements) = block["elements"].as_array() else {
                    return invalid();
                };
                if elements.is_empty() || elements.len() > MAX_ACTION_ELEMENTS {
                    return invalid();
                }
                for e in elements {
                    let id = e["action_id"].as_str().unwrap_or_default();
                    let ok = e["type"] == "button"
                        && text_ok(&e["text"], &["plain_text"], 75)
                        && !id.is_empty()
                        && id.len() <= 255
                        && action_ids.insert(id.to_string())
                        && e.get("value")
                            .is_none_or(|v| v.as_str().is_some_and(|v| v.len() <= 2000))
                        && e.get("style")
                            .is_none_or(|v| v == "primary" || v == "danger");
                    if !ok {
                        return invalid();
                    }
                }
            }
            _ => return invalid(),
        }
    }
    Ok(())
}

/// The body without `blocks`, for the string-field checks.
fn without_blocks(body: &Value) -> Value {
    let mut rest = body.clone();
    if let Some(obj) = rest.as_object_mut() {
        obj.remove("blocks");
    }
    rest
}

fn s(body: &Value, key: &str) -> String {
    body[key].as_str().unwrap_or_default().to_string()
}

async fn call(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let mut inner = shared.inner.lock().expect("stand-in lock");
    let record = |inner: &mut Inner, error: Option<&str>| {
        inner.calls.push(Call {
            method: method.clone(),
            body: body.clone(),
            error: error.map(str::to_string),
            at: std::time::Instant::now(),
        })
    };
    if inner.rate_limited > 0 {
        inner.rate_limited -= 1;
        record(&mut inner, Some("ratelimited"));
        let mut response = answer(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"ok": false, "error": "ratelimited"}),
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            inner.retry_after_secs.to_string().parse().expect("digits"),
        );
        return response;
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let outcome = match auth {
        None => refuse("not_authed"),
        Some(a) if a != format!("Bearer {}", shared.token) => refuse("invalid_auth"),
        Some(_) => {
            let json_body = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if !json_body {
                refuse("invalid_arguments")
            } else {
                apply(&mut inner, &method, &body)
            }
        }
    };
    match outcome {
        Ok(answer_body) => {
            record(&mut inner, None);
            answer(StatusCode::OK, answer_body)
        }
        Err(error) if error == "unknown_method" => {
            record(&mut inner, Some(&error));
            answer(StatusCode::NOT_FOUND, json!({"ok": false, "error": error}))
        }
        Err(error) => {
            record(&mut inner, Some(&error));
            answer(StatusCode::OK, json!({"ok": false, "error": error}))
        }
    }
}

fn apply(inner: &mut Inner, method: &str, body: &Value) -> Result<Value, String> {
    match method {
        "chat.postMessage" => {
            check_fields(
                &without_blocks(body),
                &[("channel", true), ("text", true), ("thread_ts", false)],
            )?;
            check_blocks(body)?;
            let ts = format!("{}.{:06}", 1_700_000_000 + inner.next_ts, inner.next_ts);
            inner.next_ts += 1;
            let message = Message {
                channel: s(body, "channel"),
                ts: ts.clone(),
                thread_ts: body["thread_ts"].as_str().map(str::to_string),
                text: s(body, "text"),
                edits: 0,
                blocks: body.get("blocks").cloned().unwrap_or(Value::Null),
            };
            inner.messages.push(message);
            Ok(json!({"ok": true, "channel": s(body, "channel"), "ts": ts,
                      "message": {"text": s(body, "text"), "ts": ts}}))
        }
        "chat.update" => {
            check_fields(
                &without_blocks(body),
                &[("channel", true), ("ts", true), ("text", true)],
            )?;
            check_blocks(body)?;
            let (channel, ts) = (s(body, "channel"), s(body, "ts"));
            let Some(m) = inner
                .messages
                .iter_mut()
                .find(|m| m.channel == channel && m.ts == ts)
            else {
                return refuse("message_not_found");
            };
            m.text = s(body, "text");
            m.edits += 1;
            // Slack keeps a message's blocks unless the update gives new ones.
            if let Some(blocks) = body.get("blocks") {
                m.blocks = blocks.clone();
            }
            Ok(json!({"ok": true, "channel": channel, "ts": ts, "text": m.text}))
        }
        "reactions.add" | "reactions.remove" => {
            check_fields(
                body,
                &[("channel", true), ("timestamp", true), ("name", true)],
            )?;
            let key = (s(body, "channel"), s(body, "timestamp"), s(body, "name"));
            if key.2.contains(':') {
                return refuse("invalid_name");
            }
            let changed = if method == "reactions.add" {
                inner.reactions.insert(key)
            } else {
                inner.reactions.remove(&key)
            };
            match (changed, method) {
                (true, _) => Ok(json!({"ok": true})),
                (false, "reactions.add") => refuse("already_reacted"),
                (false, _) => refuse("no_reaction"),
            }
        }
        "chat.postEphemeral" => {
            check_fields(
                body,
                &[
                    ("channel", true),
                    ("user", true),
                    ("text", true),
                    ("thread_ts", false),
                ],
            )?;
            inner.ephemerals.push(Ephemeral {
                channel: s(body, "channel"),
                user: s(body, "user"),
                thread_ts: body["thread_ts"].as_str().map(str::to_string),
                text: s(body, "text"),
            });
            let ts = format!("{}.{:06}", 1_700_000_000 + inner.next_ts, inner.next_ts);
            inner.next_ts += 1;
            Ok(json!({"ok": true, "message_ts": ts}))
        }
        _ => refuse("unknown_method"),
    }
}

/// The messages of a thread as text, for failure messages.
pub fn describe(messages: &[Message]) -> String {
    let by_ts: BTreeMap<&str, &Message> = messages.iter().map(|m| (m.ts.as_str(), m)).collect();
    by_ts
        .values()
        .map(|m| format!("[{} edits={}] {}", m.ts, m.edits, m.text))
        .collect::<Vec<_>>()
        .join("\n")
}
