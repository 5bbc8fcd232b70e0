//! Faults of one control-plane replica among several: real `kortix server` processes on one
//! PostgreSQL database sharing one data directory, the real `kortix-agent` with a stand-in
//! OpenCode that prints numbered lines and writes down the prompts it is sent
//! ([`support::fleet`]).
//!
//! Needs `target/<profile>/kortix` and `kortix-agent` built (`scripts/test` builds them first)
//! and `python3`.

mod support;

use std::time::{Duration, Instant};

use kortix_proto::v1::SessionStatus;
use nix::sys::signal::Signal;
use support::fleet::{DEADLINE, Fleet, records, session, tick_count};

/// Three replicas, one agent streaming to each and every session followed through another
/// replica than its agent's. SIGSTOP of one replica for longer than the heartbeat timeout:
/// another takes the sweeper's lease and fails the session of the paused replica's agent as
/// lost, while the sessions of the other agents stay `running` on every replica that
/// answers; after SIGCONT the paused replica learns that its session ended (its agent's
/// heartbeats are refused) and stops the agent, instead of going on with a session that is
/// failed in the store and running in its sandbox. Prompts sent during the pause reach the
/// running sessions' OpenCode once and the failed one's at most once; every stream and every
/// viewer's is gap-free and duplicate-free, complete for the sessions that kept running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_past_the_heartbeat_deadline_leaves_no_session_failed_and_running() {
    let Some(mut fleet) = Fleet::start(
        3,
        3,
        &[
            "--heartbeat-timeout-secs",
            "5",
            "--reconnect-grace-secs",
            "1",
        ],
    )
    .await
    else {
        return;
    };
    let all: Vec<usize> = (0..fleet.members.len()).collect();
    let paused = 0;
    let (lost, kept): (Vec<usize>, Vec<usize>) =
        all.iter().partition(|&&i| fleet.members[i].home == paused);
    assert!(!lost.is_empty() && !kept.is_empty());
    assert!(fleet.members.iter().any(|m| m.viewer_at == paused));
    let awake = [1, 2];
    fleet
        .until_running(awake[0], &all, "records to flow", |_, r| {
            tick_count(r) >= 30
        })
        .await;

    fleet.replicas[paused].signal(Signal::SIGSTOP);
    let paused_at = Instant::now();
    let mut prompts = Vec::new();
    for &i in &all {
        let text = format!("sent during the pause to {}", fleet.members[i].id);
        fleet.send_prompt(awake[0], i, &text).await;
        prompts.push((i, text));
    }
    // Every replica that answers tells the same story at every step: the paused replica's
    // sessions running until failed as lost, the others' running throughout.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut failed = 0;
        for &i in &all {
            for via in awake {
                let s = session(&fleet.replicas[via], &fleet.members[i].id).await;
                match s.status() {
                    SessionStatus::Running => {}
                    SessionStatus::Failed if lost.contains(&i) => {
                        assert!(s.end_reason.contains("agent lost"), "{s:?}");
                        failed += 1;
                    }
                    other => panic!(
                        "session {} (agent at replica {}) is {other:?} on replica {via}: {s:?}",
                        s.id, fleet.members[i].home
                    ),
                }
            }
        }
        if failed == lost.len() * awake.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the paused replica's sessions were not failed within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "the paused replica's session(s) failed {} ms after SIGSTOP",
        paused_at.elapsed().as_millis()
    );

    fleet.replicas[paused].signal(Signal::SIGCONT);
    for &i in &lost {
        fleet.members[i].agent.wait_exit(DEADLINE).await;
    }
    // The kept sessions go on: new records, and the pause's prompts at their OpenCode.
    let before: Vec<usize> = fleet
        .until_running(
            awake[1],
            &kept,
            "the pause's prompts at OpenCode",
            |i, _| fleet.members[i].agent.prompted(&prompts[i].1) > 0,
        )
        .await
        .iter()
        .map(Vec::len)
        .collect();
    fleet
        .until_running(paused, &kept, "records after the pause", |i, r| {
            let k = kept.iter().position(|&x| x == i).unwrap();
            r.len() >= before[k] + 50
        })
        .await;
    for &i in &all {
        for via in 0..fleet.replicas.len() {
            let want = if lost.contains(&i) {
                SessionStatus::Failed
            } else {
                SessionStatus::Running
            };
            let s = session(&fleet.replicas[via], &fleet.members[i].id).await;
            assert_eq!(s.status(), want, "on replica {via}, after SIGCONT: {s:?}");
        }
    }
    for &i in &lost {
        let stored = records(&fleet.replicas[awake[0]], &fleet.members[i].id).await;
        // The viewer's stream ends with the session; what the paused replica took from the
        // agent after SIGCONT (the lines printed during the pause, the agent's stop) is stored
        // after that, read by attaching again.
        fleet.check_member(i, &stored, false).await;
    }
    fleet.stop_and_check(awake[1], &kept).await;

    // Counted after every agent has exited: nothing can arrive later.
    for &i in &lost {
        println!(
            "the pause's prompt reached the failed session's OpenCode {} time(s)",
            fleet.members[i].agent.prompted(&prompts[i].1)
        );
    }
    for (i, text) in &prompts {
        let agent = &fleet.members[*i].agent;
        let want = if lost.contains(i) { 0..=1 } else { 1..=1 };
        assert!(
            want.contains(&agent.prompted(text)),
            "session {} got the pause's prompt {} time(s): {:?}",
            fleet.members[*i].id,
            agent.prompted(text),
            agent.prompts()
        );
        assert_eq!(agent.prompted("go"), 1, "{:?}", agent.prompts());
    }
    for (i, r) in fleet.replicas.iter().enumerate() {
        assert!(
            !r.log_contains("panicked"),
            "replica {i} panicked: {}",
            r.log_tail()
        );
    }
    fleet.finish().await;
}
