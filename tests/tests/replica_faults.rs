//! Faults of one control-plane replica among several: real `kortix server` processes on one
//! PostgreSQL database sharing one data directory (CA, repositories, sandboxes), the real
//! `kortix-agent`, pinned OpenCode and a scripted model.
//!
//! Needs `target/<profile>/kortix` and `kortix-agent` built (`scripts/test` builds them first).

mod support;

use kortix_tests::pg::Database;
use kortix_tests::{ScriptedModel, Turn};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::eventually;
use support::server_process::{ServerProcess, model_repo};

fn info(server: &ServerProcess, id: &str) -> Value {
    server.json(&["sessions", "info", id])
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
}

/// SIGSTOP of the replica an agent streams to, for longer than the heartbeat timeout: the
/// other replica takes the sweeper's lease and fails the session as lost; after SIGCONT the
/// paused replica learns that the session ended (its agent's heartbeats are refused) and
/// stops the agent, instead of going on with a session that is failed in the store and
/// running in its sandbox. The session stays failed on both replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_past_the_heartbeat_deadline_leaves_no_session_failed_and_running() {
    let Some(db) = Database::create().await else {
        return;
    };
    let model = ScriptedModel::start(vec![
        // Busy for minutes: the agent is working when its replica pauses.
        Turn::bash("for i in $(seq 1 3000); do echo line-$i; sleep 0.1; done"),
        Turn::text("Printed the lines."),
    ])
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let repo = model_repo(root.path(), &model);
    let args = [
        "--database-url",
        &db.url,
        "--heartbeat-timeout-secs",
        "5",
        "--reconnect-grace-secs",
        "1",
    ];
    let mut a = ServerProcess::start(&root.path().join("a"), &args);
    a.wait_ready().await;
    let mut b = a.another_replica(&root.path().join("b"), &args);
    b.wait_ready().await;

    let id = a.start_app_session(&repo);
    assert!(
        tokio::task::block_in_place(|| model.wait_for_calls(1, Duration::from_secs(120))),
        "the model was never asked"
    );
    let agents = a.sandbox_pids();
    assert_eq!(agents.len(), 1, "one sandbox: {agents:?}");
    let agent = agents[0];

    a.signal(Signal::SIGSTOP);
    // B takes the sweeper over once A's lease lapses, and judges the agent lost.
    let failed = eventually(
        "replica B to fail the session of the paused replica",
        Duration::from_secs(120),
        || async {
            let s = info(&b, &id);
            (s["status"] != "running").then_some(s)
        },
    )
    .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["end_reason"]
            .as_str()
            .is_some_and(|r| r.contains("agent lost")),
        "{failed}"
    );
    assert!(alive(agent), "the agent outlives its replica's pause");

    a.signal(Signal::SIGCONT);
    eventually(
        "the resumed replica to stop the agent of the failed session",
        Duration::from_secs(90),
        || async { (!alive(agent)).then_some(()) },
    )
    .await;
    for replica in [&a, &b] {
        let s = info(replica, &id);
        assert_eq!(s["status"], "failed", "still failed, on every replica: {s}");
    }
    assert!(
        !a.log_contains("panicked") && !b.log_contains("panicked"),
        "no panic: {}\n{}",
        a.log_tail(),
        b.log_tail()
    );
    drop(a);
    drop(b);
    db.drop_now().await;
}
