//! A sandbox's toolbox, as current Daytona serves it: `GET /sandbox/{id}/toolbox-proxy-url`
//! names the toolbox proxy of the sandbox's region, and the daemon's endpoints are under
//! `<url>/<sandboxId>/` with the same API key (the API's own `/toolbox/{id}/toolbox/…`
//! routes are deprecated). Used here:
//!
//! - `POST …/process/execute` (`ExecuteRequest` → `ExecuteResponse`);
//! - `POST …/files/upload?path=` (multipart, the file in the `file` field);
//! - `GET …/files/download?path=` (the file's bytes).
//!
//! Every call has a timeout and retries as the API's calls do, except a command that must
//! not run twice, which is retried only when refused before it ran (429). Downloads stream
//! to a file, bounded.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::Method;

use super::api::{ExecuteRequest, ExecuteResponse, ToolboxProxyUrl};
use super::client::{
    ApiError, DaytonaClient, MAX_RESPONSE, RetryPolicy, decode, read_capped, retry_after,
    status_error, transport,
};
use crate::sandbox::SandboxError;
use crate::sandbox::workspace_archive;

/// How long an upload or a download may take.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// What an execute's answer may take beyond the command's own timeout (the daemon answers
/// 408 at the command's timeout; this only bounds a proxy that never answers).
const EXECUTE_MARGIN: Duration = Duration::from_secs(60);
/// The multipart boundary of uploads (never inside a tar header's printable fields).
const BOUNDARY: &str = "kortix-toolbox-upload-4b1d2c7e9f";

/// One sandbox's toolbox.
#[derive(Debug, Clone)]
pub struct Toolbox {
    client: DaytonaClient,
    /// `<proxy url>/<sandbox id>`.
    base: String,
    sandbox: String,
}

/// Whether an execute that may have run is retried: only when refused before it ran.
fn refused_before_running(status: Option<u16>) -> bool {
    status == Some(429)
}

impl DaytonaClient {
    /// The toolbox of sandbox `id` (which must be started).
    pub async fn toolbox(&self, id: &str) -> Result<Toolbox, ApiError> {
        let proxy: ToolboxProxyUrl = self
            .get(&format!("/sandbox/{id}/toolbox-proxy-url"), &[])
            .await?;
        Ok(Toolbox {
            client: self.clone(),
            base: format!("{}/{id}", proxy.url.trim_end_matches('/')),
            sandbox: id.to_owned(),
        })
    }
}

impl Toolbox {
    pub fn sandbox(&self) -> &str {
        &self.sandbox
    }

    /// Sends what `build` makes until it succeeds or fails for good; the response of a
    /// success, unread.
    async fn send(
        &self,
        call: &str,
        retryable: fn(Option<u16>) -> bool,
        build: impl Fn() -> Result<reqwest::RequestBuilder, ApiError>,
    ) -> Result<reqwest::Response, ApiError> {
        self.client
            .retry()
            .run_if(retryable, || {
                let req = build();
                async move {
                    let req = req.map_err(|e| (e, None))?;
                    let resp = req.send().await.map_err(|e| (transport(call, &e), None))?;
                    let status = resp.status();
                    if status.is_success() {
                        return Ok(resp);
                    }
                    let after = retry_after(&resp);
                    let bytes = read_capped(resp, MAX_RESPONSE).await.unwrap_or_default();
                    Err((status_error(call, status, &bytes), after))
                }
            })
            .await
    }

    /// Runs `request` in the sandbox. `once`: the command must not run twice, so only a
    /// refusal (429) is retried. `max_result` bounds the answer.
    pub async fn execute(
        &self,
        request: &ExecuteRequest,
        once: bool,
        max_result: usize,
    ) -> Result<ExecuteResponse, ApiError> {
        let call = format!("POST /toolbox/{}/process/execute", self.sandbox);
        let body = Bytes::from(
            serde_json::to_vec(request).map_err(|e| ApiError::Transport {
                call: call.clone(),
                reason: format!("encoding the request: {e}"),
            })?,
        );
        let timeout = Duration::from_secs(u64::from(request.timeout.unwrap_or(0)))
            .max(Duration::from_secs(60))
            + EXECUTE_MARGIN;
        let url = format!("{}/process/execute", self.base);
        let retryable = if once {
            refused_before_running
        } else {
            RetryPolicy::retryable
        };
        let resp = self
            .send(&call, retryable, || {
                Ok(self
                    .client
                    .request_url(Method::POST, &url, &[])
                    .timeout(timeout)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone()))
            })
            .await?;
        let bytes = read_capped(resp, max_result)
            .await
            .map_err(|reason| ApiError::Transport {
                call: call.clone(),
                reason,
            })?;
        decode(&call, &bytes)
    }

    /// Uploads the local file `from` to `to` in the sandbox (multipart, streamed).
    pub async fn upload(&self, from: &Path, to: &str) -> Result<(), ApiError> {
        let call = format!("POST /toolbox/{}/files/upload", self.sandbox);
        let len = tokio::fs::metadata(from)
            .await
            .map_err(|e| ApiError::Transport {
                call: call.clone(),
                reason: format!("{}: {e}", from.display()),
            })?
            .len();
        let head = Bytes::from(format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"upload\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ));
        let tail = Bytes::from(format!("\r\n--{BOUNDARY}--\r\n"));
        let total = head.len() as u64 + len + tail.len() as u64;
        let url = format!("{}/files/upload", self.base);
        self.send(&call, RetryPolicy::retryable, || {
            let file = std::fs::File::open(from).map_err(|e| ApiError::Transport {
                call: call.clone(),
                reason: format!("{}: {e}", from.display()),
            })?;
            let file = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
            let body = futures::stream::iter([Ok::<_, std::io::Error>(head.clone())])
                .chain(file)
                .chain(futures::stream::iter([Ok(tail.clone())]));
            Ok(self
                .client
                .request_url(Method::POST, &url, &[("path", to)])
                .timeout(TRANSFER_TIMEOUT)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .header(reqwest::header::CONTENT_LENGTH, total)
                .body(reqwest::Body::wrap_stream(body)))
        })
        .await
        .map(drop)
    }

    /// Downloads `from` in the sandbox to the local file `to`, refusing more than
    /// `max_bytes`.
    pub async fn download(
        &self,
        from: &str,
        to: &Path,
        max_bytes: u64,
    ) -> Result<u64, SandboxError> {
        let call = format!("GET /toolbox/{}/files/download", self.sandbox);
        let url = format!("{}/files/download", self.base);
        let resp = self
            .send(&call, RetryPolicy::retryable, || {
                Ok(self
                    .client
                    .request_url(Method::GET, &url, &[("path", from)])
                    .timeout(TRANSFER_TIMEOUT))
            })
            .await
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        if resp.content_length().is_some_and(|n| n > max_bytes) {
            return Err(SandboxError::Engine(format!(
                "the build's workspace is over {max_bytes} bytes"
            )));
        }
        workspace_archive::write_capped(resp.bytes_stream(), to, max_bytes, &call).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_is_retried_only_when_refused_before_it_ran() {
        assert!(refused_before_running(Some(429)));
        for status in [None, Some(500), Some(502), Some(503), Some(408)] {
            assert!(!refused_before_running(status), "{status:?}");
        }
    }
}
