//! `--sandbox daytona` against the strict local Daytona stand-in (`kortix_tests::daytona`):
//! no Daytona service is reachable from the test machines, so the provider talks to a server
//! that implements exactly the endpoints it uses, as Daytona's API declares them, backed by
//! Podman — snapshots really build from the received Dockerfile content and context, and each
//! sandbox is a container running the real agent and the pinned OpenCode with the scripted
//! model. The control plane listens on Podman's bridge gateway and gives sandboxes those
//! addresses as its advertised `--public-url` and `--agent-url`, as a Daytona sandbox on the
//! internet would reach it. Needs podman (`scripts/test` installs it) and
//! `target/<profile>/kortix-agent` built.

mod isolated;
mod support;

use isolated::app_build;
use isolated::{follow_until, start_running, start_template, wait_status};
use kortix_controlplane::config::{DaytonaSettings, ImageSettings, SandboxKind, ServerConfig};
use kortix_controlplane::sandbox::daytona::{ApiError, DaytonaClient};
use kortix_proto::v1::*;
use kortix_tests::daytona::{DaytonaStandIn, STAND_IN_LABEL};
use kortix_tests::podman::{TEST_BASE_IMAGE, podman};
use kortix_tests::{ScriptedModel, opencode_bin};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use support::TestServer;

const KEEPER: &str = "kortix-daytona-test-keeper";

/// A port free on `ip` now.
fn free_port(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The control plane on the bridge's gateway, advertising those addresses to sandboxes.
fn daytona_config(c: &mut ServerConfig, gw: Ipv4Addr, api_url: String, key: String, org: &str) {
    let (public, agent) = (free_port(gw), free_port(gw));
    c.listen = SocketAddr::from((gw, public));
    c.agent_listen = SocketAddr::from((gw, agent));
    c.public_url = Some(format!("http://{gw}:{public}"));
    c.agent_url = Some(format!("https://{gw}:{agent}"));
    c.agent_bin = Some(support::built_binary("kortix-agent"));
    c.agent_env
        .push(("KORTIX_HEARTBEAT_SECS".into(), "1".into()));
    // The test's public URL is plain HTTP on the host's bridge; a real deployment gives
    // Daytona sandboxes an https URL.
    c.agent_env
        .push(("KORTIX_ALLOW_CLEARTEXT_GIT".into(), "1".into()));
    c.timings.stop_grace = Duration::from_secs(20);
    c.opencode_packages = Some(kortix_tests::opencode_packages_dir());
    c.sandbox = SandboxKind::Daytona;
    // `[[apps]]` build in a Daytona sandbox of the project's snapshot (checked at the end).
    c.apps.enabled = true;
    c.apps.sweep_interval = Duration::from_millis(500);
    c.daytona = DaytonaSettings {
        api_url,
        api_key: Some(key),
        organization_id: Some(org.to_owned()),
    };
    c.images = ImageSettings {
        base_image: Some(TEST_BASE_IMAGE.into()),
        opencode_bin: Some(opencode_bin().expect("pinned OpenCode installs")),
    };
}

/// Daytona's refusals, as the provider's client reports them.
async fn strictness(daytona: &DaytonaStandIn) {
    let client = DaytonaClient::new(
        &daytona.api_url(),
        daytona.api_key().into(),
        Some(daytona.organization_id().into()),
    )
    .unwrap();
    let refused = |e: ApiError| (e.status().unwrap_or(0), e.to_string());
    let (status, text) = refused(
        client
            .post::<serde_json::Value>(
                "/sandbox",
                &serde_json::json!({"snapshot": "s", "autoStopInterval": "0", "ephemeral": true}),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("property ephemeral should not exist"),
        "{text}"
    );
    assert!(text.contains("autoStopInterval must be a number"), "{text}");
    let (status, text) = refused(
        client
            .post::<serde_json::Value>("/sandbox", &serde_json::json!({"snapshot": "s", "cpu": 2}))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("Cannot specify Sandbox resources when using a snapshot"),
        "{text}"
    );
    let (status, text) = refused(
        client
            .post::<serde_json::Value>(
                "/snapshots",
                &serde_json::json!({"buildInfo": {"dockerfileContent": "FROM x"}}),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("name must be a string"), "{text}");
    let (status, _) = refused(
        client
            .get::<serde_json::Value>("/sandbox/nope", &[])
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 404);
    let (status, text) = refused(client.delete("/snapshots/not-a-uuid").await.unwrap_err());
    assert_eq!(status, 400, "{text}");
    let anonymous = DaytonaClient::new(&daytona.api_url(), String::new(), None).unwrap();
    let (status, text) = refused(
        anonymous
            .get::<serde_json::Value>("/sandbox", &[])
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (status, text.as_str()),
        (
            401,
            "Daytona API GET /sandbox: 401 Unauthorized: Unauthorized"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_run_in_daytona_sandboxes_built_from_their_dockerfile() {
    let engine = match podman() {
        Ok(p) => p,
        Err(reason) => {
            kortix_tests::require::unavailable("a container engine (podman)", &reason);
            panic!("a container engine is needed: {reason}");
        }
    };
    // A container on the bridge for the whole test, so its gateway address exists on the
    // host before the control plane listens there.
    let _ = engine.cli(&["rm", "-f", "-t", "0", KEEPER]);
    engine
        .cli(&[
            "run",
            "-d",
            "--name",
            KEEPER,
            "--label",
            &format!("{STAND_IN_LABEL}=1"),
            "--entrypoint",
            "sleep",
            TEST_BASE_IMAGE,
            "1800",
        ])
        .unwrap();
    let gw = engine.bridge_gateway().unwrap();
    let daytona = DaytonaStandIn::start(engine).await.unwrap();
    let model = ScriptedModel::start_on(gw, Vec::new()).unwrap();

    // A wrong API key stops the server at start with Daytona's answer.
    let data = tempfile::tempdir().unwrap();
    let mut wrong = ServerConfig::new(data.path().join("kortix"));
    daytona_config(
        &mut wrong,
        gw,
        daytona.api_url(),
        "dtn_wrong".into(),
        daytona.organization_id(),
    );
    let err = match kortix_controlplane::server::start(wrong).await {
        Ok(_) => panic!("a wrong Daytona API key was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("Daytona") && err.contains("401 Unauthorized"),
        "{err}"
    );
    assert!(!err.contains(daytona.api_key()), "{err}");

    // The stand-in is as strict as Daytona: what the provider sends must be exactly right.
    strictness(&daytona).await;

    // A labelled sandbox whose session this control plane does not know: removed at start.
    let stray = daytona.add_sandbox(
        "kortix-session-stray",
        TEST_BASE_IMAGE,
        &[("kortix.session", "stray"), ("kortix.managed", "true")],
    );
    let (api_url, key, org) = (
        daytona.api_url(),
        daytona.api_key().to_owned(),
        daytona.organization_id().to_owned(),
    );
    let ts = TestServer::start_with(move |c: &mut ServerConfig| {
        daytona_config(c, gw, api_url, key, &org);
    })
    .await;
    support::eventually(
        "the stray sandbox removed",
        Duration::from_secs(30),
        || async { (!daytona.has_sandbox(&stray)).then_some(()) },
    )
    .await;

    let token = ts.account("alice").await;
    let _work = isolated::snapshot_project(&ts, &token, &model).await;

    // Daytona throttles and stumbles a few times: the provider backs off and goes on.
    let before = daytona.requests("POST /snapshots");
    let builds = || daytona.requests("POST /snapshots") - before;
    daytona.inject(&[429, 503, 429, 503]);
    let session = start_running(&ts, &token, Duration::from_secs(240)).await;
    assert_eq!(
        daytona.injections_left(),
        0,
        "every injected answer was met"
    );
    assert_eq!(builds(), 1);
    // Daytona's build log, followed while it built, is in the session's records.
    let records = follow_until(&ts, &token, &session.id, Duration::from_secs(10), |seen| {
        seen.iter()
            .any(|r| matches!(&r.body, Some(record::Body::State(s)) if s.phase == "opencode-ready"))
    })
    .await;
    let build_lines = isolated::build_lines(&records);
    assert!(
        build_lines.iter().any(|l| l.contains("COPY marker.txt")),
        "{build_lines:?}"
    );
    assert!(
        !build_lines.iter().any(|l| l.contains("disk =")),
        "Daytona enforces the snapshot's disk: {build_lines:?}"
    );

    // The sandbox: the Dockerfile's file, the agent's bootstrap environment, the labels.
    let container = daytona.container_of(&session.id).unwrap();
    let marker = engine
        .cli(&["exec", &container, "cat", "/etc/kortix-marker"])
        .unwrap();
    assert_eq!(marker, "built from the Dockerfile");
    let (env, labels) = daytona.sandbox_request_of(&session.id).unwrap();
    assert_eq!(env["KORTIX_SESSION_ID"], session.id);
    assert!(env["KORTIX_CONTROL_PLANE"].starts_with(&format!("https://{gw}:")));
    assert_eq!(labels["kortix.session"], session.id);
    assert!(labels["kortix.snapshot"].starts_with("kortix-snap-"));
    assert_eq!(labels["kortix.managed"], "true");
    assert!(labels.contains_key("kortix.project"));
    // The template's memory is the snapshot's, so the sandbox's.
    let memory = engine
        .cli(&[
            "exec",
            &container,
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
        ])
        .unwrap();
    assert_eq!(memory, (1u64 << 30).to_string());

    // A second session of the unchanged project reuses the snapshot: no second build.
    let second = start_running(&ts, &token, Duration::from_secs(120)).await;
    assert_eq!(builds(), 1, "the snapshot is reused");

    // Its sandbox deleted behind the control plane's back: the session fails as lost.
    daytona.delete_sandbox(&daytona.sandbox_id_of(&second.id).unwrap());
    let failed = wait_status(
        &ts,
        &token,
        &second.id,
        SessionStatus::Failed,
        Duration::from_secs(75),
    )
    .await;
    assert_eq!(failed.failure_reason, "sandbox lost");

    // A Dockerfile that does not build: the session fails with Daytona's reason, once.
    let err = start_template(&ts, &token, "broken").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("build_failed"), "{err}");
    assert!(err.message().contains("about to fail"), "{err}");
    assert_eq!(builds(), 2);
    // No retry loop: starting it again fails at once, without another build.
    let again = start_template(&ts, &token, "broken").await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again}");
    assert_eq!(builds(), 2, "a failed build is final");
    assert_eq!(isolated::failed_builds(&ts, &token, "broken").await, 2);

    app_builds_in_a_sandbox_of_the_snapshot(
        &ts,
        &token,
        &daytona,
        _work.path(),
        &labels["kortix.deployment"],
    )
    .await;
    assert_eq!(
        builds(),
        2,
        "the build used the sessions' snapshot: no build of its own"
    );

    toolbox_strictness(&daytona, &daytona.sandbox_id_of(&session.id).unwrap()).await;

    // Stopping the first session deletes its sandbox.
    ts.sessions(&token)
        .stop_session(StopSessionRequest {
            id: session.id.clone(),
        })
        .await
        .unwrap();
    support::eventually(
        "the first session's sandbox deleted",
        Duration::from_secs(60),
        || async { daytona.sandbox_id_of(&session.id).is_none().then_some(()) },
    )
    .await;
    let _ = engine.cli(&["rm", "-f", "-t", "0", KEEPER]);
}

/// An `[[apps]]` entry builds in a Daytona sandbox of the project's snapshot
/// (`isolated::app_build`) through the toolbox: the sandbox was created with the agent's
/// hold mode and no session variable, labelled, and is deleted afterwards; a leftover build
/// sandbox of a deployment no longer building is removed by the deploy sweep.
async fn app_builds_in_a_sandbox_of_the_snapshot(
    ts: &TestServer,
    token: &str,
    daytona: &DaytonaStandIn,
    work: &std::path::Path,
    deployment_label: &str,
) {
    let executes = daytona.requests("POST /toolbox/process/execute");
    let (deployment, logs) = app_build::app_builds_in_the_snapshot(
        ts,
        token,
        work,
        "in a Daytona sandbox of kortix-snap-",
    )
    .await;
    // The stand-in names a sandbox's host after its id: the build ran in the sandbox.
    let host = logs
        .iter()
        .find_map(|l| l.strip_prefix("built on "))
        .unwrap_or_else(|| panic!("no host line in {logs:#?}"));
    assert!(uuid::Uuid::parse_str(host).is_ok(), "{host}");
    // Unpack the source, build, archive the workspace.
    assert_eq!(
        daytona.requests("POST /toolbox/process/execute") - executes,
        3
    );
    let created = daytona.created_with_label("kortix.build", &deployment.id);
    assert_eq!(created.len(), 1, "{created:?}");
    let (env, labels) = &created[0];
    assert_eq!(
        env,
        &std::collections::BTreeMap::from([("KORTIX_AGENT_HOLD".to_owned(), "1".to_owned())]),
        "no session variable, no credential"
    );
    assert_eq!(labels["kortix.deployment"], deployment_label);
    assert!(labels["kortix.snapshot"].starts_with("kortix-snap-"));
    support::eventually(
        "the build sandbox deleted",
        Duration::from_secs(30),
        || async {
            daytona
                .sandboxes_labelled("kortix.build", &deployment.id)
                .is_empty()
                .then_some(())
        },
    )
    .await;

    // A build sandbox left by a replica that died mid-build: removed by the sweep, since its
    // deployment is no longer building.
    let leftover = daytona.add_sandbox(
        &format!("kortix-app-build-{}", deployment.id),
        TEST_BASE_IMAGE,
        &[
            ("kortix.build", deployment.id.as_str()),
            ("kortix.deployment", deployment_label),
            ("kortix.managed", "true"),
        ],
    );
    support::eventually(
        "the leftover build sandbox removed",
        Duration::from_secs(60),
        || async { (!daytona.has_sandbox(&leftover)).then_some(()) },
    )
    .await;
}

/// The toolbox as the client and the stand-in speak it, on a started sandbox: a command
/// runs there; no bearer is 401, an unknown field 400, an unknown sandbox 404.
async fn toolbox_strictness(daytona: &DaytonaStandIn, sandbox: &str) {
    use kortix_controlplane::sandbox::daytona::api::ExecuteRequest;
    let client = DaytonaClient::new(
        &daytona.api_url(),
        daytona.api_key().into(),
        Some(daytona.organization_id().into()),
    )
    .unwrap();
    let toolbox = client.toolbox(sandbox).await.unwrap();
    let ran = toolbox
        .execute(
            &ExecuteRequest {
                command: "cat /etc/kortix-marker; echo \"$WHO\"; exit 3".into(),
                cwd: Some("/".into()),
                envs: std::collections::BTreeMap::from([("WHO".into(), "the toolbox".into())]),
                timeout: Some(30),
            },
            true,
            1 << 20,
        )
        .await
        .unwrap();
    assert_eq!(
        (ran.exit_code, ran.result.as_str()),
        (3, "built from the Dockerfile\nthe toolbox\n")
    );
    let (status, text) = match client.toolbox("no-such-sandbox").await {
        Err(e) => (e.status(), e.to_string()),
        Ok(_) => panic!("an unknown sandbox has a toolbox"),
    };
    assert_eq!(status, Some(404), "{text}");
    let proxy: serde_json::Value = client
        .get(&format!("/sandbox/{sandbox}/toolbox-proxy-url"), &[])
        .await
        .unwrap();
    let execute = format!(
        "{}/{sandbox}/process/execute",
        proxy["url"].as_str().unwrap()
    );
    let http = reqwest::Client::new();
    let anonymous = http
        .post(&execute)
        .header("content-type", "application/json")
        .body(r#"{"command":"true"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let misspelt = http
        .post(&execute)
        .bearer_auth(daytona.api_key())
        .header("content-type", "application/json")
        .body(r#"{"command":"true","env":{"A":"b"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(misspelt.status(), 400);
    let body = misspelt.text().await.unwrap();
    assert!(body.contains("property env should not exist"), "{body}");
}
