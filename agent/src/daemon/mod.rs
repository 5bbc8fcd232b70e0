//! The daemon's main flow, in phases: [`Daemon::boot`] (trust, enroll, connect),
//! [`Daemon::await_bootstrap`], [`workspace::prepare`] (clone, git set-up),
//! [`Daemon::launch`] (OpenCode with the first secrets and prompts), [`Daemon::serve`] (prompts,
//! secret changes, supervision) — then one shutdown, whichever phase it ended in.

mod end;
mod workspace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kortix_proto::v1::{Bootstrap, Prompt, ResumeInfo, SessionStatus, StateReport};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

use end::End;
pub use end::ExitReason;
use workspace::Workspace;

use crate::config::{CaTrust, Config};
use crate::connection::{Connection, ConnectionHandle, ControlEvent, report};
use crate::credentials;
use crate::enroll::{self, Gateway};
use crate::opencode::{
    Liveness, PromptRequest, Supervisor, SupervisorConfig, SupervisorState, packages,
};
use crate::process::{ReapMode, Reaper};
use crate::records::{RecordSink, Spool, SpoolOptions};
use crate::renewal;
use crate::secrets::{self, Secrets};
use crate::stop::{self, Shutdown};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Enroll(#[from] enroll::EnrollError),
    #[error("{0}")]
    Spool(#[from] crate::records::SpoolError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

const PIN_TIMEOUT: Duration = Duration::from_secs(20);
const ENROLL_PATIENCE: Duration = Duration::from_secs(120);
const SECRETS_PATIENCE: Duration = Duration::from_secs(10);

/// Runs the whole session. Returns when the session has ended and its final state was handed
/// to the control plane (or could not be within the grace period).
pub async fn run(config: Config) -> Result<ExitReason, AgentError> {
    let mut daemon = Daemon::boot(config).await?;
    let (bootstrap, early_prompts) = match daemon.await_bootstrap().await {
        Ok(b) => b,
        Err(end) => return Ok(daemon.shut_down(end, None, None, "", None).await),
    };
    let t_bootstrap = daemon.agent_start.elapsed();
    let ws = match workspace::prepare(
        &daemon.config,
        &bootstrap,
        &daemon.gateway,
        &daemon.reaper,
        &daemon.sink,
    )
    .await
    {
        Ok(ws) => ws,
        Err(e) => return Ok(daemon.shut_down(End::failed(e), None, None, "", None).await),
    };
    let restored = match &bootstrap.resume {
        Some(resume) => daemon.restore(&bootstrap.session_id, resume, &ws).await,
        None => Restored::default(),
    };
    if let Some(w) = &ws.watcher {
        daemon
            .tasks
            .push(w.spawn(Duration::from_secs(1)).abort_handle());
    }
    let supervisor = daemon
        .launch(&bootstrap, &ws, early_prompts, t_bootstrap, restored.import)
        .await;
    let end = daemon.serve(&supervisor, &ws).await;
    let reason = daemon
        .shut_down_saving(
            end,
            &ws,
            supervisor,
            &bootstrap,
            restored.wip_commit.as_deref(),
        )
        .await;
    drop(ws.cred_server);
    Ok(reason)
}

/// What a resumed session's agent put back before OpenCode started.
#[derive(Default)]
struct Restored {
    /// The WIP commit now in the working tree as uncommitted changes.
    wip_commit: Option<String>,
    /// The saved conversation, for OpenCode to import.
    import: Option<crate::opencode::Import>,
}

/// How long fetching and restoring the saved uncommitted work may take.
const RESTORE_TIME: Duration = Duration::from_secs(60);
/// How long fetching the saved conversation may take.
const LOAD_CONVERSATION_TIME: Duration = Duration::from_secs(30);

/// Everything the phases share once the agent has enrolled.
struct Daemon {
    config: Config,
    agent_start: Instant,
    t_enrolled: Duration,
    reaper: Reaper,
    sink: RecordSink,
    signals: Signals,
    gateway: Gateway,
    /// Background tasks end with the session, also when `run` is a library call.
    tasks: AbortOnDrop,
    liveness: Arc<Liveness>,
    state: watch::Sender<StateReport>,
    events: mpsc::Receiver<ControlEvent>,
    connection: Option<ConnectionHandle>,
    secrets: watch::Receiver<Option<Secrets>>,
}

impl Daemon {
    /// Reaper, record spool, signal handlers, trust in the control plane, enrollment, and the
    /// Connect stream with its secrets watch.
    async fn boot(config: Config) -> Result<Self, AgentError> {
        let agent_start = Instant::now();
        let io = |context: &str| {
            let context = context.to_owned();
            move |source| AgentError::Io { context, source }
        };
        let reaper = Reaper::start(if config.reap_orphans {
            ReapMode::AllChildren
        } else {
            ReapMode::OwnChildren
        })
        .map_err(io("starting the reaper"))?;
        let spool_dir = config
            .spool_dir
            .join("sessions")
            .join(safe_component(&config.session_id));
        let sink = RecordSink::new(Spool::open(
            &spool_dir,
            SpoolOptions {
                max_bytes: config.spool_max_bytes,
                ..SpoolOptions::default()
            },
        )?);
        sink.state(
            SessionStatus::Provisioning,
            "agent-starting",
            format!("kortix-agent {}", enroll::AGENT_VERSION),
        );
        let signals = Signals {
            term: signal(SignalKind::terminate()).map_err(io("installing the SIGTERM handler"))?,
            int: signal(SignalKind::interrupt()).map_err(io("installing the SIGINT handler"))?,
        };

        // Start at a random gateway, so that a fleet of agents spreads over the replicas.
        let start = if config.listed_order {
            0
        } else {
            (crate::backoff::random_u64() % config.control_planes.len().max(1) as u64) as usize
        };
        let ca_pem = match &config.ca {
            CaTrust::Pem(pem) => pem.clone(),
            CaTrust::Fingerprint(fp) => pin_any(&config.control_planes, start, *fp).await?,
        };
        crate::tls::certs_from_pem(&ca_pem)?;
        let secret_path = spool_dir.join(renewal::FILE_NAME);
        let (mut identity, index, reenrolled) =
            enroll_or_reenroll(&config, start, &ca_pem, &secret_path, &sink).await?;
        let t_enrolled = agent_start.elapsed();
        // The next renewal secret goes to disk before anything else: the control plane has
        // already forgotten the one this agent came with.
        match identity.renewal_secret.take() {
            Some(secret) => {
                if let Err(e) = renewal::write(&secret_path, &secret) {
                    sink.agent(format!(
                        "{e}: a restart of this agent will not be able to re-enroll"
                    ));
                }
            }
            None => sink.agent(
                "the control plane gave no renewal secret: a restart of this agent will not be able to re-enroll",
            ),
        }
        sink.state(
            SessionStatus::Provisioning,
            if reenrolled {
                "re-enrolled"
            } else {
                "enrolled"
            },
            format!(
                "{} via {}",
                identity.session_id, config.control_planes[index]
            ),
        );
        let (gateway, keeper) = Gateway::with_urls(config.control_planes.clone(), index, identity)?;
        let mut tasks = AbortOnDrop(Vec::new());
        tasks.push(tokio::spawn(keeper.run(sink.clone())).abort_handle());

        let liveness = Arc::new(Liveness::new());
        let (state, state_rx) =
            watch::channel(report(SessionStatus::Provisioning, "", false, None));
        let (events_tx, events) = mpsc::channel(64);
        let commands = crate::command_log::CommandLog::open(&spool_dir).unwrap_or_else(|e| {
            sink.agent(format!(
                "{e}: starting with no commands applied (a resent one may be applied again)"
            ));
            crate::command_log::CommandLog::in_memory()
        });
        let connection = Connection {
            gateway: gateway.clone(),
            sink: sink.clone(),
            liveness: liveness.clone(),
            heartbeat_interval: config.heartbeat_interval,
            state: state_rx,
            events: events_tx,
            commands,
        }
        .spawn();
        let (secrets_tx, secrets) = watch::channel::<Option<Secrets>>(None);
        tasks.push(
            tokio::spawn(secrets::watch(gateway.clone(), sink.clone(), secrets_tx)).abort_handle(),
        );
        Ok(Daemon {
            config,
            agent_start,
            t_enrolled,
            reaper,
            sink,
            signals,
            gateway,
            tasks,
            liveness,
            state,
            events,
            connection: Some(connection),
            secrets,
        })
    }

    /// Until the bootstrap arrives there is nothing to run; prompts that come first wait.
    async fn await_bootstrap(&mut self) -> Result<(Bootstrap, Vec<Prompt>), End> {
        let mut early = Vec::new();
        loop {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(ControlEvent::Bootstrap(b)) => return Ok((*b, early)),
                    Some(ControlEvent::Prompt(p)) => early.push(p),
                    Some(ControlEvent::Stop(s)) => return Err(End::stopped(&s)),
                    Some(ControlEvent::Refused(r)) => return Err(End::refused(r)),
                    None => return Err(End::failed("connection task ended")),
                },
                sig = self.signals.recv() => return Err(End::signalled(sig)),
            }
        }
    }

    /// A resumed session: puts the saved uncommitted work back into the fresh clone and
    /// fetches the saved conversation, before OpenCode starts. What could not be restored is
    /// said in the records (and stays saved); the session goes on either way.
    async fn restore(&mut self, session_id: &str, resume: &ResumeInfo, ws: &Workspace) -> Restored {
        let mut restored = Restored::default();
        let mut said = Vec::new();
        if resume.wip_commit.is_empty() {
            said.push("no uncommitted work was saved".to_string());
        } else {
            let git = crate::wip::Git {
                reaper: &self.reaper,
                workspace: &self.config.workspace,
                ca_file: ws.ca_file.as_deref(),
                deadline: tokio::time::Instant::now() + RESTORE_TIME,
            };
            match git.restore(session_id, &resume.wip_commit).await {
                Ok(note) => {
                    said.push(note);
                    restored.wip_commit = Some(resume.wip_commit.clone());
                }
                Err(why) => said.push(format!("uncommitted work not restored: {why}")),
            }
        }
        if resume.conversation_bytes == 0 {
            said.push("no conversation was saved".to_string());
        } else {
            match self.load_conversation().await {
                Ok((bytes, id)) => {
                    let file = self.config.spool_dir.join("run").join("conversation.json");
                    let written = std::fs::create_dir_all(self.config.spool_dir.join("run"))
                        .and_then(|()| std::fs::write(&file, &bytes));
                    match written {
                        Ok(()) => {
                            said.push(format!(
                                "conversation of {} bytes to import into OpenCode session {id}",
                                bytes.len()
                            ));
                            restored.import = Some(crate::opencode::Import {
                                file,
                                session_id: id,
                            });
                        }
                        Err(e) => said.push(format!(
                            "conversation not restored: writing {}: {e}",
                            file.display()
                        )),
                    }
                }
                Err(why) => said.push(format!("conversation not restored: {why}")),
            }
        }
        self.sink
            .state(SessionStatus::Resuming, "restored", said.join("; "));
        restored
    }

    async fn load_conversation(&self) -> Result<(Vec<u8>, String), String> {
        let mut client = self
            .gateway
            .client()
            .max_decoding_message_size(crate::stop::MAX_CONVERSATION_BYTES + 1024 * 1024);
        match tokio::time::timeout(
            LOAD_CONVERSATION_TIME,
            client.load_conversation(kortix_proto::v1::LoadConversationRequest {}),
        )
        .await
        {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                Ok((r.conversation, r.opencode_session_id))
            }
            Ok(Err(status)) => Err(format!("LoadConversation: {}", status.message())),
            Err(_) => Err(format!(
                "LoadConversation did not answer within {LOAD_CONVERSATION_TIME:?}"
            )),
        }
    }

    /// Starts OpenCode with the first secrets set in its environment and queues the initial
    /// prompt and any that came early.
    async fn launch(
        &mut self,
        bootstrap: &Bootstrap,
        ws: &Workspace,
        early_prompts: Vec<Prompt>,
        t_bootstrap: Duration,
        import: Option<crate::opencode::Import>,
    ) -> Supervisor {
        if self.secrets.borrow().is_none() {
            let _ = tokio::time::timeout(SECRETS_PATIENCE, self.secrets.wait_for(|s| s.is_some()))
                .await;
        }
        let initial = self.secrets.borrow_and_update().clone();
        if initial.is_none() {
            self.sink
                .agent("no secrets received yet; starting opencode without them");
        }
        self.sink.agent(format!(
            "timing: enrolled at {} ms, bootstrap at {} ms, clone took {} ms, secrets and repo setup done at {} ms",
            self.t_enrolled.as_millis(),
            t_bootstrap.as_millis(),
            ws.clone_time.as_millis(),
            self.agent_start.elapsed().as_millis()
        ));

        let mut cfg = SupervisorConfig::new(
            self.config.opencode_bin.clone(),
            self.config.workspace.clone(),
            self.config.workspace.join(&bootstrap.opencode_config_dir),
        );
        cfg.agent = bootstrap.agent.clone();
        cfg.base_env = opencode_env(self.config.opencode_env.as_ref(), &ws.socket_path);
        if let Some(server) = &ws.connector_server {
            let registered = std::env::current_exe()
                .map_err(|e| format!("the agent's own path: {e}"))
                .and_then(|bin| {
                    crate::connectors::opencode_config::register(
                        &mut cfg.base_env,
                        &bin,
                        &server.socket,
                    )
                });
            if let Err(why) = registered {
                self.sink
                    .agent(format!("connectors are not offered to OpenCode: {why}"));
            }
        }
        if let Some(ca) = &ws.ca_file {
            // Overrides any inherited GIT_SSL_CAINFO, which would beat the repo's http.sslCAInfo.
            cfg.base_env
                .insert("GIT_SSL_CAINFO".into(), ca.display().to_string());
        }
        if let Some(shared) = &self.config.opencode_packages {
            self.link_opencode_packages(shared, &cfg);
        }
        cfg.liveness = self.liveness.clone();
        cfg.import = import;
        cfg.boot = Some((self.agent_start, ws.clone_time));
        if bootstrap.start_deadline_ms > 0 {
            cfg.ready_by =
                Some(self.agent_start + Duration::from_millis(bootstrap.start_deadline_ms));
        }
        let supervisor = Supervisor::start(
            cfg,
            self.reaper.clone(),
            self.sink.clone(),
            initial.map(|s| s.values).unwrap_or_default(),
        );
        let initial_prompt = (!bootstrap.initial_prompt.is_empty()).then(|| PromptRequest {
            id: "initial".into(),
            text: bootstrap.initial_prompt.clone(),
            agent: bootstrap.agent.clone(),
        });
        for p in initial_prompt
            .into_iter()
            .chain(early_prompts.into_iter().map(|p| PromptRequest {
                id: p.id,
                text: p.text,
                agent: p.agent,
            }))
        {
            supervisor.prompt(p).await;
        }
        supervisor
    }

    /// Points OpenCode's config directories and package cache at the packages the control
    /// plane installed, so OpenCode's start fetches nothing from a registry. A failure only
    /// costs that: OpenCode then installs them itself.
    fn link_opencode_packages(&self, shared: &Path, cfg: &SupervisorConfig) {
        let dirs = packages::config_dirs(&cfg.base_env, &cfg.config_dir, &self.config.workspace);
        match packages::link(shared, &dirs, &packages::cache_dir(&cfg.base_env)) {
            Ok(linked) => {
                let skipped = linked
                    .skipped
                    .iter()
                    .map(|(dir, why)| format!("; {} left to opencode: {why}", dir.display()))
                    .collect::<String>();
                self.sink.agent(format!(
                    "opencode packages from {}: linked into {} config directories and {} provider packages{skipped}",
                    shared.display(),
                    linked.config_dirs.len(),
                    linked.packages.len()
                ));
            }
            Err(e) => self.sink.agent(e.to_string()),
        }
    }

    /// Runs the session until a stop, a signal, a refusal or a failure.
    async fn serve(&mut self, supervisor: &Supervisor, ws: &Workspace) -> End {
        let mut sup_state = supervisor.state();
        let mut running = false;
        loop {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(ControlEvent::Prompt(p)) => {
                        supervisor.prompt(PromptRequest { id: p.id, text: p.text, agent: p.agent }).await;
                    }
                    Some(ControlEvent::Stop(s)) => return End::stopped(&s),
                    Some(ControlEvent::Refused(r)) => return End::refused(r),
                    // A reconnect; the connection task already resent from its acked seq.
                    Some(ControlEvent::Bootstrap(_)) => {}
                    None => return End::failed("connection task ended"),
                },
                sig = self.signals.recv() => return End::signalled(sig),
                changed = sup_state.changed() => {
                    if changed.is_err() {
                        return End::failed("opencode supervisor ended");
                    }
                    let st = sup_state.borrow_and_update().clone();
                    match st {
                        SupervisorState::Ready { .. } if !running => {
                            running = true;
                            self.sink.state(SessionStatus::Running, "running", "");
                            let head = ws.watcher.as_ref().and_then(|w| w.head());
                            self.state.send_replace(report(SessionStatus::Running, "", false, head));
                        }
                        SupervisorState::Failed { reason } => return End::failed(reason),
                        _ => {}
                    }
                }
                changed = self.secrets.changed() => {
                    let latest = if changed.is_ok() { self.secrets.borrow_and_update().clone() } else { None };
                    if let Some(s) = latest {
                        supervisor.set_secrets(s.values).await;
                    }
                }
            }
        }
    }

    /// The end of a session that got as far as running OpenCode: its uncommitted work and
    /// conversation are saved for a resume, unless the control plane refuses this agent.
    async fn shut_down_saving(
        &mut self,
        end: End,
        ws: &Workspace,
        supervisor: Supervisor,
        bootstrap: &Bootstrap,
        restored_wip: Option<&str>,
    ) -> ExitReason {
        let gateway = self.gateway.clone();
        let run_dir = self.config.spool_dir.join("run");
        let save = (!matches!(end.reason, ExitReason::Refused(_))).then(|| stop::Save {
            session_id: &bootstrap.session_id,
            gateway: &gateway,
            run_dir: &run_dir,
            restored_wip,
        });
        self.shut_down(end, Some(ws), Some(supervisor), &bootstrap.branch, save)
            .await
    }

    /// The one way out of every phase: stop OpenCode, push, save, flush, report, close.
    async fn shut_down(
        &mut self,
        end: End,
        ws: Option<&Workspace>,
        supervisor: Option<Supervisor>,
        branch: &str,
        save: Option<stop::Save<'_>>,
    ) -> ExitReason {
        let Some(connection) = self.connection.take() else {
            return end.reason;
        };
        stop::shutdown(
            Shutdown {
                sink: &self.sink,
                state: &self.state,
                reaper: &self.reaper,
                workspace: &self.config.workspace,
                branch,
                watcher: ws.and_then(|w| w.watcher.clone()),
                supervisor,
                ca_file: ws.and_then(|w| w.ca_file.as_deref()),
                connection,
                deadline: end.deadline,
                save,
            },
            end.final_report(),
        )
        .await;
        end.reason
    }
}

/// Learns the CA by its fingerprint from the first gateway that answers.
async fn pin_any(urls: &[String], start: usize, fp: [u8; 32]) -> Result<String, AgentError> {
    let n = urls.len().max(1);
    let mut last = None;
    for i in 0..n {
        let url = &urls[(start + i) % n];
        let host =
            crate::config::host_of(url).ok_or_else(|| crate::config::ConfigError::Invalid {
                name: "KORTIX_CONTROL_PLANE",
                reason: format!("no host in {url:?}"),
            })?;
        let port = port_of(url).unwrap_or(443);
        match crate::tls::pin_ca(&host, port, fp, PIN_TIMEOUT).await {
            Ok(pem) => return Ok(pem),
            Err(e) => {
                crate::diag::warn(&format!("{e}"));
                last = Some(e);
            }
        }
    }
    Err(match last {
        Some(e) => e.into(),
        None => crate::config::ConfigError::Missing("KORTIX_CONTROL_PLANE").into(),
    })
}

/// Enrolls with the bootstrap token; when that is refused (used by this agent's earlier
/// run) and a renewal secret from that run is on disk, re-enrolls with it instead. Returns
/// the identity, the index of the gateway that answered, and whether it re-enrolled.
async fn enroll_or_reenroll(
    config: &Config,
    start: usize,
    ca_pem: &str,
    secret_path: &Path,
    sink: &RecordSink,
) -> Result<(enroll::AgentIdentity, usize, bool), AgentError> {
    let urls = &config.control_planes;
    let enrolled = enroll::enroll_any(
        urls,
        start,
        ca_pem,
        enroll::Credential::Bootstrap(&config.bootstrap_token),
        sink,
        ENROLL_PATIENCE,
    )
    .await;
    let refused = match enrolled {
        Ok((identity, index)) => return Ok((identity, index, false)),
        Err(e) if e.is_refused_credential() => e,
        Err(e) => return Err(e.into()),
    };
    let secret = match renewal::read(secret_path) {
        Ok(Some(secret)) => secret,
        Ok(None) => return Err(refused.into()),
        Err(e) => {
            sink.agent(e.to_string());
            return Err(refused.into());
        }
    };
    sink.agent(format!(
        "the bootstrap token was refused ({refused}); re-enrolling with the renewal secret of this agent's earlier run"
    ));
    let (identity, index) = enroll::enroll_any(
        urls,
        start,
        ca_pem,
        enroll::Credential::Renewal {
            session_id: &config.session_id,
            secret: &secret,
        },
        sink,
        ENROLL_PATIENCE,
    )
    .await?;
    Ok((identity, index, true))
}

/// SIGTERM and SIGINT.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl AbortOnDrop {
    fn push(&mut self, task: tokio::task::AbortHandle) {
        self.0.push(task);
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// OpenCode's environment: the agent's, minus Kortix's own settings (the bootstrap token
/// above all), plus the credential socket for git and no interactive prompts.
pub fn opencode_env(
    base: Option<&BTreeMap<String, String>>,
    socket: &Path,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = match base {
        Some(b) => b.clone(),
        None => std::env::vars().collect(),
    };
    env.retain(|k, _| !k.starts_with("KORTIX_") || k == "KORTIX_SESSION_ID");
    env.insert(
        credentials::helper::SOCKET_ENV.into(),
        socket.display().to_string(),
    );
    env.insert("GIT_TERMINAL_PROMPT".into(), "0".into());
    env
}

fn port_of(url: &str) -> Option<u16> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let port = if authority.starts_with('[') {
        authority.rsplit_once("]:")?.1
    } else {
        authority.rsplit_once(':')?.1
    };
    port.parse().ok()
}

/// A session id as a single path component.
fn safe_component(id: &str) -> PathBuf {
    let cleaned: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    PathBuf::from(if cleaned.is_empty() {
        "session".to_owned()
    } else {
        cleaned
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(port_of("https://127.0.0.1:7443"), Some(7443));
        assert_eq!(port_of("https://[::1]:9/x"), Some(9));
        assert_eq!(port_of("https://host"), None);
        assert_eq!(safe_component("../x y"), PathBuf::from("___x_y"));
        let env = opencode_env(None, Path::new("/s"));
        assert!(env.keys().all(|k| !k.starts_with("KORTIX_")
            || k == "KORTIX_SESSION_ID"
            || k == "KORTIX_CREDENTIAL_SOCKET"));
        assert_eq!(
            env.get("GIT_TERMINAL_PROMPT").map(String::as_str),
            Some("0")
        );
    }
}
