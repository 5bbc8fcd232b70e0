//! Replicas, agents and viewers for the fault tests: real `kortix server` processes on one
//! PostgreSQL database and one data directory (`--sandbox external`), the real `kortix-agent`
//! run by the test as a sandbox would run it, with a stand-in OpenCode that prints numbered
//! lines (so every record can be counted) and writes down every prompt it is sent; and for
//! each session a viewer that follows its stream the way `kortix sessions attach` does.
//!
//! [`Fleet::start`] spreads the agents over the replicas (agent `i` starts at replica
//! `i % n`) and attaches each session's viewer through the replica after its agent's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kortix_controlplane::sandbox::external::BootstrapFile;
use kortix_proto::v1::record::Body;
use kortix_proto::v1::session_service_client::SessionServiceClient;
use kortix_proto::v1::{
    AttachRequest, GetSessionRequest, LogStream, Record, SendPromptRequest, Session, SessionStatus,
    StopSessionRequest,
};
use nix::sys::signal::Signal;
use tonic::transport::Channel;

use super::server_process::{ServerProcess, free_addr};
use super::{Authed, Bearer, built_binary, git_ok};

/// Generous for a loaded machine; each step normally takes a second or two.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// `opencode serve` as far as the agent needs it, printing `tick <pid> <n>` every 20 ms from
/// the moment it listens, until SIGTERM; then it appends `<pid> <lines printed>` to
/// `$FAKE_OPENCODE_COUNTS`. Each prompt's text it is sent (`POST /session/:id/prompt_async`,
/// as the agent delivers them) is appended to `$FAKE_OPENCODE_PROMPTS` as a JSON string. It
/// records its pid in `$FAKE_OPENCODE_PIDS` (for clean-up) and exits when its output pipe
/// breaks (its agent was killed).
const FAKE_OPENCODE: &str = r#"#!/usr/bin/env python3
import http.server, json, os, signal, sys, threading, time
port = int(sys.argv[sys.argv.index("--port") + 1])
pid = os.getpid()
with open(os.environ["FAKE_OPENCODE_PIDS"], "a") as f:
    f.write("%d\n" % pid)
stop = threading.Event()
prompts = threading.Lock()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
def tick():
    n = 0
    try:
        while not stop.is_set():
            sys.stdout.write("tick %d %d\n" % (pid, n)); sys.stdout.flush()
            n += 1
            time.sleep(0.02)
        with open(os.environ["FAKE_OPENCODE_COUNTS"], "a") as f:
            f.write("%d %d\n" % (pid, n))
        os._exit(0)
    except BaseException:
        os._exit(1)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, code, body=b""):
        self.send_response(code); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if self.path == "/global/health": return self.reply(200, b'{"healthy":true,"version":"fake"}')
        if self.path.startswith("/session/"): return self.reply(200, b'{"id":"ses_fake"}')
        if self.path == "/event":
            self.send_response(200); self.send_header("content-type", "text/event-stream"); self.end_headers()
            self.wfile.write(b'data: {"type":"server.connected","properties":{}}\n\n'); self.wfile.flush()
            while not stop.is_set():
                time.sleep(1); self.wfile.write(b'data: {"type":"server.heartbeat","properties":{}}\n\n'); self.wfile.flush()
            return
        self.reply(404)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/session": return self.reply(200, b'{"id":"ses_fake"}')
        if self.path.endswith("/prompt_async"):
            text = "".join(p.get("text", "") for p in json.loads(body).get("parts", []))
            with prompts, open(os.environ["FAKE_OPENCODE_PROMPTS"], "a") as f:
                f.write(json.dumps(text) + "\n")
            return self.reply(204)
        self.reply(404)
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
print("opencode server listening on http://127.0.0.1:%d" % port, flush=True)
threading.Thread(target=tick, daemon=True).start()
server.serve_forever()
"#;

/// Creates project `app` from a fresh repository under `root`: a manifest and an (unused)
/// OpenCode config directory.
pub fn create_project(server: &ServerProcess, root: &Path) {
    let repo = root.join("src");
    std::fs::create_dir_all(repo.join(".kortix/opencode")).unwrap();
    git_ok(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("kortix.toml"), "[project]\nname = \"app\"\n").unwrap();
    std::fs::write(repo.join(".kortix/opencode/opencode.json"), "{}\n").unwrap();
    git_ok(&repo, &["add", "-A"]);
    git_ok(&repo, &["commit", "-qm", "Initial commit"]);
    server.import_app(&repo);
}

/// Starts a session of project `app` with the prompt "go"; its id.
pub fn new_session(server: &ServerProcess) -> String {
    let session = server.json(&["sessions", "new", "--project", "app", "--prompt", "go"]);
    session["id"].as_str().unwrap().to_string()
}

/// The environment the control plane handed the (external) sandbox of `id`.
pub fn bootstrap_env(data_dir: &Path, id: &str) -> BTreeMap<String, String> {
    let path = data_dir.join("bootstrap").join(format!("{id}.json"));
    let file: BootstrapFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    file.env
}

/// The real `kortix-agent` of one session, run by the test as its sandbox would run it.
/// Dropping it kills the agent and the stand-in OpenCodes it started.
pub struct Agent {
    child: Option<Child>,
    env: Vec<(String, String)>,
    netns: Option<String>,
    pids: PathBuf,
    counts: PathBuf,
    prompts: PathBuf,
    pub spool: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// Runs the agent with `bootstrap` in `dir` (its home, workspace and spool), in network
    /// namespace `netns` if given.
    pub fn new(dir: &Path, bootstrap: BTreeMap<String, String>, netns: Option<String>) -> Agent {
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let fake = dir.join("fake-opencode");
        std::fs::write(&fake, FAKE_OPENCODE).unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let spool = dir.join("spool");
        let pids = dir.join("opencode.pids");
        let counts = dir.join("opencode.counts");
        let prompts = dir.join("opencode.prompts");
        let mut env: Vec<(String, String)> = bootstrap.into_iter().collect();
        let path = |p: &Path| p.display().to_string();
        env.extend([
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".into(), path(&home)),
            ("KORTIX_WORKSPACE".into(), path(&dir.join("workspace"))),
            ("KORTIX_SPOOL_DIR".into(), path(&spool)),
            ("KORTIX_OPENCODE_BIN".into(), path(&fake)),
            ("KORTIX_HEARTBEAT_SECS".into(), "1".into()),
            ("KORTIX_ALLOW_CLEARTEXT_GIT".into(), "1".into()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("FAKE_OPENCODE_PIDS".into(), path(&pids)),
            ("FAKE_OPENCODE_COUNTS".into(), path(&counts)),
            ("FAKE_OPENCODE_PROMPTS".into(), path(&prompts)),
        ]);
        let mut agent = Agent {
            child: None,
            env,
            netns,
            pids,
            counts,
            prompts,
            spool,
            log: dir.join("agent.log"),
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match &self.netns {
            // `ip netns exec` enters the namespace and execs the agent (same pid).
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns])
                    .arg(built_binary("kortix-agent"));
                c
            }
            None => Command::new(built_binary("kortix-agent")),
        };
        let child = cmd
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run kortix-agent");
        self.child = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// `kill -9` and wait for it; its stand-in OpenCode dies of the broken pipe.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Started again with the same environment and spool.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the agent still runs");
        self.spawn();
    }

    /// Whether the agent has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            None => true,
            Some(child) => {
                let done = child.try_wait().unwrap().is_some();
                if done {
                    self.child = None;
                }
                done
            }
        }
    }

    /// Waits for the agent to exit on its own.
    pub async fn wait_exit(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.exited() {
            assert!(
                Instant::now() < deadline,
                "the agent did not exit within {within:?}: {}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn renewal_secret(&self, session: &str) -> String {
        std::fs::read_to_string(self.secret_path(session)).expect("the renewal secret file")
    }

    pub fn secret_path(&self, session: &str) -> PathBuf {
        self.spool
            .join("sessions")
            .join(session)
            .join(kortix_agent::renewal::FILE_NAME)
    }

    /// Lines printed by each stand-in OpenCode that was stopped with SIGTERM.
    pub fn printed(&self) -> BTreeMap<u32, u64> {
        std::fs::read_to_string(&self.counts)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (pid, n) = l.split_once(' ')?;
                Some((pid.parse().ok()?, n.parse().ok()?))
            })
            .collect()
    }

    /// The prompts its OpenCode was sent, in order of arrival.
    pub fn prompts(&self) -> Vec<String> {
        std::fs::read_to_string(&self.prompts)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON string per line"))
            .collect()
    }

    /// How many times its OpenCode was sent `text`.
    pub fn prompted(&self, text: &str) -> usize {
        self.prompts().iter().filter(|p| *p == text).count()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        for pid in std::fs::read_to_string(&self.pids)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
        {
            // Only a stand-in OpenCode: the pid may have been reused since it exited.
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("fake-opencode"));
            if ours {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// The `tick` lines among the records, per stand-in OpenCode, in stream order.
pub fn ticks(records: &[Record]) -> BTreeMap<u32, Vec<u64>> {
    let mut out: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for r in records {
        let Some(Body::Log(log)) = &r.body else {
            continue;
        };
        if log.stream != LogStream::Stdout as i32 {
            continue;
        }
        let mut parts = log.line.split_whitespace();
        if parts.next() != Some("tick") {
            continue;
        }
        let (Some(pid), Some(n)) = (
            parts.next().and_then(|p| p.parse().ok()),
            parts.next().and_then(|n| n.parse().ok()),
        ) else {
            continue;
        };
        out.entry(pid).or_default().push(n);
    }
    out
}

pub fn tick_count(records: &[Record]) -> usize {
    ticks(records).values().map(Vec::len).sum()
}

/// Every state record's phase and reason, with its time.
pub fn phases(records: &[Record]) -> Vec<(String, String)> {
    states(records).map(|(_, p, r)| (p, r)).collect()
}

fn states(records: &[Record]) -> impl Iterator<Item = (i64, String, String)> + '_ {
    records.iter().filter_map(|r| match &r.body {
        Some(Body::State(s)) => Some((r.ts_unix_ms, s.phase.clone(), s.reason.clone())),
        _ => None,
    })
}

/// When the agent first streamed to one of `urls` after `since_ms` (its `reconnected`
/// record, which names the gateway).
pub fn reconnected_to(records: &[Record], urls: &[String], since_ms: i64) -> Option<i64> {
    states(records)
        .find(|(ts, phase, url)| *ts >= since_ms && phase == "reconnected" && urls.contains(url))
        .map(|(ts, _, _)| ts)
}

/// The gateway URL the agent streams to now: the last `enrolled`/`re-enrolled` ("… via
/// URL") or `reconnected` (URL) state record.
pub fn current_gateway(records: &[Record]) -> Option<String> {
    phases(records)
        .into_iter()
        .rev()
        .find_map(|(phase, reason)| match phase.as_str() {
            "reconnected" => Some(reason),
            "enrolled" | "re-enrolled" => reason.rsplit_once(" via ").map(|(_, u)| u.to_string()),
            _ => None,
        })
}

/// The stored stream is gap-free and duplicate-free (seq 1..=N) and every stand-in
/// OpenCode's lines arrived in order with none missing or repeated (a prefix of what it
/// printed). `complete`: all of what those stopped with SIGTERM printed is there, and the
/// agent's final report is the last record.
pub fn check_stream(records: &[Record], printed: &BTreeMap<u32, u64>, complete: bool) {
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=records.len() as u64).collect::<Vec<_>>(),
        "gap-free and duplicate-free"
    );
    for (pid, ns) in ticks(records) {
        assert_eq!(
            ns,
            (0..ns.len() as u64).collect::<Vec<_>>(),
            "the lines of OpenCode {pid}: in order, none missing, none twice"
        );
        if let (true, Some(&n)) = (complete, printed.get(&pid)) {
            assert_eq!(
                ns.len() as u64,
                n,
                "every line OpenCode {pid} printed before its stop is stored"
            );
        }
    }
    if complete {
        let last = phases(records).pop();
        assert!(
            matches!(records.last().map(|r| &r.body), Some(Some(Body::State(_))))
                && last.as_ref().is_some_and(|(p, _)| p == "stopped"),
            "the agent's final report is the last record: {last:?}"
        );
    }
}

/// Agent URL of a replica.
pub fn agent_url(server: &ServerProcess) -> String {
    format!("https://{}", server.agent)
}

fn admin_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin.token"))
        .expect("admin.token")
        .trim()
        .to_string()
}

async fn sessions_at(
    url: &str,
    token: &str,
) -> Result<SessionServiceClient<Authed>, tonic::Status> {
    let channel = Channel::from_shared(url.to_string())
        .expect("a URL")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connecting to {url}: {e}")))?;
    Ok(SessionServiceClient::with_interceptor(
        channel,
        Bearer(token.to_string()),
    ))
}

/// The Sessions service of `server`, as the local admin.
pub async fn sessions(server: &ServerProcess) -> SessionServiceClient<Authed> {
    sessions_at(&server.url(), &admin_token(&server.data_dir))
        .await
        .unwrap()
}

pub async fn session(server: &ServerProcess, id: &str) -> Session {
    sessions(server)
        .await
        .get_session(GetSessionRequest { id: id.into() })
        .await
        .expect("GetSession")
        .into_inner()
}

pub async fn status(server: &ServerProcess, id: &str) -> SessionStatus {
    session(server, id).await.status()
}

/// Every stored record of a session, read through `server`.
pub async fn records(server: &ServerProcess, id: &str) -> Vec<Record> {
    let mut stream = sessions(server)
        .await
        .attach(AttachRequest {
            session_id: id.into(),
            from_seq: 0,
            follow: false,
        })
        .await
        .expect("Attach")
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = stream.message().await.expect("a record") {
        out.push(r);
    }
    out
}

/// Polls the stored records through `server` until `check` holds, asserting at every step
/// that the session is still `running` (or still `provisioning`).
pub async fn until_running<T>(
    server: &ServerProcess,
    id: &str,
    what: &str,
    mut check: impl FnMut(&[Record]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let records = records(server, id).await;
        let s = status(server, id).await;
        assert!(
            matches!(s, SessionStatus::Running | SessionStatus::Provisioning),
            "session {id} is {s:?} while waiting for {what}: {:?}",
            phases(&records)
        );
        if s == SessionStatus::Running
            && let Some(v) = check(&records)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} of session {id}; phases: {:?}",
            phases(&records)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops the session through `server`, waits for its agent's exit and the session's end;
/// its stored records.
pub async fn stop(server: &ServerProcess, id: &str, agent: &mut Agent) -> Vec<Record> {
    sessions(server)
        .await
        .stop_session(StopSessionRequest { id: id.into() })
        .await
        .expect("StopSession");
    agent.wait_exit(DEADLINE).await;
    let ended = super::eventually("the session to end", DEADLINE, || async {
        let s = status(server, id).await;
        (!matches!(s, SessionStatus::Stopping | SessionStatus::Running)).then_some(s)
    })
    .await;
    assert_eq!(ended, SessionStatus::Stopped);
    records(server, id).await
}

/// What a viewer saw: the seqs it printed, in order, and each reattach.
#[derive(Debug, Default)]
pub struct Viewed {
    pub seqs: Vec<u64>,
    /// Where and why it reattached.
    pub reattached: Vec<String>,
}

/// Follows a session's stream through one replica's public API, as `kortix sessions
/// attach` does: after a lost stream it reattaches from the seq after the last one it
/// printed (skipping a replayed seam record) with backoff — here to the next replica, as a
/// load balancer in front of the replicas would send it. Dropping it stops following.
pub struct Viewer {
    task: Option<tokio::task::JoinHandle<Viewed>>,
}

/// Reattach pauses: as the CLI's (200 ms doubling), capped lower to keep the tests short.
const VIEWER_FIRST_BACKOFF: Duration = Duration::from_millis(200);
const VIEWER_MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Viewer {
    pub fn follow(urls: Vec<String>, first: usize, token: String, id: String) -> Viewer {
        let task = tokio::spawn(async move {
            let mut viewed = Viewed::default();
            let mut next = 0u64;
            let mut at = first;
            let mut failures = 0u32;
            loop {
                let opened = match sessions_at(&urls[at], &token).await {
                    Ok(mut client) => client
                        .attach(AttachRequest {
                            session_id: id.clone(),
                            from_seq: next,
                            follow: true,
                        })
                        .await
                        .map(tonic::Response::into_inner),
                    Err(status) => Err(status),
                };
                let status = match opened {
                    Ok(mut records) => loop {
                        match records.message().await {
                            Ok(Some(rec)) => {
                                if rec.seq < next {
                                    continue;
                                }
                                failures = 0;
                                next = rec.seq + 1;
                                viewed.seqs.push(rec.seq);
                            }
                            Ok(None) => return viewed,
                            Err(status) => break status,
                        }
                    },
                    Err(status) => status,
                };
                assert!(
                    !matches!(
                        status.code(),
                        tonic::Code::NotFound
                            | tonic::Code::PermissionDenied
                            | tonic::Code::Unauthenticated
                    ),
                    "the viewer of {id} was refused: {status:?}"
                );
                failures += 1;
                viewed.reattached.push(format!(
                    "from {} after {:?} ({})",
                    urls[at],
                    status.code(),
                    status.message()
                ));
                at = (at + 1) % urls.len();
                let pause = VIEWER_FIRST_BACKOFF
                    .saturating_mul(1 << failures.min(10))
                    .min(VIEWER_MAX_BACKOFF);
                tokio::time::sleep(pause).await;
            }
        });
        Viewer { task: Some(task) }
    }

    /// Waits for the stream to end (the session ended); what it saw.
    pub async fn finish(mut self) -> Viewed {
        let task = self.task.take().expect("following");
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the viewer's stream ends with its session")
            .expect("the viewer")
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One session of a [`Fleet`]: its agent, the replica the agent started at, and its viewer.
pub struct Member {
    pub id: String,
    pub agent: Agent,
    /// The replica its agent was sent to first.
    pub home: usize,
    /// The replica its viewer attached through first.
    pub viewer_at: usize,
    pub viewer: Option<Viewer>,
}

/// Replicas on one database with agents spread across them and a viewer per session.
/// Dropping it kills the agents, then the replicas, then removes the directory.
pub struct Fleet {
    pub members: Vec<Member>,
    pub replicas: Vec<ServerProcess>,
    db: Option<kortix_tests::pg::Database>,
    pub root: tempfile::TempDir,
}

impl Fleet {
    /// `replicas` replicas (each with `extra_args` besides the shared database, data
    /// directory and agent URLs) and `agents` sessions of one project, agent `i` sent to
    /// replica `i % replicas` first (its URL list rotated to start there) and its viewer
    /// attached through the next replica. Returns once every agent streams to its replica.
    /// `None` without PostgreSQL (outside CI).
    pub async fn start(replicas: usize, agents: usize, extra_args: &[&str]) -> Option<Fleet> {
        let db = kortix_tests::pg::Database::create().await?;
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("kortix");
        let addrs: Vec<(SocketAddr, SocketAddr)> =
            (0..replicas).map(|_| (free_addr(), free_addr())).collect();
        let urls: Vec<String> = addrs.iter().map(|(_, a)| format!("https://{a}")).collect();
        let joined = urls.join(",");
        let mut args = vec![
            "--sandbox",
            "external",
            "--database-url",
            &db.url,
            "--agent-url",
            &joined,
        ];
        args.extend_from_slice(extra_args);
        let mut fleet = Fleet {
            members: Vec::new(),
            replicas: Vec::new(),
            db: None,
            root,
        };
        // The first replica creates the data directory (CA, keys); the others share it.
        for (i, (public, agent)) in addrs.iter().enumerate() {
            let mut r = ServerProcess::start_replica(
                fleet.root.path(),
                &format!("replica-{i}"),
                &data,
                *public,
                *agent,
                &args,
            );
            r.wait_ready().await;
            fleet.replicas.push(r);
        }
        fleet.db = Some(db);
        create_project(&fleet.replicas[0], fleet.root.path());
        for i in 0..agents {
            let id = new_session(&fleet.replicas[0]);
            let mut env = bootstrap_env(&data, &id);
            assert_eq!(
                env["KORTIX_CONTROL_PLANE"], joined,
                "sandboxes get every replica"
            );
            let home = i % replicas;
            let rotated: Vec<&str> = (0..replicas)
                .map(|k| urls[(home + k) % replicas].as_str())
                .collect();
            env.insert("KORTIX_CONTROL_PLANE".into(), rotated.join(","));
            env.insert("KORTIX_CONTROL_PLANE_ORDER".into(), "listed".into());
            let agent = Agent::new(&fleet.root.path().join(format!("sandbox-{i}")), env, None);
            fleet.members.push(Member {
                id,
                agent,
                home,
                viewer_at: (home + 1) % replicas,
                viewer: None,
            });
        }
        let token = admin_token(&data);
        let public: Vec<String> = fleet.replicas.iter().map(ServerProcess::url).collect();
        for m in &mut fleet.members {
            m.viewer = Some(Viewer::follow(
                public.clone(),
                m.viewer_at,
                token.clone(),
                m.id.clone(),
            ));
        }
        // The spread is real: every agent streams to the replica it was sent to.
        for m in &fleet.members {
            let want = &urls[m.home];
            let at = until_running(&fleet.replicas[0], &m.id, "the agent to stream", |r| {
                (tick_count(r) > 0).then(|| current_gateway(r)).flatten()
            })
            .await;
            assert_eq!(&at, want, "agent of session {} streams to {at}", m.id);
        }
        Some(fleet)
    }

    /// Agent URLs of the replicas, in order.
    pub fn agent_urls(&self) -> Vec<String> {
        self.replicas.iter().map(agent_url).collect()
    }

    /// Sends `text` to the session of `member` through replica `via`; the prompt id.
    pub async fn send_prompt(&self, via: usize, member: usize, text: &str) -> String {
        sessions(&self.replicas[via])
            .await
            .send_prompt(SendPromptRequest {
                session_id: self.members[member].id.clone(),
                text: text.into(),
                agent: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("SendPrompt through replica {via}: {e:?}"))
            .into_inner()
            .prompt_id
    }

    /// Polls the sessions of `members` through replica `via` until `check` (given the
    /// member's index and the session's records) holds for each,
    /// asserting at every step that each is still `running`; their records at that point.
    pub async fn until_running(
        &self,
        via: usize,
        members: &[usize],
        what: &str,
        mut check: impl FnMut(usize, &[Record]) -> bool,
    ) -> Vec<Vec<Record>> {
        let mut out = Vec::new();
        for &i in members {
            let m = &self.members[i];
            out.push(
                until_running(&self.replicas[via], &m.id, what, |r| {
                    check(i, r).then(|| r.to_vec())
                })
                .await,
            );
        }
        out
    }

    /// Stops the sessions of `members` through replica `via`, each checked: its stream
    /// complete and its viewer's gap-free and duplicate-free to the end.
    pub async fn stop_and_check(&mut self, via: usize, members: &[usize]) {
        for &i in members {
            let m = &mut self.members[i];
            let stored = stop(&self.replicas[via], &m.id, &mut m.agent).await;
            self.check_member(i, &stored, true).await;
        }
    }

    /// Checks the stream of the session of `member` (`stored`: its records) and what its
    /// viewer saw, once the session has ended: both gap-free and duplicate-free; with
    /// `complete`, every line its OpenCode printed is stored and the viewer saw every record.
    pub async fn check_member(&mut self, member: usize, stored: &[Record], complete: bool) {
        let m = &mut self.members[member];
        check_stream(stored, &m.agent.printed(), complete);
        let viewed = m.viewer.take().expect("a viewer").finish().await;
        check_viewed(&m.id, &viewed, stored.len() as u64, complete);
        println!(
            "session {} (agent at replica {}, viewer at {}): {} records stored, {} seen by the viewer, once each in order; it reattached {} time(s) {:?}",
            m.id,
            m.home,
            m.viewer_at,
            stored.len(),
            viewed.seqs.len(),
            viewed.reattached.len(),
            viewed.reattached
        );
    }

    /// Ends the test: the processes, then the database.
    pub async fn finish(mut self) {
        let db = self.db.take();
        drop(self);
        if let Some(db) = db {
            db.drop_now().await;
        }
    }
}

/// The viewer printed records 1..=`last` (`complete`; else 1..=k for some k <= `last`), each
/// once, in order.
pub fn check_viewed(id: &str, viewed: &Viewed, last: u64, complete: bool) {
    let wrong = viewed
        .seqs
        .iter()
        .zip(1..)
        .position(|(&seq, want)| seq != want);
    let n = viewed.seqs.len() as u64;
    assert!(
        wrong.is_none() && (n == last || (!complete && n <= last)),
        "the viewer of {id} saw {n} records of 1..={last}, the first out of place at {:?}: {:?}; reattached {:?}",
        wrong,
        wrong.map(|w| &viewed.seqs[w.saturating_sub(2)..(w + 3).min(viewed.seqs.len())]),
        viewed.reattached
    );
}
