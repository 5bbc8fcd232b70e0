//! The control plane dies, stops and comes back while sessions run: a real `kortix server`
//! process (killed with SIGKILL, stopped with SIGTERM, restarted on the same data directory),
//! the real `kortix-agent`, pinned OpenCode and a scripted model.
//!
//! Needs `target/<profile>/kortix` and `kortix-agent` built (`scripts/test` builds them first).

mod support;

use kortix_tests::{ScriptedModel, Turn};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use support::server_process::{ServerProcess, model_repo};
use support::{eventually, git_ok};

fn info(server: &ServerProcess, id: &str) -> Value {
    server.json(&["sessions", "info", id])
}

fn seqs(records: &[Value]) -> Vec<u64> {
    records.iter().map(|r| r["seq"].as_u64().unwrap()).collect()
}

fn has_phase(records: &[Value], phase: &str) -> bool {
    records
        .iter()
        .any(|r| r["kind"] == "state" && r["data"]["phase"] == phase)
}

/// kill -9 of the control plane, down for longer than the heartbeat timeout, then restarted
/// on the same data directory: the session is still `running` once the sweeper judges again,
/// the restarted control plane can stop the sandbox it adopted, and every record the agent
/// produced is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_a_control_plane_killed_for_longer_than_the_heartbeat_timeout() {
    let model = ScriptedModel::start(vec![
        // Output for ~15 s, so records flow across the outage.
        Turn::bash("for i in $(seq 1 300); do echo line-$i; sleep 0.05; done"),
        Turn::text("Printed the lines."),
    ])
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let repo = model_repo(root.path(), &model);
    let (heartbeat, grace) = (3u64, 15u64);
    let mut server = ServerProcess::start(
        root.path(),
        &[
            "--heartbeat-timeout-secs",
            &heartbeat.to_string(),
            "--reconnect-grace-secs",
            &grace.to_string(),
            "--stop-grace-secs",
            "20",
        ],
    );
    server.wait_ready().await;
    let id = server.start_app_session(&repo);
    assert!(
        tokio::task::block_in_place(|| model.wait_for_calls(1, Duration::from_secs(120))),
        "the model was never asked"
    );
    let agents = server.sandbox_pids();
    assert_eq!(agents.len(), 1, "one sandbox record: {agents:?}");

    server.signal(Signal::SIGKILL);
    server.wait_exit(Duration::from_secs(10)).await;
    // The outage itself: longer than the heartbeat timeout.
    tokio::time::sleep(Duration::from_secs(heartbeat + 2)).await;
    assert!(
        Path::new(&format!("/proc/{}", agents[0])).exists(),
        "the agent outlives its control plane"
    );
    server.restart().await;
    let restarted = Instant::now();

    eventually(
        "the agent to reconnect",
        Duration::from_secs(90),
        || async { has_phase(&server.records(&id), "reconnected").then_some(()) },
    )
    .await;
    // Until the sweeper has had the chance to judge the session on its heartbeats (and a
    // little beyond), the session stays running.
    let judged_after = Duration::from_secs(heartbeat + grace + 3);
    while restarted.elapsed() < judged_after {
        let s = info(&server, &id);
        assert_eq!(s["status"], "running", "after the restart: {s}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The restarted control plane stops the sandbox of the previous run.
    server.json(&["sessions", "stop", &id]);
    let ended = eventually("the session to stop", Duration::from_secs(60), || async {
        let s = info(&server, &id);
        (s["status"] != "stopping" && s["status"] != "running").then_some(s)
    })
    .await;
    assert_eq!(ended["status"], "stopped", "{ended}");
    eventually("the agent to exit", Duration::from_secs(30), || async {
        (!Path::new(&format!("/proc/{}", agents[0])).exists()).then_some(())
    })
    .await;
    eventually(
        "the sandbox directory to be removed",
        Duration::from_secs(30),
        || async { (!server.data_dir.join("sandboxes").join(&id).exists()).then_some(()) },
    )
    .await;

    let records = server.records(&id);
    let seqs = seqs(&records);
    assert_eq!(
        seqs,
        (1..=records.len() as u64).collect::<Vec<_>>(),
        "gap-free and duplicate-free"
    );
    let last = records.last().unwrap();
    assert_eq!(
        last["kind"], "state",
        "the agent's final report is the last record: {last}"
    );
    assert_eq!(last["data"]["phase"], "stopped", "{last}");
    assert!(
        has_phase(&records, "disconnected"),
        "the outage is on record"
    );
}

/// SIGTERM to the control plane while a session has a commit it has not pushed: the agent is
/// stopped first and pushes it over the git endpoint, which stays up until it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_keeps_the_git_endpoint_up_for_the_last_push() {
    let model = ScriptedModel::start(vec![
        Turn::bash("echo wip > wip.txt && git add wip.txt && git commit -qm 'Work in progress'"),
        Turn::text("Committed, not pushed."),
    ])
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let repo = model_repo(root.path(), &model);
    let mut server = ServerProcess::start(root.path(), &["--stop-grace-secs", "20"]);
    server.wait_ready().await;
    let id = server.start_app_session(&repo);
    let sha = eventually("the unpushed commit", Duration::from_secs(120), || async {
        server.records(&id).iter().find_map(|r| {
            (r["kind"] == "commit" && r["data"]["pushed"] == false)
                .then(|| r["data"]["sha"].as_str().unwrap().to_string())
        })
    })
    .await;
    let project = server.json(&["projects", "info", "app"]);
    let bare = server
        .data_dir
        .join("repos")
        .join(format!("{}.git", project["id"].as_str().unwrap()));

    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "kortix server exited {status}: {}",
        server.log_tail()
    );
    let head = git_ok(&bare, &["rev-parse", &format!("refs/heads/{id}")]);
    assert_eq!(head.trim(), sha, "the commit reached the session branch");

    server.restart().await;
    let s = info(&server, &id);
    assert_eq!(s["status"], "stopped", "{s}");
    let reason = s["end_reason"].as_str().unwrap_or_default();
    assert!(!reason.contains("push"), "no push failure: {s}");
}
