//! Agents that move: the real `kortix-agent` (with a stand-in OpenCode that prints numbered
//! lines, so every record can be counted) streaming to real `kortix server` processes.
//!
//! - three replicas on one PostgreSQL database and one data directory; the agent is given
//!   every agent URL; `kill -9` of the replica it streams to: it reconnects to another, the
//!   session stays `running` (and is stopped through a replica the agent may not be connected
//!   to), and the stored stream is gap-free, duplicate-free and complete. Prints the time from
//!   the kill to the agent streaming again.
//! - `kill -9` of the agent inside a live sandbox and a restart with the same environment and
//!   spool: it re-enrolls with its renewal secret and continues the same stream; the old
//!   secret is refused afterwards.
//! - a network cut between the agent (in its own network namespace, behind a veth pair) and
//!   its replica, longer than a few heartbeats and shorter than the heartbeat timeout: the
//!   stream continues without loss and the session is never failed.
//!
//! Needs `target/<profile>/kortix` and `kortix-agent` built (`scripts/test` builds them),
//! `python3`, PostgreSQL for the first test and `ip netns` (root) for the last; the last two
//! fail under `CI=true` when those are missing and say SKIPPED otherwise.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kortix_controlplane::sandbox::external::BootstrapFile;
use kortix_proto::v1::ReenrollRequest;
use kortix_proto::v1::agent_gateway_client::AgentGatewayClient;
use nix::sys::signal::Signal;
use serde_json::Value;
use support::server_process::{ServerProcess, free_addr};
use support::{built_binary, git_ok};

/// Generous for a loaded machine; each step normally takes a second or two.
const DEADLINE: Duration = Duration::from_secs(90);

/// `opencode serve` as far as the agent needs it, printing `tick <pid> <n>` every 20 ms from
/// the moment it listens, until SIGTERM; then it appends `<pid> <lines printed>` to
/// `$FAKE_OPENCODE_COUNTS`. It records its pid in `$FAKE_OPENCODE_PIDS` (for clean-up) and
/// exits when its output pipe breaks (its agent was killed).
const FAKE_OPENCODE: &str = r#"#!/usr/bin/env python3
import http.server, os, signal, sys, threading, time
port = int(sys.argv[sys.argv.index("--port") + 1])
pid = os.getpid()
with open(os.environ["FAKE_OPENCODE_PIDS"], "a") as f:
    f.write("%d\n" % pid)
stop = threading.Event()
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
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/session": return self.reply(200, b'{"id":"ses_fake"}')
        if self.path.endswith("/prompt_async"): return self.reply(204)
        self.reply(404)
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
print("opencode server listening on http://127.0.0.1:%d" % port, flush=True)
threading.Thread(target=tick, daemon=True).start()
server.serve_forever()
"#;

/// A repository to import: a manifest and an (unused) OpenCode config directory.
fn plain_repo(root: &Path) -> PathBuf {
    let repo = root.join("src");
    std::fs::create_dir_all(repo.join(".kortix/opencode")).unwrap();
    git_ok(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("kortix.toml"), "[project]\nname = \"app\"\n").unwrap();
    std::fs::write(repo.join(".kortix/opencode/opencode.json"), "{}\n").unwrap();
    git_ok(&repo, &["add", "-A"]);
    git_ok(&repo, &["commit", "-qm", "Initial commit"]);
    repo
}

/// Creates project `app` from a fresh repository and starts a session; returns its id.
fn start_session(server: &ServerProcess, root: &Path) -> String {
    let repo = plain_repo(root);
    server.json(&[
        "projects",
        "create",
        "app",
        "--import",
        repo.to_str().unwrap(),
    ]);
    let session = server.json(&["sessions", "new", "--project", "app", "--prompt", "go"]);
    session["id"].as_str().unwrap().to_string()
}

/// The environment the control plane handed the (external) sandbox of `id`.
fn bootstrap_env(data_dir: &Path, id: &str) -> BTreeMap<String, String> {
    let path = data_dir.join("bootstrap").join(format!("{id}.json"));
    let file: BootstrapFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    file.env
}

/// The real `kortix-agent` of one session, run by the test as its sandbox would run it.
/// Dropping it kills the agent and the stand-in OpenCodes it started.
struct Agent {
    child: Option<Child>,
    env: Vec<(String, String)>,
    netns: Option<String>,
    pids: PathBuf,
    pub counts: PathBuf,
    pub spool: PathBuf,
    log: PathBuf,
}

impl Agent {
    fn new(root: &Path, bootstrap: BTreeMap<String, String>, netns: Option<String>) -> Agent {
        let dir = root.join("sandbox");
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let fake = dir.join("fake-opencode");
        std::fs::write(&fake, FAKE_OPENCODE).unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let spool = dir.join("spool");
        let pids = dir.join("opencode.pids");
        let counts = dir.join("opencode.counts");
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
        ]);
        let mut agent = Agent {
            child: None,
            env,
            netns,
            pids,
            counts,
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

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// `kill -9` and wait for it; its stand-in OpenCode dies of the broken pipe.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Started again with the same environment and spool.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "the agent still runs");
        self.spawn();
    }

    /// Waits for the agent to exit on its own.
    async fn wait_exit(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("running");
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the agent did not exit within {within:?}: {}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = None;
    }

    fn renewal_secret(&self, session: &str) -> String {
        std::fs::read_to_string(self.secret_path(session)).expect("the renewal secret file")
    }

    fn secret_path(&self, session: &str) -> PathBuf {
        self.spool
            .join("sessions")
            .join(session)
            .join(kortix_agent::renewal::FILE_NAME)
    }

    /// Lines printed by each stand-in OpenCode that was stopped with SIGTERM.
    fn printed(&self) -> BTreeMap<u32, u64> {
        std::fs::read_to_string(&self.counts)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (pid, n) = l.split_once(' ')?;
                Some((pid.parse().ok()?, n.parse().ok()?))
            })
            .collect()
    }

    fn log_tail(&self) -> String {
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

fn status(server: &ServerProcess, id: &str) -> String {
    server.json(&["sessions", "info", id])["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The `tick` lines among the records, per stand-in OpenCode, in stream order.
fn ticks(records: &[Value]) -> BTreeMap<u32, Vec<u64>> {
    let mut out: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for r in records {
        if r["kind"] != "log" || r["data"]["stream"] != "stdout" {
            continue;
        }
        let line = r["data"]["line"].as_str().unwrap_or_default();
        let mut parts = line.split_whitespace();
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

fn tick_count(records: &[Value]) -> usize {
    ticks(records).values().map(Vec::len).sum()
}

fn phases(records: &[Value]) -> Vec<(String, String)> {
    records
        .iter()
        .filter(|r| r["kind"] == "state")
        .map(|r| {
            (
                r["data"]["phase"].as_str().unwrap_or_default().to_string(),
                r["data"]["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn record_ms(r: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(r["ts"].as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

fn unix_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The stored stream is gap-free and duplicate-free (seq 1..=N), every stand-in OpenCode's
/// lines arrived in order with none missing or repeated (a prefix of what it printed, all of
/// it for those stopped with SIGTERM), and the agent's final report is the last record.
fn check_stream(records: &[Value], printed: &BTreeMap<u32, u64>) {
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
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
        if let Some(&n) = printed.get(&pid) {
            assert_eq!(
                ns.len() as u64,
                n,
                "every line OpenCode {pid} printed before its stop is stored"
            );
        }
    }
    let last = records.last().unwrap();
    assert_eq!(last["kind"], "state", "{last}");
    assert_eq!(last["data"]["phase"], "stopped", "{last}");
}

/// Polls the stored records through `server` until `check` holds, asserting at every step
/// that the session is still `running`.
async fn until_running<T>(
    server: &ServerProcess,
    id: &str,
    what: &str,
    within: Duration,
    mut check: impl FnMut(&[Value]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let records = server.records(id);
        let s = status(server, id);
        assert!(
            s == "running" || s == "provisioning",
            "the session is {s} while waiting for {what}: {:?}",
            phases(&records)
        );
        if s == "running"
            && let Some(v) = check(&records)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; phases: {:?}",
            phases(&records)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops the session through `server` and waits for the agent's final report.
async fn stop(server: &ServerProcess, id: &str, agent: &mut Agent) -> Vec<Value> {
    server.json(&["sessions", "stop", id]);
    agent.wait_exit(DEADLINE).await;
    let ended = support::eventually("the session to end", DEADLINE, || async {
        let s = status(server, id);
        (s != "stopping" && s != "running").then_some(s)
    })
    .await;
    assert_eq!(ended, "stopped");
    server.records(id)
}

/// Agent URL of a replica.
fn agent_url(server: &ServerProcess) -> String {
    format!("https://{}", server.agent)
}

/// The gateway URL the agent streams to now: the last `enrolled`/`re-enrolled` ("… via
/// URL") or `reconnected` (URL) state record.
fn current_gateway(records: &[Value]) -> Option<String> {
    phases(records)
        .into_iter()
        .rev()
        .find_map(|(phase, reason)| match phase.as_str() {
            "reconnected" => Some(reason),
            "enrolled" | "re-enrolled" => reason.rsplit_once(" via ").map(|(_, u)| u.to_string()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_moves_to_another_replica_when_its_replica_is_killed() {
    let Some(db) = kortix_tests::pg::Database::create().await else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("kortix");
    // Three replicas: the agent moves on to whichever of the two others answers next.
    let addrs: Vec<(SocketAddr, SocketAddr)> = (0..3).map(|_| (free_addr(), free_addr())).collect();
    let urls = addrs
        .iter()
        .map(|(_, a)| format!("https://{a}"))
        .collect::<Vec<_>>()
        .join(",");
    let args = [
        "--sandbox",
        "external",
        "--database-url",
        &db.url,
        "--agent-url",
        &urls,
        "--heartbeat-timeout-secs",
        "20",
    ];
    // The first replica creates the data directory (CA, keys); the second shares it.
    let mut replicas = Vec::new();
    for (i, (public, agent)) in addrs.iter().enumerate() {
        let mut r = ServerProcess::start_replica(
            root.path(),
            &format!("replica-{i}"),
            &data,
            *public,
            *agent,
            &args,
        );
        r.wait_ready().await;
        replicas.push(r);
    }
    let id = start_session(&replicas[0], root.path());
    let env = bootstrap_env(&data, &id);
    assert_eq!(
        env["KORTIX_CONTROL_PLANE"], urls,
        "sandboxes get every replica"
    );
    let mut agent = Agent::new(root.path(), env, None);

    let (first, before) = until_running(&replicas[0], &id, "records to flow", DEADLINE, |r| {
        (tick_count(r) >= 50)
            .then(|| current_gateway(r))
            .flatten()
            .map(|g| (g, r.len()))
    })
    .await;
    let dead = replicas
        .iter()
        .position(|r| agent_url(r) == first)
        .unwrap_or_else(|| panic!("the agent streams to {first}, no replica of ours"));
    let survivor_urls: Vec<String> = replicas
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != dead)
        .map(|(_, r)| agent_url(r))
        .collect();

    let killed_ms = unix_ms();
    replicas[dead].signal(Signal::SIGKILL);
    replicas[dead].wait_exit(Duration::from_secs(10)).await;
    // Any replica reads the one store; the agent's `reconnected` record names where it went.
    let survivor = &replicas[usize::from(dead == 0)];
    let reconnected_ms = until_running(
        survivor,
        &id,
        "the agent on another replica",
        DEADLINE,
        |r| {
            r.iter()
                .find(|x| {
                    x["kind"] == "state"
                        && x["data"]["phase"] == "reconnected"
                        && x["data"]["reason"]
                            .as_str()
                            .is_some_and(|u| survivor_urls.iter().any(|s| s == u))
                })
                .map(record_ms)
        },
    )
    .await;
    let failover = reconnected_ms - killed_ms;
    println!(
        "failover: {failover} ms from kill -9 of the agent's replica to the agent streaming to another"
    );
    // Records keep flowing through the survivor, and the session stays running meanwhile.
    until_running(survivor, &id, "records after the failover", DEADLINE, |r| {
        (r.len() >= before + 100).then_some(())
    })
    .await;
    let records = stop(survivor, &id, &mut agent).await;
    check_stream(&records, &agent.printed());
    assert!(
        failover < 15_000,
        "failover took {failover} ms (the goal is 5 s)"
    );
    drop(agent);
    drop(replicas);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_re_enrolls_with_its_renewal_secret_and_continues_the_stream() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("kortix");
    let mut server = ServerProcess::start_replica(
        root.path(),
        "server",
        &data,
        free_addr(),
        free_addr(),
        &["--sandbox", "external", "--heartbeat-timeout-secs", "20"],
    );
    server.wait_ready().await;
    let id = start_session(&server, root.path());
    let env = bootstrap_env(&data, &id);
    let ca_pem = env["KORTIX_CA_CERT"].clone();
    let mut agent = Agent::new(root.path(), env, None);
    until_running(&server, &id, "records to flow", DEADLINE, |r| {
        (tick_count(r) >= 30).then_some(())
    })
    .await;
    let old_secret = agent.renewal_secret(&id);
    let mode = std::fs::metadata(agent.secret_path(&id))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600,
        "only the agent may read its renewal secret"
    );

    let first_pid = agent.pid();
    agent.kill9();
    assert!(!Path::new(&format!("/proc/{first_pid}")).exists());
    agent.restart();
    let before_restart = until_running(&server, &id, "the restarted agent", DEADLINE, |r| {
        phases(r)
            .iter()
            .any(|(p, _)| p == "re-enrolled")
            .then(|| ticks(r).len())
    })
    .await;
    assert!(before_restart >= 1);
    // The restarted agent's OpenCode streams too, on the same session stream.
    until_running(
        &server,
        &id,
        "records of the restarted agent",
        DEADLINE,
        |r| {
            let t = ticks(r);
            (t.len() >= 2 && t.values().last().is_some_and(|v| v.len() >= 30)).then_some(())
        },
    )
    .await;
    let new_secret = agent.renewal_secret(&id);
    assert_ne!(new_secret, old_secret, "re-enrollment rotates the secret");

    // The old secret is single-use: refused now, and refusing it changes nothing.
    let channel = kortix_bench::sim_agent::enrollment_channel(&agent_url(&server), &ca_pem)
        .await
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let refused = AgentGatewayClient::new(channel)
        .reenroll(ReenrollRequest {
            session_id: id.clone(),
            renewal_secret: old_secret,
            csr_der: csr.der().to_vec(),
            protocol_version: kortix_proto::PROTOCOL_VERSION,
            agent_version: "test".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("already used"),
        "a clear message: {refused:?}"
    );
    assert_eq!(status(&server, &id), "running");

    let records = stop(&server, &id, &mut agent).await;
    check_stream(&records, &agent.printed());
    let audit = server.json(&["audit", "ls", "--project", "app"]);
    assert!(
        audit
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["action"] == "session.agent_reenroll")),
        "the re-enrollment is audited: {audit}"
    );
}

/// A network namespace with a veth pair to the host; removed on drop.
struct NetNs {
    name: String,
    host_if: String,
    agent_if: String,
    host_ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetNs {
    fn create() -> Result<NetNs, String> {
        let n = std::process::id() % 60_000;
        let (a, b) = ((n / 250) % 250, n % 250);
        let ns = NetNs {
            name: format!("kxt{n}"),
            host_if: format!("kxh{n}"),
            agent_if: format!("kxa{n}"),
            host_ip: Ipv4Addr::new(10, 200 + (a % 50) as u8, b as u8, 1),
        };
        let agent_ip = Ipv4Addr::new(10, 200 + (a % 50) as u8, b as u8, 2);
        let peer = ns.agent_if.clone();
        ip(&["netns", "add", &ns.name])?;
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_if,
        ])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{agent_ip}/30"), "dev", &peer])?;
        inside(&["link", "set", &peer, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The agent's side of the link, down or up: its network is cut, the host's is not.
    fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&[
            "netns",
            "exec",
            &self.name,
            "ip",
            "link",
            "set",
            &self.agent_if,
            state,
        ])
        .unwrap();
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_cut_shorter_than_the_heartbeat_timeout_loses_nothing() {
    let ns = match NetNs::create() {
        Ok(ns) => ns,
        Err(e) => {
            kortix_tests::require::unavailable("network namespaces (ip netns, as root)", &e);
            return;
        }
    };
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("kortix");
    // Listening everywhere: the test talks to the server on loopback, the agent (in its
    // namespace) at the host's end of the veth pair.
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let (public, agent_addr) = (
        SocketAddr::new(any, free_addr().port()),
        SocketAddr::new(any, free_addr().port()),
    );
    let heartbeat_timeout = 30u64;
    let public_url = format!("http://{}:{}", ns.host_ip, public.port());
    let agent_url = format!("https://{}:{}", ns.host_ip, agent_addr.port());
    let mut server = ServerProcess::start_replica(
        root.path(),
        "server",
        &data,
        public,
        agent_addr,
        &[
            "--sandbox",
            "external",
            "--public-url",
            &public_url,
            "--agent-url",
            &agent_url,
            "--heartbeat-timeout-secs",
            &heartbeat_timeout.to_string(),
        ],
    );
    server.wait_ready().await;
    let id = start_session(&server, root.path());
    let env = bootstrap_env(&data, &id);
    let mut agent = Agent::new(root.path(), env, Some(ns.name.clone()));
    let before = until_running(&server, &id, "records to flow", DEADLINE, |r| {
        (tick_count(r) >= 30).then_some(tick_count(r))
    })
    .await;

    // Down for longer than a few heartbeats (1 s), well within the heartbeat timeout.
    let cut = Duration::from_secs(8);
    ns.link(false);
    let down = Instant::now();
    let mut stalled_at = None;
    while down.elapsed() < cut {
        let s = status(&server, &id);
        assert_eq!(s, "running", "the session while the link is down");
        if stalled_at.is_none() && down.elapsed() >= Duration::from_secs(2) {
            stalled_at = Some(tick_count(&server.records(&id)));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The cut is real: nothing arrived in its last seconds (the stand-in printed ~300 lines).
    let during = tick_count(&server.records(&id)) - stalled_at.expect("sampled during the cut");
    assert!(during < 50, "{during} lines arrived through the cut");
    ns.link(true);
    until_running(&server, &id, "records after the cut", DEADLINE, |r| {
        // The stand-in printed ~50 lines a second throughout: all of them arrive.
        (tick_count(r) >= before + 50 * cut.as_secs() as usize + 50).then_some(())
    })
    .await;
    assert!(
        down.elapsed() < Duration::from_secs(heartbeat_timeout * 3),
        "the stream took {:?} to recover",
        down.elapsed()
    );
    let records = stop(&server, &id, &mut agent).await;
    check_stream(&records, &agent.printed());
    assert!(
        !phases(&records).iter().any(|(p, _)| p == "failed"),
        "never failed"
    );
}
