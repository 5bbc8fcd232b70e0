//! The OpenCode supervisor against the real, pinned OpenCode and the scripted model server.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kortix_agent::opencode::{
    PromptRequest, RestartPolicy, Supervisor, SupervisorConfig, SupervisorState,
};
use kortix_agent::process::{self, ReapMode, Reaper};
use kortix_agent::records::{RecordSink, Spool, SpoolOptions};
use kortix_proto::v1::{Record, record::Body};
use kortix_tests::{OpencodeHome, ScriptedModel, Turn, opencode_bin, opencode_config};
use nix::sys::signal::Signal;
use tokio::sync::watch;

fn sink(dir: &Path) -> RecordSink {
    let sink = RecordSink::new(Spool::open(&dir.join("spool"), SpoolOptions::default()).unwrap());
    sink.activate(0).unwrap();
    sink
}

fn drain(sink: &RecordSink, into: &mut Vec<Record>) {
    loop {
        let batch = sink.next_batch();
        if batch.is_empty() {
            return;
        }
        into.extend(batch);
    }
}

async fn wait_state(
    rx: &mut watch::Receiver<SupervisorState>,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&SupervisorState) -> bool,
) -> SupervisorState {
    let found = match tokio::time::timeout(timeout, rx.wait_for(|s| pred(s))).await {
        Ok(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    found.unwrap_or_else(|| panic!("timed out waiting for {what}; state is {:?}", *rx.borrow()))
}

fn git(dir: &Path, args: &[&str]) {
    kortix_tests::git::GitEnv::new().ok(dir, args);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_opencode_runs_prompts_restarts_after_kill_and_stops() {
    let bin = opencode_bin().expect("installing the pinned opencode");
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("workspace");
    std::fs::create_dir_all(&ws).unwrap();
    git(&ws, &["init", "-q", "-b", "main"]);
    git(
        &ws,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "init",
        ],
    );
    let target = ws.join("hello.txt");
    let model = ScriptedModel::start(vec![
        Turn::write_file(target.display().to_string(), "hello from opencode\n"),
        Turn::text("I wrote hello.txt."),
    ])
    .unwrap();
    let config_dir = ws.join(".kortix/opencode");
    opencode_config(&config_dir, model.port()).unwrap();
    let home = OpencodeHome::new(tmp.path()).unwrap();

    let reaper = Reaper::start(ReapMode::OwnChildren).unwrap();
    let sink = sink(tmp.path());
    let mut cfg = SupervisorConfig::new(bin, ws.clone(), config_dir);
    cfg.base_env = home.env().into_iter().collect();
    cfg.restart = RestartPolicy {
        base: Duration::from_millis(100),
        cap: Duration::from_millis(500),
        ..RestartPolicy::default()
    };
    let sup = Supervisor::start(cfg, reaper, sink.clone(), BTreeMap::new());
    let mut state = sup.state();

    let ready = wait_state(&mut state, Duration::from_secs(120), "ready", |s| {
        matches!(s, SupervisorState::Ready { .. })
    })
    .await;
    let SupervisorState::Ready {
        session_id, pid, ..
    } = ready
    else {
        unreachable!()
    };
    assert!(session_id.starts_with("ses"), "{session_id}");

    assert!(
        sup.prompt(PromptRequest {
            id: "p1".into(),
            text: "write hello.txt".into(),
            agent: String::new()
        })
        .await
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while std::fs::read_to_string(&target).ok().as_deref() != Some("hello from opencode\n") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "opencode never wrote {}",
            target.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        model.wait_for_calls(2, Duration::from_secs(60)),
        "the tool result never went back to the model"
    );

    // The event stream saw OpenCode's own events, including the tool run.
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        drain(&sink, &mut records);
        let types: Vec<&str> = records
            .iter()
            .filter_map(|r| match &r.body {
                Some(Body::Event(e)) => Some(e.r#type.as_str()),
                _ => None,
            })
            .collect();
        if types.contains(&"server.connected")
            && types.contains(&"session.idle")
            && types.contains(&"message.part.updated")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events seen: {types:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = records.iter().any(|r| matches!(&r.body, Some(Body::State(s)) if s.phase == "prompt-delivered" && s.reason == "p1"));
    assert!(delivered, "no prompt-delivered record");
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "seq must be gap-free"
    );

    // Kill the whole group: the supervisor notices and brings OpenCode back, same session.
    assert!(process::signal_group(pid, Signal::SIGKILL));
    wait_state(&mut state, Duration::from_secs(30), "restarting", |s| {
        matches!(s, SupervisorState::Restarting { .. })
    })
    .await;
    let again = wait_state(&mut state, Duration::from_secs(120), "ready again", |s| {
        matches!(s, SupervisorState::Ready { .. })
    })
    .await;
    let SupervisorState::Ready {
        session_id: session_again,
        pid: pid_again,
        ..
    } = again
    else {
        unreachable!()
    };
    assert_ne!(pid, pid_again);
    assert_eq!(
        session_id, session_again,
        "the opencode session survives a restart"
    );
    assert_eq!(
        sup.liveness()
            .restarts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // New secrets: OpenCode restarts once idle (not counted as a crash) with them in its env.
    let secrets: BTreeMap<String, String> =
        [("NEW_SECRET".to_string(), "value-42".to_string())].into();
    assert!(sup.set_secrets(secrets).await);
    let third = wait_state(
        &mut state,
        Duration::from_secs(120),
        "ready with new secrets",
        |s| matches!(s, SupervisorState::Ready { pid, .. } if *pid != pid_again),
    )
    .await;
    let SupervisorState::Ready {
        pid: pid_again,
        session_id: session_third,
        ..
    } = third
    else {
        unreachable!()
    };
    assert_eq!(session_third, session_id);
    let environ = std::fs::read(format!("/proc/{pid_again}/environ")).unwrap();
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|kv| kv == b"NEW_SECRET=value-42")
    );
    assert_eq!(
        sup.liveness()
            .restarts
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "a secrets restart is not a crash"
    );

    let exit = sup
        .stop(Duration::from_secs(5))
        .await
        .expect("an exit status");
    assert!(exit.code.is_some() || exit.signal.is_some(), "{exit:?}");
    // Nothing of the group is left.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while process::signal_group(pid_again, Signal::SIGCONT) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "opencode's process group outlived the stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_binary_that_always_exits_fails_the_session_with_its_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("fake-opencode");
    std::fs::write(
        &bin,
        "#!/bin/sh\necho \"starting $*\"\necho 'fatal: config is broken' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let reaper = Reaper::start(ReapMode::OwnChildren).unwrap();
    let sink = sink(tmp.path());
    let mut cfg = SupervisorConfig::new(bin, tmp.path().to_owned(), tmp.path().join("cfg"));
    cfg.base_env = [("PATH".to_string(), std::env::var("PATH").unwrap())].into();
    cfg.restart = RestartPolicy {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(40),
        max_crashes: 3,
        window: Duration::from_secs(60),
        stable_after: Duration::from_secs(60),
    };
    let sup = Supervisor::start(cfg, reaper, sink.clone(), BTreeMap::new());
    let mut state = sup.state();
    let failed = wait_state(&mut state, Duration::from_secs(30), "failed", |s| {
        matches!(s, SupervisorState::Failed { .. })
    })
    .await;
    let SupervisorState::Failed { reason } = failed else {
        unreachable!()
    };
    assert!(reason.contains("crashed 4 times"), "{reason}");
    assert!(reason.contains("exit code 3"), "{reason}");
    assert!(reason.contains("fatal: config is broken"), "{reason}");
    assert_eq!(sup.stop(Duration::from_secs(1)).await, None);
    let mut records = Vec::new();
    drain(&sink, &mut records);
    let stdout_lines = records.iter().filter(|r| matches!(&r.body, Some(Body::Log(l)) if l.line.starts_with("starting serve --hostname 127.0.0.1 --port"))).count();
    assert_eq!(stdout_lines, 4, "each start's stdout is recorded");
}
