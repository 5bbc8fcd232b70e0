//! A strict local Daytona for tests: no Daytona service is reachable from the test machines,
//! so `--sandbox daytona` is tested against this stand-in, which serves exactly the endpoints
//! the provider uses, as Daytona's API declares them (`apps/api/src` of daytonaio/daytona):
//!
//! - `GET /api/object-storage/push-access`, and the object storage it names (path-style S3
//!   `HEAD`/`PUT` of `<bucket>/<org>/<hash>/context.tar`, Signature V4 with the session
//!   token; the payload's SHA-256 is checked);
//! - `POST /api/snapshots`, `GET /api/snapshots/{idOrName}`, `DELETE /api/snapshots/{id}`
//!   (a UUID), `GET /api/snapshots/{id}/build-logs?follow=`;
//! - `POST /api/sandbox`, `GET /api/sandbox` (`labels`, `limit`, `cursor`),
//!   `GET /api/sandbox/{idOrName}`, `DELETE /api/sandbox/{idOrName}`;
//! - `GET /api/sandbox/{id}/toolbox-proxy-url`, and the toolbox proxy it names
//!   (`<base>/toolbox/<sandboxId>/process/execute`, `files/upload`, `files/download`,
//!   [`toolbox`], through `podman exec`).
//!
//! Strict as Daytona is, and stricter where Daytona is lenient: a missing or wrong bearer
//! token is 401; a body or query with an unknown field, a wrong type or a missing required
//! field is 400 (class-validator's messages; Daytona itself ignores unknown fields, the
//! stand-in refuses them so a misspelt field fails a test instead of being dropped); an
//! unknown id is 404; resources beside a snapshot are 400 ("Cannot specify Sandbox resources
//! when using a snapshot"); a taken name is 409. Errors have Daytona's body
//! (`path`, `timestamp`, `statusCode`, `error`, `message`). [`DaytonaStandIn::inject`] answers
//! the next requests with 429 or 503 to exercise retries.
//!
//! It is backed by real containers: a snapshot is built with Podman from the Dockerfile
//! content written as `Dockerfile` and the context archives unpacked beside it, as Daytona's
//! runner does (directories skipped, every other entry a regular file with its mode); a
//! failing build is `build_failed` with the build's error as `errorReason`. A sandbox is a
//! Podman container of that image with the given environment, the snapshot's CPU and memory,
//! on Podman's bridge; it is `creating`, then `started`, and when its process exits it is
//! deleted (`autoDeleteInterval: 0`) or `stopped`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::digest;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::podman::Podman;

mod toolbox;

/// A running stand-in. Dropping it stops serving and removes the containers it ran and the
/// images it built ([`DaytonaStandIn::cleanup`]).
pub struct DaytonaStandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

struct Shared {
    key: String,
    org: String,
    access_key: String,
    secret: String,
    session_token: String,
    bucket: String,
    podman: &'static Podman,
    dir: tempfile::TempDir,
    addr: Mutex<Option<SocketAddr>>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    snapshots: Vec<SnapshotRec>,
    sandboxes: Vec<SandboxRec>,
    /// Object key → file.
    objects: HashMap<String, PathBuf>,
    /// `"POST /snapshots"` → how many authenticated requests came.
    requests: HashMap<String, usize>,
    inject: VecDeque<u16>,
    /// Every `POST /sandbox` that created one: its environment and labels.
    created: Vec<(BTreeMap<String, String>, BTreeMap<String, String>)>,
}

#[derive(Clone)]
struct SnapshotRec {
    id: String,
    name: String,
    state: String,
    error_reason: Option<String>,
    cpu: f64,
    mem: f64,
    disk: f64,
    size: Option<f64>,
    entrypoint: Option<Vec<String>>,
    dockerfile: String,
    context_hashes: Vec<String>,
    image: String,
    created_at: String,
    log: Arc<BuildLog>,
}

#[derive(Default)]
struct BuildLog {
    lines: Mutex<Vec<String>>,
    done: AtomicBool,
}

#[derive(Clone)]
struct SandboxRec {
    id: String,
    name: String,
    snapshot: String,
    state: String,
    error_reason: Option<String>,
    env: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    cpu: f64,
    mem: f64,
    disk: f64,
    auto_stop: f64,
    auto_delete: f64,
    container: String,
    created_at: String,
}

/// Containers and images the stand-in makes carry this label.
pub const STAND_IN_LABEL: &str = "kortix-test.daytona-stand-in";

impl DaytonaStandIn {
    /// Serves on 127.0.0.1 (only the control plane talks to it).
    pub async fn start(podman: &'static Podman) -> std::io::Result<Self> {
        let id = || uuid::Uuid::new_v4().simple().to_string();
        let shared = Arc::new(Shared {
            key: format!("dtn_{}", id()),
            org: uuid::Uuid::new_v4().to_string(),
            access_key: format!("temp-{}", &id()[..12]),
            secret: id(),
            session_token: id(),
            bucket: "daytona".into(),
            podman,
            dir: tempfile::tempdir()?,
            addr: Mutex::new(None),
            inner: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        *shared.addr.lock().unwrap() = Some(addr);
        let app = axum::Router::new()
            .fallback(handle)
            .layer(axum::extract::DefaultBodyLimit::max(4 << 30))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            shared,
            server,
        })
    }

    /// The API's base URL (`http://127.0.0.1:<port>/api`).
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn api_key(&self) -> &str {
        &self.shared.key
    }

    pub fn organization_id(&self) -> &str {
        &self.shared.org
    }

    /// How many authenticated requests `call` (`"POST /snapshots"`) got, injected answers
    /// included.
    pub fn requests(&self, call: &str) -> usize {
        let inner = self.shared.inner.lock().unwrap();
        inner.requests.get(call).copied().unwrap_or(0)
    }

    /// Answers the next authenticated API requests with these statuses, one each.
    pub fn inject(&self, statuses: &[u16]) {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.inject.extend(statuses.iter().copied());
    }

    /// Injected answers not given yet.
    pub fn injections_left(&self) -> usize {
        self.shared.inner.lock().unwrap().inject.len()
    }

    /// The container of the sandbox labelled `kortix.session=<session>`.
    pub fn container_of(&self, session: &str) -> Option<String> {
        self.sandbox_of(session).map(|s| s.container)
    }

    /// The id of the sandbox labelled `kortix.session=<session>`.
    pub fn sandbox_id_of(&self, session: &str) -> Option<String> {
        self.sandbox_of(session).map(|s| s.id)
    }

    /// The environment and labels the sandbox of `session` was created with.
    pub fn sandbox_request_of(
        &self,
        session: &str,
    ) -> Option<(BTreeMap<String, String>, BTreeMap<String, String>)> {
        self.sandbox_of(session).map(|s| (s.env, s.labels))
    }

    fn sandbox_of(&self, session: &str) -> Option<SandboxRec> {
        let inner = self.shared.inner.lock().unwrap();
        inner
            .sandboxes
            .iter()
            .find(|s| s.labels.get("kortix.session").map(String::as_str) == Some(session))
            .cloned()
    }

    /// Deletes a sandbox behind its owner's back (as someone in Daytona's dashboard would).
    pub fn delete_sandbox(&self, id: &str) {
        let removed = take(&mut self.shared.inner.lock().unwrap().sandboxes, |s| {
            s.id == id
        });
        if let Some(s) = removed {
            let _ = self
                .shared
                .podman
                .cli(&["rm", "-f", "-t", "0", &s.container]);
        }
    }

    /// A started sandbox with `labels`, running `sleep` in `image` (a stray for reconcile).
    pub fn add_sandbox(&self, name: &str, image: &str, labels: &[(&str, &str)]) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let container = format!("daytona-sandbox-{id}");
        self.shared
            .podman
            .cli(&[
                "run",
                "-d",
                "--name",
                &container,
                "--label",
                &format!("{STAND_IN_LABEL}=1"),
                "--entrypoint",
                "sleep",
                image,
                "600",
            ])
            .expect("running a stray sandbox");
        let mut inner = self.shared.inner.lock().unwrap();
        inner.sandboxes.push(SandboxRec {
            id: id.clone(),
            name: name.into(),
            snapshot: image.into(),
            state: "started".into(),
            error_reason: None,
            env: BTreeMap::new(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            cpu: 1.0,
            mem: 1.0,
            disk: 3.0,
            auto_stop: 0.0,
            auto_delete: -1.0,
            container,
            created_at: now(),
        });
        id
    }

    /// The ids of the sandboxes labelled `key=value`.
    pub fn sandboxes_labelled(&self, key: &str, value: &str) -> Vec<String> {
        let inner = self.shared.inner.lock().unwrap();
        inner
            .sandboxes
            .iter()
            .filter(|s| s.labels.get(key).map(String::as_str) == Some(value))
            .map(|s| s.id.clone())
            .collect()
    }

    /// What every sandbox ever created with label `key=value` was created with (environment
    /// and labels), also after it was deleted.
    pub fn created_with_label(
        &self,
        key: &str,
        value: &str,
    ) -> Vec<(BTreeMap<String, String>, BTreeMap<String, String>)> {
        let inner = self.shared.inner.lock().unwrap();
        inner
            .created
            .iter()
            .filter(|(_, labels)| labels.get(key).map(String::as_str) == Some(value))
            .cloned()
            .collect()
    }

    /// Whether a sandbox with this id exists.
    pub fn has_sandbox(&self, id: &str) -> bool {
        let inner = self.shared.inner.lock().unwrap();
        inner.sandboxes.iter().any(|s| s.id == id)
    }

    /// Removes every container and image this stand-in made.
    pub fn cleanup(&self) {
        let (containers, images): (Vec<String>, Vec<String>) = {
            let inner = self.shared.inner.lock().unwrap();
            (
                inner
                    .sandboxes
                    .iter()
                    .map(|s| s.container.clone())
                    .collect(),
                inner.snapshots.iter().map(|s| s.image.clone()).collect(),
            )
        };
        for c in containers {
            let _ = self.shared.podman.cli(&["rm", "-f", "-t", "0", &c]);
        }
        for i in images {
            let _ = self.shared.podman.cli(&["rmi", "-f", &i]);
        }
    }
}

impl Drop for DaytonaStandIn {
    /// Stops serving and removes what it ran and built, also when a test panics.
    fn drop(&mut self) {
        self.server.abort();
        self.cleanup();
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Daytona's error body (`AllExceptionsFilter`).
fn error(status: StatusCode, path: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "path": path,
        "timestamp": now(),
        "statusCode": status.as_u16(),
        "error": status.canonical_reason().unwrap_or(""),
        "message": message.into(),
    });
    (status, axum::Json(body)).into_response()
}

fn not_found(path: &str, message: String) -> Response {
    error(StatusCode::NOT_FOUND, path, message)
}

/// Removes and returns the first item that `matches`.
fn take<T>(items: &mut Vec<T>, matches: impl Fn(&T) -> bool) -> Option<T> {
    let at = items.iter().position(matches)?;
    Some(items.remove(at))
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn handle(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if let Some(rest) = path.strip_prefix("/s3/") {
        return object_storage(&shared, &method, rest, &headers, body).await;
    }
    if let Some(rest) = path.strip_prefix("/toolbox/") {
        let full = uri.to_string();
        return toolbox::serve(&shared, &method, &full, rest, uri.query(), &headers, body).await;
    }
    let Some(api) = path.strip_prefix("/api") else {
        return error(
            StatusCode::NOT_FOUND,
            &path,
            format!("Cannot {method} {path}"),
        );
    };
    let full = uri.to_string();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(shared.key.as_str()) {
        return error(StatusCode::UNAUTHORIZED, &full, "Unauthorized");
    }
    if let Some(org) = headers.get("x-daytona-organization-id")
        && org.to_str().ok() != Some(shared.org.as_str())
    {
        return error(
            StatusCode::FORBIDDEN,
            &full,
            "Request organization ID does not match resource organization ID",
        );
    }
    let segments: Vec<&str> = api.trim_matches('/').split('/').collect();
    let template = match (method.as_str(), segments.as_slice()) {
        (_, ["object-storage", "push-access"]) => "/object-storage/push-access".to_owned(),
        (_, ["snapshots"]) => "/snapshots".to_owned(),
        (_, ["snapshots", _]) => "/snapshots/{id}".to_owned(),
        (_, ["snapshots", _, "build-logs"]) => "/snapshots/{id}/build-logs".to_owned(),
        (_, ["sandbox"]) => "/sandbox".to_owned(),
        (_, ["sandbox", _]) => "/sandbox/{id}".to_owned(),
        (_, ["sandbox", _, "toolbox-proxy-url"]) => "/sandbox/{id}/toolbox-proxy-url".to_owned(),
        _ => api.to_owned(),
    };
    let injected = {
        let mut inner = shared.inner.lock().unwrap();
        *inner
            .requests
            .entry(format!("{method} {template}"))
            .or_default() += 1;
        inner.inject.pop_front()
    };
    if let Some(status) = injected {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let message = if status == StatusCode::TOO_MANY_REQUESTS {
            "ThrottlerException: Too Many Requests"
        } else {
            "Service Unavailable"
        };
        let mut resp = error(status, &full, message);
        if status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("0"));
        }
        return resp;
    }
    let query = parse_query(uri.query().unwrap_or(""));
    let json_body = || -> Result<Value, String> {
        let is_json = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json || body.is_empty() {
            // Express parses only JSON bodies; anything else arrives empty.
            return Ok(json!({}));
        }
        serde_json::from_slice(&body).map_err(|e| format!("Unexpected token in JSON: {e}"))
    };
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["object-storage", "push-access"]) => {
            let addr = shared.addr.lock().unwrap().expect("listening");
            ok(json!({
                "accessKey": shared.access_key,
                "secret": shared.secret,
                "sessionToken": shared.session_token,
                "storageUrl": format!("http://{addr}/s3"),
                "organizationId": shared.org,
                "bucket": shared.bucket,
            }))
        }
        ("POST", ["snapshots"]) => match json_body() {
            Ok(b) => create_snapshot(&shared, &full, b),
            Err(why) => error(StatusCode::BAD_REQUEST, &full, why),
        },
        ("GET", ["snapshots", id]) => {
            let inner = shared.inner.lock().unwrap();
            let found = inner
                .snapshots
                .iter()
                .find(|s| s.id == *id || s.name == *id);
            found.map_or_else(
                || not_found(&full, format!("Snapshot {id} not found")),
                |s| ok(snapshot_dto(s, &shared.org)),
            )
        }
        ("DELETE", ["snapshots", id]) => {
            if uuid::Uuid::parse_str(id).is_err() {
                return error(
                    StatusCode::BAD_REQUEST,
                    &full,
                    "Validation failed (uuid is expected)",
                );
            }
            let removed = take(&mut shared.inner.lock().unwrap().snapshots, |s| s.id == *id);
            match removed {
                Some(s) => {
                    let _ = shared.podman.cli(&["rmi", "-f", &s.image]);
                    StatusCode::OK.into_response()
                }
                None => not_found(&full, format!("Snapshot {id} not found")),
            }
        }
        ("GET", ["snapshots", id, "build-logs"]) => build_logs(&shared, &full, id, &query),
        ("POST", ["sandbox"]) => match json_body() {
            Ok(b) => create_sandbox(&shared, &full, b),
            Err(why) => error(StatusCode::BAD_REQUEST, &full, why),
        },
        ("GET", ["sandbox"]) => list_sandboxes(&shared, &full, &query).await,
        ("GET", ["sandbox", id]) => {
            refresh(&shared).await;
            let inner = shared.inner.lock().unwrap();
            let found = inner
                .sandboxes
                .iter()
                .find(|s| s.id == *id || s.name == *id);
            found.map_or_else(
                || not_found(&full, format!("Sandbox with ID or name {id} not found")),
                |s| ok(sandbox_dto(s, &shared.org)),
            )
        }
        ("GET", ["sandbox", id, "toolbox-proxy-url"]) => {
            let known = {
                let inner = shared.inner.lock().unwrap();
                inner.sandboxes.iter().any(|s| s.id == *id || s.name == *id)
            };
            if !known {
                return not_found(&full, format!("Sandbox with ID or name {id} not found"));
            }
            let addr = shared.addr.lock().unwrap().expect("listening");
            ok(json!({ "url": format!("http://{addr}/toolbox") }))
        }
        ("DELETE", ["sandbox", id]) => {
            let removed = take(&mut shared.inner.lock().unwrap().sandboxes, |s| {
                s.id == *id || s.name == *id
            });
            match removed {
                Some(mut s) => {
                    let podman = shared.podman;
                    let container = s.container.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        podman.cli(&["rm", "-f", "-t", "0", &container])
                    })
                    .await;
                    s.state = "destroying".into();
                    ok(sandbox_dto(&s, &shared.org))
                }
                None => not_found(&full, format!("Sandbox with ID or name {id} not found")),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &full,
            format!("Cannot {method} {path}"),
        ),
    }
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a body field must be (class-validator's decorators, as Daytona's DTOs use them).
#[derive(Clone, Copy)]
enum Kind {
    Str,
    NonEmptyStr,
    Num { min: Option<f64>, max: Option<f64> },
    Bool,
    StrMap,
    StrArray,
    Array,
    Obj(&'static [Field]),
}

#[derive(Clone, Copy)]
struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

const RESOURCE: Kind = Kind::Num {
    min: Some(0.0),
    max: None,
};
const GPU: Kind = Kind::Num {
    min: Some(0.0),
    max: Some(1.0),
};
const ANY_NUM: Kind = Kind::Num {
    min: None,
    max: None,
};

/// `CreateBuildInfo`.
const BUILD_INFO: &[Field] = &[
    req("dockerfileContent", Kind::NonEmptyStr),
    opt("contextHashes", Kind::StrArray),
];

/// `CreateSnapshot`.
const CREATE_SNAPSHOT: &[Field] = &[
    req("name", Kind::Str),
    opt("imageName", Kind::Str),
    opt("entrypoint", Kind::StrArray),
    opt("cpu", RESOURCE),
    opt("gpu", GPU),
    opt("gpuType", Kind::StrArray),
    opt("memory", RESOURCE),
    opt("disk", RESOURCE),
    opt("buildInfo", Kind::Obj(BUILD_INFO)),
    opt("regionId", Kind::Str),
    opt("sandboxClass", Kind::Str),
];

/// `CreateSandbox`.
const CREATE_SANDBOX: &[Field] = &[
    opt("name", Kind::Str),
    opt("snapshot", Kind::Str),
    opt("user", Kind::Str),
    opt("env", Kind::StrMap),
    opt("labels", Kind::StrMap),
    opt("public", Kind::Bool),
    opt("networkBlockAll", Kind::Bool),
    opt("networkAllowList", Kind::Str),
    opt("domainAllowList", Kind::Str),
    opt("target", Kind::Str),
    opt("cpu", RESOURCE),
    opt("gpu", GPU),
    opt("gpuType", Kind::StrArray),
    opt("memory", RESOURCE),
    opt("disk", RESOURCE),
    opt("autoStopInterval", ANY_NUM),
    opt("autoArchiveInterval", ANY_NUM),
    opt("autoDeleteInterval", ANY_NUM),
    opt("volumes", Kind::Array),
    opt("buildInfo", Kind::Obj(BUILD_INFO)),
    opt("linkedSandbox", Kind::Str),
];

/// class-validator's messages for `value` against `fields`.
fn validate(value: &Value, fields: &[Field], prefix: &str) -> Vec<String> {
    let Some(object) = value.as_object() else {
        return vec![format!("{prefix}an object is expected")];
    };
    let mut errors = Vec::new();
    for key in object.keys() {
        if !fields.iter().any(|f| f.name == key) {
            errors.push(format!("property {prefix}{key} should not exist"));
        }
    }
    for f in fields {
        let name = format!("{prefix}{}", f.name);
        let Some(v) = object.get(f.name).filter(|v| !v.is_null()) else {
            if f.required {
                errors.push(match f.kind {
                    Kind::NonEmptyStr => format!("{name} should not be empty"),
                    _ => format!("{name} must be a string"),
                });
            }
            continue;
        };
        match f.kind {
            Kind::Str if !v.is_string() => errors.push(format!("{name} must be a string")),
            Kind::NonEmptyStr => match v.as_str() {
                None => errors.push(format!("{name} must be a string")),
                Some("") => errors.push(format!("{name} should not be empty")),
                Some(_) => {}
            },
            Kind::Num { min, max } => match v.as_f64() {
                None => errors.push(format!(
                    "{name} must be a number conforming to the specified constraints"
                )),
                Some(n) => {
                    if let Some(min) = min.filter(|m| n < *m) {
                        errors.push(format!("{name} must not be less than {min}"));
                    }
                    if let Some(max) = max.filter(|m| n > *m) {
                        errors.push(format!("{name} must not be greater than {max}"));
                    }
                }
            },
            Kind::Bool if !v.is_boolean() => {
                errors.push(format!("{name} must be a boolean value"));
            }
            Kind::StrMap => match v.as_object() {
                None => errors.push(format!("{name} must be an object")),
                Some(map) if map.values().any(|v| !v.is_string()) => {
                    errors.push(format!("each value in {name} must be a string"));
                }
                Some(_) => {}
            },
            Kind::StrArray => match v.as_array() {
                None => errors.push(format!("{name} must be an array")),
                Some(items) if items.iter().any(|v| !v.is_string()) => {
                    errors.push(format!("each value in {name} must be a string"));
                }
                Some(_) => {}
            },
            Kind::Array if !v.is_array() => errors.push(format!("{name} must be an array")),
            Kind::Obj(inner) => {
                if v.is_object() {
                    errors.extend(validate(v, inner, &format!("{name}.")));
                } else {
                    errors.push(format!("{name} must be an object"));
                }
            }
            _ => {}
        }
    }
    errors
}

fn str_field(v: &Value, name: &str) -> Option<String> {
    v.get(name).and_then(Value::as_str).map(str::to_owned)
}

fn num_field(v: &Value, name: &str) -> Option<f64> {
    v.get(name).and_then(Value::as_f64)
}

fn str_map(v: &Value, name: &str) -> BTreeMap<String, String> {
    v.get(name)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn snapshot_dto(s: &SnapshotRec, org: &str) -> Value {
    json!({
        "id": s.id,
        "organizationId": org,
        "general": false,
        "name": s.name,
        "state": s.state,
        "size": s.size,
        "entrypoint": s.entrypoint,
        "cpu": s.cpu,
        "gpu": 0,
        "mem": s.mem,
        "disk": s.disk,
        "errorReason": s.error_reason,
        "createdAt": s.created_at,
        "updatedAt": now(),
        "lastUsedAt": null,
        "buildInfo": {
            "dockerfileContent": s.dockerfile,
            "contextHashes": s.context_hashes,
            "createdAt": s.created_at,
            "updatedAt": s.created_at,
            "snapshotRef": s.image,
        },
    })
}

fn sandbox_dto(s: &SandboxRec, org: &str) -> Value {
    json!({
        "id": s.id,
        "organizationId": org,
        "name": s.name,
        "snapshot": s.snapshot,
        "user": "daytona",
        "env": s.env,
        "labels": s.labels,
        "public": false,
        "networkBlockAll": false,
        "target": "us",
        "cpu": s.cpu,
        "gpu": 0,
        "memory": s.mem,
        "disk": s.disk,
        "state": s.state,
        "desiredState": if s.state == "destroying" { "destroyed" } else { "started" },
        "errorReason": s.error_reason,
        "autoStopInterval": s.auto_stop,
        "autoArchiveInterval": 10080,
        "autoDeleteInterval": s.auto_delete,
        "createdAt": s.created_at,
        "updatedAt": now(),
    })
}

fn create_snapshot(shared: &Arc<Shared>, path: &str, body: Value) -> Response {
    let errors = validate(&body, CREATE_SNAPSHOT, "");
    if !errors.is_empty() {
        return error(StatusCode::BAD_REQUEST, path, errors.join(", "));
    }
    let Some(build_info) = body.get("buildInfo").filter(|b| b.is_object()) else {
        // Image snapshots pull from registries, which the stand-in does not reach.
        return error(StatusCode::BAD_REQUEST, path, "Must specify an image name");
    };
    let name = str_field(&body, "name").unwrap_or_default();
    let id = uuid::Uuid::new_v4().to_string();
    let rec = SnapshotRec {
        id: id.clone(),
        name: name.clone(),
        state: "pending".into(),
        error_reason: None,
        cpu: num_field(&body, "cpu").unwrap_or(1.0),
        mem: num_field(&body, "memory").unwrap_or(1.0),
        disk: num_field(&body, "disk").unwrap_or(3.0),
        size: None,
        entrypoint: body.get("entrypoint").and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        }),
        dockerfile: str_field(build_info, "dockerfileContent").unwrap_or_default(),
        context_hashes: build_info
            .get("contextHashes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        image: format!("localhost/daytona-stand-in/{id}:latest"),
        created_at: now(),
        log: Arc::default(),
    };
    {
        let mut inner = shared.inner.lock().unwrap();
        if inner.snapshots.iter().any(|s| s.name == name) {
            return error(
                StatusCode::CONFLICT,
                path,
                format!("Snapshot with name \"{name}\" already exists for this organization"),
            );
        }
        inner.snapshots.push(rec.clone());
    }
    let (shared2, rec2) = (shared.clone(), rec.clone());
    tokio::task::spawn_blocking(move || build(&shared2, &rec2));
    ok(snapshot_dto(&rec, &shared.org))
}

fn set_snapshot(shared: &Shared, id: &str, change: impl FnOnce(&mut SnapshotRec)) {
    let mut inner = shared.inner.lock().unwrap();
    if let Some(s) = inner.snapshots.iter_mut().find(|s| s.id == id) {
        change(s);
    }
}

/// Builds a snapshot as Daytona's runner does (blocking).
fn build(shared: &Shared, rec: &SnapshotRec) {
    std::thread::sleep(Duration::from_millis(300));
    set_snapshot(shared, &rec.id, |s| s.state = "building".into());
    let outcome = run_build(shared, rec);
    rec.log.done.store(true, Ordering::SeqCst);
    set_snapshot(shared, &rec.id, |s| match outcome {
        Ok(size) => {
            s.state = "active".into();
            s.size = Some(size);
        }
        Err(reason) => {
            s.state = "build_failed".into();
            s.error_reason = Some(reason);
        }
    });
}

fn run_build(shared: &Shared, rec: &SnapshotRec) -> Result<f64, String> {
    let dir = shared.dir.path().join(format!("build-{}", rec.id));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("Dockerfile"), &rec.dockerfile).map_err(|e| e.to_string())?;
    for hash in &rec.context_hashes {
        let key = format!("{}/{hash}/context.tar", shared.org);
        let object = shared.inner.lock().unwrap().objects.get(&key).cloned();
        let Some(object) = object else {
            return Err(format!(
                "failed to get tar from storage with hash {hash}: The specified key does not exist."
            ));
        };
        unpack_like_the_runner(&object, &dir)
            .map_err(|e| format!("processing context {hash}: {e}"))?;
    }
    let mut child = shared
        .podman
        .command()
        .args(["build", "-f", "Dockerfile", "-t", &rec.image, "--label"])
        .arg(format!("{STAND_IN_LABEL}=1"))
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the build: {e}"))?;
    let follow = |pipe: Box<dyn Read + Send>, log: Arc<BuildLog>| {
        std::thread::spawn(move || {
            let mut last = Vec::new();
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                log.lines.lock().unwrap().push(line.clone());
                last.push(line);
            }
            last
        })
    };
    let out = follow(Box::new(child.stdout.take().unwrap()), rec.log.clone());
    let err = follow(Box::new(child.stderr.take().unwrap()), rec.log.clone());
    let status = child.wait().map_err(|e| e.to_string())?;
    let _ = out.join();
    let errors = err.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        let reason = errors
            .iter()
            .rev()
            .find(|l| l.to_ascii_lowercase().contains("error"))
            .or_else(|| errors.last())
            .cloned()
            .unwrap_or_else(|| format!("the build failed ({status})"));
        return Err(reason);
    }
    let bytes: f64 = shared
        .podman
        .cli(&["image", "inspect", "--format", "{{.Size}}", &rec.image])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0.0);
    Ok(bytes / f64::from(1u32 << 30))
}

/// Unpacks a context archive as Daytona's runner copies it into the build context:
/// directories skipped, every other entry a regular file with its mode and contents.
fn unpack_like_the_runner(archive: &Path, dir: &Path) -> std::io::Result<()> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive)?);
    for entry in tar.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_dir() {
            continue;
        }
        let rel = entry.path()?.into_owned();
        if rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        let target = dir.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        let _ = std::fs::remove_file(&target);
        std::fs::write(&target, &data)?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn build_logs(shared: &Arc<Shared>, path: &str, id: &str, query: &[(String, String)]) -> Response {
    let mut follow = false;
    for (k, v) in query {
        match k.as_str() {
            "follow" => match v.as_str() {
                "true" => follow = true,
                "false" => follow = false,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        path,
                        "Validation failed (boolean string is expected)",
                    );
                }
            },
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    path,
                    format!("property {other} should not exist"),
                );
            }
        }
    }
    let rec = {
        let inner = shared.inner.lock().unwrap();
        inner.snapshots.iter().find(|s| s.id == id).cloned()
    };
    let Some(rec) = rec else {
        return error(
            StatusCode::NOT_FOUND,
            path,
            format!("Snapshot {id} not found"),
        );
    };
    if rec.state == "active" {
        return StatusCode::OK.into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    let log = rec.log.clone();
    tokio::spawn(async move {
        let mut sent = 0;
        loop {
            let done = log.done.load(Ordering::SeqCst);
            let fresh: Vec<String> = log.lines.lock().unwrap()[sent..].to_vec();
            sent += fresh.len();
            for line in fresh {
                if tx.send(Ok(Bytes::from(format!("{line}\n")))).await.is_err() {
                    return;
                }
            }
            if done || !follow {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap()
}

fn create_sandbox(shared: &Arc<Shared>, path: &str, body: Value) -> Response {
    let errors = validate(&body, CREATE_SANDBOX, "");
    if !errors.is_empty() {
        return error(StatusCode::BAD_REQUEST, path, errors.join(", "));
    }
    if body.get("buildInfo").is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            path,
            "declarative builds are not served by this stand-in",
        );
    }
    if ["cpu", "gpu", "memory", "disk"]
        .iter()
        .any(|k| num_field(&body, k).is_some_and(|n| n != 0.0))
    {
        return error(
            StatusCode::BAD_REQUEST,
            path,
            "Cannot specify Sandbox resources when using a snapshot",
        );
    }
    let Some(snapshot_ref) = str_field(&body, "snapshot") else {
        return error(StatusCode::BAD_REQUEST, path, "A snapshot is required");
    };
    let id = uuid::Uuid::new_v4().to_string();
    let name = str_field(&body, "name").unwrap_or_else(|| id.clone());
    let rec = {
        let mut inner = shared.inner.lock().unwrap();
        let Some(snapshot) = inner
            .snapshots
            .iter()
            .find(|s| s.id == snapshot_ref || s.name == snapshot_ref)
            .cloned()
        else {
            return error(
                StatusCode::NOT_FOUND,
                path,
                format!("Snapshot {snapshot_ref} not found"),
            );
        };
        if snapshot.state != "active" {
            return error(
                StatusCode::BAD_REQUEST,
                path,
                format!("Snapshot {snapshot_ref} is {}", snapshot.state),
            );
        }
        if inner.sandboxes.iter().any(|s| s.name == name) {
            return error(
                StatusCode::CONFLICT,
                path,
                format!("Sandbox with name {name} already exists"),
            );
        }
        let rec = SandboxRec {
            id: id.clone(),
            name,
            snapshot: snapshot.name.clone(),
            state: "creating".into(),
            error_reason: None,
            env: str_map(&body, "env"),
            labels: str_map(&body, "labels"),
            cpu: snapshot.cpu,
            mem: snapshot.mem,
            disk: snapshot.disk,
            auto_stop: num_field(&body, "autoStopInterval").unwrap_or(15.0),
            auto_delete: num_field(&body, "autoDeleteInterval").unwrap_or(-1.0),
            container: format!("daytona-sandbox-{id}"),
            created_at: now(),
        };
        inner.sandboxes.push(rec.clone());
        inner.created.push((rec.env.clone(), rec.labels.clone()));
        (rec, snapshot)
    };
    let (sandbox, snapshot) = rec;
    let shared2 = shared.clone();
    let run = sandbox.clone();
    tokio::task::spawn_blocking(move || {
        let outcome = run_container(&shared2, &run, &snapshot);
        let mut inner = shared2.inner.lock().unwrap();
        if let Some(s) = inner.sandboxes.iter_mut().find(|s| s.id == run.id) {
            match outcome {
                Ok(()) => s.state = "started".into(),
                Err(why) => {
                    s.state = "error".into();
                    s.error_reason = Some(why);
                }
            }
        }
    });
    ok(sandbox_dto(&sandbox, &shared.org))
}

fn run_container(shared: &Shared, s: &SandboxRec, snapshot: &SnapshotRec) -> Result<(), String> {
    let mut cmd = shared.podman.command();
    cmd.args(["run", "-d", "--name", &s.container, "--hostname", &s.id])
        .arg("--label")
        .arg(format!("{STAND_IN_LABEL}=1"))
        .arg(format!("--cpus={}", snapshot.cpu))
        .arg(format!("--memory={}g", snapshot.mem));
    for (k, v) in &s.env {
        cmd.arg("-e").arg(format!("{k}={v}"));
    }
    if let Some(entrypoint) = &snapshot.entrypoint {
        cmd.arg("--entrypoint")
            .arg(serde_json::to_string(entrypoint).unwrap_or_default());
    }
    let out = cmd
        .arg(&snapshot.image)
        .output()
        .map_err(|e| format!("starting the sandbox: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Sandboxes whose process ended: deleted when ephemeral, else `stopped`.
async fn refresh(shared: &Arc<Shared>) {
    let started: Vec<(String, String)> = {
        let inner = shared.inner.lock().unwrap();
        inner
            .sandboxes
            .iter()
            .filter(|s| s.state == "started")
            .map(|s| (s.id.clone(), s.container.clone()))
            .collect()
    };
    if started.is_empty() {
        return;
    }
    let podman = shared.podman;
    let ended: Vec<(String, String)> = tokio::task::spawn_blocking(move || {
        started
            .into_iter()
            .filter(|(_, c)| {
                podman
                    .cli(&["container", "inspect", "--format", "{{.State.Running}}", c])
                    .map_or(true, |running| running.trim() != "true")
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    for (id, container) in ended {
        let delete = {
            let mut inner = shared.inner.lock().unwrap();
            let Some(at) = inner.sandboxes.iter().position(|s| s.id == id) else {
                continue;
            };
            if inner.sandboxes[at].auto_delete == 0.0 {
                inner.sandboxes.remove(at);
                true
            } else {
                inner.sandboxes[at].state = "stopped".into();
                false
            }
        };
        if delete {
            let _ = tokio::task::spawn_blocking(move || {
                podman.cli(&["rm", "-f", "-t", "0", &container])
            })
            .await;
        }
    }
}

async fn list_sandboxes(shared: &Arc<Shared>, path: &str, query: &[(String, String)]) -> Response {
    let (mut labels, mut limit, mut cursor) = (BTreeMap::<String, String>::new(), 100usize, 0usize);
    for (k, v) in query {
        match k.as_str() {
            "labels" => match serde_json::from_str::<BTreeMap<String, String>>(v) {
                Ok(l) => labels = l,
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        path,
                        "labels must be a JSON object of strings",
                    );
                }
            },
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => limit = n,
                Ok(n) if n > 100 => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        path,
                        "limit must not be greater than 100",
                    );
                }
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        path,
                        "limit must not be less than 1, limit must be an integer number",
                    );
                }
            },
            "cursor" => match v.parse::<usize>() {
                Ok(n) => cursor = n,
                Err(_) => return error(StatusCode::BAD_REQUEST, path, "Invalid cursor"),
            },
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    path,
                    format!("property {other} should not exist"),
                );
            }
        }
    }
    refresh(shared).await;
    let inner = shared.inner.lock().unwrap();
    let matching: Vec<&SandboxRec> = inner
        .sandboxes
        .iter()
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    let items: Vec<Value> = matching
        .iter()
        .skip(cursor)
        .take(limit)
        .map(|s| sandbox_dto(s, &shared.org))
        .collect();
    let next = (cursor + limit < matching.len()).then(|| (cursor + limit).to_string());
    ok(json!({ "items": items, "nextCursor": next }))
}

/// `HEAD` and `PUT` of `<bucket>/<org>/<hash>/context.tar`, Signature V4 with the session
/// token, the payload's hash checked.
async fn object_storage(
    shared: &Arc<Shared>,
    method: &Method,
    rest: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let denied = |why: &str| {
        (
            StatusCode::FORBIDDEN,
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>{why}</Message></Error>"),
        )
            .into_response()
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let auth = header("authorization");
    let credential = format!("AWS4-HMAC-SHA256 Credential={}/", shared.access_key);
    if !auth.starts_with(&credential) {
        return denied("the credential is not the one push-access gave");
    }
    let signed = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("");
    for needed in [
        "host",
        "x-amz-content-sha256",
        "x-amz-date",
        "x-amz-security-token",
    ] {
        if !signed.split(';').any(|h| h == needed) {
            return denied(&format!("{needed} is not signed"));
        }
    }
    let signature = auth.split("Signature=").nth(1).unwrap_or("");
    if signature.len() != 64 || !signature.chars().all(|c| c.is_ascii_hexdigit()) {
        return denied("no signature");
    }
    if header("x-amz-security-token") != shared.session_token {
        return denied("the session token is not the one push-access gave");
    }
    let Some(key) = rest.strip_prefix(&format!("{}/", shared.bucket)) else {
        return (StatusCode::NOT_FOUND, "NoSuchBucket").into_response();
    };
    if !key.starts_with(&format!("{}/", shared.org)) || !key.ends_with("/context.tar") {
        return denied("outside the organization's prefix");
    }
    match *method {
        Method::HEAD => {
            let known = shared.inner.lock().unwrap().objects.contains_key(key);
            if known {
                StatusCode::OK.into_response()
            } else {
                StatusCode::NOT_FOUND.into_response()
            }
        }
        Method::PUT => {
            let sha = hex::encode(digest::digest(&digest::SHA256, &body).as_ref());
            if header("x-amz-content-sha256") != sha {
                return (
                    StatusCode::BAD_REQUEST,
                    "<Error><Code>XAmzContentSHA256Mismatch</Code></Error>",
                )
                    .into_response();
            }
            let file = shared.dir.path().join(format!("object-{sha}.tar"));
            if let Err(e) = tokio::fs::write(&file, &body).await {
                return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
            }
            shared
                .inner
                .lock()
                .unwrap()
                .objects
                .insert(key.to_owned(), file);
            StatusCode::OK.into_response()
        }
        _ => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_validated_as_class_validator_does() {
        let good = json!({
            "name": "n",
            "cpu": 1,
            "buildInfo": {"dockerfileContent": "FROM x", "contextHashes": ["h"]}
        });
        assert!(validate(&good, CREATE_SNAPSHOT, "").is_empty());
        let bad = json!({
            "cpu": "1",
            "memroy": 2,
            "buildInfo": {"dockerfileContent": "", "contextHashes": [1]}
        });
        assert_eq!(
            validate(&bad, CREATE_SNAPSHOT, ""),
            [
                "property memroy should not exist",
                "name must be a string",
                "cpu must be a number conforming to the specified constraints",
                "buildInfo.dockerfileContent should not be empty",
                "each value in buildInfo.contextHashes must be a string",
            ]
        );
        let bad = json!({"env": {"A": 1}, "public": "no", "disk": -1});
        assert_eq!(
            validate(&bad, CREATE_SANDBOX, ""),
            [
                "each value in env must be a string",
                "public must be a boolean value",
                "disk must not be less than 0",
            ]
        );
    }

    #[test]
    fn queries_are_decoded() {
        assert_eq!(
            parse_query("labels=%7B%22a%22%3A%22b%22%7D&limit=1"),
            [
                ("labels".to_owned(), r#"{"a":"b"}"#.to_owned()),
                ("limit".to_owned(), "1".to_owned())
            ]
        );
    }
}
