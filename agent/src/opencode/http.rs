//! A minimal HTTP/1.1 client for OpenCode's loopback server (hyper, one connection per call).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Largest JSON response body read into memory.
const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connecting to opencode at 127.0.0.1:{port}: {source}")]
    Connect { port: u16, source: std::io::Error },
    #[error("{method} {path} on opencode: {message}")]
    Request {
        method: Method,
        path: String,
        message: String,
    },
    #[error("{method} {path} on opencode timed out after {timeout:?}")]
    Timeout {
        method: Method,
        path: String,
        timeout: Duration,
    },
    #[error("{method} {path} on opencode answered {status}: {body}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
}

/// OpenCode's server, which answers only with the password the agent started it with
/// (`OPENCODE_SERVER_PASSWORD`): other processes in the sandbox cannot drive it.
#[derive(Clone, Debug)]
pub struct Client {
    pub port: u16,
    /// `Basic …` for every request; `None` talks to an unprotected server.
    authorization: Option<std::sync::Arc<str>>,
}

/// The user name OpenCode's server expects when `OPENCODE_SERVER_USERNAME` is not set.
pub const SERVER_USER: &str = "opencode";

impl Client {
    pub fn new(port: u16) -> Self {
        Client {
            port,
            authorization: None,
        }
    }

    pub fn with_password(port: u16, password: &str) -> Self {
        use base64::Engine as _;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{SERVER_USER}:{password}"));
        Client {
            port,
            authorization: Some(format!("Basic {token}").into()),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, HttpError> {
        let req_err = |message: String| HttpError::Request {
            method: method.clone(),
            path: path.to_owned(),
            message,
        };
        let stream = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|source| HttpError::Connect {
                port: self.port,
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| req_err(format!("handshake: {e}")))?;
        tokio::spawn(async move {
            // Errors surface through the request future; the connection just ends.
            let _ = conn.await;
        });
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, format!("127.0.0.1:{}", self.port));
        if let Some(auth) = &self.authorization {
            builder = builder.header(header::AUTHORIZATION, &**auth);
        }
        let body = match body {
            Some(b) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(b))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder.body(body).map_err(|e| req_err(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| req_err(e.to_string()))
    }

    /// A request whose response body is read whole (bounded); non-2xx is an error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        json: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<Bytes, HttpError> {
        let body = json.map(|j| j.to_string().into_bytes());
        let work = async {
            let response = self.send(method.clone(), path, body).await?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| HttpError::Request {
                    method: method.clone(),
                    path: path.to_owned(),
                    message: format!("reading body: {e}"),
                })?
                .to_bytes();
            if !status.is_success() {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(2048)]).into_owned();
                return Err(HttpError::Status {
                    method: method.clone(),
                    path: path.to_owned(),
                    status,
                    body: text,
                });
            }
            Ok(bytes)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| HttpError::Timeout {
                method: method.clone(),
                path: path.to_owned(),
                timeout,
            })?
    }

    /// Opens a long-lived GET (the SSE stream); returns once the response headers are in.
    pub async fn stream(&self, path: &str, timeout: Duration) -> Result<Incoming, HttpError> {
        let response = tokio::time::timeout(timeout, self.send(Method::GET, path, None))
            .await
            .map_err(|_| HttpError::Timeout {
                method: Method::GET,
                path: path.to_owned(),
                timeout,
            })??;
        if !response.status().is_success() {
            return Err(HttpError::Status {
                method: Method::GET,
                path: path.to_owned(),
                status: response.status(),
                body: String::new(),
            });
        }
        Ok(response.into_body())
    }
}
