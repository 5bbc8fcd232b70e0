//! The upstream side of `mcp` connectors: an MCP client over streamable HTTP (JSON-RPC
//! POSTs answered with JSON or an event stream) or the older HTTP+SSE transport (an event
//! stream that names the endpoint to POST to and carries the answers). Each list or call is
//! one short conversation: initialize, initialized, the request.

use std::time::Duration;

use kortix_manifest::Transport;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

use super::tools::{MAX_DESCRIPTION, MAX_TOOLS, Risk, Target, Tool, cut, tool_name};
use super::upstream::{AppliedAuth, UpstreamError, request_error, send};

const PROTOCOL_VERSION: &str = "2025-03-26";
const SESSION_HEADER: &str = "mcp-session-id";
/// Pages of `tools/list` followed at most.
const MAX_PAGES: usize = 16;

pub struct McpUpstream<'a> {
    pub client: &'a reqwest::Client,
    pub url: &'a str,
    pub transport: Transport,
    pub auth: &'a AppliedAuth,
    pub timeout: Duration,
    /// Largest answer read.
    pub cap: usize,
}

/// A tool call's answer: the text the model reads, and whether the tool said it failed.
pub struct McpAnswer {
    pub text: String,
    pub is_error: bool,
    pub truncated: bool,
}

impl McpUpstream<'_> {
    pub async fn list_tools(&self) -> Result<Vec<Tool>, UpstreamError> {
        let mut requests = vec![];
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            requests.clear();
            requests.push(("tools/list", params));
            let answers = self.conversation(&requests).await?;
            let result = answers.into_iter().next().unwrap_or(Value::Null);
            for t in result
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(tool) = convert(t) {
                    tools.push(tool);
                }
            }
            cursor = result
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if cursor.is_none() || tools.len() > MAX_TOOLS || page + 1 == MAX_PAGES {
                break;
            }
        }
        Ok(tools)
    }

    pub async fn call_tool(&self, name: &str, args: &Value) -> Result<McpAnswer, UpstreamError> {
        let answers = self
            .conversation(&[("tools/call", json!({"name": name, "arguments": args}))])
            .await?;
        let result = answers.into_iter().next().unwrap_or(Value::Null);
        let mut text = String::new();
        for item in result
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !text.is_empty() {
                text.push('\n');
            }
            match item.get("text").and_then(Value::as_str) {
                Some(t) if item.get("type").and_then(Value::as_str) == Some("text") => {
                    text.push_str(t)
                }
                _ => text.push_str(&item.to_string()),
            }
        }
        if text.is_empty()
            && let Some(s) = result.get("structuredContent")
        {
            text = s.to_string();
        }
        let truncated = text.len() > self.cap;
        Ok(McpAnswer {
            text: if truncated {
                cut(&text, self.cap)
            } else {
                text
            },
            is_error: result.get("isError").and_then(Value::as_bool) == Some(true),
            truncated,
        })
    }

    /// initialize, notifications/initialized, then `requests`; the results in order.
    async fn conversation(&self, requests: &[(&str, Value)]) -> Result<Vec<Value>, UpstreamError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let work = async {
            match self.transport {
                Transport::Http => self.streamable(requests).await,
                Transport::Sse => self.legacy_sse(requests, deadline).await,
            }
        };
        tokio::time::timeout_at(deadline, work)
            .await
            .map_err(|_| UpstreamError::Timeout {
                url: self.url.to_owned(),
                timeout: self.timeout,
            })?
    }

    async fn streamable(&self, requests: &[(&str, Value)]) -> Result<Vec<Value>, UpstreamError> {
        let mut session: Option<String> = None;
        let init = self.post_streamable(&mut session, &initialize(0)).await?;
        self.result_of(init, 0)?;
        self.post_streamable(&mut session, &initialized()).await?;
        let mut out = Vec::new();
        for (i, (method, params)) in requests.iter().enumerate() {
            let id = i as u64 + 1;
            let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            let answer = self.post_streamable(&mut session, &msg).await?;
            out.push(self.result_of(answer, id)?);
        }
        if let Some(s) = &session {
            // Ending the upstream's session is a courtesy; its failure changes nothing.
            let end = self
                .auth
                .apply(self.client.delete(self.url).header(SESSION_HEADER, s));
            let _ = send(end, self.url, self.timeout, 1024).await;
        }
        Ok(out)
    }

    /// POSTs one message; the JSON-RPC messages of the answer (none for a notification).
    async fn post_streamable(
        &self,
        session: &mut Option<String>,
        msg: &Value,
    ) -> Result<Vec<Value>, UpstreamError> {
        let req = self
            .client
            .post(self.url)
            .header(ACCEPT, "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL_VERSION);
        let mut req = super::upstream::json_body(req, msg);
        if let Some(s) = session.as_deref() {
            req = req.header(SESSION_HEADER, s);
        }
        let answer = send(
            self.auth.apply(req),
            self.url,
            self.timeout,
            self.cap_bytes(),
        )
        .await?;
        if !(200..300).contains(&answer.status) {
            return Err(UpstreamError::Status {
                url: self.url.to_owned(),
                status: answer.status,
                body: cut(&answer.body, 300),
            });
        }
        if let Some(s) = answer
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            *session = Some(s.to_owned());
        }
        let is_sse = answer
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if answer.body.trim().is_empty() {
            return Ok(Vec::new());
        }
        if is_sse {
            let mut parser = SseParser::default();
            parser.push(&answer.body);
            parser.push("\n\n");
            return Ok(parser
                .events
                .drain(..)
                .filter_map(|(_, data)| serde_json::from_str(&data).ok())
                .collect());
        }
        let v: Value = serde_json::from_str(&answer.body)
            .map_err(|e| self.protocol(format!("the answer is not JSON: {e}")))?;
        Ok(match v {
            Value::Array(items) => items,
            one => vec![one],
        })
    }

    /// The conversation over the HTTP+SSE transport, by `deadline` (the conversation's): a
    /// stream that never names its endpoint says so rather than just timing out.
    async fn legacy_sse(
        &self,
        requests: &[(&str, Value)],
        deadline: tokio::time::Instant,
    ) -> Result<Vec<Value>, UpstreamError> {
        let stream = self
            .auth
            .apply(
                self.client
                    .get(self.url)
                    .header(ACCEPT, "text/event-stream"),
            )
            .send()
            .await
            .map_err(|e| request_error(self.url, &e))?;
        if !stream.status().is_success() {
            return Err(UpstreamError::Status {
                url: self.url.to_owned(),
                status: stream.status().as_u16(),
                body: String::new(),
            });
        }
        let mut events = SseStream {
            resp: stream,
            parser: SseParser::default(),
            read: 0,
            cap: self.cap_bytes(),
            url: self.url,
        };
        let endpoint = tokio::time::timeout_at(deadline, async {
            loop {
                let (event, data) = events.next().await?;
                if event == "endpoint" {
                    return Ok::<_, UpstreamError>(data);
                }
            }
        })
        .await
        .map_err(|_| {
            self.protocol(format!(
                "the event stream sent no `endpoint` event (the URL to POST to) within {}s",
                self.timeout.as_secs_f32()
            ))
        })??;
        let base =
            reqwest::Url::parse(self.url).map_err(|e| self.protocol(format!("bad URL: {e}")))?;
        let endpoint = base
            .join(endpoint.trim())
            .map_err(|e| self.protocol(format!("bad endpoint {endpoint:?}: {e}")))?;
        // The credential goes only where the connector's URL points (as the SDKs' clients
        // check): an endpoint elsewhere is refused before anything is POSTed to it.
        if endpoint.origin() != base.origin() {
            return Err(self.protocol(format!(
                "the endpoint {endpoint} is not on the connector URL's origin; refused"
            )));
        }
        let mut exchange = async |msg: Value, id: Option<u64>| -> Result<Value, UpstreamError> {
            let post = self.auth.apply(super::upstream::json_body(
                self.client.post(endpoint.clone()),
                &msg,
            ));
            let answer = send(post, endpoint.as_str(), self.timeout, 64 * 1024).await?;
            if !(200..300).contains(&answer.status) {
                return Err(UpstreamError::Status {
                    url: endpoint.to_string(),
                    status: answer.status,
                    body: cut(&answer.body, 300),
                });
            }
            let Some(id) = id else { return Ok(Value::Null) };
            loop {
                let (event, data) = events.next().await?;
                if event != "message" && !event.is_empty() {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(&data) else {
                    continue;
                };
                if is_answer_to(&v, id) {
                    return self.result_of(vec![v], id);
                }
            }
        };
        exchange(initialize(0), Some(0)).await?;
        exchange(initialized(), None).await?;
        let mut out = Vec::new();
        for (i, (method, params)) in requests.iter().enumerate() {
            let id = i as u64 + 1;
            let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            out.push(exchange(msg, Some(id)).await?);
        }
        Ok(out)
    }

    fn result_of(&self, messages: Vec<Value>, id: u64) -> Result<Value, UpstreamError> {
        let msg = messages
            .into_iter()
            .find(|m| is_answer_to(m, id))
            .ok_or_else(|| self.protocol(format!("no answer to request {id}")))?;
        if let Some(err) = msg.get("error") {
            return Err(self.protocol(format!(
                "error {}: {}",
                err.get("code").unwrap_or(&Value::Null),
                err.get("message").and_then(Value::as_str).unwrap_or("")
            )));
        }
        Ok(msg.get("result").cloned().unwrap_or(Value::Null))
    }

    fn protocol(&self, reason: String) -> UpstreamError {
        UpstreamError::Protocol {
            url: self.url.to_owned(),
            reason,
        }
    }

    fn cap_bytes(&self) -> usize {
        self.cap.max(super::tools::MAX_SPEC_BYTES)
    }
}

/// Whether `msg` answers our request `id`: a response, not a request of the server's own
/// (`ping`, `roots/list`, …), whose ids count from 0 like ours.
fn is_answer_to(msg: &Value, id: u64) -> bool {
    msg.get("method").is_none() && msg.get("id").and_then(Value::as_u64) == Some(id)
}

fn initialize(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "kortix-connector-broker", "version": env!("CARGO_PKG_VERSION")}
    }})
}

fn initialized() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

/// An upstream tool as ours; risk from its annotations.
fn convert(t: &Value) -> Option<Tool> {
    let name = t.get("name").and_then(Value::as_str)?;
    let hint = |k: &str| {
        t.get("annotations")
            .and_then(|a| a.get(k))
            .and_then(Value::as_bool)
    };
    let risk = if hint("readOnlyHint") == Some(true) {
        Risk::Read
    } else if hint("destructiveHint") == Some(true) {
        Risk::Destructive
    } else {
        Risk::Write
    };
    Some(Tool {
        name: tool_name(name),
        description: cut(
            t.get("description").and_then(Value::as_str).unwrap_or(""),
            MAX_DESCRIPTION,
        ),
        input_schema: t
            .get("inputSchema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"})),
        risk,
        target: Target::Mcp(name.to_owned()),
    })
}

/// Server-sent events, fed text as it arrives.
#[derive(Default)]
struct SseParser {
    buf: String,
    event: String,
    data: String,
    events: std::collections::VecDeque<(String, String)>,
}

impl SseParser {
    fn push(&mut self, text: &str) {
        self.buf.push_str(text);
        while let Some(nl) = self.buf.find('\n') {
            let line: String = self.buf.drain(..=nl).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    let data = std::mem::take(&mut self.data);
                    self.events
                        .push_back((std::mem::take(&mut self.event), data));
                }
            } else if let Some(v) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            } else if let Some(v) = line.strip_prefix("event:") {
                self.event = v.trim().to_owned();
            }
        }
    }
}

/// An open event stream, read event by event, at most `cap` bytes in all.
struct SseStream<'a> {
    resp: reqwest::Response,
    parser: SseParser,
    read: usize,
    cap: usize,
    url: &'a str,
}

impl SseStream<'_> {
    async fn next(&mut self) -> Result<(String, String), UpstreamError> {
        loop {
            if let Some(e) = self.parser.events.pop_front() {
                return Ok(e);
            }
            let chunk = self
                .resp
                .chunk()
                .await
                .map_err(|e| request_error(self.url, &e))?
                .ok_or_else(|| UpstreamError::Protocol {
                    url: self.url.to_owned(),
                    reason: "the event stream ended before the answer".into(),
                })?;
            self.read += chunk.len();
            if self.read > self.cap {
                return Err(UpstreamError::Protocol {
                    url: self.url.to_owned(),
                    reason: format!("the event stream sent more than {} bytes", self.cap),
                });
            }
            self.parser.push(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks() {
        let mut p = SseParser::default();
        p.push("event: endpoint\ndata: /mess");
        assert!(p.events.is_empty());
        p.push("age?s=1\n\ndata: {\"id\":1}\r\n\r\n");
        assert_eq!(
            p.events.pop_front(),
            Some(("endpoint".into(), "/message?s=1".into()))
        );
        assert_eq!(p.events.pop_front(), Some(("".into(), "{\"id\":1}".into())));
    }

    /// A server on 127.0.0.1 that answers one GET with an event stream of `events`, then
    /// stays silent with the stream open; the URL of its `/sse`.
    async fn event_stream(events: String) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n";
            socket
                .write_all(format!("{head}{events}").as_bytes())
                .await
                .unwrap();
            // Held open, silent, until the client gives up.
            let _ = socket.read(&mut request).await;
        });
        format!("http://127.0.0.1:{port}/sse")
    }

    async fn list_over_sse(url: &str) -> UpstreamError {
        let upstream = McpUpstream {
            client: &reqwest::Client::new(),
            url,
            transport: Transport::Sse,
            auth: &AppliedAuth {
                headers: vec![("authorization".into(), "Bearer t".into())],
                query: vec![],
            },
            timeout: Duration::from_millis(300),
            cap: 1024,
        };
        upstream.list_tools().await.err().unwrap()
    }

    /// An event stream that opens but never names its endpoint: the error says so, within
    /// the conversation's timeout.
    #[tokio::test]
    async fn a_stream_without_an_endpoint_says_so() {
        let err = list_over_sse(&event_stream(": waiting\n\n".into()).await).await;
        assert!(
            matches!(err, UpstreamError::Protocol { .. }),
            "not a bare timeout: {err}"
        );
        assert!(err.to_string().contains("no `endpoint` event"), "{err}");
    }

    /// An endpoint on another origin would get the credential: refused, nothing POSTed (the
    /// other origin is a port where nothing listens, so a POST would be a connection error).
    #[tokio::test]
    async fn an_endpoint_on_another_origin_is_refused() {
        let elsewhere = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let events = format!("event: endpoint\ndata: http://127.0.0.1:{elsewhere}/messages\n\n");
        let err = list_over_sse(&event_stream(events).await).await;
        assert!(
            err.to_string()
                .contains("not on the connector URL's origin"),
            "{err}"
        );
    }

    /// A request of the server's own with the id of ours is not our answer.
    #[test]
    fn server_requests_are_not_answers() {
        let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}});
        assert!(!is_answer_to(&ping, 1));
        assert!(is_answer_to(&answer, 1));
        assert!(!is_answer_to(&answer, 2));
        let upstream = McpUpstream {
            client: &reqwest::Client::new(),
            url: "http://127.0.0.1:1/mcp",
            transport: Transport::Http,
            auth: &AppliedAuth::default(),
            timeout: Duration::from_secs(1),
            cap: 1024,
        };
        assert_eq!(
            upstream.result_of(vec![ping, answer], 1).unwrap(),
            json!({"tools": []})
        );
    }

    #[test]
    fn annotations_decide_risk() {
        let t = |ann: Value| convert(&json!({"name": "x y", "annotations": ann})).unwrap();
        assert_eq!(t(json!({"readOnlyHint": true})).risk, Risk::Read);
        assert_eq!(t(json!({"destructiveHint": true})).risk, Risk::Destructive);
        assert_eq!(t(json!({})).risk, Risk::Write);
        assert_eq!(t(json!({})).name, "x_y");
        assert_eq!(t(json!({})).target, Target::Mcp("x y".into()));
    }
}
