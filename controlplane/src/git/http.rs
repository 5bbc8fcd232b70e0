//! Smart HTTP git hosting at `/git/<project-name>.git/...`, served through `git http-backend`.
//!
//! Every request is authorized first (fetches too) by the [`GitAuthorizer`]; the project name
//! in the URL is mapped to the project id the repository is stored under. The request body is
//! streamed into `git http-backend` and its CGI response streamed back, both bounded: bodies
//! are capped, silence in either direction times out, concurrent backends are limited, and a
//! client that goes away takes its git processes with it. Push scopes are enforced by the
//! `pre-receive` hook (see [`super::hook`]), so git reports refusals to the pusher itself.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    response::{IntoResponse, Response},
    routing::any,
};
use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use tokio::{
    io::{AsyncRead, AsyncWriteExt, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tokio_util::{io::ReaderStream, sync::CancellationToken};

use super::{
    access::{GitAccess, GitAuthorizer, GitDenied, PushScope},
    cgi,
    command::{MAX_STDERR, git_command, kill_group},
    hook, names,
    repos::Repos,
};

/// Bounds on what one request may cost.
#[derive(Debug, Clone)]
pub struct GitHttpLimits {
    /// Largest request body of a push (the pack); also git's `receive.maxInputSize`.
    pub max_push_body: u64,
    /// Largest request body of a fetch (negotiation only, no pack).
    pub max_fetch_body: u64,
    /// How long either side may stay silent mid-request.
    pub idle_timeout: Duration,
    /// How many `git http-backend` processes may run at once; beyond that requests get `503`.
    pub max_concurrent: usize,
}

impl Default for GitHttpLimits {
    fn default() -> Self {
        GitHttpLimits {
            max_push_body: 2 << 30,
            max_fetch_body: 64 << 20,
            idle_timeout: Duration::from_secs(300),
            max_concurrent: 32,
        }
    }
}

/// What the git routes need: who may do what, where the repositories and hooks are.
#[derive(Clone)]
pub struct GitHttpState {
    inner: Arc<Inner>,
}

struct Inner {
    authorizer: Arc<dyn GitAuthorizer>,
    repos: Repos,
    hooks_dir: PathBuf,
    limits: GitHttpLimits,
    slots: Arc<Semaphore>,
}

impl GitHttpState {
    /// Installs the push hooks into `hooks_dir` (conventionally `<data-dir>/hooks`) and returns
    /// the state for [`router`].
    pub fn new(
        authorizer: Arc<dyn GitAuthorizer>,
        repos: Repos,
        hooks_dir: impl Into<PathBuf>,
        limits: GitHttpLimits,
    ) -> io::Result<Self> {
        let hooks_dir = hooks_dir.into();
        hook::install_hooks(&hooks_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("installing git hooks in {}: {e}", hooks_dir.display()),
            )
        })?;
        let hooks_dir = hooks_dir.canonicalize()?;
        Ok(GitHttpState {
            inner: Arc::new(Inner {
                authorizer,
                repos,
                hooks_dir,
                slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
                limits,
            }),
        })
    }

    pub fn repos(&self) -> &Repos {
        &self.inner.repos
    }

    pub fn hooks_dir(&self) -> &Path {
        &self.inner.hooks_dir
    }
}

/// The clone URL of a project's repository on the public listener at `public_url` — the one
/// place that knows the `/git/<project-name>.git` layout besides [`router`].
pub fn clone_url(public_url: &str, project_name: &str) -> String {
    format!(
        "{}/git/{project_name}.git",
        public_url.trim_end_matches('/')
    )
}

/// The routes `/git/{repo}/{*rest}`, to be merged into the public listener's router.
pub fn router(state: GitHttpState) -> Router {
    Router::new()
        .route("/git/{repo}/{*rest}", any(serve))
        .with_state(state)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    UploadPack,
    ReceivePack,
}

impl Service {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "git-upload-pack" => Some(Service::UploadPack),
            "git-receive-pack" => Some(Service::ReceivePack),
            _ => None,
        }
    }
}

/// Which smart-HTTP endpoint a request is for; anything else (dumb HTTP included) is refused.
fn route(method: &Method, rest: &str, query: &str) -> Option<Service> {
    match (method, rest) {
        (&Method::GET, "info/refs") => query
            .split('&')
            .find_map(|pair| pair.strip_prefix("service="))
            .and_then(Service::from_name),
        (&Method::POST, name) => Service::from_name(name),
        _ => None,
    }
}

async fn serve(
    State(state): State<GitHttpState>,
    axum::extract::Path((repo, rest)): axum::extract::Path<(String, String)>,
    request: Request,
) -> Response {
    let inner = &state.inner;
    let name = repo.strip_suffix(".git").unwrap_or(&repo).to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let Some(service) = route(request.method(), &rest, &query) else {
        return text(
            StatusCode::NOT_FOUND,
            "not a smart HTTP git endpoint (dumb HTTP is not served)",
        );
    };
    let basic = basic_credentials(request.headers());
    let user = basic
        .as_ref()
        .map(|(user, _)| remote_user(user))
        .unwrap_or_else(|| "anonymous".to_owned());
    let access = match inner.authorizer.authorize(&name, basic).await {
        Ok(access) => access,
        Err(GitDenied::Unauthenticated) => {
            let mut response = text(StatusCode::UNAUTHORIZED, "authentication required");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"kortix\""),
            );
            return response;
        }
        Err(GitDenied::NotFound) => {
            return text(
                StatusCode::NOT_FOUND,
                &format!("repository {name:?} not found"),
            );
        }
        Err(GitDenied::Unavailable(reason)) => {
            tracing::warn!(repo = %name, %reason, "git authorization unavailable");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "authorization is unavailable; retry later",
            );
        }
    };
    if service == Service::ReceivePack && access.push == PushScope::None {
        return text(
            StatusCode::FORBIDDEN,
            &format!("pushing to {name:?} needs the project role editor; this token may not push"),
        );
    }
    if let Err(e) = names::project_id(&access.project_id)
        .map_err(|e| e.to_string())
        .and_then(|()| names::branch_ref(&access.default_branch).map_err(|e| e.to_string()))
    {
        tracing::error!(repo = %name, error = %e, "authorizer returned an invalid project");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "invalid repository mapping",
        );
    }
    match inner.repos.exists(&access.project_id) {
        Ok(true) => {}
        Ok(false) | Err(_) => {
            tracing::warn!(repo = %name, project_id = %access.project_id, "authorized project has no repository");
            return text(
                StatusCode::NOT_FOUND,
                &format!("repository {name:?} not found"),
            );
        }
    }
    let cap = match service {
        Service::ReceivePack => inner.limits.max_push_body,
        Service::UploadPack => inner.limits.max_fetch_body,
    };
    let content_length = match header_str(request.headers(), header::CONTENT_LENGTH) {
        Some(value) => match value.parse::<u64>() {
            Ok(length) => Some(length),
            Err(_) => return text(StatusCode::BAD_REQUEST, "invalid Content-Length"),
        },
        None => None,
    };
    if content_length.is_some_and(|length| length > cap) {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body larger than {cap} bytes"),
        );
    }
    let Ok(permit) = inner.slots.clone().try_acquire_owned() else {
        let mut response = text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many concurrent git requests; retry later",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    };
    let backend = Backend {
        inner,
        access: &access,
        rest: &rest,
        query: &query,
        user: &user,
        content_length,
    };
    match backend.run(request, cap, permit).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(repo = %name, project_id = %access.project_id, error = %e, "git http-backend failed");
            text(StatusCode::BAD_GATEWAY, "the git backend failed")
        }
    }
}

struct Backend<'a> {
    inner: &'a Inner,
    access: &'a GitAccess,
    rest: &'a str,
    query: &'a str,
    user: &'a str,
    content_length: Option<u64>,
}

impl Backend<'_> {
    async fn run(
        self,
        request: Request,
        cap: u64,
        permit: OwnedSemaphorePermit,
    ) -> Result<Response, String> {
        let limits = &self.inner.limits;
        let headers = request.headers();
        let remote_addr = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip().to_string())
            .unwrap_or_else(|| "0.0.0.0".to_owned());

        let mut cmd = git_command();
        cmd.arg("http-backend")
            .env("GIT_PROJECT_ROOT", self.inner.repos.root())
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env(
                "PATH_INFO",
                format!("/{}.git/{}", self.access.project_id, self.rest),
            )
            .env("REQUEST_METHOD", request.method().as_str())
            .env("QUERY_STRING", self.query)
            .env("REMOTE_USER", self.user)
            .env("REMOTE_ADDR", remote_addr)
            .envs(hook::hook_env(
                &self.access.push,
                &self.access.default_branch,
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let config = self.config(limits);
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (key, value)) in config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), key)
                .env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        if let Some(value) = header_str(headers, header::CONTENT_TYPE) {
            cmd.env("CONTENT_TYPE", value);
        }
        if let Some(length) = self.content_length {
            cmd.env("CONTENT_LENGTH", length.to_string());
        }
        // http-backend inflates gzip-encoded requests itself when told the encoding.
        if let Some(value) = header_str(headers, header::CONTENT_ENCODING) {
            cmd.env("HTTP_CONTENT_ENCODING", value);
        }
        if let Some(value) = header_str(headers, "git-protocol") {
            cmd.env("HTTP_GIT_PROTOCOL", value);
        }

        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting git http-backend: {e}"))?;
        let pid = child.id();
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("git http-backend started without pipes".into());
        };
        let kill = CancellationToken::new();
        let body_done = Arc::new(AtomicBool::new(false));

        // Reaps the process group, killing it when asked; holds the concurrency slot until the
        // processes are gone.
        let project_id = self.access.project_id.clone();
        let reaper_kill = kill.clone();
        let authorizer = self.inner.authorizer.clone();
        let access = self.access.clone();
        tokio::spawn(async move {
            let stderr_tail = tokio::spawn(read_tail(stderr));
            let status = tokio::select! {
                status = child.wait() => status,
                () = reaper_kill.cancelled() => {
                    kill_group(pid);
                    child.wait().await
                }
                () = revoked(authorizer.as_ref(), &access) => {
                    tracing::info!(%project_id, "the credential was revoked during a git request: ending it");
                    // Marked before the kill, so the response fails instead of ending as if
                    // it were complete.
                    reaper_kill.cancel();
                    kill_group(pid);
                    child.wait().await
                }
            };
            let stderr = stderr_tail.await.unwrap_or_default();
            match status {
                Ok(status) if status.success() => {}
                Ok(status) => {
                    tracing::warn!(%project_id, %status, stderr = %stderr.trim(), "git http-backend exited with failure")
                }
                Err(e) => tracing::warn!(%project_id, error = %e, "waiting for git http-backend"),
            }
            drop(permit);
        });

        // Feeds the request body to the backend, bounded in size and idle time.
        let idle = limits.idle_timeout;
        let pump_kill = kill.clone();
        let pump_done = body_done.clone();
        let mut body = request.into_body();
        tokio::spawn(async move {
            let mut total: u64 = 0;
            loop {
                let frame = match tokio::time::timeout(idle, body.frame()).await {
                    Ok(None) => break,
                    Ok(Some(Ok(frame))) => frame,
                    Ok(Some(Err(_))) | Err(_) => {
                        // The client broke off or went silent: an incomplete request must not
                        // be acted on.
                        pump_kill.cancel();
                        break;
                    }
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                total = total.saturating_add(data.len() as u64);
                if total > cap {
                    pump_kill.cancel();
                    break;
                }
                if stdin.write_all(&data).await.is_err() {
                    // The backend stopped reading (it answered already or failed).
                    break;
                }
            }
            drop(stdin);
            pump_done.store(true, Ordering::Release);
        });

        let guard = KillOnDrop {
            kill: kill.clone(),
            finished: false,
        };
        let mut stdout = IdleReader::new(stdout, idle, body_done);
        let head = match cgi::read_head(&mut stdout).await {
            Ok(head) => head,
            Err(e) => {
                drop(guard);
                return Err(format!("reading the backend's response headers: {e}"));
            }
        };
        let mut response = Response::new(Body::from_stream(GuardedStream {
            head: Some(Bytes::from(head.body_start)),
            inner: ReaderStream::new(stdout),
            guard,
        }));
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        Ok(response)
    }

    fn config(&self, limits: &GitHttpLimits) -> Vec<(&'static str, String)> {
        let push = self.access.push != PushScope::None;
        vec![
            ("http.uploadpack", "true".into()),
            ("http.receivepack", push.to_string()),
            // Dumb HTTP would serve any file in the repository, reachable or not.
            ("http.getanyfile", "false".into()),
            (
                "core.hooksPath",
                self.inner.hooks_dir.to_string_lossy().into_owned(),
            ),
            ("receive.advertiseAtomic", "true".into()),
            ("receive.denyDeletes", "false".into()),
            ("receive.denyNonFastForwards", "false".into()),
            ("receive.fsckObjects", "true".into()),
            ("receive.maxInputSize", limits.max_push_body.to_string()),
            ("uploadpack.allowFilter", "true".into()),
        ]
    }
}

/// Resolves once the request's credential no longer holds (checked every
/// [`CREDENTIAL_RECHECK`]); never for a credential that cannot be revoked.
async fn revoked(authorizer: &dyn GitAuthorizer, access: &GitAccess) {
    if access.credential.is_none() {
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(CREDENTIAL_RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match authorizer.still_allowed(access).await {
            Ok(false) => return,
            Ok(true) => {}
            Err(e) => tracing::warn!(error = ?e, "cannot re-check a git request's credential"),
        }
    }
}

/// How often a running git request's credential is re-checked.
const CREDENTIAL_RECHECK: Duration = Duration::from_secs(1);

/// Ends the backend's process group when the response is dropped before it was complete
/// (client disconnect, idle timeout, read error).
struct KillOnDrop {
    kill: CancellationToken,
    finished: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.finished {
            self.kill.cancel();
        }
    }
}

struct GuardedStream<S> {
    head: Option<Bytes>,
    inner: S,
    guard: KillOnDrop,
}

impl<S> Stream for GuardedStream<S>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(head) = self.head.take()
            && !head.is_empty()
        {
            return Poll::Ready(Some(Ok(head)));
        }
        let next = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(None) = next {
            if self.guard.kill.is_cancelled() && !self.guard.finished {
                // The backend was ended (revoked credential, broken request): its output is
                // cut short, and the client must not take it for a whole response.
                self.guard.finished = true;
                return Poll::Ready(Some(Err(io::Error::other("the git request was ended"))));
            }
            self.guard.finished = true;
        }
        next
    }
}

/// The backend's stdout, failing after `idle` without output, but only once the request body
/// has been delivered: until then the silence is the client's, bounded by the body pump.
struct IdleReader<R> {
    inner: R,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    body_done: Arc<AtomicBool>,
}

impl<R> IdleReader<R> {
    fn new(inner: R, idle: Duration, body_done: Arc<AtomicBool>) -> Self {
        IdleReader {
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
            body_done,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for IdleReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let deadline = tokio::time::Instant::now() + this.idle;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(result)
            }
            Poll::Pending => {
                while this.sleep.as_mut().poll(cx).is_ready() {
                    if this.body_done.load(Ordering::Acquire) {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "git backend idle for too long",
                        )));
                    }
                    let deadline = tokio::time::Instant::now() + this.idle;
                    this.sleep.as_mut().reset(deadline);
                }
                Poll::Pending
            }
        }
    }
}

async fn read_tail(mut stderr: tokio::process::ChildStderr) -> String {
    use tokio::io::AsyncReadExt;
    let mut tail = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > MAX_STDERR {
            let excess = tail.len() - MAX_STDERR;
            tail.drain(..excess);
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// `(user, password)` from an `Authorization: Basic` header, if well formed.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 8192 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The user name as git records it in ref logs: a short, plain identifier.
fn remote_user(user: &str) -> String {
    let clean: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        .take(64)
        .collect();
    if clean.is_empty() {
        "kortix".to_owned()
    } else {
        clean
    }
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 1024)
}

/// A plain-text response; git shows such bodies to the user as `remote: ...`.
fn text(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
