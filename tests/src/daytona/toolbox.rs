//! The stand-in's toolbox proxy: `<base>/toolbox/<sandboxId>/…`, as Daytona's proxy serves
//! the daemon's toolbox (`apps/proxy`, `apps/daemon/pkg/toolbox`), backed by `podman exec`:
//!
//! - `POST …/process/execute` (`ExecuteRequest {command, cwd?, envs?, timeout?}` →
//!   `ExecuteResponse {exitCode, result}`; the command goes to the sandbox's shell on stdin,
//!   output combined; over `timeout` seconds it is killed and the answer is 408);
//! - `POST …/files/upload?path=` (multipart, the `file` field);
//! - `GET …/files/download?path=` (404 for a missing file, 400 for a directory).
//!
//! Strict: 401 without the API key as bearer, 400 on unknown fields, wrong types or unknown
//! query parameters, 404 for an unknown sandbox, 400 "Sandbox is not running" unless it is
//! `started`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Field, Kind, Shared, error, opt, parse_query, req, str_field, str_map, validate};

/// The daemon's `ExecuteRequest`.
const EXECUTE: &[Field] = &[
    req("command", Kind::NonEmptyStr),
    opt(
        "timeout",
        Kind::Num {
            min: Some(0.0),
            max: Some(4_294_967_295.0),
        },
    ),
    opt("cwd", Kind::Str),
    opt("envs", Kind::StrMap),
];

pub(super) async fn serve(
    shared: &Arc<Shared>,
    method: &Method,
    full: &str,
    rest: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(shared.key.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            full,
            "authentication failed: Bearer token is invalid",
        );
    }
    let Some((id, sub)) = rest.split_once('/') else {
        return error(StatusCode::NOT_FOUND, full, "not found");
    };
    {
        let mut inner = shared.inner.lock().unwrap();
        *inner
            .requests
            .entry(format!("{method} /toolbox/{sub}"))
            .or_default() += 1;
    }
    let container = {
        let inner = shared.inner.lock().unwrap();
        match inner.sandboxes.iter().find(|s| s.id == id) {
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    full,
                    format!("Sandbox with ID {id} not found"),
                );
            }
            Some(s) if s.state != "started" => {
                return error(StatusCode::BAD_REQUEST, full, "Sandbox is not running");
            }
            Some(s) => s.container.clone(),
        }
    };
    let query = parse_query(query.unwrap_or(""));
    match (method.as_str(), sub) {
        ("POST", "process/execute") => execute(shared, full, &container, headers, &body).await,
        ("POST", "files/upload") => match path_param(&query) {
            Ok(path) => upload(shared, full, &container, &path, headers, &body).await,
            Err(why) => error(StatusCode::BAD_REQUEST, full, why),
        },
        ("GET", "files/download") => match path_param(&query) {
            Ok(path) => download(shared, full, &container, &path).await,
            Err(why) => error(StatusCode::BAD_REQUEST, full, why),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            full,
            format!("Cannot {method} /{sub}"),
        ),
    }
}

/// The one query parameter the file endpoints take; why it is refused otherwise.
fn path_param(query: &[(String, String)]) -> Result<String, String> {
    let mut path = None;
    for (k, v) in query {
        match k.as_str() {
            "path" => path = Some(v.clone()),
            other => return Err(format!("property {other} should not exist")),
        }
    }
    path.filter(|p| !p.is_empty())
        .ok_or_else(|| "path is required".to_owned())
}

/// `podman exec` in `container`, `stdin` fed, killed after `timeout`: `None` when it overran.
async fn exec(
    shared: &Shared,
    container: &str,
    opts: &[String],
    argv: &[&str],
    stdin: Vec<u8>,
    timeout: Option<Duration>,
) -> std::io::Result<Option<std::process::Output>> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::from(shared.podman.command());
    cmd.arg("exec")
        .arg("-i")
        .args(opts)
        .arg(container)
        .args(argv)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let mut input = child.stdin.take().expect("piped stdin");
    let feed = tokio::spawn(async move {
        let _ = input.write_all(&stdin).await;
    });
    let waited = child.wait_with_output();
    let out = match timeout {
        Some(t) => match tokio::time::timeout(t, waited).await {
            Ok(out) => out?,
            Err(_) => return Ok(None),
        },
        None => waited.await?,
    };
    let _ = feed.await;
    Ok(Some(out))
}

async fn execute(
    shared: &Shared,
    full: &str,
    container: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return error(
            StatusCode::BAD_REQUEST,
            full,
            "invalid request body: not JSON",
        );
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                full,
                format!("invalid request body: {e}"),
            );
        }
    };
    let errors = validate(&request, EXECUTE, "");
    if !errors.is_empty() {
        return error(StatusCode::BAD_REQUEST, full, errors.join(", "));
    }
    let command = str_field(&request, "command").unwrap_or_default();
    if command.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            full,
            "command cannot be empty or whitespace-only",
        );
    }
    let mut opts = Vec::new();
    if let Some(cwd) = str_field(&request, "cwd") {
        opts.extend(["--workdir".to_owned(), cwd]);
    }
    for (k, v) in str_map(&request, "envs") {
        opts.extend(["--env".to_owned(), format!("{k}={v}")]);
    }
    let timeout = request
        .get("timeout")
        .and_then(Value::as_f64)
        .filter(|t| *t > 0.0)
        .map(Duration::from_secs_f64);
    // The daemon pipes the command to the shell and combines stdout and stderr.
    let ran = exec(
        shared,
        container,
        &opts,
        &["sh", "-c", "exec sh 2>&1"],
        command.into_bytes(),
        timeout,
    )
    .await;
    match ran {
        Ok(Some(out)) => axum::Json(json!({
            "exitCode": out.status.code().unwrap_or(-1),
            "result": String::from_utf8_lossy(&out.stdout),
        }))
        .into_response(),
        Ok(None) => error(
            StatusCode::REQUEST_TIMEOUT,
            full,
            "command execution timeout",
        ),
        Err(e) => axum::Json(json!({"exitCode": -1, "result": e.to_string()})).into_response(),
    }
}

/// The content of the multipart field `file`.
fn multipart_file<'a>(body: &'a [u8], boundary: &str) -> Option<&'a [u8]> {
    let delimiter = format!("--{boundary}").into_bytes();
    let find = |from: usize, what: &[u8]| -> Option<usize> {
        body.get(from..)?
            .windows(what.len())
            .position(|w| w == what)
            .map(|at| from + at)
    };
    let mut at = find(0, &delimiter)?;
    loop {
        let after = at + delimiter.len();
        if body.get(after..after + 2) == Some(b"--") {
            return None;
        }
        let headers_end = find(after, b"\r\n\r\n")?;
        let headers = String::from_utf8_lossy(&body[after..headers_end]);
        let start = headers_end + 4;
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(&delimiter);
        let end = find(start, &closing)?;
        if headers.lines().any(|l| {
            l.to_ascii_lowercase().starts_with("content-disposition") && l.contains("name=\"file\"")
        }) {
            return Some(&body[start..end]);
        }
        at = end + 2;
    }
}

async fn upload(
    shared: &Shared,
    full: &str,
    container: &str,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let boundary = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("multipart/form-data"))
        .and_then(|v| v.split("boundary=").nth(1))
        .map(|b| b.trim_matches('"').to_owned());
    let Some(boundary) = boundary else {
        return error(
            StatusCode::BAD_REQUEST,
            full,
            "request Content-Type isn't multipart/form-data",
        );
    };
    let Some(file) = multipart_file(body, &boundary) else {
        return error(StatusCode::BAD_REQUEST, full, "http: no such file");
    };
    let ran = exec(
        shared,
        container,
        &[],
        &[
            "sh",
            "-c",
            "mkdir -p \"$(dirname \"$1\")\" && cat > \"$1\"",
            "sh",
            path,
        ],
        file.to_vec(),
        None,
    )
    .await;
    match ran {
        Ok(Some(out)) if out.status.success() => StatusCode::OK.into_response(),
        Ok(Some(out)) => error(
            StatusCode::BAD_REQUEST,
            full,
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ),
        Ok(None) => error(StatusCode::REQUEST_TIMEOUT, full, "upload timeout"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, full, e.to_string()),
    }
}

async fn download(shared: &Shared, full: &str, container: &str, path: &str) -> Response {
    let ran = exec(
        shared,
        container,
        &[],
        &[
            "sh",
            "-c",
            "[ -e \"$1\" ] || exit 4; [ -d \"$1\" ] && exit 3; exec cat -- \"$1\"",
            "sh",
            path,
        ],
        Vec::new(),
        None,
    )
    .await;
    match ran {
        Ok(Some(out)) if out.status.success() => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/octet-stream")
            .header("content-length", out.stdout.len())
            .body(axum::body::Body::from(out.stdout))
            .unwrap(),
        Ok(Some(out)) if out.status.code() == Some(4) => error(
            StatusCode::NOT_FOUND,
            full,
            format!("stat {path}: no such file or directory"),
        ),
        Ok(Some(out)) if out.status.code() == Some(3) => {
            error(StatusCode::BAD_REQUEST, full, "path must be a file")
        }
        Ok(Some(out)) => error(
            StatusCode::BAD_REQUEST,
            full,
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ),
        Ok(None) => error(StatusCode::REQUEST_TIMEOUT, full, "download timeout"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, full, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_field_is_read_from_a_multipart_body() {
        let body = b"--b1\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--b1\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\nContent-Type: application/octet-stream\r\n\r\nline\r\n-b1\x00\r\n--b1--\r\n";
        assert_eq!(multipart_file(body, "b1"), Some(&b"line\r\n-b1\x00"[..]));
        assert_eq!(multipart_file(b"--b1--\r\n", "b1"), None);
    }

    #[test]
    fn execute_requests_are_validated_as_the_daemon_declares_them() {
        assert!(
            validate(
                &json!({"command": "ls", "timeout": 5, "cwd": "/", "envs": {"A": "b"}}),
                EXECUTE,
                ""
            )
            .is_empty()
        );
        assert_eq!(
            validate(
                &json!({"command": 1, "timeout": "5", "env": {}}),
                EXECUTE,
                ""
            ),
            [
                "property env should not exist",
                "command must be a string",
                "timeout must be a number conforming to the specified constraints",
            ]
        );
    }
}
