//! Two control-plane replicas on one PostgreSQL database: an agent streams to replica A, a
//! person follows the session on replica B. B re-reads the store only once an hour here, so
//! everything B's viewers get in time came through the wake-ups A sends over
//! `LISTEN/NOTIFY`. A prompt sent on B reaches the agent on A through the store's command
//! queue (and, queued while the agent was away, when it connects again); so does a stop, which
//! leaves the agent its grace period to end the session itself. Commands are kept until the
//! agent acks them: one in flight when its replica goes is sent again by the next, and
//! applied once. Secret changes reach agents watching on another replica by wake-up.

mod support;

use futures::StreamExt;
use kortix_bench::sim_agent::{self, log_record};
use kortix_controlplane::config::SandboxKind;
use kortix_controlplane::sandbox::external::BootstrapFile;
use kortix_proto::v1::agent_frame::Frame as In;
use kortix_proto::v1::control_frame;
use kortix_proto::v1::*;
use kortix_tests::pg::Database;
use std::time::Duration;
use support::TestServer;

/// Longer than any test: B's store polls never fire.
const NO_POLL: Duration = Duration::from_secs(3600);
/// Generous deadlines for a loaded machine; a wake-up normally takes milliseconds.
const DEADLINE: Duration = Duration::from_secs(30);

async fn replica(db: &Database) -> TestServer {
    let url = db.url.clone();
    TestServer::start_with(move |c| {
        c.sandbox = SandboxKind::External;
        c.database_url = Some(url);
        c.timings.store_poll = NO_POLL;
    })
    .await
}

fn running() -> In {
    In::State(StateReport {
        status: SessionStatus::Running as i32,
        ..Default::default()
    })
}

/// A session started on `a` (project p1) and its simulated agent, enrolled at `a`.
async fn session_with_agent_on(a: &TestServer, token: &str) -> (Session, sim_agent::EnrolledAgent) {
    a.projects(token)
        .create_project(CreateProjectRequest {
            name: "p1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let session = a
        .sessions(token)
        .start_session(StartSessionRequest {
            project: "p1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bootstrap: BootstrapFile = serde_json::from_slice(
        &std::fs::read(
            a.data_dir()
                .join("bootstrap")
                .join(format!("{}.json", session.id)),
        )
        .unwrap(),
    )
    .unwrap();
    let agent = sim_agent::enroll(
        &bootstrap.env["KORTIX_CONTROL_PLANE"],
        &bootstrap.env["KORTIX_CA_CERT"],
        &bootstrap.env["KORTIX_BOOTSTRAP_TOKEN"],
    )
    .await
    .expect("enroll at replica A");
    (session, agent)
}

/// Replicas A and B, alice's token, and a session started on A with its agent enrolled
/// there.
async fn two_replicas_agent_on_a(
    db: &Database,
) -> (
    TestServer,
    TestServer,
    String,
    Session,
    sim_agent::EnrolledAgent,
) {
    let a = replica(db).await;
    let b = replica(db).await;
    let token = a.account("alice").await;
    let (session, agent) = session_with_agent_on(&a, &token).await;
    (a, b, token, session, agent)
}

/// The next prompt the agent is sent, skipping other control frames.
async fn next_prompt(conn: &mut sim_agent::AgentConnection) -> Prompt {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match conn.next().await.unwrap() {
                Some(control_frame::Frame::Prompt(p)) => return p,
                Some(_) => {}
                None => panic!("the agent's stream ended"),
            }
        }
    })
    .await
    .expect("a prompt reaches the agent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_sent_on_another_replica_reaches_the_agent() {
    let Some(db) = Database::create().await else {
        return;
    };
    let (a, b, token, session, agent) = two_replicas_agent_on_a(&db).await;
    let mut conn = agent.connect(0).await.unwrap();
    conn.send(running()).await.unwrap();
    support::eventually("the session runs", DEADLINE, || async {
        (b.session(&token, &session.id).await.status == SessionStatus::Running as i32).then_some(())
    })
    .await;

    let prompt = |text: &str| SendPromptRequest {
        session_id: session.id.clone(),
        text: text.into(),
        agent: String::new(),
    };
    let sent = b
        .sessions(&token)
        .send_prompt(prompt("from replica B"))
        .await
        .unwrap()
        .into_inner();
    let got = next_prompt(&mut conn).await;
    assert_eq!(
        (got.id, got.text.as_str()),
        (sent.prompt_id, "from replica B")
    );

    // Sent while the agent is away: delivered when it connects again, in order.
    drop(conn);
    support::eventually("A sees the agent gone", DEADLINE, || async {
        let (_, metrics) = support::http_get(&a.url(), "/metrics").await;
        metrics
            .lines()
            .any(|l| l == "kortix_connected_agents 0")
            .then_some(())
    })
    .await;
    b.sessions(&token)
        .send_prompt(prompt("while away 1"))
        .await
        .unwrap();
    b.sessions(&token)
        .send_prompt(prompt("while away 2"))
        .await
        .unwrap();
    let mut conn = agent.connect(0).await.unwrap();
    let mut texts = Vec::new();
    while texts.len() < 2 {
        texts.push(next_prompt(&mut conn).await.text);
    }
    assert_eq!(texts, ["while away 1", "while away 2"]);

    drop(conn);
    a.stop().await;
    b.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_another_replica_is_woken_by_the_agents_replica() {
    let Some(db) = Database::create().await else {
        return;
    };
    let (a, b, token, session, agent) = two_replicas_agent_on_a(&db).await;
    let mut conn = agent.connect(0).await.unwrap();

    // B watches the session's state from before it runs: the change is made on A.
    let mut states = b
        .sessions(&token)
        .watch_session(WatchSessionRequest {
            id: session.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = states.next().await.unwrap().unwrap();
    assert_ne!(first.status, SessionStatus::Running as i32);
    conn.send(running()).await.unwrap();
    let now_running = tokio::time::timeout(DEADLINE, async {
        loop {
            let s = states.next().await.expect("watch open").unwrap();
            if s.status == SessionStatus::Running as i32 {
                return s;
            }
        }
    })
    .await
    .expect("B's watcher hears the state change made on A");
    assert_eq!(now_running.id, session.id);

    // B follows the records; the agent streams them to A in batches.
    let mut viewer = b
        .sessions(&token)
        .attach(AttachRequest {
            session_id: session.id.clone(),
            from_seq: 1,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let last = 60;
    for start in (1..=last).step_by(10) {
        conn.send_records(
            (start..start + 10)
                .map(|i| log_record(i, format!("line {i}")))
                .collect(),
        )
        .await
        .unwrap();
        assert_eq!(conn.wait_ack(start + 9).await.unwrap(), start + 9);
    }
    let seen = tokio::time::timeout(DEADLINE, async {
        let mut seen = Vec::new();
        while let Some(r) = viewer.next().await {
            let seq = r.unwrap().seq;
            seen.push(seq);
            if seq == last {
                break;
            }
        }
        seen
    })
    .await
    .expect("B's viewer gets A's records through wake-ups");
    assert_eq!(seen, (1..=last).collect::<Vec<_>>(), "no gap, no duplicate");

    drop(conn);
    drop(viewer);
    drop(states);
    a.stop().await;
    b.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_asked_on_another_replica_lets_the_agent_end_the_session() {
    let Some(db) = Database::create().await else {
        return;
    };
    let (a, b, token, session, agent) = two_replicas_agent_on_a(&db).await;
    let mut conn = agent.connect(0).await.unwrap();
    conn.send(running()).await.unwrap();
    support::eventually("the session runs", DEADLINE, || async {
        (b.session(&token, &session.id).await.status == SessionStatus::Running as i32).then_some(())
    })
    .await;

    b.sessions(&token)
        .stop_session(StopSessionRequest {
            id: session.id.clone(),
        })
        .await
        .unwrap();
    // The stop reaches the agent on A through the command queue, with the grace period to
    // save its work, instead of B ending a sandbox it cannot see.
    let stop = tokio::time::timeout(DEADLINE, async {
        loop {
            match conn.next().await.unwrap() {
                Some(control_frame::Frame::Stop(s)) => return s,
                Some(_) => {}
                None => panic!("the agent's stream ended before the stop"),
            }
        }
    })
    .await
    .expect("the stop reaches the agent");
    assert!(stop.grace_ms > 0, "the agent gets a grace period: {stop:?}");
    assert_eq!(
        b.session(&token, &session.id).await.status,
        SessionStatus::Stopping as i32
    );
    conn.send(In::State(StateReport {
        status: SessionStatus::Stopped as i32,
        reason: "stopped by the agent".into(),
        r#final: true,
        ..Default::default()
    }))
    .await
    .unwrap();
    let ended = support::eventually("the session ends as the agent said", DEADLINE, || async {
        let s = b.session(&token, &session.id).await;
        (s.status == SessionStatus::Stopped as i32).then_some(s)
    })
    .await;
    assert_eq!(ended.end_reason, "stopped by the agent");

    drop(conn);
    a.stop().await;
    b.stop().await;
    db.drop_now().await;
}

/// An agent whose stream to replica A looks alive to A (a network cut A has not noticed yet)
/// connects again to replica B: the store now names B's stream as the session's, so a prompt
/// sent on A is not pushed into A's stale stream — A lets that stream go and the prompt
/// reaches the agent on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_follows_an_agent_that_moved_to_another_replica() {
    let Some(db) = Database::create().await else {
        return;
    };
    // One data directory (and so one CA) for both, as replicas are deployed.
    let shared = tempfile::tempdir().unwrap();
    let data_dir = shared.path().join("kortix");
    let on = |db: &Database, dir: std::path::PathBuf| {
        let url = db.url.clone();
        TestServer::start_with(move |c| {
            c.sandbox = SandboxKind::External;
            c.database_url = Some(url);
            c.data_dir = dir;
        })
    };
    let a = on(&db, data_dir.clone()).await;
    let b = on(&db, data_dir.clone()).await;
    let token = a.account("alice").await;
    let (session, agent) = session_with_agent_on(&a, &token).await;
    let mut stale = agent.connect(0).await.unwrap();
    stale.send(running()).await.unwrap();
    support::eventually("the session runs", DEADLINE, || async {
        (a.session(&token, &session.id).await.status == SessionStatus::Running as i32).then_some(())
    })
    .await;

    // The same agent (same certificate) opens a stream to B; A still holds the old one.
    let moved = agent_moved_to(&agent, &b, &data_dir).await;
    let mut conn_b = moved.connect(0).await.unwrap();
    support::eventually("B holds the agent", DEADLINE, || async {
        let (_, metrics) = support::http_get(&b.url(), "/metrics").await;
        metrics
            .lines()
            .any(|l| l == "kortix_connected_agents 1")
            .then_some(())
    })
    .await;

    let sent = a
        .sessions(&token)
        .send_prompt(SendPromptRequest {
            session_id: session.id.clone(),
            text: "after the move".into(),
            agent: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let got = next_prompt(&mut conn_b).await;
    assert_eq!(
        (got.id, got.text.as_str()),
        (sent.prompt_id, "after the move")
    );
    // A let its stale stream go, without sending the prompt into it.
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match stale.next().await {
                Ok(Some(control_frame::Frame::Prompt(p))) => {
                    panic!("the prompt went into the stale stream: {p:?}")
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "A ends the stale stream");

    drop(conn_b);
    a.stop().await;
    b.stop().await;
    db.drop_now().await;
}

/// Replicas A and B sharing one data directory (and so one CA, as replicas are deployed).
async fn replicas_sharing_a_ca(
    db: &Database,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    TestServer,
    TestServer,
) {
    let shared = tempfile::tempdir().unwrap();
    let data_dir = shared.path().join("kortix");
    let on = |dir: std::path::PathBuf| {
        let url = db.url.clone();
        TestServer::start_with(move |c| {
            c.sandbox = SandboxKind::External;
            c.database_url = Some(url);
            c.data_dir = dir;
        })
    };
    let a = on(data_dir.clone()).await;
    let b = on(data_dir.clone()).await;
    (shared, data_dir, a, b)
}

/// The same agent (same certificate), with a channel to `to` instead.
async fn agent_moved_to(
    agent: &sim_agent::EnrolledAgent,
    to: &TestServer,
    data_dir: &std::path::Path,
) -> sim_agent::EnrolledAgent {
    let bootstrap: BootstrapFile = serde_json::from_slice(
        &std::fs::read(
            data_dir
                .join("bootstrap")
                .join(format!("{}.json", agent.session_id)),
        )
        .unwrap(),
    )
    .unwrap();
    let ca = tonic::transport::Certificate::from_pem(&bootstrap.env["KORTIX_CA_CERT"]);
    let identity = tonic::transport::Identity::from_pem(&agent.chain_pem, &agent.key_pem);
    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://{}", to.running().agent_addr))
            .unwrap()
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(ca)
                    .identity(identity),
            )
            .unwrap()
            .connect()
            .await
            .expect("the agent reaches the other replica");
    sim_agent::EnrolledAgent {
        channel,
        ..agent.clone()
    }
}

async fn command_status(
    server: &TestServer,
    token: &str,
    session: &str,
    command: &str,
) -> CommandStatus {
    server
        .sessions(token)
        .get_command(GetCommandRequest {
            session_id: session.into(),
            command_id: command.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// An agent that acks commands gets a prompt sent on B through A; SendPrompt on B answers
/// only once the agent's ack (made on A) has travelled back: delivered, sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_sent_on_another_replica_is_acked_and_reported_delivered() {
    let Some(db) = Database::create().await else {
        return;
    };
    let (a, b, token, session, agent) = two_replicas_agent_on_a(&db).await;
    let (_, tx, mut rx) = agent.connect_with(0, true).await.unwrap().split();
    tx.send(running()).await.unwrap();
    support::eventually("the session runs", DEADLINE, || async {
        (b.session(&token, &session.id).await.status == SessionStatus::Running as i32).then_some(())
    })
    .await;
    // The agent acks every prompt it is sent, and reports what it saw.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let agent_side = tokio::spawn(async move {
        while let Ok(Some(frame)) = rx.next().await {
            if let control_frame::Frame::Prompt(p) = frame {
                let command = p.command.clone().expect("a prompt carries its command");
                tx.ack(&command).await.unwrap();
                let _ = seen_tx.send(p);
            }
        }
    });

    let sent = b
        .sessions(&token)
        .send_prompt(SendPromptRequest {
            session_id: session.id.clone(),
            text: "acked from A".into(),
            agent: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(sent.delivered && !sent.queued, "{sent:?}");
    let got = tokio::time::timeout(DEADLINE, seen.recv())
        .await
        .unwrap()
        .unwrap();
    let command = got.command.unwrap();
    assert_eq!(
        (got.id.as_str(), got.text.as_str()),
        (sent.prompt_id.as_str(), "acked from A")
    );
    assert_eq!(
        (command.id.as_str(), command.seq),
        (sent.prompt_id.as_str(), 1)
    );
    let status = command_status(&b, &token, &session.id, &sent.prompt_id).await;
    assert_eq!(
        (status.state, status.sends),
        (CommandState::Delivered as i32, 1),
        "{status:?}"
    );
    assert!(seen.try_recv().is_err(), "sent once");

    agent_side.abort();
    a.stop().await;
    b.stop().await;
    db.drop_now().await;
}

/// Replica A sends a prompt queued on B; the agent applies it, but A goes away before the
/// agent's ack reaches it. The agent reconnects to B, which sends the prompt again (same
/// command id and seq); the agent — deduplicating with the real agent's command log — acks
/// it without applying it twice, and the command is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_in_flight_when_its_replica_goes_is_resent_by_the_next_and_applied_once() {
    let Some(db) = Database::create().await else {
        return;
    };
    let (_shared, data_dir, a, b) = replicas_sharing_a_ca(&db).await;
    let token = a.account("alice").await;
    let (session, agent) = session_with_agent_on(&a, &token).await;
    let spool = tempfile::tempdir().unwrap();
    let mut log = kortix_agent::command_log::CommandLog::open(spool.path()).unwrap();
    let mut applied = Vec::new();

    let mut on_a = agent.connect_with(0, true).await.unwrap();
    on_a.send(running()).await.unwrap();
    support::eventually("the session runs", DEADLINE, || async {
        (b.session(&token, &session.id).await.status == SessionStatus::Running as i32).then_some(())
    })
    .await;
    let send = {
        let mut client = b.sessions(&token);
        let request = SendPromptRequest {
            session_id: session.id.clone(),
            text: "in flight".into(),
            agent: String::new(),
        };
        tokio::spawn(async move { client.send_prompt(request).await })
    };
    let first = next_prompt(&mut on_a).await;
    let command = first.command.clone().unwrap();
    assert!(log.is_new(&command));
    log.applied(&command).unwrap();
    applied.push(first.text.clone());
    // A goes before the ack: the agent's stream to it ends, the ack is never sent.
    drop(on_a);
    a.stop().await;
    let sent = send.await.unwrap().unwrap().into_inner();
    assert!(!sent.delivered && sent.queued, "{sent:?}");
    assert_eq!(sent.prompt_id, command.id);
    assert_eq!(
        command_status(&b, &token, &session.id, &command.id)
            .await
            .state,
        CommandState::Sent as i32
    );

    // The agent (restarted, say: its log is read back) connects to B.
    let mut log = kortix_agent::command_log::CommandLog::open(spool.path()).unwrap();
    let mut on_b = agent_moved_to(&agent, &b, &data_dir)
        .await
        .connect_with(0, true)
        .await
        .unwrap();
    let again = next_prompt(&mut on_b).await;
    let resent = again.command.clone().unwrap();
    assert_eq!(
        (again.id, &resent),
        (first.id, &command),
        "the same command"
    );
    if log.is_new(&resent) {
        applied.push(again.text);
    }
    on_b.ack(&resent).await.unwrap();
    assert_eq!(applied, ["in flight"], "applied once");
    let delivered = support::eventually("B records the ack", DEADLINE, || async {
        let status = command_status(&b, &token, &session.id, &command.id).await;
        (status.state == CommandState::Delivered as i32).then_some(status)
    })
    .await;
    assert_eq!(delivered.sends, 2);

    drop(on_b);
    b.stop().await;
    db.drop_now().await;
}

/// A secret set on B reaches an agent watching its project's secrets on A through the
/// wake-up A hears from B, not A's slow safety re-check (30 s, longer than the deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_set_on_another_replica_reaches_a_watching_agent() {
    let Some(db) = Database::create().await else {
        return;
    };
    // One data directory, so one master key for the secrets, as replicas are deployed.
    let (_shared, _, a, b) = replicas_sharing_a_ca(&db).await;
    let token = a.account("alice").await;
    let (_session, agent) = session_with_agent_on(&a, &token).await;
    let mut updates = agent
        .client()
        .watch_secrets(WatchSecretsRequest {})
        .await
        .unwrap()
        .into_inner();
    let initial = updates.next().await.unwrap().unwrap();
    assert!(initial.secrets.is_empty(), "{initial:?}");
    b.secrets(&token)
        .set_secret(SetSecretRequest {
            project: "p1".into(),
            name: "API_KEY".into(),
            value: "from B".into(),
        })
        .await
        .unwrap();
    let update = tokio::time::timeout(Duration::from_secs(10), updates.next())
        .await
        .expect("the change arrives before any re-check")
        .unwrap()
        .unwrap();
    assert_eq!(update.secrets["API_KEY"], "from B");

    a.stop().await;
    b.stop().await;
    db.drop_now().await;
}
