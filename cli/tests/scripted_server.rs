//! The client against a gRPC server on 127.0.0.1:0 that answers from a script: proves the
//! bearer token sent (and where it came from), `login` persistence, attach reattach with no gap
//! or duplicate after RESOURCE_EXHAUSTED, `sessions new --wait`, and `cr merge` refusals.
//! Behaviour against the real control plane is covered by the workspace end-to-end tests.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::pin::Pin;
use std::process::Output;
use std::sync::{Arc, Mutex};

use kortix_proto::v1::account_service_server::{AccountService, AccountServiceServer};
use kortix_proto::v1::change_request_service_server::{
    ChangeRequestService, ChangeRequestServiceServer,
};
use kortix_proto::v1::session_service_server::{SessionService, SessionServiceServer};
use kortix_proto::v1::*;
use serde_json::{Value, json};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

#[derive(Default)]
struct Seen {
    auth: Mutex<Vec<Option<String>>>,
    attach: Mutex<Vec<(u64, bool)>>,
    polls: Mutex<u32>,
    watches: Mutex<u32>,
    idempotency_keys: Mutex<Vec<String>>,
}

#[derive(Clone, Default)]
struct Script {
    seen: Arc<Seen>,
}

impl Script {
    fn note_auth<T>(&self, req: &Request<T>) -> Option<String> {
        let value = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.seen.auth.lock().expect("lock").push(value.clone());
        value
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn unimplemented<T>() -> Reply<T> {
    Err(Status::unimplemented("not scripted"))
}

#[tonic::async_trait]
impl AccountService for Script {
    async fn create_account(
        &self,
        _: Request<CreateAccountRequest>,
    ) -> Reply<CreateAccountResponse> {
        unimplemented()
    }

    async fn who_am_i(&self, req: Request<Empty>) -> Reply<Account> {
        match self.note_auth(&req) {
            None => Err(Status::unauthenticated("missing bearer token")),
            Some(header) => Ok(Response::new(Account {
                id: "a1".into(),
                name: header.trim_start_matches("Bearer ").to_owned(),
                created_unix_ms: 1_700_000_000_000,
                server_admin: false,
            })),
        }
    }

    async fn create_token(&self, _: Request<CreateTokenRequest>) -> Reply<CreateTokenResponse> {
        unimplemented()
    }

    async fn list_tokens(&self, _: Request<Empty>) -> Reply<ListTokensResponse> {
        unimplemented()
    }

    async fn revoke_token(&self, _: Request<RevokeTokenRequest>) -> Reply<TokenInfo> {
        unimplemented()
    }
}

fn session(id: &str, project: &str, status: SessionStatus, reason: &str) -> Session {
    Session {
        id: id.into(),
        project_name: project.into(),
        branch: id.into(),
        status: status as i32,
        failure_reason: reason.into(),
        ..Default::default()
    }
}

fn rec(seq: u64, body: record::Body) -> Record {
    Record {
        seq,
        ts_unix_ms: 1_700_000_000_000 + seq as i64,
        body: Some(body),
    }
}

fn script_records() -> Vec<Record> {
    vec![
        rec(
            1,
            record::Body::Log(LogLine {
                stream: 1,
                line: "hello from opencode".into(),
            }),
        ),
        rec(
            2,
            record::Body::Event(OpencodeEvent {
                r#type: "session.idle".into(),
                json: r#"{"x":1}"#.into(),
            }),
        ),
        rec(
            3,
            record::Body::State(StateChange {
                status: SessionStatus::Running as i32,
                phase: "opencode-ready".into(),
                reason: String::new(),
            }),
        ),
        rec(
            4,
            record::Body::Commit(CommitRecord {
                sha: "0123456789abcdef0123".into(),
                parents: vec!["fedcba".into()],
                message: "Add parser\n\nLonger body".into(),
                files_changed: 2,
                insertions: 10,
                deletions: 1,
                pushed: true,
                ..Default::default()
            }),
        ),
        rec(
            5,
            record::Body::Gap(Gap {
                from_seq: 5,
                to_seq: 5,
                reason: "spool overflow".into(),
            }),
        ),
        rec(
            6,
            record::Body::State(StateChange {
                status: SessionStatus::Stopped as i32,
                phase: String::new(),
                reason: "user stop".into(),
            }),
        ),
    ]
}

/// A running session as OpenCode reports it: an error, then a commit.
fn live_records() -> Vec<Record> {
    let event = |seq, json: Value| {
        rec(
            seq,
            record::Body::Event(OpencodeEvent {
                r#type: json["type"].as_str().unwrap_or_default().to_owned(),
                json: json.to_string(),
            }),
        )
    };
    vec![
        rec(
            1,
            record::Body::State(StateChange {
                status: SessionStatus::Running as i32,
                phase: "running".into(),
                reason: String::new(),
            }),
        ),
        event(
            2,
            json!({"type": "session.error", "properties": {"error": {"name": "ProviderAuthError",
                "data": {"message": "the provider refused the key"}}}}),
        ),
        rec(
            3,
            record::Body::Commit(CommitRecord {
                sha: "0123456789abcdef0123".into(),
                message: "Add parser".into(),
                files_changed: 1,
                insertions: 3,
                pushed: true,
                ..Default::default()
            }),
        ),
    ]
}

type RecordStream = Pin<Box<dyn Stream<Item = Result<Record, Status>> + Send>>;

#[tonic::async_trait]
impl SessionService for Script {
    async fn start_session(&self, req: Request<StartSessionRequest>) -> Reply<Session> {
        let req = req.into_inner();
        self.seen
            .idempotency_keys
            .lock()
            .expect("lock")
            .push(req.idempotency_key);
        let id = format!("s-{}", req.project);
        Ok(Response::new(session(
            &id,
            &req.project,
            SessionStatus::Provisioning,
            "",
        )))
    }

    async fn get_session(&self, req: Request<GetSessionRequest>) -> Reply<Session> {
        let id = req.into_inner().id;
        let polls = {
            let mut polls = self.seen.polls.lock().expect("lock");
            *polls += 1;
            *polls
        };
        let project = id.trim_start_matches("s-");
        let s = match (project, polls) {
            ("doomed", _) => session(&id, project, SessionStatus::Failed, "image build failed"),
            (_, 1) => session(&id, project, SessionStatus::Provisioning, ""),
            _ => session(&id, project, SessionStatus::Running, ""),
        };
        Ok(Response::new(s))
    }

    async fn list_sessions(&self, _: Request<ListSessionsRequest>) -> Reply<ListSessionsResponse> {
        unimplemented()
    }

    async fn stop_session(&self, req: Request<StopSessionRequest>) -> Reply<Session> {
        let id = req.into_inner().id;
        let project = id.trim_start_matches("s-").to_owned();
        Ok(Response::new(session(
            &id,
            &project,
            SessionStatus::Stopping,
            "",
        )))
    }

    type WatchSessionStream = Pin<Box<dyn Stream<Item = Result<Session, Status>> + Send>>;

    /// `s-legacy` is a control plane without WatchSession; `s-halt` is stopping and stops;
    /// `s-doomed` fails while provisioning; any other starts and runs on.
    async fn watch_session(
        &self,
        req: Request<WatchSessionRequest>,
    ) -> Reply<Self::WatchSessionStream> {
        let id = req.into_inner().id;
        *self.seen.watches.lock().expect("lock") += 1;
        let project = id.trim_start_matches("s-").to_owned();
        let at = |status, reason: &str| Ok(session(&id, &project, status, reason));
        let (updates, ends) = match project.as_str() {
            "legacy" => return Err(Status::unimplemented("unknown method WatchSession")),
            "halt" => (
                vec![
                    at(SessionStatus::Stopping, ""),
                    at(SessionStatus::Stopped, "stopped by user"),
                ],
                true,
            ),
            "doomed" => (
                vec![
                    at(SessionStatus::Provisioning, ""),
                    at(SessionStatus::Failed, "image build failed"),
                ],
                true,
            ),
            _ => (
                vec![
                    at(SessionStatus::Provisioning, ""),
                    at(SessionStatus::Running, ""),
                ],
                false,
            ),
        };
        let updates = tokio_stream::iter(updates);
        if ends {
            Ok(Response::new(Box::pin(updates)))
        } else {
            // A running session's watch stays open until the session ends.
            let open = tokio_stream::StreamExt::chain(updates, tokio_stream::pending());
            Ok(Response::new(Box::pin(open)))
        }
    }

    async fn delete_session(&self, _: Request<DeleteSessionRequest>) -> Reply<Session> {
        unimplemented()
    }

    /// `s-running` is refused as the control plane refuses it; anything else resumes.
    async fn resume_session(&self, req: Request<ResumeSessionRequest>) -> Reply<Session> {
        let id = req.into_inner().id;
        if id == "s-running" {
            return Err(Status::failed_precondition(
                "session s-running is running; only stopped or hibernated sessions can be resumed",
            ));
        }
        Ok(Response::new(session(
            &id,
            "web",
            SessionStatus::Resuming,
            "",
        )))
    }

    type AttachStream = RecordStream;

    /// First attach: records 1-3, then the slow-viewer cut-off. The reattach replays the seam
    /// record 3 (the client must drop it) and ends after record 6.
    async fn attach(&self, req: Request<AttachRequest>) -> Reply<Self::AttachStream> {
        let req = req.into_inner();
        self.seen
            .attach
            .lock()
            .expect("lock")
            .push((req.from_seq, req.follow));
        if req.session_id == "s-live" {
            // A session that goes on: its records, then nothing until the viewer leaves.
            let records = live_records().into_iter().map(Ok);
            let stream = tokio_stream::StreamExt::chain(
                tokio_stream::iter(records),
                tokio_stream::pending(),
            );
            return Ok(Response::new(Box::pin(stream)));
        }
        let all = script_records();
        let items: Vec<Result<Record, Status>> = if req.from_seq <= 1 {
            all.into_iter()
                .take(3)
                .map(Ok)
                .chain([Err(Status::resource_exhausted("viewer too slow"))])
                .collect()
        } else {
            all.into_iter()
                .filter(|r| r.seq + 1 >= req.from_seq)
                .map(Ok)
                .collect()
        };
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn send_prompt(&self, _: Request<SendPromptRequest>) -> Reply<SendPromptResponse> {
        unimplemented()
    }

    async fn get_command(&self, _: Request<GetCommandRequest>) -> Reply<CommandStatus> {
        unimplemented()
    }
}

fn cr(number: u64, state: ChangeRequestState) -> ChangeRequest {
    ChangeRequest {
        number,
        state: state as i32,
        title: "Add parser".into(),
        head: "s-demo".into(),
        base: "main".into(),
        merge_commit: if state == ChangeRequestState::Merged {
            "m3rg3".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

#[tonic::async_trait]
impl ChangeRequestService for Script {
    async fn open_change_request(
        &self,
        _: Request<OpenChangeRequestRequest>,
    ) -> Reply<ChangeRequest> {
        unimplemented()
    }

    async fn list_change_requests(
        &self,
        _: Request<ListChangeRequestsRequest>,
    ) -> Reply<ListChangeRequestsResponse> {
        unimplemented()
    }

    async fn get_change_request(&self, _: Request<ChangeRequestRef>) -> Reply<ChangeRequestDetail> {
        unimplemented()
    }

    async fn get_diff(&self, _: Request<ChangeRequestRef>) -> Reply<DiffResponse> {
        Ok(Response::new(DiffResponse {
            diff: "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n".into(),
            files: Vec::new(),
        }))
    }

    async fn merge_preview(&self, req: Request<ChangeRequestRef>) -> Reply<MergePreviewResponse> {
        let conflicts = match req.into_inner().number {
            2 => vec!["a.txt".into(), "b.txt".into()],
            _ => vec![],
        };
        Ok(Response::new(MergePreviewResponse {
            mergeable: conflicts.is_empty(),
            conflicting_paths: conflicts,
            ..Default::default()
        }))
    }

    async fn merge_change_request(&self, req: Request<ChangeRequestRef>) -> Reply<ChangeRequest> {
        match req.into_inner().number {
            1 => Ok(Response::new(cr(1, ChangeRequestState::Merged))),
            2 => Err(Status::failed_precondition("merge has conflicts")),
            3 => Err(Status::failed_precondition("change request is closed")),
            _ => Err(Status::failed_precondition("merge refused: base moved")),
        }
    }

    async fn close_change_request(&self, _: Request<ChangeRequestRef>) -> Reply<ChangeRequest> {
        unimplemented()
    }

    async fn reopen_change_request(&self, _: Request<ChangeRequestRef>) -> Reply<ChangeRequest> {
        unimplemented()
    }
}

async fn serve(script: Script) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AccountServiceServer::new(script.clone()))
            .add_service(SessionServiceServer::new(script.clone()))
            .add_service(ChangeRequestServiceServer::new(script))
            .serve_with_incoming(incoming),
    );
    addr
}

/// Runs the binary with a private HOME/config/data dir and no inherited KORTIX_* settings.
async fn kortix(home: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kortix"))
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("KORTIX_DATA_DIR", home.join("data"))
        .env_remove("KORTIX_URL")
        .env_remove("KORTIX_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run kortix")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_doc(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            text(&out.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_comes_from_flag_then_login_then_local_admin_file() {
    let script = Script::default();
    let url = format!("http://{}", serve(script.clone()).await);
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();

    // Nothing known: the server's refusal is explained.
    let out = kortix(h, &["--url", &url, "accounts", "whoami"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: not authenticated: missing bearer token (pass --token or run kortix login)"
    );

    // A loopback URL falls back to <data-dir>/admin.token.
    std::fs::create_dir_all(h.join("data")).expect("mkdir");
    std::fs::write(h.join("data/admin.token"), "kx_admin\n").expect("write");
    let out = kortix(h, &["--url", &url, "--json", "accounts", "whoami"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(json_doc(&out)["name"], json!("kx_admin"));

    // The flag beats everything.
    let out = kortix(
        h,
        &[
            "--url", &url, "--token", "kx_flag", "--json", "accounts", "whoami",
        ],
    )
    .await;
    assert_eq!(json_doc(&out)["name"], json!("kx_flag"));

    // login checks the token, saves it 0600, and later calls use it over admin.token.
    let out = kortix(h, &["--url", &url, "--token", "kx_user", "--json", "login"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let login = json_doc(&out);
    assert_eq!(login["account"]["name"], json!("kx_user"));
    let creds = h.join("config/kortix/credentials.toml");
    assert_eq!(
        login["credentials_file"],
        json!(creds.display().to_string())
    );
    let mode = std::fs::metadata(&creds)
        .expect("saved")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let out = kortix(
        h,
        &["--url", &format!("{url}/"), "--json", "accounts", "whoami"],
    )
    .await;
    assert_eq!(
        json_doc(&out)["name"],
        json!("kx_user"),
        "saved login keyed by normalized URL"
    );

    // logout forgets it: back to the admin token.
    let out = kortix(h, &["--url", &url, "logout"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = kortix(h, &["--url", &url, "--json", "accounts", "whoami"]).await;
    assert_eq!(json_doc(&out)["name"], json!("kx_admin"));

    let auth = script.seen.auth.lock().expect("lock").clone();
    assert_eq!(
        auth,
        [
            None,
            Some("Bearer kx_admin".into()),
            Some("Bearer kx_flag".into()),
            Some("Bearer kx_user".into()),
            Some("Bearer kx_user".into()),
            Some("Bearer kx_admin".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_reattaches_after_slow_viewer_cutoff_without_gap_or_duplicate() {
    let script = Script::default();
    let url = format!("http://{}", serve(script.clone()).await);
    let home = tempfile::tempdir().expect("tempdir");
    let out = kortix(
        home.path(),
        &[
            "--url", &url, "--token", "t", "--json", "sessions", "attach", "s-demo",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect();
    let seqs: Vec<u64> = lines
        .iter()
        .map(|l| l["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["log", "event", "state", "commit", "gap", "state"]);
    for line in &lines {
        let mut keys: Vec<&String> = line.as_object().expect("object").keys().collect();
        keys.sort();
        assert_eq!(keys, ["data", "kind", "seq", "ts"]);
    }
    assert_eq!(lines[0]["ts"], json!("2023-11-14T22:13:20.001Z"));
    assert_eq!(
        lines[1]["data"],
        json!({"type": "session.idle", "data": {"x": 1}})
    );
    assert_eq!(lines[3]["data"]["sha"], json!("0123456789abcdef0123"));
    assert_eq!(
        *script.seen.attach.lock().expect("lock"),
        [(0, true), (4, true)],
        "reattached from last seq + 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_human_view_and_no_follow() {
    let script = Script::default();
    let url = format!("http://{}", serve(script.clone()).await);
    let home = tempfile::tempdir().expect("tempdir");
    let out = kortix(
        home.path(),
        &[
            "--url",
            &url,
            "--token",
            "t",
            "sessions",
            "attach",
            "s-demo",
            "--from",
            "4",
            "--no-follow",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "● commit 0123456 Add parser (+10 -1, 2 files), pushed\n\
         ! records 5..5 lost: spool overflow\n\
         — stopped: user stop\n",
        "no colour codes when stdout is not a terminal; seam record 3 dropped"
    );
    assert_eq!(*script.seen.attach.lock().expect("lock"), [(4, false)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_new_wait_returns_once_running() {
    let script = Script::default();
    let url = format!("http://{}", serve(script.clone()).await);
    let home = tempfile::tempdir().expect("tempdir");
    let out = kortix(
        home.path(),
        &[
            "--url",
            &url,
            "--token",
            "t",
            "--json",
            "sessions",
            "new",
            "--project",
            "demo",
            "--wait",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        json_doc(&out),
        json!({"id": "s-demo", "project": "demo", "branch": "s-demo", "status": "running"})
    );
    assert_eq!(*script.seen.watches.lock().expect("lock"), 1);
    assert_eq!(
        *script.seen.polls.lock().expect("lock"),
        0,
        "the state is followed, not polled"
    );
    let keys = script.seen.idempotency_keys.lock().expect("lock").clone();
    assert_eq!(keys.len(), 1);
    assert!(
        !keys[0].is_empty(),
        "StartSession carries an idempotency key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_new_wait_polls_a_control_plane_without_watch() {
    let script = Script::default();
    let url = format!("http://{}", serve(script.clone()).await);
    let home = tempfile::tempdir().expect("tempdir");
    let out = kortix(
        home.path(),
        &[
            "--url", &url, "--token", "t", "--json", "sessions", "new", "-p", "legacy", "--wait",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(json_doc(&out)["status"], json!("running"));
    assert!(*script.seen.polls.lock().expect("lock") >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stop_wait_returns_the_ended_session() {
    let url = format!("http://{}", serve(Script::default()).await);
    let home = tempfile::tempdir().expect("tempdir");
    let out = kortix(
        home.path(),
        &[
            "--url", &url, "--token", "t", "--json", "sessions", "stop", "s-halt", "--wait",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stopped = json_doc(&out);
    assert_eq!(stopped["status"], json!("stopped"));
    assert_eq!(stopped["id"], json!("s-halt"));
    let out = kortix(
        home.path(),
        &["--url", &url, "--token", "t", "sessions", "stop", "s-halt"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("stopping"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_prints_the_resuming_session_and_refusals() {
    let url = format!("http://{}", serve(Script::default()).await);
    let home = tempfile::tempdir().expect("tempdir");
    let out = kortix(
        home.path(),
        &[
            "--url", &url, "--token", "t", "--json", "sessions", "resume", "s-nap", "--prompt",
            "go on",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let resumed = json_doc(&out);
    assert_eq!(resumed["status"], json!("resuming"));
    assert_eq!(resumed["branch"], json!("s-nap"));
    let out = kortix(
        home.path(),
        &[
            "--url",
            &url,
            "--token",
            "t",
            "sessions",
            "resume",
            "s-running",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("only stopped or hibernated sessions can be resumed"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_new_wait_reports_the_failure_reason() {
    let url = format!("http://{}", serve(Script::default()).await);
    let home = tempfile::tempdir().expect("tempdir");
    let out = kortix(
        home.path(),
        &[
            "--url", &url, "--token", "t", "--json", "sessions", "new", "-p", "doomed", "--wait",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_doc(&out)["status"], json!("failed"));
    assert_eq!(
        text(&out.stderr).trim(),
        "session s-doomed did not start: failed: image build failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cr_merge_success_and_refusals() {
    let url = format!("http://{}", serve(Script::default()).await);
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let base = ["--url", url.as_str(), "--token", "t"];

    let out = kortix(
        h,
        &[
            &base[..],
            &["--json", "cr", "merge", "1", "--project", "demo"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        json_doc(&out),
        json!({"number": 1, "state": "merged", "merge_commit": "m3rg3"})
    );

    let out = kortix(
        h,
        &[&base[..], &["cr", "merge", "2", "--project", "demo"]].concat(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "merge refused: conflicts in: a.txt, b.txt\n"
    );
    assert!(out.stdout.is_empty());

    let out = kortix(
        h,
        &[&base[..], &["cr", "merge", "3", "--project", "demo"]].concat(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "merge refused: change request is closed\n"
    );

    let out = kortix(
        h,
        &[&base[..], &["cr", "merge", "4", "-p", "demo"]].concat(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "merge refused: base moved\n",
        "not said twice"
    );
}

/// A private tmux server: `kortix` runs in a real pseudo-terminal, as a person runs it.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// A tmux server of its own running `kortix ARGS` (with a private HOME, no inherited
    /// KORTIX_* or NO_COLOR) in a 120×30 terminal, then printing `EXIT=<code>`.
    fn start(home: &Path, env: &str, args: &str) -> Tmux {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let tmux = Tmux {
            socket: format!(
                "kortix-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        };
        let script = format!(
            "env -u NO_COLOR -u KORTIX_URL -u KORTIX_TOKEN HOME={home} \
             KORTIX_DATA_DIR={home}/data TERM=xterm-256color {env} {bin} {args}; \
             echo EXIT=$?; sleep 60",
            home = home.display(),
            bin = env!("CARGO_BIN_EXE_kortix"),
        );
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "attach",
            "-x",
            "120",
            "-y",
            "30",
            &script,
        ]);
        assert!(out.status.success(), "tmux: {}", text(&out.stderr));
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        std::process::Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux is installed (scripts/test installs it)")
    }

    /// The screen, with colours as escape sequences.
    fn screen(&self) -> String {
        text(
            &self
                .run(&["capture-pane", "-p", "-e", "-t", "attach"])
                .stdout,
        )
    }

    /// Polls the screen until `done` holds, for at most 20 s.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut pause = std::time::Duration::from_millis(20);
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cr_diff_pages_on_a_terminal_only() {
    let url = format!("http://{}", serve(Script::default()).await);
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let pager = "sed s/^/PAGED:/";
    tokio::task::block_in_place(|| {
        let tmux = Tmux::start(
            h,
            &format!("KORTIX_PAGER='{pager}'"),
            &format!("--url {url} --token t cr diff 1 -p demo"),
        );
        let screen = tmux.wait_for("the diff", |s| s.contains("EXIT="));
        assert!(screen.contains("PAGED:"), "through the pager:\n{screen}");
        assert!(screen.contains("EXIT=0"), "{screen}");
    });
    // Piped: no pager, whatever KORTIX_PAGER says.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kortix"))
        .args([
            "--url", &url, "--token", "t", "cr", "diff", "1", "-p", "demo",
        ])
        .env("HOME", h)
        .env("KORTIX_PAGER", pager)
        .output()
        .await
        .expect("run kortix");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("diff --git a/x b/x\n"),
        "{}",
        text(&out.stdout)
    );
    assert!(!text(&out.stdout).contains("PAGED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_on_a_terminal_is_coloured_and_ctrl_c_detaches() {
    let url = format!("http://{}", serve(Script::default()).await);
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    tokio::task::block_in_place(|| {
        let tmux = Tmux::start(
            h,
            "",
            &format!("--url {url} --token t sessions attach s-live"),
        );
        let screen = tmux.wait_for("the commit", |s| s.contains("Add parser"));
        let error = screen
            .lines()
            .find(|l| l.contains("the provider refused the key"))
            .unwrap_or_else(|| panic!("error shown:\n{screen}"));
        assert!(error.contains("\u{1b}[31m"), "errors in red: {error:?}");
        let commit = screen.lines().find(|l| l.contains("Add parser")).unwrap();
        assert!(
            commit.contains("\u{1b}[32m"),
            "commits in green: {commit:?}"
        );
        let out = tmux.run(&["send-keys", "-t", "attach", "C-c"]);
        assert!(out.status.success(), "send-keys: {}", text(&out.stderr));
        let screen = tmux.wait_for("the detach", |s| s.contains("EXIT="));
        assert!(
            screen.contains(
                "detached from session s-live; it keeps running (resume with: kortix sessions attach s-live --from 4)"
            ),
            "{screen}"
        );
        assert!(screen.contains("EXIT=0"), "{screen}");
    });
}
