//! Helpers for the tests of isolated sandboxes (`sandbox_isolation.rs`, `image_rootfs.rs`,
//! and the image-booting `sandbox_docker.rs`, `sandbox_daytona.rs`): a control plane whose
//! local sandboxes run in namespaces, a project wired to a scripted model (with Dockerfile
//! templates for the image-booting providers), and reading what a session reported from
//! inside.
#![allow(dead_code)]

pub mod app_build;

use crate::support::{TestServer, eventually, git_ok};
use futures::StreamExt;
use kortix_controlplane::config::ServerConfig;
use kortix_controlplane::sandbox::local::{Isolation, IsolationMode};
use kortix_proto::v1::record::Body;
use kortix_proto::v1::*;
use kortix_tests::{ScriptedModel, opencode_bin};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn agent_bin() -> PathBuf {
    crate::support::built_binary("kortix-agent")
}

/// Fails the test, naming the reason, where this machine cannot isolate sandboxes.
pub fn require_namespaces() {
    let scratch = tempfile::tempdir().unwrap();
    if let Err(reason) = kortix_controlplane::sandbox::local::namespaces_supported(scratch.path()) {
        panic!("namespace isolation is unavailable on this machine: {reason}");
    }
}

/// A control plane whose local sandboxes run the real agent and the pinned OpenCode in their
/// own namespaces (`root`: an assembled image root instead of the host-derived one), and a
/// project whose OpenCode config points at `model`, landed on `main` through a change request.
pub async fn setup(
    model: &ScriptedModel,
    root: Option<PathBuf>,
) -> (TestServer, String, tempfile::TempDir) {
    require_namespaces();
    let ts = TestServer::start_with(|c: &mut ServerConfig| {
        crate::support::use_real_agent(c);
        c.isolation = Isolation {
            mode: IsolationMode::Namespaces,
            root,
        };
    })
    .await;
    let token = ts.account("alice").await;
    let work = crate::support::app_with_model_config(&ts, &token, model.port(), |config| {
        // The report commands read paths outside the workspace (/proc, the host's data
        // directory that must not be there): OpenCode would otherwise stop to ask.
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
        json["permission"]["external_directory"] = "allow".into();
        std::fs::write(config, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    })
    .await;
    (ts, token, work)
}

/// The project of the image-booting providers' tests, its OpenCode on `model`: template
/// `dev` (the default; 1 CPU, 1 GiB memory, 5 GiB disk) builds `.kortix/Dockerfile`, which
/// copies `marker.txt` ("built from the Dockerfile") to `/etc/kortix-marker` on the tests'
/// base image; template `broken` has a Dockerfile whose `RUN` echoes "about to fail" and
/// exits 3.
pub async fn snapshot_project(
    ts: &TestServer,
    token: &str,
    model: &ScriptedModel,
) -> tempfile::TempDir {
    use kortix_tests::podman::{TEST_BASE_IMAGE, dockerfile_manifest, marker_dockerfile};
    let base_url = model.base_url();
    crate::support::app_with_model_config(ts, token, model.port(), move |config| {
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
        json["provider"]["scripted"]["options"]["baseURL"] = base_url.into();
        // The agent may read the Dockerfile's file outside its workspace.
        json["permission"]["external_directory"] = "allow".into();
        std::fs::write(config, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        let clone = config.ancestors().nth(3).unwrap();
        let manifest = dockerfile_manifest(
            1,
            1,
            "disk = 5\n\n[[sandbox.templates]]\nslug = \"broken\"\ndockerfile = \"broken/Dockerfile\"\n",
        );
        std::fs::write(clone.join("kortix.toml"), manifest).unwrap();
        std::fs::write(clone.join(".kortix/Dockerfile"), marker_dockerfile()).unwrap();
        std::fs::write(
            clone.join(".kortix/marker.txt"),
            "built from the Dockerfile\n",
        )
        .unwrap();
        std::fs::create_dir_all(clone.join("broken")).unwrap();
        std::fs::write(
            clone.join("broken/Dockerfile"),
            format!("FROM {TEST_BASE_IMAGE}\nRUN echo about to fail && exit 3\n"),
        )
        .unwrap();
    })
    .await
}

/// Starts a session of the app with OpenCode's `build` agent: `template` empty for the
/// default.
async fn start_request(
    ts: &TestServer,
    token: &str,
    prompt: &str,
    template: &str,
) -> Result<Session, tonic::Status> {
    ts.sessions(token)
        .start_session(StartSessionRequest {
            project: "app".into(),
            prompt: prompt.into(),
            template: template.into(),
            agent: "build".into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Starts a session of `template` (empty: the default) with OpenCode's `build` agent.
pub async fn start_template(
    ts: &TestServer,
    token: &str,
    template: &str,
) -> Result<Session, tonic::Status> {
    start_request(ts, token, "", template).await
}

/// Starts a session of the default template and waits until it runs.
pub async fn start_running(ts: &TestServer, token: &str, within: Duration) -> Session {
    let session = start_request(ts, token, "", "").await.unwrap();
    wait_status(ts, token, &session.id, SessionStatus::Running, within).await
}

/// How many sessions of `template` there are; each must have failed because its snapshot
/// did not build.
pub async fn failed_builds(ts: &TestServer, token: &str, template: &str) -> usize {
    let sessions = ts
        .sessions(token)
        .list_sessions(ListSessionsRequest {
            project: "app".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .sessions;
    let of: Vec<_> = sessions.iter().filter(|s| s.template == template).collect();
    for s in &of {
        assert_eq!(s.status, SessionStatus::Failed as i32, "{s:?}");
        assert!(
            s.failure_reason.contains("failed to build"),
            "{}",
            s.failure_reason
        );
    }
    of.len()
}

/// Starts a session with OpenCode's `build` agent.
pub async fn start(ts: &TestServer, token: &str, prompt: &str) -> Session {
    start_request(ts, token, prompt, "").await.unwrap()
}

/// The session's workspace as the host sees it.
pub fn host_workspace(ts: &TestServer, session: &str) -> PathBuf {
    ts.data_dir()
        .join("sandboxes")
        .join(session)
        .join("workspace")
}

pub async fn status(ts: &TestServer, token: &str, id: &str) -> Session {
    ts.sessions(token)
        .get_session(GetSessionRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

pub async fn wait_status(
    ts: &TestServer,
    token: &str,
    id: &str,
    want: SessionStatus,
    within: Duration,
) -> Session {
    eventually(&format!("{want:?}"), within, || async {
        let s = status(ts, token, id).await;
        if s.status == SessionStatus::Failed as i32 && want != SessionStatus::Failed {
            let log =
                std::fs::read_to_string(ts.data_dir().join("sandboxes").join(id).join("agent.log"))
                    .unwrap_or_default();
            panic!("session failed: {}\nagent.log:\n{log}", s.failure_reason);
        }
        (s.status == want as i32).then_some(s)
    })
    .await
}

/// The `build` log lines among a session's records (its snapshot's build output and the
/// notes after it).
pub fn build_lines(records: &[Record]) -> Vec<&str> {
    records
        .iter()
        .filter_map(|r| match &r.body {
            Some(Body::Log(l)) if l.stream == LogStream::Build as i32 => Some(l.line.as_str()),
            _ => None,
        })
        .collect()
}

/// Follows the session's records until `done` says so (or the deadline passes).
pub async fn follow_until(
    ts: &TestServer,
    token: &str,
    id: &str,
    within: Duration,
    mut done: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    let mut stream = ts
        .sessions(token)
        .attach(AttachRequest {
            session_id: id.into(),
            from_seq: 0,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while !done(&seen) {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| {
                let tail = &seen[seen.len().saturating_sub(60)..];
                panic!("timed out; the last records:\n{}", describe(tail))
            });
        match next {
            Some(Ok(r)) => seen.push(r),
            Some(Err(e)) => panic!("attach failed: {e}"),
            None => break,
        }
    }
    seen
}

pub fn describe(records: &[Record]) -> String {
    records
        .iter()
        .map(|r| match &r.body {
            Some(Body::Log(l)) => format!("{} log {}", r.seq, l.line),
            Some(Body::Event(e))
                if e.r#type.contains("error") || e.r#type.starts_with("permission") =>
            {
                format!(
                    "{} event {} {}",
                    r.seq,
                    e.r#type,
                    e.json.chars().take(2000).collect::<String>()
                )
            }
            Some(Body::Event(e)) => format!("{} event {}", r.seq, e.r#type),
            Some(Body::Commit(c)) => format!("{} commit {} pushed={}", r.seq, c.sha, c.pushed),
            Some(Body::State(s)) => format!("{} state {} {}", r.seq, s.phase, s.reason),
            Some(Body::Gap(g)) => format!("{} gap {}", r.seq, g.reason),
            Some(Body::Approval(a)) => format!("{} approval {} {}", r.seq, a.tool, a.state),
            Some(Body::ConnectorCall(c)) => {
                format!("{} connector_call {} {}", r.seq, c.tool, c.status)
            }
            None => format!("{} empty", r.seq),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn pushed_commit(records: &[Record]) -> Option<CommitRecord> {
    records.iter().find_map(|r| match &r.body {
        Some(Body::Commit(c)) if c.pushed => Some(c.clone()),
        _ => None,
    })
}

/// A file as committed on the session's branch in the control plane's repository.
pub fn file_on_branch(
    ts: &TestServer,
    token: &str,
    work: &Path,
    session: &str,
    file: &str,
) -> String {
    let check = work.join(format!("check-{session}"));
    git_ok(
        work,
        &[
            "clone",
            "-q",
            "-b",
            session,
            &ts.git_url("app", token),
            check.to_str().unwrap(),
        ],
    );
    std::fs::read_to_string(check.join(file))
        .unwrap_or_else(|e| panic!("{file} on branch {session}: {e}"))
}

/// `key=value` lines.
pub fn parse_report(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Stops a session and waits until it is stopped.
pub async fn stop(ts: &TestServer, token: &str, id: &str) {
    ts.sessions(token)
        .stop_session(StopSessionRequest { id: id.into() })
        .await
        .unwrap();
    wait_status(
        ts,
        token,
        id,
        SessionStatus::Stopped,
        Duration::from_secs(60),
    )
    .await;
}

/// The npm prefix the pinned OpenCode was installed into (the directory above `node_modules`).
pub fn opencode_prefix() -> PathBuf {
    let bin = opencode_bin().expect("pinned OpenCode installs");
    bin.ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "node_modules"))
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("{} is not in an npm prefix", bin.display()))
}
