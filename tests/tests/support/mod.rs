//! An in-process control plane on 127.0.0.1:0 with a temp data directory, plus gRPC clients
//! and the real `git` in the shared test environment.
#![allow(dead_code)]

pub mod fleet;
pub mod server_process;

use kortix_controlplane::config::ServerConfig;
use kortix_controlplane::server::{RunningServer, start};
use kortix_proto::v1::{
    access_service_client::AccessServiceClient, account_service_client::AccountServiceClient,
    change_request_service_client::ChangeRequestServiceClient,
    member_service_client::MemberServiceClient, project_service_client::ProjectServiceClient,
    secret_service_client::SecretServiceClient, session_service_client::SessionServiceClient,
    trigger_service_client::TriggerServiceClient,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub data: tempfile::TempDir,
    pub admin_token: String,
    pub channel: Channel,
}

#[derive(Clone)]
pub struct Bearer(pub String);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Ok(v) = format!("Bearer {}", self.0).parse() {
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let mut config = ServerConfig::new(data.path().join("kortix"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.agent_listen = "127.0.0.1:0".parse().unwrap();
        // Tests address a sandbox's workspace by its host path, which an isolated agent does
        // not see: they run unisolated unless they opt in (see `sandbox_isolation.rs`).
        config.isolation.mode = kortix_controlplane::sandbox::local::IsolationMode::None;
        adjust(&mut config);
        let server = start(config).await.expect("control plane starts");
        let admin_token = std::fs::read_to_string(server.admin_token_path())
            .expect("admin.token")
            .trim()
            .to_string();
        let channel = Channel::from_shared(server.public_url.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect");
        TestServer {
            server: Some(server),
            data,
            admin_token,
            channel,
        }
    }

    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("running")
    }

    pub fn url(&self) -> String {
        self.running().public_url.clone()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.running().data_dir.clone()
    }

    fn authed(&self, token: &str) -> Authed {
        InterceptedService::new(self.channel.clone(), Bearer(token.to_string()))
    }

    pub fn accounts(&self, token: &str) -> AccountServiceClient<Authed> {
        AccountServiceClient::new(self.authed(token))
    }
    pub fn triggers(&self, token: &str) -> TriggerServiceClient<Authed> {
        TriggerServiceClient::new(self.authed(token))
    }
    pub fn members(&self, token: &str) -> MemberServiceClient<Authed> {
        MemberServiceClient::new(self.authed(token))
    }
    pub fn access(&self, token: &str) -> AccessServiceClient<Authed> {
        AccessServiceClient::new(self.authed(token))
    }
    pub fn projects(&self, token: &str) -> ProjectServiceClient<Authed> {
        ProjectServiceClient::new(self.authed(token))
    }
    pub fn secrets(&self, token: &str) -> SecretServiceClient<Authed> {
        SecretServiceClient::new(self.authed(token))
    }
    pub fn sessions(&self, token: &str) -> SessionServiceClient<Authed> {
        SessionServiceClient::new(self.authed(token))
    }
    pub fn crs(&self, token: &str) -> ChangeRequestServiceClient<Authed> {
        ChangeRequestServiceClient::new(self.authed(token))
    }
    pub fn audit(
        &self,
        token: &str,
    ) -> kortix_proto::v1::audit_service_client::AuditServiceClient<Authed> {
        kortix_proto::v1::audit_service_client::AuditServiceClient::new(self.authed(token))
    }
    pub fn connectors(
        &self,
        token: &str,
    ) -> kortix_proto::v1::connector_service_client::ConnectorServiceClient<Authed> {
        kortix_proto::v1::connector_service_client::ConnectorServiceClient::new(self.authed(token))
    }
    pub fn approvals(
        &self,
        token: &str,
    ) -> kortix_proto::v1::approval_service_client::ApprovalServiceClient<Authed> {
        kortix_proto::v1::approval_service_client::ApprovalServiceClient::new(self.authed(token))
    }
    pub fn channels(
        &self,
        token: &str,
    ) -> kortix_proto::v1::channel_service_client::ChannelServiceClient<Authed> {
        kortix_proto::v1::channel_service_client::ChannelServiceClient::new(self.authed(token))
    }
    pub fn apps(
        &self,
        token: &str,
    ) -> kortix_proto::v1::app_service_client::AppServiceClient<Authed> {
        kortix_proto::v1::app_service_client::AppServiceClient::new(self.authed(token))
    }
    pub fn snapshots(
        &self,
        token: &str,
    ) -> kortix_proto::v1::snapshot_service_client::SnapshotServiceClient<Authed> {
        kortix_proto::v1::snapshot_service_client::SnapshotServiceClient::new(self.authed(token))
    }

    /// The session as its owner sees it.
    /// The session's stored records from `from` (attach without following).
    pub async fn stored_records(
        &self,
        token: &str,
        id: &str,
        from: u64,
    ) -> Vec<kortix_proto::v1::Record> {
        use futures::StreamExt;
        let mut stream = self
            .sessions(token)
            .attach(kortix_proto::v1::AttachRequest {
                session_id: id.into(),
                from_seq: from,
                follow: false,
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(r) = stream.next().await {
            out.push(r.unwrap());
        }
        out
    }

    /// A local sandbox's workspace on the host.
    pub fn workspace(&self, session_id: &str) -> PathBuf {
        self.data_dir()
            .join("sandboxes")
            .join(session_id)
            .join("workspace")
    }

    pub async fn session(&self, token: &str, id: &str) -> kortix_proto::v1::Session {
        self.sessions(token)
            .get_session(kortix_proto::v1::GetSessionRequest { id: id.into() })
            .await
            .expect("GetSession")
            .into_inner()
    }

    /// Waits up to `within` for session `id` to reach `want` (as `token` sees it); a session
    /// that fails on the way panics with its failure reason.
    pub async fn wait_status(
        &self,
        token: &str,
        id: &str,
        want: kortix_proto::v1::SessionStatus,
        within: Duration,
    ) -> kortix_proto::v1::Session {
        use kortix_proto::v1::SessionStatus;
        eventually(&format!("session {id} {want:?}"), within, || async {
            let s = self.session(token, id).await;
            if s.status == SessionStatus::Failed as i32 && want != SessionStatus::Failed {
                panic!("session failed: {}", s.failure_reason);
            }
            (s.status == want as i32).then_some(s)
        })
        .await
    }

    /// Starts a session in `project` with `prompt`, as `token`.
    pub async fn start_session(
        &self,
        token: &str,
        project: &str,
        prompt: &str,
    ) -> kortix_proto::v1::Session {
        self.sessions(token)
            .start_session(kortix_proto::v1::StartSessionRequest {
                project: project.into(),
                prompt: prompt.into(),
                ..Default::default()
            })
            .await
            .expect("StartSession")
            .into_inner()
    }

    /// A new account and its token.
    pub async fn account(&self, name: &str) -> String {
        self.accounts(&self.admin_token)
            .create_account(kortix_proto::v1::CreateAccountRequest { name: name.into() })
            .await
            .expect("create account")
            .into_inner()
            .token
    }

    /// The clone URL of a project with the token as password.
    pub fn git_url(&self, project: &str, token: &str) -> String {
        let base = self.url();
        let rest = base.strip_prefix("http://").unwrap();
        format!("http://x:{token}@{rest}/git/{project}.git")
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// Runs the real `git` in the shared test environment ([`kortix_tests::git::GitEnv`]).
///
/// git talks to the test's own server, which runs on the test's runtime: on a multi-thread
/// runtime the wait moves off the worker (`block_in_place`) so the server keeps serving.
pub fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let run = || kortix_tests::git::GitEnv::new().run(dir, args);
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(run)
        }
        _ => run(),
    }
}

/// `git` that must succeed; returns stdout.
pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args);
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The state records among `records`, as (phase, reason).
pub fn states(records: &[kortix_proto::v1::Record]) -> Vec<(String, String)> {
    use kortix_proto::v1::record::Body;
    records
        .iter()
        .filter_map(|r| match &r.body {
            Some(Body::State(s)) => Some((s.phase.clone(), s.reason.clone())),
            _ => None,
        })
        .collect()
}

/// Asserts that `records` (a resumed sandbox's) say the uncommitted work and the
/// conversation were put back.
pub fn assert_restored(records: &[kortix_proto::v1::Record]) {
    let restored = states(records);
    assert!(
        restored.iter().any(|(phase, reason)| phase == "restored"
            && reason.contains(" uncommitted file")
            && reason.contains(" from refs/kortix/wip/")),
        "{restored:?}"
    );
    assert!(
        restored
            .iter()
            .any(|(phase, _)| phase == "conversation-restored"),
        "{restored:?}"
    );
}

/// Polls `check` until it returns `Some` or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut wait = Duration::from_millis(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(200));
    }
}

/// A plain HTTP/1.1 GET (no client library needed): status code and body.
pub async fn http_get(base_url: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base_url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A binary of this workspace (`kortix`, `kortix-agent`), built next to the test binaries.
pub fn built_binary(name: &str) -> PathBuf {
    let bin = kortix_controlplane::config::locate_agent_bin().with_file_name(name);
    assert!(
        bin.is_file(),
        "{} is not built next to the test binaries: run `cargo build --workspace --bins` first (scripts/test does)",
        bin.display()
    );
    bin
}

/// Local sandboxes run the real `kortix-agent` with the pinned OpenCode (its packages
/// installed once for all tests), heartbeating every second, with room for a clean stop.
pub fn use_real_agent(c: &mut ServerConfig) {
    let opencode = kortix_tests::opencode_bin().expect("pinned OpenCode installs");
    c.agent_bin = Some(built_binary("kortix-agent"));
    c.agent_env
        .push(("KORTIX_OPENCODE_BIN".into(), opencode.display().to_string()));
    c.agent_env
        .push(("KORTIX_HEARTBEAT_SECS".into(), "1".into()));
    c.opencode_packages = Some(kortix_tests::opencode_packages_dir());
    c.timings.stop_grace = Duration::from_secs(20);
}

/// [`use_real_agent`], with sessions hibernating after `idle` without work.
pub fn use_real_agent_idling(idle: Duration) -> impl FnOnce(&mut ServerConfig) {
    move |c| {
        use_real_agent(c);
        c.timings.idle_timeout = idle;
    }
}

/// Creates project `app` and lands an OpenCode config pointing at the scripted model on
/// `model_port` on `main` — through a change request, the only way there. `adjust` may edit
/// the written `opencode.json` before it is committed. Returns the temp dir holding the clone.
pub async fn app_with_model_config(
    ts: &TestServer,
    token: &str,
    model_port: u16,
    adjust: impl FnOnce(&Path),
) -> tempfile::TempDir {
    use kortix_proto::v1::CreateProjectRequest;
    ts.projects(token)
        .create_project(CreateProjectRequest {
            name: "app".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let clone = work.path().join("app");
    git_ok(
        work.path(),
        &[
            "clone",
            "-q",
            &ts.git_url("app", token),
            clone.to_str().unwrap(),
        ],
    );
    git_ok(&clone, &["checkout", "-qb", "setup"]);
    let config =
        kortix_tests::opencode_config(&clone.join(".kortix/opencode"), model_port).unwrap();
    adjust(&config);
    git_ok(&clone, &["add", "."]);
    git_ok(&clone, &["commit", "-qm", "Configure OpenCode"]);
    git_ok(&clone, &["push", "-q", "origin", "setup"]);
    merge_branch(ts, token, "app", "setup").await;
    work
}

/// Lands `branch` of `project` on its default branch through a change request (the only
/// way there): opened and merged.
pub async fn merge_branch(ts: &TestServer, token: &str, project: &str, branch: &str) {
    use kortix_proto::v1::{ChangeRequestRef, OpenChangeRequestRequest};
    let cr = ts
        .crs(token)
        .open_change_request(OpenChangeRequestRequest {
            project: project.into(),
            branch: branch.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    ts.crs(token)
        .merge_change_request(ChangeRequestRef {
            project: project.into(),
            number: cr.number,
        })
        .await
        .unwrap();
}
