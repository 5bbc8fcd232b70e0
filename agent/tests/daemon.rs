//! The whole daemon (`kortix_agent::run`) against a real gRPC gateway, real git and the real,
//! pinned OpenCode driven by the scripted model.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kortix_agent::config::{CaTrust, Config};
use kortix_agent::enroll;
use kortix_agent::records::{RecordSink, Spool, SpoolOptions};
use kortix_agent::{ExitReason, tls};
use kortix_proto::v1::{
    Bootstrap, CommandRef, GitCredentialRequest, Prompt, SessionStatus, Stop, control_frame,
    record::Body,
};
use kortix_tests::{OpencodeHome, ScriptedModel, Turn, opencode_bin, opencode_config};
use support::TestGateway;

fn git(dir: &Path, args: &[&str]) -> String {
    kortix_tests::git::GitEnv::new().ok(dir, args)
}

/// A bare "project" repo whose session branch carries the OpenCode config.
fn project_repo(root: &Path, branch: &str, model_port: u16) -> PathBuf {
    let bare = root.join("origin.git");
    git(root, &["init", "-q", "--bare", bare.to_str().unwrap()]);
    let seed = root.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    git(&seed, &["init", "-q"]);
    std::fs::write(seed.join("README.md"), "# project\n").unwrap();
    opencode_config(&seed.join(".kortix/opencode"), model_port).unwrap();
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-q", "-m", "seed"]);
    git(&seed, &["remote", "add", "origin", bare.to_str().unwrap()]);
    git(&seed, &["push", "-q", "origin", "main"]);
    git(&seed, &["push", "-q", "origin", &format!("main:{branch}")]);
    bare
}

fn bootstrap(session: &str, repo: &Path) -> Bootstrap {
    Bootstrap {
        session_id: session.into(),
        project_id: "p1".into(),
        repo_url: format!("file://{}", repo.display()),
        branch: session.into(),
        default_branch: "main".into(),
        opencode_config_dir: ".kortix/opencode".into(),
        initial_prompt: "Write hello.txt, commit and push it.".into(),
        agent: String::new(),
        git_author_name: "Kortix Agent".into(),
        git_author_email: "agent@kortix.invalid".into(),
        acked_seq: 0,
        protocol_version: kortix_proto::PROTOCOL_VERSION,
        idle_timeout_ms: 0,
        start_deadline_ms: 0,
        resume: None,
    }
}

fn config(
    gw: &TestGateway,
    root: &Path,
    session: &str,
    ca: CaTrust,
    home: &OpencodeHome,
) -> Config {
    Config {
        control_planes: vec![gw.url.clone()],
        listed_order: false,
        session_id: session.into(),
        bootstrap_token: gw.token.clone(),
        ca,
        workspace: root.join("workspace"),
        opencode_bin: opencode_bin().expect("installing the pinned opencode"),
        spool_dir: root.join("agent-state"),
        spool_max_bytes: 64 << 20,
        heartbeat_interval: Duration::from_secs(1),
        reap_orphans: false,
        helper_exe: PathBuf::from(env!("CARGO_BIN_EXE_kortix-agent")),
        opencode_packages: None,
        opencode_env: Some(home.env().into_iter().collect()),
    }
}

fn events_text(s: &support::GwState) -> String {
    s.records
        .values()
        .filter_map(|r| match &r.body {
            Some(Body::Event(e)) => Some(e.json.clone()),
            Some(Body::Log(l)) => Some(l.line.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_runs_end_to_end_through_reconnect_prompt_and_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let session = "sess-e2e-1";
    let ws = root.join("workspace");
    let model = ScriptedModel::start(vec![
        Turn::write_file(
            ws.join("hello.txt").display().to_string(),
            "hello from opencode\n",
        ),
        Turn::bash(format!(
            "git add hello.txt && git commit -q -m 'add hello' && git push -q origin {session}"
        )),
        Turn::bash("echo token is $API_TOKEN"),
        Turn::text("All done."),
    ])
    .unwrap();
    let repo = project_repo(root, session, model.port());
    let secrets: BTreeMap<String, String> =
        [("API_TOKEN".to_string(), "sekrit-value-123".to_string())].into();
    let gw = TestGateway::start(
        session,
        bootstrap(session, &repo),
        secrets,
        Duration::from_secs(3600),
    )
    .await;
    let home = OpencodeHome::new(root).unwrap();
    let cfg = config(&gw, root, session, CaTrust::Pem(gw.ca_pem.clone()), &home);
    let agent = tokio::spawn(kortix_agent::run(cfg));

    gw.wait(Duration::from_secs(180), "running", |s| {
        s.reports
            .iter()
            .any(|r| r.status == SessionStatus::Running as i32)
    })
    .await;
    // OpenCode wrote, committed and pushed through plain git; the watcher saw both.
    gw.wait(Duration::from_secs(120), "pushed commit record", |s| {
        s.records.values().any(|r| matches!(&r.body, Some(Body::Commit(c)) if c.pushed && c.message.trim() == "add hello"))
    })
    .await;
    let commit = gw.with(|s| {
        s.records
            .values()
            .find_map(|r| match &r.body {
                Some(Body::Commit(c)) if c.message.trim() == "add hello" => Some(c.clone()),
                _ => None,
            })
            .unwrap()
    });
    assert_eq!(
        (commit.files_changed, commit.insertions, commit.deletions),
        (1, 1, 0)
    );
    assert_eq!(
        (commit.author_name.as_str(), commit.author_email.as_str()),
        ("Kortix Agent", "agent@kortix.invalid")
    );
    assert_eq!(
        git(&repo, &["rev-parse", &format!("refs/heads/{session}")]),
        commit.sha
    );

    // The secret reached OpenCode's environment and never the record stream.
    gw.wait(
        Duration::from_secs(60),
        "redacted secret in tool output",
        |s| events_text(s).contains("token is [REDACTED:API_TOKEN]"),
    )
    .await;
    assert!(!gw.with(events_text).contains("sekrit-value-123"));
    gw.wait(Duration::from_secs(30), "heartbeats", |s| {
        s.heartbeats.len() >= 2
    })
    .await;

    // A dropped stream: the agent reconnects, announces its last seq and resends what is unacked.
    let before = gw.with(|s| s.connects);
    gw.kick();
    gw.wait(Duration::from_secs(30), "reconnect", |s| {
        s.connects > before
    })
    .await;
    let hello = gw.with(|s| s.hellos.last().cloned().unwrap());
    assert!(hello.last_assigned_seq > 0);

    assert!(hello.acks_commands);

    // A command sent twice (its ack was lost, say) is acked twice and applied once.
    model.push([Turn::text("Nothing else to do.")]);
    let p2 = Prompt {
        id: "p2".into(),
        text: "Anything else?".into(),
        agent: String::new(),
        command: Some(CommandRef {
            id: "p2".into(),
            seq: 1,
            floor: 1,
        }),
    };
    gw.send(control_frame::Frame::Prompt(p2.clone()));
    gw.wait(Duration::from_secs(60), "second prompt delivered", |s| {
        s.records.values().any(|r| matches!(&r.body, Some(Body::State(st)) if st.phase == "prompt-delivered" && st.reason == "p2"))
    })
    .await;
    gw.send(control_frame::Frame::Prompt(p2));
    gw.wait(Duration::from_secs(30), "the resent prompt acked", |s| {
        s.command_acks == ["p2", "p2"]
    })
    .await;

    gw.send(control_frame::Frame::Stop(Stop {
        reason: "user stop".into(),
        grace_ms: 20_000,
        hibernate: false,
        command: Some(CommandRef {
            id: "stop".into(),
            seq: 2,
            floor: 1,
        }),
    }));
    let exit = tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .expect("agent exits within the grace")
        .unwrap()
        .unwrap();
    assert_eq!(
        exit,
        ExitReason::Stopped {
            hibernate: false,
            reason: "user stop".into()
        }
    );
    let p2_delivered = gw.with(|s| {
        s.records
            .values()
            .filter(|r| matches!(&r.body, Some(Body::State(st)) if st.phase == "prompt-delivered" && st.reason == "p2"))
            .count()
    });
    assert_eq!(p2_delivered, 1, "the resent prompt was not applied again");
    assert_eq!(
        gw.with(|s| s.command_acks.last().cloned()),
        Some("stop".into())
    );

    gw.with(|s| {
        let last = s.reports.last().unwrap();
        assert!(last.r#final, "{last:?}");
        assert_eq!(last.status, SessionStatus::Stopped as i32);
        assert_eq!(last.head_sha, commit.sha);
        let max = *s.records.keys().max().unwrap();
        assert_eq!(s.acked, max, "everything acked before exit");
        assert_eq!(
            s.records.keys().copied().collect::<Vec<_>>(),
            (1..=max).collect::<Vec<_>>(),
            "gap-free seqs"
        );
        assert!(
            s.records
                .values()
                .any(|r| matches!(&r.body, Some(Body::State(st)) if st.phase == "stopped"))
        );
        assert_eq!(s.enrolls, 1);
    });
    // The token never touched the disk of the workspace config.
    let git_config = std::fs::read_to_string(ws.join(".git/config")).unwrap();
    assert!(git_config.contains("git-credential --socket"));
    assert!(!git_config.contains("jit-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_is_pinned_by_fingerprint_and_certificates_renew() {
    let gw = TestGateway::start(
        "sess-pin",
        Bootstrap::default(),
        BTreeMap::new(),
        Duration::from_secs(6),
    )
    .await;
    let port: u16 = gw.url.rsplit(':').next().unwrap().parse().unwrap();
    let pem = tls::pin_ca(
        "127.0.0.1",
        port,
        tls::sha256(&gw.ca_der),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(
        tls::certs_from_pem(&pem).unwrap()[0].as_ref(),
        gw.ca_der.as_slice()
    );
    let wrong = tls::pin_ca("127.0.0.1", port, [7; 32], Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        wrong.to_string().contains("KORTIX_CA_FINGERPRINT"),
        "{wrong}"
    );

    let refused = enroll::enroll(&gw.url, &pem, "wrong-token")
        .await
        .unwrap_err();
    assert!(!refused.is_retryable(), "{refused}");

    let identity = enroll::enroll(&gw.url, &pem, &gw.token).await.unwrap();
    assert_eq!(identity.session_id, "sess-pin");
    let (gateway, keeper) = enroll::Gateway::new(&gw.url, identity).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink = RecordSink::new(Spool::open(dir.path(), SpoolOptions::default()).unwrap());
    tokio::spawn(keeper.run(sink));
    // Renewal is due after two thirds of the 6 s lifetime.
    gw.wait(Duration::from_secs(20), "renewal", |s| s.renewals >= 1)
        .await;
    let resp = gateway
        .client()
        .git_credential(GitCredentialRequest {
            protocol: "https".into(),
            host: "x".into(),
            path: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.password, "jit-token-abc");
    assert!(gateway.identity().not_after_unix_s > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_as_subreaper_stops_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let session = "sess-sigterm";
    let ws = root.join("workspace");
    let model = ScriptedModel::start(vec![
        Turn::write_file(ws.join("note.txt").display().to_string(), "unpushed work\n"),
        Turn::bash("git add note.txt && git commit -q -m 'local only'"),
        Turn::text("Committed."),
    ])
    .unwrap();
    let repo = project_repo(root, session, model.port());
    let gw = TestGateway::start(
        session,
        bootstrap(session, &repo),
        BTreeMap::new(),
        Duration::from_secs(3600),
    )
    .await;
    let home = OpencodeHome::new(root).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kortix-agent"));
    cmd.env_clear()
        .envs(home.env())
        .env("KORTIX_CONTROL_PLANE", &gw.url)
        .env("KORTIX_SESSION_ID", session)
        .env("KORTIX_BOOTSTRAP_TOKEN", &gw.token)
        .env(
            "KORTIX_CA_FINGERPRINT",
            hex::encode(tls::sha256(&gw.ca_der)),
        )
        .env("KORTIX_WORKSPACE", &ws)
        .env("KORTIX_OPENCODE_BIN", opencode_bin().unwrap())
        .env("KORTIX_SPOOL_DIR", root.join("agent-state"))
        .env("KORTIX_HEARTBEAT_SECS", "1");
    let mut agent = cmd.spawn().unwrap();

    // OpenCode commits without pushing; the stop must push it.
    gw.wait(Duration::from_secs(180), "unpushed commit record", |s| {
        s.records.values().any(|r| matches!(&r.body, Some(Body::Commit(c)) if !c.pushed && c.message.trim() == "local only"))
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || agent.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    gw.with(|s| {
        let last = s.reports.last().unwrap();
        assert!(last.r#final && last.status == SessionStatus::Stopped as i32, "{last:?}");
        assert!(last.reason.contains("SIGTERM"), "{last:?}");
        assert!(
            s.records.values().any(|r| matches!(&r.body, Some(Body::Commit(c)) if c.pushed && c.message.trim() == "local only")),
            "the stop pushed the commit and reported it"
        );
        assert_eq!(s.acked, *s.records.keys().max().unwrap());
    });
    let pushed = git(&repo, &["log", "-1", "--format=%s", session]);
    assert_eq!(pushed, "local only");
}

/// The control plane refuses the agent for good while it has a commit it has not pushed (its
/// session ended while it was cut off): the agent does not reconnect forever; it stops
/// OpenCode, pushes what it can and exits, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_agent_pushes_what_it_can_and_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let session = "sess-refused";
    let model = ScriptedModel::start(vec![
        Turn::bash("echo wip > wip.txt && git add wip.txt && git commit -q -m 'unpushed work'"),
        Turn::text("Committed."),
    ])
    .unwrap();
    let repo = project_repo(root, session, model.port());
    let gw = TestGateway::start(
        session,
        bootstrap(session, &repo),
        BTreeMap::new(),
        Duration::from_secs(3600),
    )
    .await;
    let home = OpencodeHome::new(root).unwrap();
    let cfg = config(&gw, root, session, CaTrust::Pem(gw.ca_pem.clone()), &home);
    let agent = tokio::spawn(kortix_agent::run(cfg));
    gw.wait(Duration::from_secs(180), "the unpushed commit", |s| {
        s.records.values().any(|r| matches!(&r.body, Some(Body::Commit(c)) if !c.pushed && c.message.trim() == "unpushed work"))
    })
    .await;
    let sha = gw.with(|s| {
        s.records
            .values()
            .find_map(|r| match &r.body {
                Some(Body::Commit(c)) if c.message.trim() == "unpushed work" => Some(c.sha.clone()),
                _ => None,
            })
            .unwrap()
    });

    gw.refuse(tonic::Status::failed_precondition(format!(
        "session {session} has ended (failed)"
    )));
    gw.kick();
    let exit = tokio::time::timeout(Duration::from_secs(60), agent)
        .await
        .expect("the agent exits instead of reconnecting forever")
        .unwrap()
        .unwrap();
    assert_eq!(
        exit,
        ExitReason::Refused(format!("session {session} has ended (failed)"))
    );
    assert_eq!(
        git(&repo, &["rev-parse", &format!("refs/heads/{session}")]),
        sha,
        "the commit was pushed on the way out"
    );
    let spool = std::fs::read_dir(root.join("agent-state/sessions").join(session))
        .unwrap()
        .count();
    assert!(spool > 0, "unsent records stay in the spool");
}
