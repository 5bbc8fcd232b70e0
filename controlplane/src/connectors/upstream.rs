//! Outbound HTTP to connector upstreams: every request has a timeout, every body read a cap,
//! and the credential is added here and nowhere else.

use std::time::Duration;

use serde_json::Value;

use super::tools::{HttpOperation, ParamIn};

/// The credential as it goes on the wire: headers and query parameters to add.
#[derive(Clone, Default)]
pub struct AppliedAuth {
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
}

impl std::fmt::Debug for AppliedAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |v: &[(String, String)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        f.debug_struct("AppliedAuth")
            .field("headers", &names(&self.headers))
            .field("query", &names(&self.query))
            .finish()
    }
}

impl AppliedAuth {
    pub fn apply(&self, mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if !self.query.is_empty() {
            req = req.query(&self.query);
        }
        req
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{url} did not answer within {}s", .timeout.as_secs_f32())]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: {reason}")]
    Request { url: String, reason: String },
    #[error("{0}")]
    Arguments(String),
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: {reason}")]
    Protocol { url: String, reason: String },
}

impl UpstreamError {
    /// The upstream's HTTP status, when it answered at all.
    pub fn status(&self) -> u16 {
        match self {
            UpstreamError::Status { status, .. } => *status,
            _ => 0,
        }
    }
}

/// What an upstream answered, cut to the response cap.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    pub truncated: bool,
}

/// Sends `req` and reads at most `cap` bytes of the answer, all within `timeout`.
pub async fn send(
    req: reqwest::RequestBuilder,
    url: &str,
    timeout: Duration,
    cap: usize,
) -> Result<Answer, UpstreamError> {
    let io = async {
        let mut resp = req.send().await.map_err(|e| request_error(url, &e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = resp.chunk().await.map_err(|e| request_error(url, &e))? {
            let room = cap.saturating_sub(body.len());
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            truncated,
        })
    };
    tokio::time::timeout(timeout, io)
        .await
        .map_err(|_| UpstreamError::Timeout {
            url: url.to_owned(),
            timeout,
        })?
}

pub(super) fn request_error(url: &str, e: &reqwest::Error) -> UpstreamError {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    UpstreamError::Request {
        url: url.to_owned(),
        reason,
    }
}

/// Fetches a spec by URL (with the connector's credential: specs are often behind it too).
pub async fn fetch_spec(
    client: &reqwest::Client,
    url: &str,
    auth: &AppliedAuth,
    timeout: Duration,
    cap: usize,
) -> Result<String, UpstreamError> {
    let answer = send(auth.apply(client.get(url)), url, timeout, cap + 1).await?;
    if !(200..300).contains(&answer.status) {
        return Err(UpstreamError::Status {
            url: url.to_owned(),
            status: answer.status,
            body: super::tools::cut(&answer.body, 200),
        });
    }
    if answer.truncated || answer.body.len() > cap {
        return Err(UpstreamError::Protocol {
            url: url.to_owned(),
            reason: format!("the spec is larger than {cap} bytes"),
        });
    }
    Ok(answer.body)
}

/// Builds the request of one HTTP operation from the tool's arguments.
pub fn http_request(
    client: &reqwest::Client,
    base: &str,
    op: &HttpOperation,
    args: &Value,
) -> Result<(reqwest::RequestBuilder, String), UpstreamError> {
    let mut path = op.path.clone();
    let mut query: Vec<(String, String)> = Vec::new();
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, location) in &op.params {
        let Some(v) = args.get(name).filter(|v| !v.is_null()) else {
            if *location == ParamIn::Path {
                return Err(UpstreamError::Arguments(format!(
                    "argument {name:?} is required (path parameter of {})",
                    op.path
                )));
            }
            continue;
        };
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match location {
            ParamIn::Path => {
                path = path.replace(&format!("{{{name}}}"), &encode_segment(&text));
            }
            ParamIn::Query => query.push((name.clone(), text)),
            ParamIn::Header => headers.push((name.clone(), text)),
        }
    }
    let url = format!("{base}{path}");
    let mut req = client.request(op.method.clone(), &url).query(&query);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if op.body
        && let Some(body) = args.get("body").filter(|b| !b.is_null())
    {
        req = json_body(req, body);
    }
    Ok((req, url))
}

/// The generic request of an `http` connector without a spec: `method`, `path`, optional
/// `query` (object) and `body`.
pub fn generic_request(
    client: &reqwest::Client,
    base: &str,
    args: &Value,
) -> Result<(reqwest::RequestBuilder, String), UpstreamError> {
    let method: reqwest::Method = args
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("GET")
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| {
            UpstreamError::Arguments("argument \"method\" is not an HTTP method".into())
        })?;
    let path = args.get("path").and_then(Value::as_str).unwrap_or("/");
    if !path.starts_with('/') || path.contains("://") || path.split('/').any(|s| s == "..") {
        return Err(UpstreamError::Arguments(format!(
            "argument \"path\" must be an absolute path under the base URL, not {path:?}"
        )));
    }
    let url = format!("{base}{path}");
    let mut req = client.request(method, &url);
    if let Some(q) = args.get("query").and_then(Value::as_object) {
        let pairs: Vec<(String, String)> = q
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect();
        req = req.query(&pairs);
    }
    if let Some(body) = args.get("body").filter(|b| !b.is_null()) {
        req = json_body(req, body);
    }
    Ok((req, url))
}

/// A JSON body (reqwest's `json` feature is not enabled in this workspace).
pub fn json_body(req: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
    req.header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
}

fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operations_fill_path_query_and_headers() {
        let client = reqwest::Client::new();
        let op = HttpOperation {
            method: reqwest::Method::GET,
            path: "/pets/{id}".into(),
            params: vec![
                ("id".into(), ParamIn::Path),
                ("verbose".into(), ParamIn::Query),
                ("X-Trace".into(), ParamIn::Header),
            ],
            body: false,
        };
        let (req, url) = http_request(
            &client,
            "http://h/api",
            &op,
            &json!({"id": "a b/c", "verbose": true, "X-Trace": "t1"}),
        )
        .unwrap();
        assert_eq!(url, "http://h/api/pets/a%20b%2Fc");
        let req = req.build().unwrap();
        assert_eq!(
            req.url().as_str(),
            "http://h/api/pets/a%20b%2Fc?verbose=true"
        );
        assert_eq!(req.headers()["x-trace"], "t1");
        let missing = http_request(&client, "http://h", &op, &json!({})).unwrap_err();
        assert!(
            missing.to_string().contains("\"id\" is required"),
            "{missing}"
        );
    }

    #[test]
    fn generic_requests_stay_under_the_base() {
        let client = reqwest::Client::new();
        for bad in ["../etc", "/a/../../b", "http://evil/x"] {
            assert!(
                generic_request(&client, "http://h", &json!({"path": bad})).is_err(),
                "{bad}"
            );
        }
        let (req, url) = generic_request(
            &client,
            "http://h",
            &json!({"method": "post", "path": "/x", "query": {"a": 1}}),
        )
        .unwrap();
        assert_eq!(url, "http://h/x");
        let req = req.build().unwrap();
        assert_eq!(req.method(), reqwest::Method::POST);
        assert_eq!(req.url().query(), Some("a=1"));
    }
}
