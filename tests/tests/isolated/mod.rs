//! Helpers for the tests of isolated local sandboxes (`sandbox_isolation.rs`,
//! `image_rootfs.rs`): a control plane whose local sandboxes run in namespaces, a project
//! wired to a scripted model, and reading what a session reported from inside.
#![allow(dead_code)]

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

/// Starts a session with OpenCode's `build` agent.
pub async fn start(ts: &TestServer, token: &str, prompt: &str) -> Session {
    ts.sessions(token)
        .start_session(StartSessionRequest {
            project: "app".into(),
            prompt: prompt.into(),
            agent: "build".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
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
