//! `--sandbox docker` on Podman's Docker-compatible service: sessions run the real agent and
//! the pinned OpenCode in a container booted from the project's snapshot (its
//! `.kortix/Dockerfile` plus the runtime layer), with the template's limits, on the bridge
//! network, reaching the control plane and the scripted model on the bridge's gateway and
//! nothing on the host's loopback. Needs podman (`scripts/test` installs it) and
//! `target/<profile>/kortix-agent` built.

mod isolated;
mod support;

use isolated::app_build::{self, metric};
use isolated::{
    file_on_branch, follow_until, parse_report, pushed_commit, start_running, start_template,
    wait_status,
};
use kortix_controlplane::config::{DockerSettings, ImageSettings, SandboxKind, ServerConfig};
use kortix_controlplane::sandbox::docker::DockerEngine;
use kortix_proto::v1::*;
use kortix_tests::podman::{Podman, TEST_BASE_IMAGE, podman};
use kortix_tests::{ScriptedModel, Turn, opencode_bin};
use std::time::Duration;
use support::TestServer;

async fn gateway(host: &str) -> std::net::Ipv4Addr {
    DockerEngine::connect(Some(host))
        .await
        .unwrap()
        .gateway(None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_runs_in_a_container_from_its_dockerfile_snapshot() {
    let engine = match podman() {
        Ok(p) => p,
        Err(reason) => {
            kortix_tests::require::unavailable("a container engine (podman)", &reason);
            panic!("a container engine is needed: {reason}");
        }
    };
    let gw = gateway(&engine.docker_host).await;
    let model = ScriptedModel::start_on(gw, Vec::new()).unwrap();
    // A service on the host's loopback that no sandbox may reach.
    let loopback = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let loopback_port = loopback.local_addr().unwrap().port();

    // A labelled container whose session this control plane does not know: removed at start.
    // Another deployment's container on the same engine (labelled with its own CA's id): left
    // alone, even though its session is unknown here too.
    for (name, labels) in [
        ("kortix-session-stray", vec!["kortix.session=stray"]),
        (
            "kortix-session-foreign",
            vec![
                "kortix.session=foreign",
                "kortix.deployment=0000000000000000",
            ],
        ),
    ] {
        let _ = engine.cli(&["rm", "-f", name]);
        let mut args = vec!["run", "-d", "--name", name];
        for label in &labels {
            args.extend(["--label", label]);
        }
        args.extend(["--entrypoint", "sleep", TEST_BASE_IMAGE, "600"]);
        engine.cli(&args).unwrap();
    }
    let host = engine.docker_host.clone();
    let mut ts = TestServer::start_with(move |c: &mut ServerConfig| {
        c.agent_bin = Some(support::built_binary("kortix-agent"));
        c.agent_env
            .push(("KORTIX_HEARTBEAT_SECS".into(), "1".into()));
        c.timings.stop_grace = Duration::from_secs(20);
        // The harness's installed package set: the server bakes it into the runtime layer.
        c.opencode_packages = Some(kortix_tests::opencode_packages_dir());
        c.sandbox = SandboxKind::Docker;
        c.docker = DockerSettings {
            host: Some(host),
            network: None,
            // One container per snapshot started ahead: the second session takes it.
            warm_pool: 1,
        };
        c.images = ImageSettings {
            base_image: Some(TEST_BASE_IMAGE.into()),
            opencode_bin: Some(opencode_bin().expect("pinned OpenCode installs")),
        };
        // `[[apps]]` build in a container of the project's snapshot (checked at the end).
        c.apps.enabled = true;
        c.apps.sweep_interval = Duration::from_millis(500);
    })
    .await;
    container_gone(
        engine,
        "the stray container removed",
        "kortix-session-stray",
        Duration::from_secs(30),
    )
    .await;
    assert!(
        engine
            .cli(&["container", "exists", "kortix-session-foreign"])
            .is_ok(),
        "another deployment's container is not this one's to remove"
    );
    let _ = engine.cli(&["rm", "-f", "-t", "0", "kortix-session-foreign"]);
    let token = ts.account("alice").await;
    let work = isolated::snapshot_project(&ts, &token, &model).await;

    // The agent's bash tool, inside the container, reads what the Dockerfile put there and
    // commits it; the change request lands it.
    model.push([
        Turn::bash(
            "cp /etc/kortix-marker seen-marker.txt && git add seen-marker.txt && \
             git commit -q -m 'Record the snapshot marker' && git push -q origin HEAD",
        ),
        Turn::text("Recorded the marker."),
    ]);
    let session = ts
        .sessions(&token)
        .start_session(StartSessionRequest {
            project: "app".into(),
            agent: "build".into(),
            prompt: "Record the marker file.".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    wait_status(
        &ts,
        &token,
        &session.id,
        SessionStatus::Running,
        Duration::from_secs(100),
    )
    .await;
    let records = follow_until(&ts, &token, &session.id, Duration::from_secs(120), |seen| {
        pushed_commit(seen).is_some()
    })
    .await;
    assert!(
        records.iter().any(
            |r| matches!(&r.body, Some(record::Body::State(s)) if s.phase == "opencode-ready")
        ),
        "OpenCode came up in the container"
    );
    let commit = pushed_commit(&records).unwrap_or_else(|| {
        panic!(
            "no pushed commit (the model was asked {} times): {}",
            model.calls(),
            isolated::describe(&records)
        )
    });
    assert_eq!(commit.message.trim(), "Record the snapshot marker");
    assert_eq!(
        file_on_branch(&ts, &token, work.path(), &session.id, "seen-marker.txt"),
        "built from the Dockerfile\n"
    );
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
    let merged = ts
        .crs(&token)
        .merge_change_request(ChangeRequestRef {
            project: "app".into(),
            number: cr.number,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        merged.state,
        ChangeRequestState::Merged as i32,
        "{merged:?}"
    );
    let build_lines = isolated::build_lines(&records);
    assert!(
        build_lines.iter().any(|l| l.contains("COPY marker.txt")),
        "the build's output is in the session's records: {build_lines:?}"
    );
    assert!(
        build_lines
            .iter()
            .any(|l| l.starts_with("booting snapshot kortix-snap-")),
        "{build_lines:?}"
    );

    // Inside the container: the Dockerfile's file, the template's limits, the agent as PID
    // 1, and no way to the host's loopback.
    let container = format!("kortix-session-{}", session.id);
    let report = format!(
        r#"echo "marker=$(cat /etc/kortix-marker)"
echo "memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)"
echo "cpu_quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max)"
echo "pid1=$(tr '\0' ' ' < /proc/1/cmdline)"
if timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{loopback_port}' 2>/dev/null; then echo loopback=reached; else echo loopback=refused; fi
echo "caps=$(grep CapBnd /proc/self/status | cut -f2)"
echo "packages=$(tr '\0' '\n' < /proc/1/environ | grep '^KORTIX_OPENCODE_PACKAGES=' | cut -d= -f2)"
if [ -f /opt/kortix/opencode-packages/config/node_modules/@opencode-ai/plugin/package.json ]; then echo plugin=baked; else echo plugin=missing; fi
if [ -e /root/.npm ]; then echo npm_cache=present; else echo npm_cache=none; fi"#
    );
    let text = engine
        .cli(&["exec", &container, "bash", "-c", &report])
        .unwrap();
    let r = parse_report(&text);
    assert_eq!(r["marker"], "built from the Dockerfile", "{text}");
    assert_eq!(r["memory"], (1u64 << 30).to_string(), "{text}");
    assert_eq!(r["cpu_quota"], "100000", "{text}");
    assert!(
        r["pid1"].starts_with("/usr/local/bin/kortix-agent"),
        "{text}"
    );
    assert_eq!(r["loopback"], "refused", "{text}");
    // CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID and nothing else.
    assert_eq!(r["caps"], "00000000000000fb", "{text}");
    // OpenCode's packages came with the image: the agent linked them, OpenCode fetched
    // nothing from a registry.
    assert_eq!(r["packages"], "/opt/kortix/opencode-packages", "{text}");
    assert_eq!(r["plugin"], "baked", "{text}");
    assert_eq!(r["npm_cache"], "none", "{text}");

    // The container is labelled for its session, project and snapshot.
    let labels = engine
        .cli(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"kortix.session\"}} {{index .Config.Labels \"kortix.snapshot\"}}",
            &container,
        ])
        .unwrap();
    assert!(
        labels.starts_with(&format!("{} kortix-snap-", session.id)),
        "{labels}"
    );

    // A second session of the project: the same snapshot, no second build.
    let (_, metrics) = support::http_get(&ts.url(), "/metrics").await;
    let builds = metric(&metrics, "kortix_snapshot_builds_total{outcome=\"active\"}");
    assert_eq!(builds, 1, "{metrics}");
    // The first session asked for the snapshot, so the warm pool starts one container of it
    // ahead; the second session is given that one.
    let member = warm_member(engine, Duration::from_secs(120)).await;
    let second = start_running(&ts, &token, Duration::from_secs(120)).await;
    let (_, metrics) = support::http_get(&ts.url(), "/metrics").await;
    assert_eq!(
        metric(&metrics, "kortix_snapshot_builds_total{outcome=\"active\"}"),
        1,
        "reused"
    );
    let second_container = format!("kortix-session-{}", second.id);
    let pooled = engine
        .cli(&[
            "inspect",
            "--format",
            "{{.ID}} {{index .Config.Labels \"kortix.snapshot\"}}",
            &second_container,
        ])
        .unwrap();
    let member_id = engine
        .cli(&["inspect", "--format", "{{.ID}}", &member])
        .ok();
    assert!(
        member_id.is_none(),
        "the warm container was renamed for the session"
    );
    assert!(
        pooled.contains(" kortix-snap-"),
        "the session runs in the warm container of its snapshot: {pooled}"
    );
    // Its agent got the session's variables from the assignment, not from the container's
    // environment, which names no session and holds no token.
    let env = engine
        .cli(&[
            "inspect",
            "--format",
            "{{range .Config.Env}}{{println .}}{{end}}",
            &second_container,
        ])
        .unwrap();
    assert!(!env.contains("KORTIX_BOOTSTRAP_TOKEN"), "{env}");
    assert!(env.contains("KORTIX_ASSIGNMENT_FILE="), "{env}");
    let leftover = engine
        .cli(&["exec", &second_container, "ls", "/run/kortix"])
        .unwrap();
    assert!(
        leftover.trim().is_empty(),
        "the assignment is removed once read: {leftover}"
    );
    // A reconcile pass knows a pooled container as its session's.
    ts.running().sessions.reconcile_once().await;
    wait_status(
        &ts,
        &token,
        &second.id,
        SessionStatus::Running,
        Duration::from_secs(5),
    )
    .await;
    // And the pool is topped up again.
    let next = warm_member(engine, Duration::from_secs(120)).await;
    assert_ne!(next, member);

    // Its container removed behind its back: the session fails.
    engine
        .cli(&["rm", "-f", &format!("kortix-session-{}", second.id)])
        .unwrap();
    let failed = wait_status(
        &ts,
        &token,
        &second.id,
        SessionStatus::Failed,
        Duration::from_secs(60),
    )
    .await;
    assert!(!failed.failure_reason.is_empty());
    drop(loopback);

    // A Dockerfile that does not build: the session fails with the build's error.
    let err = start_template(&ts, &token, "broken").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("about to fail"), "{err}");
    assert_eq!(isolated::failed_builds(&ts, &token, "broken").await, 1);

    // The snapshot as people see it: one, active; building it again finds it; pruning keeps
    // it while the first session runs on it.
    let listed = ts
        .snapshots(&token)
        .list_snapshots(ListSnapshotsRequest {
            project: "app".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshots;
    let failed_snapshot = listed
        .iter()
        .find(|s| s.template == "broken")
        .unwrap()
        .clone();
    assert_eq!(failed_snapshot.status, "failed");
    let listed: Vec<_> = listed.into_iter().filter(|s| s.template == "dev").collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].status.as_str(), listed[0].template.as_str()),
        ("active", "dev")
    );
    assert!(listed[0].size_bytes > 0);
    let mut built = ts
        .snapshots(&token)
        .build_snapshot(BuildSnapshotRequest {
            project: "app".into(),
            template: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut found = None;
    while let Some(event) = built.message().await.unwrap() {
        if let Some(build_snapshot_event::Event::Snapshot(s)) = event.event {
            found = Some(s);
        }
    }
    assert_eq!(found.unwrap().name, listed[0].name);
    let pruned = prune_unused(&ts, &token).await;
    assert_eq!(
        pruned,
        [failed_snapshot.name],
        "a live session's snapshot stays, the unused failed one goes"
    );
    let err = ts
        .snapshots(&token)
        .prune_snapshots(PruneSnapshotsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

    app_builds_in_the_snapshot(&ts, &token, engine, work.path()).await;

    // The first session is still running: stopped, so its container does not outlive the
    // test (containers do not end with the control plane).
    ts.sessions(&token)
        .stop_session(StopSessionRequest {
            id: session.id.clone(),
        })
        .await
        .unwrap();
    container_gone(
        engine,
        "the first session's container removed",
        &container,
        Duration::from_secs(60),
    )
    .await;
    // With no live session on it, pruning takes the snapshot, the warm container made from
    // it (which holds the image) and the image; the pool no longer keeps it warm.
    let member = warm_member(engine, Duration::from_secs(5)).await;
    let pruned = prune_unused(&ts, &token).await;
    assert!(pruned.contains(&listed[0].name), "{pruned:?}");
    container_gone(
        engine,
        "the pruned snapshot's warm container removed",
        &member,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        !engine.image_exists(&listed[0].name),
        "the pruned snapshot's image is removed"
    );
    // A session that wants it again builds it anew, and the pool fills again.
    let again = start_running(&ts, &token, Duration::from_secs(180)).await;
    assert!(engine.image_exists(&listed[0].name));
    let next = warm_member(engine, Duration::from_secs(120)).await;
    ts.sessions(&token)
        .stop_session(StopSessionRequest {
            id: again.id.clone(),
        })
        .await
        .unwrap();
    container_gone(
        engine,
        "the rebuilt snapshot's session's container removed",
        &format!("kortix-session-{}", again.id),
        Duration::from_secs(60),
    )
    .await;
    // The warm container goes with the control plane: no session will take it.
    ts.server.take().expect("running").shutdown().await;
    container_gone(
        engine,
        "the warm container removed",
        &next,
        Duration::from_secs(30),
    )
    .await;
}

/// Prunes every snapshot of `app` that no live session uses; the names removed.
async fn prune_unused(ts: &TestServer, token: &str) -> Vec<String> {
    ts.snapshots(token)
        .prune_snapshots(PruneSnapshotsRequest {
            project: "app".into(),
            unused_for_secs: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .removed
}

/// The name of a running warm-pool container, once there is one.
async fn warm_member(engine: &Podman, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(name) = engine.warm_container().unwrap_or_default() {
            return name;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no warm container within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the engine no longer has container `name`.
async fn container_gone(engine: &Podman, what: &str, name: &str, within: Duration) {
    support::eventually(what, within, || async {
        engine
            .cli(&["container", "exists", name])
            .is_err()
            .then_some(())
    })
    .await;
}

/// An `[[apps]]` entry builds in a container of the project's snapshot
/// (`isolated::app_build`), which is gone afterwards.
async fn app_builds_in_the_snapshot(
    ts: &TestServer,
    token: &str,
    engine: &Podman,
    work: &std::path::Path,
) {
    let (deployment, logs) =
        app_build::app_builds_in_the_snapshot(ts, token, work, "in a container of kortix-snap-")
            .await;
    assert!(logs.iter().any(|l| l == "built on build"), "{logs:#?}");
    let container = format!("kortix-app-build-{}", deployment.id);
    container_gone(
        engine,
        "the build container removed",
        &container,
        Duration::from_secs(30),
    )
    .await;
}
