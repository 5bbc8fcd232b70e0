//! End to end with everything real: the control plane, the `kortix-agent` binary in a local
//! sandbox, pinned OpenCode from npm, real git, and a scripted OpenAI-compatible model.
//!
//! Needs `target/<profile>/kortix-agent` built (`scripts/test` builds it first).

mod support;

use futures::StreamExt;
use kortix_proto::v1::record::Body;
use kortix_proto::v1::*;
use kortix_tests::{ScriptedModel, Turn};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{TestServer, eventually, git_ok};

/// A server with local sandboxes running the real agent and the pinned OpenCode, and a
/// project whose `.kortix/opencode/opencode.json` points at `model` — landed on `main`
/// through a change request, the only way there.
async fn setup(model: &ScriptedModel) -> (TestServer, String, tempfile::TempDir) {
    let ts = TestServer::start_with(support::use_real_agent).await;
    let token = ts.account("alice").await;
    let work = support::app_with_model_config(&ts, &token, model.port(), |_| {}).await;
    (ts, token, work)
}

fn workspace(ts: &TestServer, session: &str) -> PathBuf {
    ts.data_dir()
        .join("sandboxes")
        .join(session)
        .join("workspace")
}

/// Follows the session's records until `done` says so.
async fn follow_until(
    ts: &TestServer,
    token: &str,
    id: &str,
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    while !done(&seen) {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("timed out; records so far: {}", describe(&seen)));
        match next {
            Some(Ok(r)) => seen.push(r),
            Some(Err(e)) => panic!("attach failed: {e}"),
            None => break,
        }
    }
    seen
}

fn describe(records: &[Record]) -> String {
    records
        .iter()
        .map(|r| match &r.body {
            Some(Body::Log(l)) => format!("{} log {}", r.seq, l.line),
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

fn pushed_commit(records: &[Record]) -> Option<CommitRecord> {
    records.iter().find_map(|r| match &r.body {
        Some(Body::Commit(c)) if c.pushed => Some(c.clone()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_writes_commits_and_pushes_through_real_opencode() {
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let (ts, token, work) = setup(&model).await;
    let session = ts
        .start_session(&token, "app", "Create hello.txt and commit it.")
        .await;
    // The person who started it is its launcher.
    assert!(session.launched_by.starts_with("person:"), "{session:?}");
    let ws = workspace(&ts, &session.id);
    model.push([
        Turn::write_file(
            ws.join("hello.txt").display().to_string(),
            "hello from the agent\n",
        ),
        Turn::bash(
            "git add hello.txt && git commit -q -m 'Add hello.txt' && git push -q origin HEAD",
        ),
        Turn::text("Created and pushed hello.txt."),
    ]);
    ts.wait_status(
        &token,
        &session.id,
        SessionStatus::Running,
        Duration::from_secs(180),
    )
    .await;

    let records = follow_until(&ts, &token, &session.id, |seen| {
        pushed_commit(seen).is_some()
    })
    .await;
    let commit = pushed_commit(&records).unwrap();
    assert_eq!(commit.message.trim(), "Add hello.txt");
    assert_eq!(commit.files_changed, 1);
    assert_eq!(commit.insertions, 1);
    assert_eq!(commit.author_name, "Kortix Agent");
    assert!(
        records.iter().any(|r| matches!(r.body, Some(Body::Log(_)))),
        "log records"
    );
    assert!(
        records
            .iter()
            .any(|r| matches!(r.body, Some(Body::Event(_)))),
        "event records"
    );
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=records.len() as u64).collect::<Vec<_>>(),
        "gap-free seqs"
    );

    // The commit is on the session branch in the control plane's repository.
    let check = work.path().join("check");
    git_ok(
        work.path(),
        &[
            "clone",
            "-q",
            "-b",
            &session.id,
            &ts.git_url("app", &token),
            check.to_str().unwrap(),
        ],
    );
    assert_eq!(git_ok(&check, &["rev-parse", "HEAD"]).trim(), commit.sha);
    assert_eq!(
        std::fs::read_to_string(check.join("hello.txt")).unwrap(),
        "hello from the agent\n"
    );
    // The push happened inside the second turn's tool call; the model hears back after it.
    eventually(
        "the model's closing turn",
        Duration::from_secs(60),
        || async { (model.calls() >= 3).then_some(()) },
    )
    .await;

    // A clean stop: the agent reports its final state and the sandbox is gone.
    ts.sessions(&token)
        .stop_session(StopSessionRequest {
            id: session.id.clone(),
        })
        .await
        .unwrap();
    let stopped = ts
        .wait_status(
            &token,
            &session.id,
            SessionStatus::Stopped,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(stopped.head_sha, commit.sha);
    assert!(
        stopped.failure_reason.is_empty(),
        "{}",
        stopped.failure_reason
    );
    assert_eq!(stopped.end_reason, "stopped by user");
    // What the sandbox held (its workspace, and OpenCode's database in its HOME, where tool
    // output may show secret values) is removed once the agent has exited.
    let sandbox_dir = ts.data_dir().join("sandboxes").join(&session.id);
    eventually(
        "the sandbox directory to be removed",
        Duration::from_secs(30),
        || async { (!sandbox_dir.exists()).then_some(()) },
    )
    .await;
    let all = follow_until(&ts, &token, &session.id, |_| false).await;
    assert!(
        all.iter()
            .any(|r| matches!(&r.body, Some(Body::State(s)) if s.phase == "stopped")),
        "final state record: {}",
        describe(&all)
    );
    // The CR from the session branch lands the work.
    let cr = ts
        .crs(&token)
        .open_change_request(OpenChangeRequestRequest {
            project: "app".into(),
            session_id: session.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cr.title, "Add hello.txt");
    let merged = ts
        .crs(&token)
        .merge_change_request(ChangeRequestRef {
            project: "app".into(),
            number: cr.number,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(merged.state, ChangeRequestState::Merged as i32);
    ts.stop().await;
}

/// Processes whose working directory is `dir`.
fn processes_in(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cwd.as_deref() == Some(dir) && String::from_utf8_lossy(&cmd).contains("serve")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_killed_mid_session_is_restarted() {
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let (ts, token, _work) = setup(&model).await;
    let session = ts.start_session(&token, "app", "Say hello.").await;
    model.push([Turn::text("Hello.")]);
    ts.wait_status(
        &token,
        &session.id,
        SessionStatus::Running,
        Duration::from_secs(180),
    )
    .await;
    let ws = workspace(&ts, &session.id);
    let victims = eventually("opencode process", Duration::from_secs(30), || async {
        let pids = processes_in(&ws);
        (!pids.is_empty()).then_some(pids)
    })
    .await;
    for pid in &victims {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let records = follow_until(&ts, &token, &session.id, |seen| {
        let restarting = seen.iter().position(
            |r| matches!(&r.body, Some(Body::State(s)) if s.phase == "opencode-restarting"),
        );
        restarting.is_some_and(|i| {
            seen[i..]
                .iter()
                .any(|r| matches!(&r.body, Some(Body::State(s)) if s.phase == "opencode-ready"))
        })
    })
    .await;
    assert!(!records.is_empty());
    let s = ts.session(&token, &session.id).await;
    assert_eq!(
        s.status,
        SessionStatus::Running as i32,
        "{}",
        s.failure_reason
    );
    let fresh = eventually(
        "a new opencode process",
        Duration::from_secs(30),
        || async {
            let pids = processes_in(&ws);
            (!pids.is_empty() && pids.iter().all(|p| !victims.contains(p))).then_some(pids)
        },
    )
    .await;
    assert!(!fresh.is_empty());
    ts.sessions(&token)
        .stop_session(StopSessionRequest {
            id: session.id.clone(),
        })
        .await
        .unwrap();
    ts.wait_status(
        &token,
        &session.id,
        SessionStatus::Stopped,
        Duration::from_secs(60),
    )
    .await;
    ts.stop().await;
}

/// An OpenCode that never answers its health check: the session fails at the start deadline
/// with OpenCode's last output as the reason, instead of staying `provisioning` forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opencode_that_never_becomes_ready_fails_the_session_with_its_output() {
    let bin_dir = tempfile::tempdir().unwrap();
    let fake = bin_dir.path().join("opencode");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'fake opencode: waiting for a database that never comes' >&2\nexec sleep 600\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ts = TestServer::start_with(|c| {
        support::use_real_agent(c);
        c.agent_env.retain(|(k, _)| k != "KORTIX_OPENCODE_BIN");
        c.agent_env
            .push(("KORTIX_OPENCODE_BIN".into(), fake.display().to_string()));
        c.timings.start_deadline = Duration::from_secs(4);
    })
    .await;
    let token = ts.account("alice").await;
    ts.projects(&token)
        .create_project(CreateProjectRequest {
            name: "app".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let session = ts.start_session(&token, "app", "Say hello.").await;
    let failed = ts
        .wait_status(
            &token,
            &session.id,
            SessionStatus::Failed,
            Duration::from_secs(60),
        )
        .await;
    assert!(
        failed
            .failure_reason
            .contains("opencode did not become ready within 4 s"),
        "{}",
        failed.failure_reason
    );
    assert!(
        failed
            .failure_reason
            .contains("fake opencode: waiting for a database that never comes"),
        "the reason carries OpenCode's last output: {}",
        failed.failure_reason
    );
    ts.stop().await;
}

/// OpenCode's packages come from the control plane's shared install, linked into the
/// sandbox: with every npm registry unreachable from the sandbox, the session still starts,
/// answers its prompt and pushes, and its HOME grows no npm cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_needs_no_package_registry() {
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let ts = TestServer::start_with(|c| {
        support::use_real_agent(c);
        // Nothing listens on port 9: any registry request of OpenCode's fails at once.
        c.agent_env
            .push(("npm_config_registry".into(), "http://127.0.0.1:9/".into()));
    })
    .await;
    let token = ts.account("alice").await;
    let _work = support::app_with_model_config(&ts, &token, model.port(), |_| {}).await;
    let session = ts
        .start_session(&token, "app", "Create offline.txt and commit it.")
        .await;
    let ws = workspace(&ts, &session.id);
    model.push([
        Turn::write_file(
            ws.join("offline.txt").display().to_string(),
            "no registry\n",
        ),
        Turn::bash(
            "git add offline.txt && git commit -q -m 'Add offline.txt' && git push -q origin HEAD",
        ),
        Turn::text("Done without a registry."),
    ]);
    ts.wait_status(
        &token,
        &session.id,
        SessionStatus::Running,
        Duration::from_secs(180),
    )
    .await;
    let records = follow_until(&ts, &token, &session.id, |seen| {
        pushed_commit(seen).is_some()
    })
    .await;
    assert_eq!(
        pushed_commit(&records).unwrap().message.trim(),
        "Add offline.txt"
    );
    assert!(
        records.iter().any(|r| matches!(&r.body,
            Some(Body::Log(l)) if l.line.contains("linked into 2 config directories"))),
        "the agent linked the shared packages: {}",
        describe(&records)
    );

    let home = ts
        .data_dir()
        .join("sandboxes")
        .join(&session.id)
        .join("home");
    let global = home.join(".config/opencode");
    let project = ws.join(".kortix/opencode");
    for dir in [&global, &project] {
        let modules = dir.join("node_modules");
        assert!(
            std::fs::symlink_metadata(&modules).is_ok_and(|m| m.file_type().is_symlink()),
            "{} is the shared install",
            modules.display()
        );
        assert!(modules.join("@opencode-ai/plugin/package.json").is_file());
    }
    assert!(
        !home.join(".npm").exists(),
        "the sandbox's HOME grew an npm cache: {:?}",
        std::fs::read_dir(home.join(".npm"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    // OpenCode found nothing to install, so it never tried the (unreachable) registry.
    let logs = home.join(".local/share/opencode/log");
    let text: String = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    assert!(!text.is_empty(), "OpenCode's log in {}", logs.display());
    assert!(
        !text.contains("dependency install failed") && !text.contains("127.0.0.1:9"),
        "OpenCode tried to install packages:\n{}",
        text.lines()
            .filter(|l| l.contains("install") || l.contains("npm"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Nothing of the install shows in git: what the config directory gained is ignored.
    let status = git_ok(&ws, &["status", "--porcelain", "--untracked-files=all"]);
    assert!(!status.lines().any(|l| l.starts_with("??")), "{status}");
    ts.stop().await;
}

/// Idle hibernation counts a session as idle only when nothing is in flight: a tool that runs
/// three idle timeouts long without a line of output does not get its sandbox taken away, and
/// the session hibernates once the turn is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_silent_tool_call_is_not_idleness() {
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let ts = TestServer::start_with(support::use_real_agent_idling(Duration::from_secs(2))).await;
    let token = ts.account("alice").await;
    let _work = support::app_with_model_config(&ts, &token, model.port(), |_| {}).await;
    let session = ts
        .start_session(&token, "app", "Wait a while, quietly.")
        .await;
    model.push([
        Turn::bash("sleep 6 && echo slept > slept.txt"),
        Turn::text("Rested."),
    ]);
    let slept = workspace(&ts, &session.id).join("slept.txt");
    eventually(
        "the silent tool finishes",
        Duration::from_secs(180),
        || async {
            let s = ts.session(&token, &session.id).await;
            assert!(
                s.status == SessionStatus::Running as i32
                    || s.status == SessionStatus::Provisioning as i32,
                "the session ended while its tool ran: {:?} {}",
                SessionStatus::try_from(s.status),
                s.failure_reason
            );
            slept.is_file().then_some(())
        },
    )
    .await;
    let hibernated = ts
        .wait_status(
            &token,
            &session.id,
            SessionStatus::Hibernated,
            Duration::from_secs(60),
        )
        .await;
    assert!(
        hibernated.end_reason.starts_with("idle for"),
        "{}",
        hibernated.end_reason
    );
    ts.stop().await;
}
