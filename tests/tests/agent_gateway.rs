//! The agent side of the control plane over the real protocol: enrollment and every refusal,
//! records (dedup, resume, attach seam), secrets and git credentials scoped to one session,
//! and the lifecycle paths that must never leave a zombie.

mod support;

use kortix_bench::sim_agent::{self, AgentConnection, EnrolledAgent, log_record};
use kortix_controlplane::config::SandboxKind;
use kortix_controlplane::sandbox::external::BootstrapFile;
use kortix_proto::v1::agent_frame::Frame as In;
use kortix_proto::v1::control_frame::Frame as Out;
use kortix_proto::v1::*;
use std::time::Duration;
use support::{TestServer, eventually, git};
use tonic::Code;

struct Fixture {
    ts: TestServer,
    token: String,
}

async fn fixture(adjust: impl FnOnce(&mut kortix_controlplane::config::ServerConfig)) -> Fixture {
    let ts = TestServer::start_with(|c| {
        c.sandbox = SandboxKind::External;
        adjust(c);
    })
    .await;
    let token = ts.account("alice").await;
    for name in ["p1", "p2"] {
        ts.projects(&token)
            .create_project(CreateProjectRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    Fixture { ts, token }
}

impl Fixture {
    async fn start(
        &self,
        project: &str,
        prompt: &str,
    ) -> (kortix_proto::v1::Session, BootstrapFile) {
        let s = self
            .ts
            .sessions(&self.token)
            .start_session(StartSessionRequest {
                project: project.into(),
                prompt: prompt.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let path = self
            .ts
            .data_dir()
            .join("bootstrap")
            .join(format!("{}.json", s.id));
        let file: BootstrapFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        (s, file)
    }

    async fn enroll(&self, b: &BootstrapFile) -> EnrolledAgent {
        sim_agent::enroll(
            &b.env["KORTIX_CONTROL_PLANE"],
            &b.env["KORTIX_CA_CERT"],
            &b.env["KORTIX_BOOTSTRAP_TOKEN"],
        )
        .await
        .expect("enroll")
    }

    /// A session in p1 whose agent has enrolled, connected and reported running.
    async fn running_session(&self) -> (kortix_proto::v1::Session, EnrolledAgent, AgentConnection) {
        let (s, b) = self.start("p1", "").await;
        let agent = self.enroll(&b).await;
        let conn = agent.connect(0).await.unwrap();
        conn.send(running()).await.unwrap();
        (s, agent, conn)
    }

    async fn status(&self, id: &str) -> Session {
        self.ts
            .sessions(&self.token)
            .get_session(GetSessionRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner()
    }

    async fn wait_status(&self, id: &str, want: SessionStatus) -> Session {
        eventually(
            &format!("session {id} {want:?}"),
            Duration::from_secs(20),
            || async {
                let s = self.status(id).await;
                (s.status == want as i32).then_some(s)
            },
        )
        .await
    }

    /// A viewer following session `id` from `from` until it has seen seq `last`; yields
    /// every seq it received, in order.
    fn follow_until(&self, id: &str, from: u64, last: u64) -> tokio::task::JoinHandle<Vec<u64>> {
        use futures::StreamExt;
        let mut client = self.ts.sessions(&self.token);
        let id = id.to_string();
        tokio::spawn(async move {
            let mut stream = client
                .attach(AttachRequest {
                    session_id: id,
                    from_seq: from,
                    follow: true,
                })
                .await
                .unwrap()
                .into_inner();
            let mut seen = Vec::new();
            while let Some(r) = stream.next().await {
                let seq = r.unwrap().seq;
                seen.push(seq);
                if seq == last {
                    break;
                }
            }
            seen
        })
    }

    async fn attach_all(&self, id: &str, from: u64) -> Vec<Record> {
        self.ts.stored_records(&self.token, id, from).await
    }
}

fn running() -> In {
    In::State(StateReport {
        status: SessionStatus::Running as i32,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_bootstrap_records_and_identity() {
    let f = fixture(|_| {}).await;
    let (s, b) = f.start("p1", "write hello.txt").await;
    assert_eq!(s.status, SessionStatus::Provisioning as i32);
    assert_eq!(s.branch, s.id);
    let agent = f.enroll(&b).await;
    assert_eq!(agent.session_id, s.id);

    let mut conn = agent.connect(0).await.unwrap();
    let boot = &conn.bootstrap;
    assert_eq!(boot.session_id, s.id);
    assert_eq!(boot.branch, s.id);
    assert_eq!(boot.default_branch, "main");
    assert_eq!(boot.initial_prompt, "write hello.txt");
    assert_eq!(boot.opencode_config_dir, ".kortix/opencode");
    assert!(boot.repo_url.ends_with("/git/p1.git"), "{}", boot.repo_url);
    assert_eq!(boot.acked_seq, 0);

    conn.send(running()).await.unwrap();
    f.wait_status(&s.id, SessionStatus::Running).await;
    conn.send_records(
        (1..=5)
            .map(|i| log_record(i, format!("line {i}")))
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(conn.wait_ack(5).await.unwrap(), 5);
    conn.heartbeat(42, 0).await.unwrap();
    loop {
        match conn.next().await.unwrap() {
            Some(Out::HeartbeatAck(a)) => {
                assert_eq!(a.nonce, 42);
                break;
            }
            Some(_) => {}
            None => panic!("stream ended"),
        }
    }
    let records = f.attach_all(&s.id, 0).await;
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );

    // Prometheus sees the connected agent, the running session and the ingested records.
    let (code, metrics) = support::http_get(&f.ts.url(), "/metrics").await;
    assert_eq!(code, 200);
    for needle in [
        "kortix_sessions{state=\"running\"} 1",
        "kortix_connected_agents 1",
        "kortix_records_ingested_total",
        "kortix_record_ack_latency_seconds_count",
        "kortix_heartbeats_total",
    ] {
        assert!(metrics.contains(needle), "{needle} not in:\n{metrics}");
    }

    // Prompts reach the connected agent.
    f.ts.sessions(&f.token)
        .send_prompt(SendPromptRequest {
            session_id: s.id.clone(),
            text: "and now a test".into(),
            agent: String::new(),
        })
        .await
        .unwrap();
    loop {
        match conn.next().await.unwrap() {
            Some(Out::Prompt(p)) => {
                assert_eq!(p.text, "and now a test");
                break;
            }
            Some(_) => {}
            None => panic!("stream ended"),
        }
    }
    // A reconnect does not repeat the delivered initial prompt.
    drop(conn);
    let again = agent.connect(5).await.unwrap();
    assert_eq!(again.bootstrap.initial_prompt, "");
    assert_eq!(again.bootstrap.acked_seq, 5);
    f.ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_refusals() {
    let f = fixture(|_| {}).await;
    let (s, b) = f.start("p1", "").await;
    let url = &b.env["KORTIX_CONTROL_PLANE"];
    let ca = &b.env["KORTIX_CA_CERT"];
    f.enroll(&b).await;
    // Reuse of a bootstrap token.
    let reused = sim_agent::enroll(url, ca, &b.env["KORTIX_BOOTSTRAP_TOKEN"]).await;
    match reused {
        Err(sim_agent::SimError::Status(st)) => {
            assert_eq!(st.code(), Code::Unauthenticated);
            assert!(st.message().contains("used"), "{}", st.message());
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a bootstrap token must be single-use"),
    }
    // An expired token.
    let expired =
        kortix_controlplane::auth::generate_token(kortix_controlplane::auth::TokenKind::Bootstrap);
    f.ts.running()
        .sessions
        .store()
        .create_bootstrap_token(&kortix_controlplane::auth::hash_token(&expired), &s.id, 1)
        .await
        .unwrap();
    match sim_agent::enroll(url, ca, &expired).await {
        Err(sim_agent::SimError::Status(st)) => {
            assert_eq!(st.code(), Code::Unauthenticated);
            assert!(st.message().contains("expired"), "{}", st.message());
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("an expired token must be refused"),
    }
    // Garbage and person tokens.
    for bad in ["", "kxb_nope", &f.token] {
        assert!(
            sim_agent::enroll(url, ca, bad).await.is_err(),
            "{bad:?} accepted"
        );
    }

    // No client certificate: only Enroll works.
    let plain = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let err = agent_gateway_client::AgentGatewayClient::new(plain)
        .git_credential(GitCredentialRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // A certificate from another CA never gets past TLS.
    let other_ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = ca_params.self_signed(&other_ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, other_ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec![]).unwrap();
    leaf.subject_alt_names = vec![rcgen::SanType::URI(
        format!("spiffe://kortix/session/{}", s.id)
            .try_into()
            .unwrap(),
    )];
    let leaf = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let forged = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .identity(tonic::transport::Identity::from_pem(
                    format!("{}{}", leaf.pem(), other_ca.pem()),
                    leaf_key.serialize_pem(),
                )),
        )
        .unwrap();
    let refused = match forged.connect().await {
        Err(_) => true,
        Ok(ch) => agent_gateway_client::AgentGatewayClient::new(ch)
            .git_credential(GitCredentialRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a certificate from another CA must be refused");
    f.ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_dedup_and_resume_after_a_dropped_stream() {
    let f = fixture(|_| {}).await;
    let (s, b) = f.start("p1", "").await;
    let agent = f.enroll(&b).await;
    let mut conn = agent.connect(0).await.unwrap();
    conn.send_records((1..=10).map(|i| log_record(i, format!("r{i}"))).collect())
        .await
        .unwrap();
    assert_eq!(conn.wait_ack(10).await.unwrap(), 10);
    // The stream breaks with 11..15 assigned but never acked.
    drop(conn);
    let mut conn = agent.connect(15).await.unwrap();
    assert_eq!(conn.bootstrap.acked_seq, 10);
    // The agent resends from an older point than needed: duplicates are ignored.
    conn.send_records((8..=15).map(|i| log_record(i, format!("r{i}"))).collect())
        .await
        .unwrap();
    assert_eq!(conn.wait_ack(15).await.unwrap(), 15);
    let records = f.attach_all(&s.id, 0).await;
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=15).collect::<Vec<_>>()
    );
    // A gap holds the ack back until it is filled.
    conn.send_records(vec![log_record(17, "r17")])
        .await
        .unwrap();
    assert_eq!(conn.wait_ack(15).await.unwrap(), 15);
    conn.send_records(vec![log_record(16, "r16")])
        .await
        .unwrap();
    assert_eq!(conn.wait_ack(17).await.unwrap(), 17);
    f.ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_seam_has_no_gap_and_no_duplicate() {
    let f = fixture(|_| {}).await;
    let (s, _agent, mut conn) = f.running_session().await;
    conn.send_records((1..=50).map(|i| log_record(i, "before")).collect())
        .await
        .unwrap();
    conn.wait_ack(50).await.unwrap();
    let total = 600u64;
    // Viewers attach while the agent keeps writing.
    let viewers: Vec<_> = [0u64, 25, 50]
        .into_iter()
        .map(|from| (from, f.follow_until(&s.id, from, total)))
        .collect();
    let mut next = 51;
    while next <= total {
        let end = (next + 49).min(total);
        conn.send_records((next..=end).map(|i| log_record(i, "live")).collect())
            .await
            .unwrap();
        conn.wait_ack(end).await.unwrap();
        next = end + 1;
    }
    for (from, v) in viewers {
        let seen = tokio::time::timeout(Duration::from_secs(30), v)
            .await
            .unwrap()
            .unwrap();
        let want: Vec<u64> = (from.max(1)..=total).collect();
        assert_eq!(seen, want, "viewer from {from}");
    }
    f.ts.stop().await;
}

/// A viewer that stops reading is cut off with RESOURCE_EXHAUSTED and the seq to resume from,
/// after its stream held everything up to that seq with no gap; meanwhile the agent's
/// batches are all acked and another viewer receives every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_stops_reading_is_cut_off_without_holding_up_anyone() {
    use futures::StreamExt;
    let f = fixture(|_| {}).await;
    let (s, _agent, mut conn) = f.running_session().await;
    let cut_before = kortix_controlplane::metrics::metrics()
        .viewers_cut_off
        .get();
    let mut stalled =
        f.ts.sessions(&f.token)
            .attach(AttachRequest {
                session_id: s.id.clone(),
                from_seq: 0,
                follow: true,
            })
            .await
            .unwrap()
            .into_inner();
    // Far more than the viewer's queue and its HTTP/2 window hold.
    let total = 5_000u64;
    let line = "x".repeat(2_000);
    let reader = f.follow_until(&s.id, 0, total);
    for from in (1..=total).step_by(100) {
        conn.send_records((from..from + 100).map(|i| log_record(i, &line)).collect())
            .await
            .unwrap();
    }
    assert_eq!(conn.wait_ack(total).await.unwrap(), total);
    let seen = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());

    eventually(
        "the stalled viewer is cut off",
        Duration::from_secs(60),
        || async {
            (kortix_controlplane::metrics::metrics()
                .viewers_cut_off
                .get()
                > cut_before)
                .then_some(())
        },
    )
    .await;
    let mut next = 1u64;
    let status = loop {
        match stalled.next().await {
            Some(Ok(r)) => {
                assert_eq!(r.seq, next, "no gap and no duplicate before the cut");
                next += 1;
            }
            Some(Err(status)) => break status,
            None => panic!("the stream ended without a status after seq {}", next - 1),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        next < total,
        "the stalled viewer was cut off before the end"
    );
    assert!(
        status
            .message()
            .contains(&format!("reattach from seq {next}")),
        "{status:?}"
    );
    f.ts.stop().await;
}

/// Batches pipelined without waiting for acks, one pair sent out of order, viewers attached
/// from the start and from far behind the in-memory tail: everyone sees every seq once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_reach_every_viewer_exactly_once() {
    let f = fixture(|_| {}).await;
    let (s, _agent, mut conn) = f.running_session().await;
    // More than the in-memory tail holds, so the late viewer starts in the store.
    let total = 40_000u64;
    let batch = |from: u64| {
        (from..from + 100)
            .map(|i| log_record(i, "pipelined"))
            .collect()
    };
    let viewer = |from: u64| f.follow_until(&s.id, from, total);
    let early = viewer(0);
    // The second batch first: the first ack covers nothing, the next covers both.
    conn.send_records(batch(101)).await.unwrap();
    conn.send_records(batch(1)).await.unwrap();
    let mut next = 201;
    let mut late = None;
    while next <= total {
        conn.send_records(batch(next)).await.unwrap();
        next += 100;
        if next == 36_001 {
            conn.wait_ack(36_000).await.unwrap();
            late = Some(viewer(1));
        }
    }
    assert_eq!(conn.wait_ack(total).await.unwrap(), total);
    let want: Vec<u64> = (1..=total).collect();
    for (name, v) in [("early", early), ("late", late.unwrap())] {
        let seen = tokio::time::timeout(Duration::from_secs(60), v)
            .await
            .unwrap_or_else(|_| panic!("{name} viewer did not finish"))
            .unwrap();
        assert!(
            seen == want,
            "{name} viewer saw {} records, first wrong at {:?}",
            seen.len(),
            seen.iter().zip(&want).position(|(a, b)| a != b)
        );
    }
    f.ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_git_credentials_are_scoped_to_the_session() {
    use futures::StreamExt;
    let f = fixture(|_| {}).await;
    for (project, name, value) in [("p1", "ONE", "one-value"), ("p2", "TWO", "two-value")] {
        f.ts.secrets(&f.token)
            .set_secret(SetSecretRequest {
                project: project.into(),
                name: name.into(),
                value: value.into(),
            })
            .await
            .unwrap();
    }
    let (s1, b1) = f.start("p1", "").await;
    let (s2, b2) = f.start("p2", "").await;
    let a1 = f.enroll(&b1).await;
    let a2 = f.enroll(&b2).await;

    let mut watch = a1
        .client()
        .watch_secrets(WatchSecretsRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.secrets.len(), 1);
    assert_eq!(first.secrets["ONE"], "one-value");
    // A change arrives while the session runs.
    f.ts.secrets(&f.token)
        .set_secret(SetSecretRequest {
            project: "p1".into(),
            name: "ONE".into(),
            value: "rotated".into(),
        })
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.secrets["ONE"], "rotated");
    assert!(second.version > first.version);

    // Git tokens push only their own branch of their own repo.
    let cred1 = a1
        .client()
        .git_credential(GitCredentialRequest::default())
        .await
        .unwrap()
        .into_inner();
    let cred2 = a2
        .client()
        .git_credential(GitCredentialRequest::default())
        .await
        .unwrap()
        .into_inner();
    let work = tempfile::tempdir().unwrap();
    let clone = work.path().join("c");
    let out = git(
        work.path(),
        &[
            "clone",
            "-q",
            &f.ts.git_url("p1", &cred1.password),
            clone.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    support::git_ok(&clone, &["checkout", "-q", &s1.id]);
    std::fs::write(clone.join("a.txt"), "a\n").unwrap();
    support::git_ok(&clone, &["add", "."]);
    support::git_ok(&clone, &["commit", "-qm", "a"]);
    support::git_ok(&clone, &["push", "-q", "origin", &s1.id]);
    let other_branch = git(
        &clone,
        &["push", "origin", &format!("{}:refs/heads/elsewhere", s1.id)],
    );
    assert!(!other_branch.status.success());
    assert!(String::from_utf8_lossy(&other_branch.stderr).contains(&s1.id));
    let to_main = git(&clone, &["push", "origin", &format!("{}:main", s1.id)]);
    assert!(!to_main.status.success());
    // Session 2's token cannot even see project 1.
    let cross = git(
        work.path(),
        &["ls-remote", &f.ts.git_url("p1", &cred2.password)],
    );
    assert!(!cross.status.success());
    // People cannot use a session token on the API.
    let err =
        f.ts.projects(&cred1.password)
            .list_projects(ListProjectsRequest {})
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let _ = s2;
    f.ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_agent_never_connects_fails() {
    let f = fixture(|c| c.timings.connect_deadline = Duration::from_secs(1)).await;
    let (s, _b) = f.start("p1", "").await;
    let failed = f.wait_status(&s.id, SessionStatus::Failed).await;
    assert!(
        failed.failure_reason.contains("never connected"),
        "{}",
        failed.failure_reason
    );
    assert!(failed.ended_unix_ms > 0);
    f.ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_a_session_whose_agent_ignores_the_stop_frame() {
    let f = fixture(|c| c.timings.stop_grace = Duration::from_secs(1)).await;
    let (s, agent, mut conn) = f.running_session().await;
    f.wait_status(&s.id, SessionStatus::Running).await;
    f.ts.sessions(&f.token)
        .stop_session(StopSessionRequest { id: s.id.clone() })
        .await
        .unwrap();
    // The agent sees the stop frame and ignores it.
    loop {
        if let Some(Out::Stop(stop)) = conn.next().await.unwrap() {
            assert!(!stop.hibernate);
            break;
        }
    }
    let stopped = f.wait_status(&s.id, SessionStatus::Stopped).await;
    assert!(
        stopped.end_reason.contains("did not stop"),
        "{}",
        stopped.end_reason
    );
    // Its certificate is revoked with the session.
    let err = agent
        .client()
        .git_credential(GitCredentialRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    f.ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_hibernate_and_cooperative_stops_end_cleanly() {
    let f = fixture(|c| c.timings.idle_timeout = Duration::from_secs(1)).await;
    let (s, _agent, mut conn) = f.running_session().await;
    f.wait_status(&s.id, SessionStatus::Running).await;
    conn.heartbeat(1, 5_000).await.unwrap();
    loop {
        match conn.next().await.unwrap() {
            Some(Out::Stop(stop)) => {
                assert!(stop.hibernate);
                break;
            }
            Some(_) => {}
            None => panic!("stream ended before the stop frame"),
        }
    }
    conn.send(In::State(StateReport {
        status: SessionStatus::Hibernated as i32,
        reason: "idle".into(),
        r#final: true,
        head_sha: String::new(),
    }))
    .await
    .unwrap();
    f.wait_status(&s.id, SessionStatus::Hibernated).await;
    f.ts.stop().await;
}

/// The reconcile loop ends a sandbox whose session is no longer live (here: ended in the store
/// behind the provider's back, as by a replica that died before killing it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_ends_sandboxes_whose_session_is_not_live() {
    let f = fixture(|_| {}).await;
    let (s, _b) = f.start("p1", "").await;
    let file =
        f.ts.data_dir()
            .join("bootstrap")
            .join(format!("{}.json", s.id));
    assert!(file.exists());
    let sessions = &f.ts.running().sessions;
    sessions.reconcile_once().await;
    assert!(file.exists(), "a live session keeps its sandbox");
    let moved = sessions
        .store()
        .transition_session(
            &s.id,
            &kortix_controlplane::store::SessionStatus::ACTIVE,
            kortix_controlplane::store::SessionStatus::Failed,
            Some("ended elsewhere"),
        )
        .await
        .unwrap();
    assert!(moved);
    sessions.reconcile_once().await;
    assert!(!file.exists(), "the sandbox of an ended session is gone");
    f.ts.stop().await;
}

/// An agent that connected but never reports `running` (OpenCode never ready, and the agent
/// cannot say so) fails at the connect deadline plus the start deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_session_that_never_becomes_ready_fails_at_the_start_deadline() {
    let f = fixture(|c| {
        c.timings.connect_deadline = Duration::from_secs(1);
        c.timings.start_deadline = Duration::from_secs(1);
    })
    .await;
    let (s, b) = f.start("p1", "").await;
    let agent = f.enroll(&b).await;
    let _conn = agent.connect(0).await.unwrap();
    let failed = f.wait_status(&s.id, SessionStatus::Failed).await;
    assert!(
        failed
            .failure_reason
            .contains("did not become ready within 2 s"),
        "{}",
        failed.failure_reason
    );
    f.ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_session_follows_the_state_to_its_end() {
    use futures::StreamExt as _;
    let f = fixture(|_| {}).await;
    let (s, b) = f.start("p1", "").await;
    let mut watch =
        f.ts.sessions(&f.token)
            .watch_session(WatchSessionRequest { id: s.id.clone() })
            .await
            .unwrap()
            .into_inner();
    async fn next_update(
        watch: &mut tonic::Streaming<Session>,
    ) -> Option<Result<Session, tonic::Status>> {
        tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("an update in time")
    }
    let first = next_update(&mut watch).await.unwrap().unwrap();
    assert_eq!(first.status, SessionStatus::Provisioning as i32);
    let agent = f.enroll(&b).await;
    let conn = agent.connect(0).await.unwrap();
    conn.send(running()).await.unwrap();
    let running = next_update(&mut watch).await.unwrap().unwrap();
    assert_eq!(running.status, SessionStatus::Running as i32);
    assert!(running.started_unix_ms > 0);
    f.ts.sessions(&f.token)
        .stop_session(StopSessionRequest { id: s.id.clone() })
        .await
        .unwrap();
    let stopping = next_update(&mut watch).await.unwrap().unwrap();
    assert_eq!(stopping.status, SessionStatus::Stopping as i32);
    conn.send(In::State(StateReport {
        status: SessionStatus::Stopped as i32,
        reason: "stopped by user".into(),
        r#final: true,
        head_sha: String::new(),
    }))
    .await
    .unwrap();
    let stopped = next_update(&mut watch).await.unwrap().unwrap();
    assert_eq!(stopped.status, SessionStatus::Stopped as i32);
    assert_eq!(stopped.end_reason, "stopped by user");
    assert!(
        next_update(&mut watch).await.is_none(),
        "the watch ends with the session"
    );
    // Someone else's session is not theirs to watch.
    let other = f.ts.account("mallory").await;
    let err =
        f.ts.sessions(&other)
            .watch_session(WatchSessionRequest { id: s.id.clone() })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    f.ts.stop().await;
}
