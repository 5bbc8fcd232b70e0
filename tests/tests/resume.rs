//! Nothing lost at the end of a sandbox, end to end with the real control plane, the
//! `kortix-agent` binary in local sandboxes, the pinned OpenCode and a scripted model:
//! uncommitted edits and the conversation survive idle hibernation and come back on resume;
//! a sandbox ended with SIGTERM saves before it goes; a sandbox killed with SIGKILL keeps what
//! was pushed and says what was lost.
//!
//! Needs `target/<profile>/kortix-agent` built (`scripts/test` builds it first).

mod support;

use kortix_proto::v1::record::Body;
use kortix_proto::v1::*;
use kortix_tests::{ScriptedModel, Turn};
use std::time::Duration;
use support::{TestServer, eventually, git_ok, states};
use tonic::Code;

fn pushed_commit(records: &[Record]) -> Option<CommitRecord> {
    records.iter().find_map(|r| match &r.body {
        Some(Body::Commit(c)) if c.pushed => Some(c.clone()),
        _ => None,
    })
}

/// `git ls-remote` of the project as its owner sees it: ref name → commit.
fn ls_remote(
    ts: &TestServer,
    token: &str,
    dir: &std::path::Path,
) -> std::collections::BTreeMap<String, String> {
    git_ok(dir, &["ls-remote", &ts.git_url("app", token)])
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(sha, name)| (name.to_string(), sha.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hibernation_keeps_uncommitted_work_and_the_conversation_and_resume_restores_them() {
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let ts = TestServer::start_with(support::use_real_agent_idling(Duration::from_secs(3))).await;
    let token = ts.account("alice").await;
    let work = support::app_with_model_config(&ts, &token, model.port(), |_| {}).await;
    let session = ts
        .start_session(
            &token,
            "app",
            "Commit notes.txt, then start a draft without committing it.",
        )
        .await;
    let ws = ts.workspace(&session.id);
    model.push([
        Turn::write_file(ws.join("notes.txt").display().to_string(), "pushed\n"),
        Turn::bash(
            "git add notes.txt && git commit -q -m 'Add notes.txt' && git push -q origin HEAD",
        ),
        Turn::write_file(
            ws.join("draft.txt").display().to_string(),
            "work in progress\n",
        ),
        Turn::bash("printf 'not yet committed\\n' >> notes.txt"),
        Turn::text("The draft is started; the codeword is PELICAN-42."),
    ]);

    // Idle after its last turn, the session hibernates; its agent saves on the way out.
    let hibernated = ts
        .wait_status(
            &token,
            &session.id,
            SessionStatus::Hibernated,
            Duration::from_secs(240),
        )
        .await;
    assert!(hibernated.resumable, "{hibernated:?}");
    let saved = hibernated.saved.clone().expect("a save");
    assert!(!saved.wip_commit.is_empty(), "{saved:?}");
    // draft.txt and notes.txt; not the OpenCode config, where OpenCode only added `$schema`.
    assert!(
        saved
            .wip_note
            .starts_with("2 files saved to refs/kortix/wip/"),
        "{saved:?}"
    );
    assert!(saved.conversation_bytes > 0, "{saved:?}");
    let records = ts.stored_records(&token, &session.id, 1).await;
    let pushed = pushed_commit(&records).expect("the pushed commit's record");
    assert!(
        states(&records)
            .iter()
            .any(|(phase, reason)| phase == "saved" && reason.contains("conversation saved")),
        "{:?}",
        states(&records)
    );
    let last_seq = records.last().unwrap().seq;

    // The WIP ref is beside the branch, readable like any ref; the branch did not move.
    let refs = ls_remote(&ts, &token, work.path());
    let wip = format!("refs/kortix/wip/{}", session.id);
    assert_eq!(refs.get(&wip), Some(&saved.wip_commit), "{refs:?}");
    assert_eq!(
        refs.get(&format!("refs/heads/{}", session.id)),
        Some(&pushed.sha),
        "{refs:?}"
    );
    assert!(!ws.exists(), "the hibernated sandbox is gone");
    // The WIP commit holds the edit and the new file, on top of the pushed commit.
    let check = work.path().join("app");
    git_ok(&check, &["fetch", "-q", &ts.git_url("app", &token), &wip]);
    assert_eq!(
        git_ok(&check, &["rev-parse", "FETCH_HEAD^"]).trim(),
        pushed.sha
    );
    let files = git_ok(
        &check,
        &[
            "diff-tree",
            "-r",
            "--name-only",
            "FETCH_HEAD^",
            "FETCH_HEAD",
        ],
    );
    eprintln!("saved files:\n{files}");
    assert!(
        files.lines().any(|f| f == "notes.txt") && files.lines().any(|f| f == "draft.txt"),
        "{files}"
    );

    // Resuming a session that is not stopped or hibernated is refused and changes nothing.
    let unknown = ts
        .sessions(&token)
        .resume_session(ResumeSessionRequest {
            id: "no-such-session".into(),
            prompt: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    model.push([Turn::text("You asked me to remember PELICAN-42.")]);
    let before = model.calls();
    let resumed = ts
        .sessions(&token)
        .resume_session(ResumeSessionRequest {
            id: session.id.clone(),
            prompt: "What was the codeword?".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (resumed.id.as_str(), resumed.branch.as_str()),
        (session.id.as_str(), session.id.as_str())
    );
    assert!(
        [
            SessionStatus::Resuming as i32,
            SessionStatus::Running as i32
        ]
        .contains(&resumed.status),
        "{resumed:?}"
    );
    let again = ts
        .sessions(&token)
        .resume_session(ResumeSessionRequest {
            id: session.id.clone(),
            prompt: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    let running = ts
        .wait_status(
            &token,
            &session.id,
            SessionStatus::Running,
            Duration::from_secs(180),
        )
        .await;
    assert!(!running.resumable && running.resumes == 1, "{running:?}");

    // The model hears the new prompt with the earlier conversation before it.
    let heard = eventually("the resumed prompt", Duration::from_secs(120), || async {
        let text = model.last_request_text();
        (model.calls() > before && text.contains("What was the codeword?")).then_some(text)
    })
    .await;
    assert!(heard.contains("PELICAN-42"), "{heard}");
    assert!(heard.contains("Commit notes.txt"), "{heard}");

    // The uncommitted edits are back, uncommitted, on top of the pushed commit.
    let ws = ts.workspace(&session.id);
    assert_eq!(git_ok(&ws, &["rev-parse", "HEAD"]).trim(), pushed.sha);
    assert_eq!(
        std::fs::read_to_string(ws.join("notes.txt")).unwrap(),
        "pushed\nnot yet committed\n"
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("draft.txt")).unwrap(),
        "work in progress\n"
    );
    let status = git_ok(&ws, &["status", "--porcelain"]);
    assert!(status.contains(" M notes.txt"), "{status}");
    assert!(status.contains("?? draft.txt"), "{status}");

    // The record stream went on from where it was, and says what was restored.
    let all = ts.stored_records(&token, &session.id, 1).await;
    let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>(), "gap-free");
    let after: Vec<_> = all.iter().filter(|r| r.seq > last_seq).cloned().collect();
    support::assert_restored(&after);

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
    assert!(stopped.resumable);
    ts.stop().await;
}

/// Processes working in `dir`.
fn processes_in(dir: &std::path::Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sandbox_keeps_what_was_pushed_and_says_what_was_lost() {
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let ts = TestServer::start_with(support::use_real_agent).await;
    let token = ts.account("alice").await;
    let work = support::app_with_model_config(&ts, &token, model.port(), |_| {}).await;
    let session = ts
        .start_session(&token, "app", "Commit one file, leave another uncommitted.")
        .await;
    let ws = ts.workspace(&session.id);
    model.push([
        Turn::write_file(ws.join("kept.txt").display().to_string(), "kept\n"),
        Turn::bash(
            "git add kept.txt && git commit -q -m 'Add kept.txt' && git push -q origin HEAD",
        ),
        Turn::write_file(ws.join("lost.txt").display().to_string(), "lost\n"),
        Turn::text("Done for now."),
    ]);
    let pushed = eventually("the pushed commit", Duration::from_secs(240), || async {
        let records = ts.stored_records(&token, &session.id, 1).await;
        let lost_written = ws.join("lost.txt").is_file();
        pushed_commit(&records).filter(|_| lost_written && model.calls() >= 4)
    })
    .await;

    // SIGKILL to the sandbox: its agent gets no chance to save anything.
    let record = ts
        .data_dir()
        .join("sandboxes")
        .join(&session.id)
        .join("sandbox.json");
    let pid = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&record).unwrap())
        .unwrap()["pid"]
        .as_i64()
        .unwrap();
    // The agent's process group, and OpenCode's (its own group, so that a stop reaches its
    // tools): everything the sandbox runs.
    let mut victims = processes_in(&ws);
    victims.push(-i32::try_from(pid).unwrap());
    for victim in victims {
        let _ = std::process::Command::new("kill")
            .args(["-9", "--", &victim.to_string()])
            .status();
    }

    let failed = ts
        .wait_status(
            &token,
            &session.id,
            SessionStatus::Failed,
            Duration::from_secs(60),
        )
        .await;
    let reason = &failed.failure_reason;
    assert!(reason.contains("sandbox exited unexpectedly"), "{reason}");
    assert!(
        reason.contains("uncommitted changes and the conversation in the sandbox were not saved"),
        "{reason}"
    );
    assert!(
        reason.contains(&format!(
            "the last pushed commit on branch {} is {}",
            session.id, pushed.sha
        )),
        "{reason}"
    );
    // What was pushed is on the branch; nothing was saved beside it.
    let refs = ls_remote(&ts, &token, work.path());
    assert_eq!(
        refs.get(&format!("refs/heads/{}", session.id)),
        Some(&pushed.sha)
    );
    assert!(
        !refs.contains_key(&format!("refs/kortix/wip/{}", session.id)),
        "{refs:?}"
    );
    // A failed session is not resumable; the refusal changes nothing.
    assert!(!failed.resumable);
    let refused = ts
        .sessions(&token)
        .resume_session(ResumeSessionRequest {
            id: session.id.clone(),
            prompt: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(
        ts.session(&token, &session.id).await.status,
        SessionStatus::Failed as i32
    );
    ts.stop().await;
}

/// A sandbox being ended with its agent still alive (SIGTERM, as a container runtime does):
/// the agent saves the uncommitted work and the conversation before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_sandbox_saves_before_it_goes() {
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let ts = TestServer::start_with(support::use_real_agent).await;
    let token = ts.account("alice").await;
    let work = support::app_with_model_config(&ts, &token, model.port(), |_| {}).await;
    let session = ts.start_session(&token, "app", "Start a draft.").await;
    let ws = ts.workspace(&session.id);
    model.push([
        Turn::write_file(ws.join("draft.txt").display().to_string(), "draft\n"),
        Turn::text("Drafted."),
    ]);
    eventually(
        "the draft and the reply",
        Duration::from_secs(240),
        || async { (ws.join("draft.txt").is_file() && model.calls() >= 2).then_some(()) },
    )
    .await;
    let record = ts
        .data_dir()
        .join("sandboxes")
        .join(&session.id)
        .join("sandbox.json");
    let pid = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&record).unwrap())
        .unwrap()["pid"]
        .as_i64()
        .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = ts
        .wait_status(
            &token,
            &session.id,
            SessionStatus::Stopped,
            Duration::from_secs(60),
        )
        .await;
    assert!(stopped.resumable, "{stopped:?}");
    let saved = stopped.saved.expect("a save");
    assert!(
        saved.wip_note.contains("saved to refs/kortix/wip/"),
        "{saved:?}"
    );
    assert!(saved.conversation_bytes > 0, "{saved:?}");
    let refs = ls_remote(&ts, &token, work.path());
    assert_eq!(
        refs.get(&format!("refs/kortix/wip/{}", session.id)),
        Some(&saved.wip_commit)
    );
    ts.stop().await;
}
