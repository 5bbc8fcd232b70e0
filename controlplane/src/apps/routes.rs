//! Serving apps on the public listener: `/apps/<project>/<slug>/<path>` for every app, and
//! any path on a custom domain an app's served deployment declares (by `Host` header).
//!
//! Served sites are public, as a website is: no token is asked for. What is served is only
//! ever a file inside the app's served deployment directory (see [`content::resolve`]);
//! everything else — an unknown project or app, a disabled one, one with nothing deployed
//! yet, a missing file — is 404 with a JSON error. With the flag off, every `/apps` route is
//! 404 with a JSON error naming the flag, and no `Host` header is looked at.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::content::{self, Resolved};
use super::{Apps, FLAG, disabled_message, hash::normalize_domain};

/// How long a domain's app (or its absence) is remembered by this replica.
const DOMAIN_TTL: Duration = Duration::from_secs(2);
/// Domains remembered at most (then the memory starts over).
const MAX_DOMAINS: usize = 10_000;

/// A domain's app as `(project id, slug)`, or none, and when that was read.
type DomainMemory = HashMap<String, (Instant, Option<(String, String)>)>;

#[derive(Clone)]
struct Serving {
    apps: Apps,
    domains: Arc<Mutex<DomainMemory>>,
}

/// The `/apps` routes.
pub fn router(apps: Apps) -> axum::Router {
    axum::Router::new()
        .route("/apps", get(no_app))
        .route("/apps/", get(no_app))
        .route("/apps/{project}", get(no_app))
        .route("/apps/{project}/", get(no_app))
        .route("/apps/{project}/{slug}", get(app_root_no_slash))
        .route("/apps/{project}/{slug}/", get(app_root))
        .route("/apps/{project}/{slug}/{*path}", get(app_file))
        .with_state(Serving {
            apps,
            domains: Arc::default(),
        })
}

/// The state of [`by_host`].
#[derive(Clone)]
pub struct HostState(Serving);

impl HostState {
    pub fn new(apps: Apps) -> Self {
        HostState(Serving {
            apps,
            domains: Arc::default(),
        })
    }
}

/// Middleware over the whole public router: a GET or HEAD whose `Host` is a custom domain
/// of a served app gets that app's files; anything else goes on.
pub async fn by_host(
    State(HostState(serving)): State<HostState>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method();
    if !serving.apps.enabled()
        || (method != axum::http::Method::GET && method != axum::http::Method::HEAD)
    {
        return next.run(req).await;
    }
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let Some(domain) = (!grpc).then(|| request_domain(&req)).flatten() else {
        return next.run(req).await;
    };
    let Some((project_id, slug)) = serving.domain_app(&domain).await else {
        return next.run(req).await;
    };
    let Some(rel) = percent_decode(req.uri().path()) else {
        return not_found("no such file");
    };
    serving
        .serve(&project_id, &slug, rel.trim_start_matches('/'), "/")
        .await
}

/// The request's host name, if it could be a custom domain (not an IP address, not
/// `localhost`).
fn request_domain(req: &Request) -> Option<String> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().host().map(str::to_string))?;
    let host = if raw.starts_with('[') {
        return None;
    } else {
        raw.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(raw.as_str(), |(h, _)| h)
    };
    let host = normalize_domain(host);
    if host.is_empty()
        || host == "localhost"
        || host.len() > 253
        || host.parse::<std::net::IpAddr>().is_ok()
    {
        return None;
    }
    Some(host)
}

impl Serving {
    async fn domain_app(&self, domain: &str) -> Option<(String, String)> {
        let now = Instant::now();
        if let Some((at, app)) = self.lock().get(domain).cloned()
            && now.duration_since(at) < DOMAIN_TTL
        {
            return app;
        }
        let app = match self.apps.store().app_by_domain(domain).await {
            Ok(app) => app,
            Err(e) => {
                tracing::warn!(%domain, error = %e, "looking up an app by domain");
                return None;
            }
        };
        let mut domains = self.lock();
        if domains.len() >= MAX_DOMAINS {
            domains.clear();
        }
        domains.insert(domain.to_string(), (now, app.clone()));
        app
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DomainMemory> {
        self.domains.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file `rel` of the app's served deployment; `prefix` is where the app's root is
    /// (for redirects that add a directory's slash).
    async fn serve(&self, project_id: &str, slug: &str, rel: &str, prefix: &str) -> Response {
        let row = match self.apps.store().get_app(project_id, slug).await {
            Ok(Some(row)) => row,
            Ok(None) => return not_found(&format!("app '{slug}' not found")),
            Err(e) => {
                tracing::warn!(app = %slug, error = %e, "reading an app to serve it");
                return json_error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable");
            }
        };
        if !row.enabled {
            return not_found(&format!("app '{slug}' is disabled"));
        }
        let Some(active) = row.active_deployment else {
            return not_found(&format!("app '{slug}' has no successful deployment yet"));
        };
        let dir = content::deployment_dir(self.apps.root(), project_id, slug, &active);
        let rel_owned = rel.to_string();
        let resolved = tokio::task::spawn_blocking(move || content::resolve(&dir, &rel_owned))
            .await
            .unwrap_or(Resolved::NotFound);
        match resolved {
            Resolved::File(path) => file_response(&path).await,
            Resolved::AddSlash => {
                let location = format!("{prefix}{rel}/");
                match HeaderValue::from_str(&location) {
                    Ok(location) => (
                        StatusCode::PERMANENT_REDIRECT,
                        [(header::LOCATION, location)],
                    )
                        .into_response(),
                    Err(_) => not_found("no such file"),
                }
            }
            Resolved::NotFound => not_found("no such file"),
        }
    }

    async fn serve_path(&self, project_ref: &str, slug: &str, rel: &str) -> Response {
        if !self.apps.enabled() {
            return flag_off();
        }
        if project_ref.len() > 128 || slug.len() > 128 {
            return not_found("no such app");
        }
        let project = match self.apps.store().find_project(project_ref).await {
            Ok(p) => p,
            Err(e) if e.is_not_found() => {
                return not_found(&format!("project '{project_ref}' not found"));
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading a project to serve an app");
                return json_error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable");
            }
        };
        let prefix = super::app_path(project_ref, slug);
        self.serve(&project.id, slug, rel, &prefix).await
    }
}

async fn no_app(State(serving): State<Serving>) -> Response {
    if !serving.apps.enabled() {
        return flag_off();
    }
    not_found("name an app: /apps/<project>/<slug>/")
}

async fn app_root_no_slash(
    State(serving): State<Serving>,
    Path((project, slug)): Path<(String, String)>,
) -> Response {
    if !serving.apps.enabled() {
        return flag_off();
    }
    match HeaderValue::from_str(&super::app_path(&project, &slug)) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => not_found("no such app"),
    }
}

async fn app_root(
    State(serving): State<Serving>,
    Path((project, slug)): Path<(String, String)>,
) -> Response {
    serving.serve_path(&project, &slug, "").await
}

async fn app_file(
    State(serving): State<Serving>,
    Path((project, slug, path)): Path<(String, String, String)>,
) -> Response {
    serving.serve_path(&project, &slug, &path).await
}

async fn file_response(path: &std::path::Path) -> Response {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(_) => return not_found("no such file"),
    };
    let len = file.metadata().await.map(|m| m.len()).ok();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content::content_type(path)),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(len) = len {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    response
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response()
}

fn not_found(message: &str) -> Response {
    json_error(StatusCode::NOT_FOUND, message)
}

/// 404, with a JSON error that names the flag.
fn flag_off() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": disabled_message(), "flag": FLAG }).to_string(),
    )
        .into_response()
}

/// `%XX`-decodes a path; `None` when it is not valid percent-encoded UTF-8.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_strictly() {
        assert_eq!(percent_decode("/a%20b/c").as_deref(), Some("/a b/c"));
        assert_eq!(percent_decode("/%2e%2e/x").as_deref(), Some("/../x"));
        assert_eq!(percent_decode("/%zz"), None);
        assert_eq!(percent_decode("/%e"), None);
        assert_eq!(percent_decode("/%ff"), None);
    }

    #[test]
    fn only_names_can_be_custom_domains() {
        let req = |host: &str| {
            Request::builder()
                .uri("/")
                .header(header::HOST, host)
                .body(Body::empty())
                .unwrap()
        };
        assert_eq!(
            request_domain(&req("Marketing.Example.com:8080")).as_deref(),
            Some("marketing.example.com")
        );
        assert_eq!(
            request_domain(&req("site.example.com.")).as_deref(),
            Some("site.example.com")
        );
        for not in ["127.0.0.1:8008", "localhost:8008", "[::1]:8008", "10.0.0.1"] {
            assert_eq!(request_domain(&req(not)), None, "{not}");
        }
    }
}
