//! A scripted OpenAI-compatible chat-completions server for OpenCode, on 127.0.0.1:0.
//!
//! `POST /v1/chat/completions` answers with `chat.completion.chunk` server-sent events. Each
//! request of the conversation takes the next [`Turn`] of the script (tool calls or text); once
//! the script is used up it answers "Done.". OpenCode's side requests that generate a session
//! title are answered with a fixed title and do not consume turns. Every request is recorded.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::{HarnessError, io_context};

#[derive(Clone, Debug)]
pub struct ToolCall {
    pub name: String,
    pub arguments: Value,
}

/// One model answer.
#[derive(Clone, Debug)]
pub enum Turn {
    ToolCalls(Vec<ToolCall>),
    Text(String),
}

impl Turn {
    pub fn text(text: impl Into<String>) -> Turn {
        Turn::Text(text.into())
    }

    pub fn tool(name: impl Into<String>, arguments: Value) -> Turn {
        Turn::ToolCalls(vec![ToolCall {
            name: name.into(),
            arguments,
        }])
    }

    /// OpenCode's `write` tool (`filePath` must be absolute).
    pub fn write_file(path: impl Into<String>, content: impl Into<String>) -> Turn {
        Turn::tool(
            "write",
            json!({ "filePath": path.into(), "content": content.into() }),
        )
    }

    /// OpenCode's `bash` tool.
    pub fn bash(command: impl Into<String>) -> Turn {
        let command = command.into();
        Turn::tool(
            "bash",
            json!({ "command": command, "description": "scripted command" }),
        )
    }
}

#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    pub method: String,
    pub path: String,
    /// Parsed JSON body (`Null` when absent or not JSON).
    pub body: Value,
    /// Whether it was a title-generation side request.
    pub title_request: bool,
}

#[derive(Default)]
struct State {
    script: VecDeque<Turn>,
    requests: Vec<ReceivedRequest>,
    calls: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// The running server; it stops when dropped.
pub struct ScriptedModel {
    host: String,
    port: u16,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScriptedModel {
    /// Starts the server on its own thread and runtime, so it serves regardless of what the
    /// calling test does with its own runtime.
    pub fn start(script: Vec<Turn>) -> Result<ScriptedModel, HarnessError> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .map_err(io_context("binding the scripted model"))?;
        Self::serve(listener, script)
    }

    /// Starts the server on `ip` (e.g. a container bridge's gateway, where sandboxes reach
    /// it as they would a model API on the internet), even before that address exists on the
    /// host (`IP_FREEBIND`: an engine creates its bridge with the first container).
    pub fn start_on(
        ip: std::net::Ipv4Addr,
        script: Vec<Turn>,
    ) -> Result<ScriptedModel, HarnessError> {
        let addr = std::net::SocketAddr::from((ip, 0));
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .map_err(io_context("creating the scripted model socket"))?;
        socket
            .set_freebind_v4(true)
            .and_then(|()| socket.bind(&addr.into()))
            .and_then(|()| socket.listen(128))
            .map_err(io_context(format!("binding the scripted model on {addr}")))?;
        let mut model = Self::serve(socket.into(), script)?;
        model.host = ip.to_string();
        Ok(model)
    }

    fn serve(
        listener: std::net::TcpListener,
        script: Vec<Turn>,
    ) -> Result<ScriptedModel, HarnessError> {
        listener
            .set_nonblocking(true)
            .map_err(io_context("configuring the scripted model listener"))?;
        let port = listener
            .local_addr()
            .map_err(io_context("scripted model address"))?
            .port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                script: script.into(),
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_context("building the scripted model runtime"))?;
        let serve_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("scripted-model".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept_loop(listener, serve_shared) => {}
                    }
                });
            })
            .map_err(io_context("spawning the scripted model thread"))?;
        Ok(ScriptedModel {
            host: "127.0.0.1".into(),
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn base_url(&self) -> String {
        format!("http://{}:{}/v1", self.host, self.port)
    }

    /// Appends turns to the script.
    pub fn push(&self, turns: impl IntoIterator<Item = Turn>) {
        self.lock().script.extend(turns);
    }

    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.lock().requests.clone()
    }

    /// The messages of the last conversation request (title requests excluded) as JSON
    /// text: everything the model was shown for its latest turn. Empty before the first.
    pub fn last_request_text(&self) -> String {
        self.lock()
            .requests
            .iter()
            .rev()
            .find(|r| !r.title_request && r.path.ends_with("/chat/completions"))
            .map(|r| r.body["messages"].to_string())
            .unwrap_or_default()
    }

    /// Conversation requests answered so far (title requests excluded).
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    pub fn remaining_turns(&self) -> usize {
        self.lock().script.len()
    }

    /// Blocks until at least `n` conversation requests were answered, or `timeout`.
    pub fn wait_for_calls(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while state.calls < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = match self.shared.changed.wait_timeout(state, left) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let body = match Limited::new(req.into_body(), 64 * 1024 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let title_request = is_title_request(&body);
    let answer = {
        let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        state.requests.push(ReceivedRequest {
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
            title_request,
        });
        let answer = match (method.as_str(), path.as_str()) {
            ("POST", "/v1/chat/completions") if title_request => {
                Some(Turn::text("Scripted session"))
            }
            ("POST", "/v1/chat/completions") => {
                state.calls += 1;
                Some(
                    state
                        .script
                        .pop_front()
                        .unwrap_or_else(|| Turn::text("Done.")),
                )
            }
            _ => None,
        };
        shared.changed.notify_all();
        answer
    };
    let response = match (answer, method.as_str(), path.as_str()) {
        (Some(turn), _, _) => {
            let n = shared.state.lock().map(|s| s.requests.len()).unwrap_or(0);
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(Full::new(Bytes::from(sse_body(&turn, n))))
        }
        (None, "GET", "/v1/models") => Response::builder().header(header::CONTENT_TYPE, "application/json").body(Full::new(
            Bytes::from(json!({ "object": "list", "data": [{ "id": "scripted", "object": "model", "owned_by": "kortix" }] }).to_string()),
        )),
        _ => Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::from_static(b"not found"))),
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

fn is_title_request(body: &Value) -> bool {
    body["messages"]
        .as_array()
        .and_then(|m| m.first())
        .and_then(|m| m["content"].as_str())
        .is_some_and(|c| c.contains("title generator"))
}

fn chunk(id: &str, delta: Value, finish: Option<&str>) -> String {
    let c = json!({
        "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000u64, "model": "scripted",
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }]
    });
    format!("data: {c}\n\n")
}

fn sse_body(turn: &Turn, n: usize) -> String {
    let id = format!("chatcmpl-{n}");
    let mut out = chunk(&id, json!({ "role": "assistant", "content": "" }), None);
    let finish = match turn {
        Turn::Text(text) => {
            // Split in two to exercise streaming deltas.
            let mid = text
                .char_indices()
                .nth(text.chars().count() / 2)
                .map_or(text.len(), |(i, _)| i);
            out.push_str(&chunk(&id, json!({ "content": &text[..mid] }), None));
            out.push_str(&chunk(&id, json!({ "content": &text[mid..] }), None));
            "stop"
        }
        Turn::ToolCalls(calls) => {
            for (i, call) in calls.iter().enumerate() {
                let delta = json!({ "tool_calls": [{
                    "index": i, "id": format!("call_{n}_{i}"), "type": "function",
                    "function": { "name": call.name, "arguments": call.arguments.to_string() }
                }] });
                out.push_str(&chunk(&id, delta, None));
            }
            "tool_calls"
        }
    };
    out.push_str(&chunk(&id, json!({}), Some(finish)));
    let usage = json!({
        "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000u64, "model": "scripted", "choices": [],
        "usage": { "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 }
    });
    out.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_turn_streams_openai_chunks() {
        let body = sse_body(&Turn::write_file("/tmp/x", "hi"), 3);
        let events: Vec<Value> = body
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(
            events[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "write"
        );
        let args: Value = serde_json::from_str(
            events[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(args["filePath"], "/tmp/x");
        assert_eq!(events[2]["choices"][0]["finish_reason"], "tool_calls");
        assert!(body.ends_with("data: [DONE]\n\n"));
    }
}
