//! Keeps one `opencode serve` running for the session: start, readiness, event subscription,
//! OpenCode session, prompt delivery, restart on crash with backoff, give up on a crash loop,
//! restart at a quiet moment when secrets change, and stop.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::Method;
use http_body_util::BodyExt;
use kortix_proto::v1::SessionStatus;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::Liveness;
use super::child::{Launch, OpencodeProcess};
use super::health::HealthChecks;
use super::http::{Client, HttpError};
use super::sse::{SseItem, SseParser};
use crate::backoff::Backoff;
use crate::process::{Exit, Reaper};
use crate::records::RecordSink;

#[derive(Clone, Debug)]
pub struct RestartPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// More crashes than this within `window` fail the session.
    pub max_crashes: usize,
    pub window: Duration,
    /// Ready this long, a server counts as healthy again and the backoff starts over (a
    /// server that never became ready never counts, however long it ran).
    pub stable_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_crashes: 5,
            window: Duration::from_secs(300),
            stable_after: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    pub bin: PathBuf,
    pub workspace: PathBuf,
    /// Absolute path given to OpenCode as `OPENCODE_CONFIG_DIR`.
    pub config_dir: PathBuf,
    /// Default OpenCode agent for prompts that name none (empty: OpenCode's default).
    pub agent: String,
    /// Environment for OpenCode before secrets are added.
    pub base_env: BTreeMap<String, String>,
    pub ready_timeout: Duration,
    pub stop_grace: Duration,
    /// A secrets update restarts OpenCode once it has been idle this long.
    pub quiet_period: Duration,
    pub restart: RestartPolicy,
    /// Shared with heartbeats.
    pub liveness: Arc<Liveness>,
    /// When the agent started and how much of that was spent cloning: the first spawn logs
    /// the agent's own boot overhead.
    pub boot: Option<(Instant, Duration)>,
    /// OpenCode must have been ready once by then, or the session fails with its last output
    /// as the reason (restarts included). `None`: no deadline beyond the crash-loop limit.
    pub ready_by: Option<Instant>,
    /// A conversation saved by an earlier sandbox of this session, imported into OpenCode
    /// (`opencode import`) before its server first starts; prompts then continue in it.
    pub import: Option<Import>,
}

/// A saved conversation to import: OpenCode's export JSON in `file`, of OpenCode session
/// `session_id`.
#[derive(Clone, Debug)]
pub struct Import {
    pub file: PathBuf,
    pub session_id: String,
}

/// A conversation as OpenCode's `export` writes it: `{"info": …, "messages": [{info, parts}]}`.
#[derive(Clone, Debug)]
pub struct Export {
    pub session_id: String,
    pub json: Vec<u8>,
}

impl SupervisorConfig {
    pub fn new(bin: PathBuf, workspace: PathBuf, config_dir: PathBuf) -> Self {
        SupervisorConfig {
            bin,
            workspace,
            config_dir,
            agent: String::new(),
            base_env: BTreeMap::new(),
            ready_timeout: Duration::from_secs(90),
            stop_grace: Duration::from_secs(5),
            quiet_period: Duration::from_secs(2),
            restart: RestartPolicy::default(),
            liveness: Arc::new(Liveness::new()),
            boot: None,
            ready_by: None,
            import: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptRequest {
    pub id: String,
    pub text: String,
    pub agent: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SupervisorState {
    Starting,
    Ready {
        session_id: String,
        port: u16,
        pid: u32,
    },
    Restarting {
        reason: String,
    },
    Failed {
        reason: String,
    },
    Stopped,
}

enum Cmd {
    Prompt(PromptRequest),
    Secrets(BTreeMap<String, String>),
    Stop {
        grace: Duration,
        reply: oneshot::Sender<Option<Exit>>,
    },
    Export {
        timeout: Duration,
        reply: oneshot::Sender<Result<Export, String>>,
    },
}

/// Handle to the supervising task.
pub struct Supervisor {
    tx: mpsc::Sender<Cmd>,
    state: watch::Receiver<SupervisorState>,
    liveness: Arc<Liveness>,
    task: JoinHandle<()>,
}

impl Supervisor {
    pub fn start(
        cfg: SupervisorConfig,
        reaper: Reaper,
        sink: RecordSink,
        secrets: BTreeMap<String, String>,
    ) -> Supervisor {
        let (tx, rx) = mpsc::channel(64);
        let (state_tx, state) = watch::channel(SupervisorState::Starting);
        let liveness = cfg.liveness.clone();
        let deadline_secs = cfg_deadline_secs(&cfg);
        let task = Task {
            cfg,
            reaper,
            sink,
            secrets,
            rx,
            state: state_tx,
            liveness: liveness.clone(),
            queue: VecDeque::new(),
            session_id: None,
            crashes: VecDeque::new(),
            ever_ready: false,
            password: server_password(),
            deadline_secs,
        };
        Supervisor {
            tx,
            state,
            liveness,
            task: tokio::spawn(task.run()),
        }
    }

    pub fn state(&self) -> watch::Receiver<SupervisorState> {
        self.state.clone()
    }

    pub fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }

    /// Queues a prompt; it is delivered as soon as OpenCode is ready.
    pub async fn prompt(&self, prompt: PromptRequest) -> bool {
        self.tx.send(Cmd::Prompt(prompt)).await.is_ok()
    }

    pub async fn set_secrets(&self, secrets: BTreeMap<String, String>) -> bool {
        self.tx.send(Cmd::Secrets(secrets)).await.is_ok()
    }

    /// The conversation so far, as OpenCode's own export has it, after aborting a turn still
    /// in flight (the session is ending). An error says why there is none.
    pub async fn export(&self, timeout: Duration) -> Result<Export, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Export { timeout, reply })
            .await
            .map_err(|_| "the opencode supervisor has ended".to_string())?;
        match tokio::time::timeout(timeout + Duration::from_secs(1), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the opencode supervisor has ended".into()),
            Err(_) => Err(format!("no export within {timeout:?}")),
        }
    }

    /// Stops OpenCode (SIGTERM to its group, `grace`, SIGKILL) and ends supervision.
    pub async fn stop(self, grace: Duration) -> Option<Exit> {
        let (reply, rx) = oneshot::channel();
        let exit = if self.tx.send(Cmd::Stop { grace, reply }).await.is_ok() {
            rx.await.ok().flatten()
        } else {
            None
        };
        let _ = self.task.await;
        exit
    }
}

struct Task {
    cfg: SupervisorConfig,
    reaper: Reaper,
    sink: RecordSink,
    secrets: BTreeMap<String, String>,
    rx: mpsc::Receiver<Cmd>,
    state: watch::Sender<SupervisorState>,
    liveness: Arc<Liveness>,
    queue: VecDeque<PromptRequest>,
    session_id: Option<String>,
    crashes: VecDeque<Instant>,
    /// Whether any OpenCode of this session has been ready (the start deadline is met).
    ever_ready: bool,
    /// Given to OpenCode's server (`OPENCODE_SERVER_PASSWORD`); only the agent knows it.
    password: String,
    /// The start deadline in seconds from the agent's start, for the failure reason.
    deadline_secs: u64,
}

/// Seconds from the agent's start to `ready_by` (0 when either is unknown).
fn cfg_deadline_secs(cfg: &SupervisorConfig) -> u64 {
    cfg.boot
        .map(|(start, _)| start)
        .zip(cfg.ready_by)
        .map_or(0, |(start, by)| {
            by.saturating_duration_since(start).as_secs()
        })
}

/// Prompts waiting for OpenCode; more are refused with a record rather than held unbounded.
const MAX_QUEUED_PROMPTS: usize = 256;
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why one OpenCode instance ended.
enum Ended {
    Crashed(String),
    /// Restart on purpose (new secrets); not a crash.
    Restart,
    Stopped,
    /// The start deadline passed before OpenCode was ever ready: no restart can help.
    NeverReady(String),
}

/// How one OpenCode instance went: why it ended, and when it had become ready.
struct Run {
    ended: Ended,
    ready_at: Option<Instant>,
}

/// A random password for OpenCode's server, fresh for every agent.
fn server_password() -> String {
    let mut buf = [0u8; 24];
    if aws_lc_rs::rand::fill(&mut buf).is_err() {
        // Without a system RNG there is no secret to be had; keep the jitter source's value.
        buf[..8].copy_from_slice(&crate::backoff::random_u64().to_le_bytes());
    }
    hex::encode(buf)
}

impl Task {
    async fn run(mut self) {
        if let Some(import) = self.cfg.import.take() {
            self.import(&import).await;
        }
        let mut backoff = Backoff::new(self.cfg.restart.base, self.cfg.restart.cap);
        loop {
            let Run { ended, ready_at } = self.run_once().await;
            self.liveness.alive.store(false, Ordering::Relaxed);
            let ended = match ended {
                Ended::Crashed(reason) if self.start_deadline_passed() => Ended::NeverReady(reason),
                other => other,
            };
            match ended {
                Ended::NeverReady(reason) => {
                    let reason = format!(
                        "opencode did not become ready within {} s of the agent's start; {reason}",
                        self.deadline_secs
                    );
                    self.sink.agent(&reason);
                    self.state.send_replace(SupervisorState::Failed { reason });
                    self.drain_until_stop().await;
                    return;
                }
                Ended::Stopped => {
                    self.state.send_replace(SupervisorState::Stopped);
                    return;
                }
                Ended::Restart => {
                    self.sink.state(
                        SessionStatus::Running,
                        "opencode-restarting",
                        "secrets changed",
                    );
                    continue;
                }
                Ended::Crashed(reason) => {
                    if ready_at.is_some_and(|t| t.elapsed() >= self.cfg.restart.stable_after) {
                        backoff.reset();
                    }
                    let now = Instant::now();
                    self.crashes.push_back(now);
                    while self
                        .crashes
                        .front()
                        .is_some_and(|t| now.duration_since(*t) > self.cfg.restart.window)
                    {
                        self.crashes.pop_front();
                    }
                    self.liveness.restarts.fetch_add(1, Ordering::Relaxed);
                    if self.crashes.len() > self.cfg.restart.max_crashes {
                        let reason = format!(
                            "opencode crashed {} times within {}s; last: {reason}",
                            self.crashes.len(),
                            self.cfg.restart.window.as_secs()
                        );
                        self.sink.agent(&reason);
                        self.state.send_replace(SupervisorState::Failed { reason });
                        self.drain_until_stop().await;
                        return;
                    }
                    let delay = backoff.next_delay();
                    self.sink.agent(format!(
                        "opencode ended: {reason}; restarting in {} ms",
                        delay.as_millis()
                    ));
                    self.sink.state(
                        SessionStatus::Running,
                        "opencode-restarting",
                        reason.clone(),
                    );
                    self.state
                        .send_replace(SupervisorState::Restarting { reason });
                    let delay = match (self.ever_ready, self.cfg.ready_by) {
                        (false, Some(by)) => {
                            delay.min(by.saturating_duration_since(Instant::now()))
                        }
                        _ => delay,
                    };
                    if !self.sleep_handling_commands(delay).await {
                        self.state.send_replace(SupervisorState::Stopped);
                        return;
                    }
                }
            }
        }
    }

    /// `opencode import` of a saved conversation, with OpenCode's own environment, before
    /// its server starts; on success the prompts continue in the imported session. A failure
    /// is recorded and OpenCode starts a fresh conversation.
    async fn import(&mut self, import: &Import) {
        let mut env = self.env();
        env.remove("OPENCODE_SERVER_PASSWORD");
        let mut cmd = std::process::Command::new(&self.cfg.bin);
        cmd.arg("import")
            .arg(&import.file)
            .current_dir(&self.cfg.workspace)
            .env_clear()
            .envs(&env);
        let bytes = std::fs::metadata(&import.file).map_or(0, |m| m.len());
        match self.reaper.output(&mut cmd, IMPORT_TIMEOUT).await {
            Ok(out) if out.exit.success() => {
                self.session_id = Some(import.session_id.clone());
                self.sink.state(
                    SessionStatus::Resuming,
                    "conversation-restored",
                    format!(
                        "imported the saved conversation ({bytes} bytes) into OpenCode session {}",
                        import.session_id
                    ),
                );
            }
            Ok(out) => self.sink.agent(format!(
                "the saved conversation could not be imported (opencode import exited {}: {}); OpenCode starts a fresh one",
                out.exit,
                last_lines(&out.stderr, &out.stdout)
            )),
            Err(e) => self.sink.agent(format!(
                "the saved conversation could not be imported ({e}); OpenCode starts a fresh one"
            )),
        }
        let _ = std::fs::remove_file(&import.file);
    }

    fn start_deadline_passed(&self) -> bool {
        !self.ever_ready && self.cfg.ready_by.is_some_and(|by| Instant::now() >= by)
    }

    /// After giving up: keep answering commands (a stop must still be acknowledged).
    async fn drain_until_stop(&mut self) {
        while let Some(cmd) = self.rx.recv().await {
            match cmd {
                Cmd::Stop { reply, .. } => {
                    let _ = reply.send(None);
                    return;
                }
                Cmd::Prompt(p) => self.sink.agent(format!(
                    "prompt {} not delivered: opencode has failed",
                    p.id
                )),
                Cmd::Secrets(s) => self.secrets = s,
                Cmd::Export { reply, .. } => {
                    let _ = reply.send(Err("opencode has failed".into()));
                }
            }
        }
    }

    /// Returns false when told to stop while waiting.
    async fn sleep_handling_commands(&mut self, delay: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return true,
                cmd = self.rx.recv() => match cmd {
                    None => return false,
                    Some(Cmd::Stop { reply, .. }) => {
                        let _ = reply.send(None);
                        return false;
                    }
                    Some(Cmd::Prompt(p)) => self.enqueue(p),
                    Some(Cmd::Secrets(s)) => self.secrets = s,
                    Some(Cmd::Export { reply, .. }) => {
                        let _ = reply.send(Err("opencode is restarting".into()));
                    }
                }
            }
        }
    }

    fn enqueue(&mut self, p: PromptRequest) {
        if self.queue.len() >= MAX_QUEUED_PROMPTS {
            self.sink.agent(format!(
                "prompt {} dropped: {MAX_QUEUED_PROMPTS} prompts already wait for opencode",
                p.id
            ));
            return;
        }
        self.queue.push_back(p);
        // A prompt waiting for OpenCode (still starting, or restarting) is work in flight:
        // idle hibernation must not take the sandbox before it is even delivered.
        self.liveness.touch();
        self.liveness.busy.store(true, Ordering::Relaxed);
    }

    fn env(&self) -> BTreeMap<String, String> {
        let mut env = self.cfg.base_env.clone();
        for (k, v) in &self.secrets {
            env.insert(k.clone(), v.clone());
        }
        env.insert(
            "OPENCODE_CONFIG_DIR".into(),
            self.cfg.config_dir.display().to_string(),
        );
        env.insert("OPENCODE_SERVER_PASSWORD".into(), self.password.clone());
        env.remove("OPENCODE_SERVER_USERNAME");
        env
    }

    async fn run_once(&mut self) -> Run {
        let mut ready_at = None;
        let ended = self.run_instance(&mut ready_at).await;
        Run { ended, ready_at }
    }

    async fn run_instance(&mut self, ready_at: &mut Option<Instant>) -> Ended {
        let t0 = Instant::now();
        let port = match free_port() {
            Ok(p) => p,
            Err(e) => return Ended::Crashed(format!("no free loopback port: {e}")),
        };
        self.state.send_replace(SupervisorState::Starting);
        self.sink
            .state(SessionStatus::Running, "opencode-starting", "");
        let env = self.env();
        let launch = Launch {
            bin: &self.cfg.bin,
            workspace: &self.cfg.workspace,
            env: &env,
            port,
        };
        let mut proc =
            match OpencodeProcess::spawn(&self.reaper, launch, &self.sink, &self.liveness) {
                Ok(p) => p,
                Err(e) => {
                    return Ended::Crashed(format!("cannot start {}: {e}", self.cfg.bin.display()));
                }
            };
        if let Some((agent_start, excluded)) = self.cfg.boot.take() {
            let total = agent_start.elapsed();
            self.sink.agent(format!(
                "timing: opencode spawned (pid {}) {} us after agent start, {} us excluding {} ms of clone",
                proc.pid(),
                total.as_micros(),
                total.saturating_sub(excluded).as_micros(),
                excluded.as_millis()
            ));
        } else {
            self.sink.agent(format!(
                "opencode spawned (pid {}, port {port})",
                proc.pid()
            ));
        }
        self.liveness.alive.store(true, Ordering::Relaxed);
        let client = Client::with_password(port, &self.password);

        match self.wait_healthy(&mut proc, &client).await {
            Ok(()) => {}
            Err(ended) => return self.finish(&mut proc, ended).await,
        }
        let sse = match self.subscribe(&client).await {
            Ok(task) => task,
            Err(e) => {
                return self
                    .finish(
                        &mut proc,
                        Ended::Crashed(format!("subscribing to /event: {e}")),
                    )
                    .await;
            }
        };
        let session_id = match self.ensure_session(&client).await {
            Ok(id) => id,
            Err(e) => {
                sse.abort();
                return self
                    .finish(
                        &mut proc,
                        Ended::Crashed(format!("creating the opencode session: {e}")),
                    )
                    .await;
            }
        };
        self.sink.agent(format!(
            "opencode ready in {} ms (session {session_id})",
            t0.elapsed().as_millis()
        ));
        self.sink
            .state(SessionStatus::Running, "opencode-ready", session_id.clone());
        self.state.send_replace(SupervisorState::Ready {
            session_id: session_id.clone(),
            port,
            pid: proc.pid(),
        });
        self.ever_ready = true;
        *ready_at = Some(Instant::now());

        let mut restart_pending = false;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let ended = loop {
            while let Some(p) = self.queue.pop_front() {
                if let Err(e) = self.deliver(&client, &session_id, &p).await {
                    let retry = matches!(e, HttpError::Connect { .. } | HttpError::Timeout { .. });
                    self.sink
                        .agent(format!("prompt {} not delivered: {e}", p.id));
                    if retry {
                        self.queue.push_front(p);
                        break;
                    }
                    if self.queue.is_empty() {
                        // Dropped for good: nothing is in flight because of it.
                        self.liveness.busy.store(false, Ordering::Relaxed);
                    }
                }
            }
            tokio::select! {
                exit = proc.child.wait() => break Ended::Crashed(format!("opencode exited ({exit})")),
                cmd = self.rx.recv() => match cmd {
                    None => break Ended::Stopped,
                    Some(Cmd::Prompt(p)) => self.enqueue(p),
                    Some(Cmd::Secrets(s)) => {
                        if s != self.secrets {
                            self.secrets = s;
                            restart_pending = true;
                        }
                    }
                    Some(Cmd::Export { timeout, reply }) => {
                        let busy = self.liveness.busy.load(Ordering::Relaxed);
                        let _ = reply.send(export(&client, &session_id, timeout, busy).await);
                    }
                    Some(Cmd::Stop { grace, reply }) => {
                        sse.abort();
                        let exit = proc.stop(grace).await;
                        self.sink.state(SessionStatus::Stopping, "opencode-stopped", stop_note(exit));
                        let _ = reply.send(Some(exit));
                        return Ended::Stopped;
                    }
                },
                _ = tick.tick() => {
                    if restart_pending
                        && !self.liveness.busy.load(Ordering::Relaxed)
                        && self.liveness.idle() >= self.cfg.quiet_period
                    {
                        break Ended::Restart;
                    }
                }
            }
        };
        sse.abort();
        self.finish(&mut proc, ended).await
    }

    /// Clears the process group, and for a crash adds the stderr tail to the reason.
    async fn finish(&mut self, proc: &mut OpencodeProcess, ended: Ended) -> Ended {
        let grace = match ended {
            Ended::Restart => self.cfg.stop_grace,
            _ => Duration::ZERO,
        };
        proc.stop(grace).await;
        match ended {
            Ended::Crashed(reason) => Ended::Crashed(with_tail(reason, proc)),
            Ended::NeverReady(reason) => Ended::NeverReady(with_tail(reason, proc)),
            other => other,
        }
    }

    async fn wait_healthy(
        &mut self,
        proc: &mut OpencodeProcess,
        client: &Client,
    ) -> Result<(), Ended> {
        let mut deadline = tokio::time::Instant::now() + self.cfg.ready_timeout;
        let mut gives_up = false;
        if let Some(by) = self.cfg.ready_by.filter(|_| !self.ever_ready) {
            let by = tokio::time::Instant::from_std(by);
            if by < deadline {
                (deadline, gives_up) = (by, true);
            }
        }
        // OpenCode says when it listens (`listening`); polling with a short backoff covers a
        // release that says it differently, or not at all. Checks run side by side
        // (`HealthChecks`): one sent just before OpenCode serves is never answered.
        let mut delay = HEALTH_POLL_FIRST;
        let mut next_poll = tokio::time::Instant::now() + delay;
        let listening = proc.listening.clone();
        let mut checks = HealthChecks::new(client);
        loop {
            tokio::select! {
                exit = proc.child.wait() => return Err(Ended::Crashed(format!("opencode exited before it was ready ({exit})"))),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(if gives_up {
                        Ended::NeverReady("its health endpoint never answered".into())
                    } else {
                        Ended::Crashed(format!("opencode was not healthy within {}s", self.cfg.ready_timeout.as_secs()))
                    });
                }
                cmd = self.rx.recv() => match cmd {
                    None => return Err(Ended::Stopped),
                    Some(Cmd::Stop { grace, reply }) => {
                        let exit = proc.stop(grace).await;
                        let _ = reply.send(Some(exit));
                        return Err(Ended::Stopped);
                    }
                    Some(Cmd::Prompt(p)) => self.enqueue(p),
                    Some(Cmd::Secrets(s)) => self.secrets = s,
                    Some(Cmd::Export { reply, .. }) => {
                        let _ = reply.send(Err("opencode is still starting".into()));
                    }
                },
                _ = checks.any_healthy() => return Ok(()),
                _ = listening.notified() => checks.start(),
                _ = tokio::time::sleep_until(next_poll) => {
                    checks.start();
                    delay = (delay * 2).min(HEALTH_POLL_MAX);
                    next_poll = tokio::time::Instant::now() + delay;
                }
            }
        }
    }

    /// Opens `GET /event` and waits for OpenCode's `server.connected` greeting, so no event
    /// caused by what we send next can be missed.
    async fn subscribe(&self, client: &Client) -> Result<JoinHandle<()>, String> {
        let mut body = client
            .stream("/event", Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        let mut parser = SseParser::new();
        let mut items = Vec::new();
        let greeting = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            parser.feed(data, &mut items);
                            if !items.is_empty() {
                                return Ok(());
                            }
                        }
                    }
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("event stream ended before its first event".to_owned()),
                }
            }
        })
        .await
        .map_err(|_| "no event within 10s".to_owned())?;
        greeting?;
        let sink = self.sink.clone();
        let liveness = self.liveness.clone();
        Ok(tokio::spawn(async move {
            let mut seen = 0u64;
            for item in items.drain(..) {
                handle_sse(&sink, &liveness, item, &mut seen);
            }
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    parser.feed(data, &mut items);
                    for item in items.drain(..) {
                        handle_sse(&sink, &liveness, item, &mut seen);
                    }
                }
            }
            sink.agent(format!("opencode event stream ended after {seen} events"));
        }))
    }

    /// Reuses the OpenCode session across restarts (OpenCode keeps it on disk); creates one
    /// the first time or if it is gone.
    async fn ensure_session(&mut self, client: &Client) -> Result<String, HttpError> {
        if let Some(id) = &self.session_id {
            match client
                .call(Method::GET, &format!("/session/{id}"), None, CALL_TIMEOUT)
                .await
            {
                Ok(_) => return Ok(id.clone()),
                Err(HttpError::Status { status, .. }) if status.as_u16() == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let body = client
            .call(Method::POST, "/session", Some(&json!({})), CALL_TIMEOUT)
            .await?;
        let id = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .ok_or_else(|| HttpError::Request {
                method: Method::POST,
                path: "/session".into(),
                message: format!(
                    "no session id in {}",
                    String::from_utf8_lossy(&body[..body.len().min(512)])
                ),
            })?;
        self.session_id = Some(id.clone());
        Ok(id)
    }

    async fn deliver(
        &self,
        client: &Client,
        session_id: &str,
        p: &PromptRequest,
    ) -> Result<(), HttpError> {
        let mut body = json!({ "parts": [{ "type": "text", "text": p.text }] });
        let agent = if p.agent.is_empty() {
            &self.cfg.agent
        } else {
            &p.agent
        };
        // Kortix's `default` (the manifest's default for `agent`) means OpenCode's own default
        // agent, which OpenCode selects when the field is absent.
        if !agent.is_empty() && agent != "default" {
            body["agent"] = json!(agent);
        }
        client
            .call(
                Method::POST,
                &format!("/session/{session_id}/prompt_async"),
                Some(&body),
                CALL_TIMEOUT,
            )
            .await?;
        self.liveness.touch();
        self.liveness.busy.store(true, Ordering::Relaxed);
        self.sink
            .state(SessionStatus::Running, "prompt-delivered", p.id.clone());
        Ok(())
    }
}

/// How long `opencode import` may take.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// The end of a failed command's output, for a record.
fn last_lines(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = text.trim().lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    tail.chars().take(1000).collect()
}

/// Aborts a turn in flight (`busy`), then reads the session and its messages: together, what
/// `opencode export` prints.
async fn export(
    client: &Client,
    session_id: &str,
    timeout: Duration,
    busy: bool,
) -> Result<Export, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    // A turn cut off mid-way would be imported half-written; aborted, it ends properly. The
    // abort gets a third of the time at most: the export matters more.
    if busy {
        let _ = client
            .call(
                Method::POST,
                &format!("/session/{session_id}/abort"),
                Some(&json!({})),
                left() / 3,
            )
            .await;
    }
    let info = client
        .call(Method::GET, &format!("/session/{session_id}"), None, left())
        .await
        .map_err(|e| e.to_string())?;
    let messages = client
        .call(
            Method::GET,
            &format!("/session/{session_id}/message"),
            None,
            left(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut json = Vec::with_capacity(info.len() + messages.len() + 32);
    json.extend_from_slice(br#"{"info":"#);
    json.extend_from_slice(&info);
    json.extend_from_slice(br#","messages":"#);
    json.extend_from_slice(&messages);
    json.push(b'}');
    serde_json::from_slice::<Value>(&json)
        .map_err(|e| format!("opencode's session or messages are not JSON: {e}"))?;
    Ok(Export {
        session_id: session_id.to_owned(),
        json,
    })
}

/// The fallback health poll: first after this, doubling up to [`HEALTH_POLL_MAX`].
const HEALTH_POLL_FIRST: Duration = Duration::from_millis(5);
const HEALTH_POLL_MAX: Duration = Duration::from_millis(100);

fn handle_sse(sink: &RecordSink, liveness: &Liveness, item: SseItem, seen: &mut u64) {
    let data = match item {
        SseItem::Data(d) => d,
        SseItem::Oversized => {
            sink.agent("an opencode event larger than 8 MiB was skipped");
            return;
        }
    };
    *seen += 1;
    let parsed: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
    let ty = parsed["type"].as_str().unwrap_or("unknown").to_owned();
    // Keep-alives carry nothing and would keep an idle session looking busy.
    if ty == "server.heartbeat" {
        return;
    }
    liveness.touch();
    match ty.as_str() {
        "session.status" => {
            let busy = parsed["properties"]["status"]["type"]
                .as_str()
                .is_some_and(|t| t != "idle");
            liveness.busy.store(busy, Ordering::Relaxed);
        }
        "session.idle" => liveness.busy.store(false, Ordering::Relaxed),
        _ => {}
    }
    sink.event(ty, data);
}

/// What a stop's exit adds to the record: nothing when OpenCode ended as asked (cleanly, or
/// on the SIGTERM it was sent), else how it ended.
pub fn stop_note(exit: Exit) -> String {
    if exit.success() || exit.signal == Some(libc::SIGTERM) {
        String::new()
    } else {
        format!("did not stop cleanly: {exit}")
    }
}

/// A failure reason with OpenCode's last output lines (stdout and stderr, in order).
fn with_tail(reason: String, proc: &OpencodeProcess) -> String {
    let tail = proc.output_tail();
    if tail.is_empty() {
        reason
    } else {
        format!("{reason}; last output:\n{}", tail.join("\n"))
    }
}

fn free_port() -> std::io::Result<u16> {
    // A small window exists between closing and OpenCode binding; losing it is a crash that
    // the restart path absorbs.
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}
