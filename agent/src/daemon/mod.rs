//! The daemon's main flow: trust, enroll, connect, bootstrap, clone, secrets, OpenCode, then
//! serve prompts until a stop, a signal or a failure, and shut down cleanly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kortix_proto::v1::{Bootstrap, GitCredentialRequest, SessionStatus, Stop};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::clone::{self, CloneSpec, CredentialFn, RepoSetup};
use crate::commits::{CommitWatcher, WatcherHandle};
use crate::config::{CaTrust, Config};
use crate::connection::{Connection, ControlEvent, report};
use crate::credentials::{self, Provider, RepoTarget};
use crate::enroll::{self, Gateway};
use crate::opencode::{Liveness, PromptRequest, Supervisor, SupervisorConfig, SupervisorState};
use crate::process::{ReapMode, Reaper};
use crate::records::{RecordSink, Spool, SpoolOptions};
use crate::secrets::{self, Secrets};
use crate::stop::{self, Final, Shutdown};

/// How the daemon ended (it exits 0 for every clean end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The control plane sent `Stop`.
    Stopped { hibernate: bool, reason: String },
    /// SIGTERM or SIGINT.
    Signalled(String),
    /// The session failed (OpenCode crash loop, clone failure, ...).
    Failed(String),
}

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
/// Shutdown budget after SIGTERM (container runtimes usually allow 10 s).
const SIGNAL_GRACE: Duration = Duration::from_secs(9);
const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(30);

/// Runs the whole session. Returns when the session has ended and its final state was handed
/// to the control plane (or could not be within the grace period).
pub async fn run(config: Config) -> Result<ExitReason, AgentError> {
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
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(io("installing the SIGTERM handler"))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(io("installing the SIGINT handler"))?;

    let ca_pem = match &config.ca {
        CaTrust::Pem(pem) => pem.clone(),
        CaTrust::Fingerprint(fp) => {
            let host = config.control_plane_host()?;
            let port = port_of(&config.control_plane).unwrap_or(443);
            crate::tls::pin_ca(&host, port, *fp, PIN_TIMEOUT).await?
        }
    };
    crate::tls::certs_from_pem(&ca_pem)?;
    let identity = enroll::enroll_with_retry(
        &config.control_plane,
        &ca_pem,
        &config.bootstrap_token,
        &sink,
        ENROLL_PATIENCE,
    )
    .await?;
    let t_enrolled = agent_start.elapsed();
    sink.state(
        SessionStatus::Provisioning,
        "enrolled",
        identity.session_id.clone(),
    );
    let (gateway, keeper) = Gateway::new(&config.control_plane, identity)?;
    // Background tasks end with the session, also when `run` is a library call.
    let mut tasks = AbortOnDrop(Vec::new());
    tasks
        .0
        .push(tokio::spawn(keeper.run(sink.clone())).abort_handle());

    let liveness = Arc::new(Liveness::new());
    let (state_tx, state_rx) = watch::channel(report(SessionStatus::Provisioning, "", false, None));
    let (events_tx, mut events_rx) = mpsc::channel(64);
    let connection = Connection {
        gateway: gateway.clone(),
        sink: sink.clone(),
        liveness: liveness.clone(),
        heartbeat_interval: config.heartbeat_interval,
        state: state_rx,
        events: events_tx,
    }
    .spawn();
    let (secrets_tx, mut secrets_rx) = watch::channel::<Option<Secrets>>(None);
    tasks.0.push(
        tokio::spawn(secrets::watch(gateway.clone(), sink.clone(), secrets_tx)).abort_handle(),
    );

    // Until the bootstrap arrives there is nothing to run; a stop or signal ends it here.
    let mut early_prompts = Vec::new();
    let bootstrap: Bootstrap = loop {
        tokio::select! {
            ev = events_rx.recv() => match ev {
                Some(ControlEvent::Bootstrap(b)) => break b,
                Some(ControlEvent::Prompt(p)) => early_prompts.push(p),
                Some(ControlEvent::Stop(s)) => {
                    let reason = ExitReason::Stopped { hibernate: s.hibernate, reason: s.reason.clone() };
                    finish_early(&sink, &state_tx, &reaper, &config, connection, stop_deadline(Some(&s)), final_for(&reason)).await;
                    return Ok(reason);
                }
                None => return Ok(ExitReason::Failed("connection task ended".into())),
            },
            _ = sigterm.recv() => {
                let reason = ExitReason::Signalled("SIGTERM".into());
                finish_early(&sink, &state_tx, &reaper, &config, connection, tokio::time::Instant::now() + SIGNAL_GRACE, final_for(&reason)).await;
                return Ok(reason);
            }
            _ = sigint.recv() => {
                let reason = ExitReason::Signalled("SIGINT".into());
                finish_early(&sink, &state_tx, &reaper, &config, connection, tokio::time::Instant::now() + SIGNAL_GRACE, final_for(&reason)).await;
                return Ok(reason);
            }
        }
    };

    let t_bootstrap = agent_start.elapsed();
    // Credentials: a socket for git, and the same provider for gix's clone.
    let provider = credential_provider(gateway.clone());
    let target = RepoTarget::from_url(&bootstrap.repo_url);
    let run_dir = config.spool_dir.join("run");
    let cred_server = match &target {
        Some(t) => match credentials::serve(&run_dir, t.clone(), provider.clone(), sink.clone()) {
            Ok(s) => Some(s),
            Err(e) => {
                sink.agent(e.to_string());
                None
            }
        },
        None => None,
    };
    let socket_path = cred_server
        .as_ref()
        .map_or_else(|| run_dir.join("credential.sock"), |s| s.socket.clone());

    // Clone (the one step excluded from the boot-overhead measurement).
    sink.state(
        SessionStatus::Provisioning,
        "cloning",
        bootstrap.branch.clone(),
    );
    let clone_started = Instant::now();
    let https = bootstrap.repo_url.starts_with("https://");
    let clone_result = {
        let creds = blocking_credentials(provider.clone());
        let url = bootstrap.repo_url.clone();
        let branch = bootstrap.branch.clone();
        let ws = config.workspace.clone();
        let ca = https.then(|| gateway.ca_pem());
        let hold = reaper.own_children_only();
        tokio::task::spawn_blocking(move || {
            let _hold = hold;
            clone::clone_or_fetch(&CloneSpec {
                repo_url: &url,
                branch: &branch,
                workspace: &ws,
                ca_pem: ca.as_deref(),
                credentials: creds,
            })
        })
        .await
    };
    let clone_time = clone_started.elapsed();
    let clone_error = match clone_result {
        Ok(Ok(outcome)) => {
            sink.state(
                SessionStatus::Provisioning,
                "cloned",
                format!("{outcome:?} in {} ms", clone_time.as_millis()),
            );
            None
        }
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(format!("clone task failed: {e}")),
    };
    let ca_file = https.then(|| config.spool_dir.join("control-plane-ca.pem"));
    let setup_error = match clone_error {
        Some(e) => Some(e),
        None => prepare_repo(
            &config,
            &bootstrap,
            &gateway,
            ca_file.as_deref(),
            &socket_path,
        )
        .err(),
    };
    if let Some(e) = setup_error {
        let reason = ExitReason::Failed(e);
        finish_early(
            &sink,
            &state_tx,
            &reaper,
            &config,
            connection,
            tokio::time::Instant::now() + DEFAULT_STOP_GRACE,
            final_for(&reason),
        )
        .await;
        return Ok(reason);
    }
    let watcher = match CommitWatcher::new(&config.workspace, &bootstrap.branch) {
        Ok(w) => {
            let h = WatcherHandle::new(w, sink.clone());
            tasks.0.push(h.spawn(Duration::from_secs(1)).abort_handle());
            Some(h)
        }
        Err(e) => {
            sink.agent(e.to_string());
            None
        }
    };

    // The first secrets set goes into OpenCode's environment at launch.
    let have_secrets = secrets_rx.borrow().is_some();
    if !have_secrets {
        let _ = tokio::time::timeout(SECRETS_PATIENCE, secrets_rx.wait_for(|s| s.is_some())).await;
    }
    let initial = secrets_rx.borrow_and_update().clone();
    if initial.is_none() {
        sink.agent("no secrets received yet; starting opencode without them");
    }
    let initial_secrets = initial.map(|s| s.values).unwrap_or_default();
    sink.agent(format!(
        "timing: enrolled at {} ms, bootstrap at {} ms, clone took {} ms, secrets and repo setup done at {} ms",
        t_enrolled.as_millis(),
        t_bootstrap.as_millis(),
        clone_time.as_millis(),
        agent_start.elapsed().as_millis()
    ));

    let mut sup_cfg = SupervisorConfig::new(
        config.opencode_bin.clone(),
        config.workspace.clone(),
        config.workspace.join(&bootstrap.opencode_config_dir),
    );
    sup_cfg.agent = bootstrap.agent.clone();
    sup_cfg.base_env = opencode_env(config.opencode_env.as_ref(), &socket_path);
    if let Some(ca) = &ca_file {
        // Overrides any inherited GIT_SSL_CAINFO, which would beat the repo's http.sslCAInfo.
        sup_cfg
            .base_env
            .insert("GIT_SSL_CAINFO".into(), ca.display().to_string());
    }
    sup_cfg.liveness = liveness.clone();
    sup_cfg.boot = Some((agent_start, clone_time));
    let supervisor = Supervisor::start(sup_cfg, reaper.clone(), sink.clone(), initial_secrets);
    let mut sup_state = supervisor.state();
    if !bootstrap.initial_prompt.is_empty() {
        supervisor
            .prompt(PromptRequest {
                id: "initial".into(),
                text: bootstrap.initial_prompt.clone(),
                agent: bootstrap.agent.clone(),
            })
            .await;
    }
    for p in early_prompts {
        supervisor
            .prompt(PromptRequest {
                id: p.id,
                text: p.text,
                agent: p.agent,
            })
            .await;
    }

    let mut running = false;
    let (reason, deadline): (ExitReason, tokio::time::Instant) = loop {
        tokio::select! {
            ev = events_rx.recv() => match ev {
                Some(ControlEvent::Prompt(p)) => {
                    supervisor.prompt(PromptRequest { id: p.id, text: p.text, agent: p.agent }).await;
                }
                Some(ControlEvent::Stop(s)) => {
                    break (ExitReason::Stopped { hibernate: s.hibernate, reason: s.reason.clone() }, stop_deadline(Some(&s)));
                }
                // A reconnect; the connection task already resent from its acked seq.
                Some(ControlEvent::Bootstrap(_)) => {}
                None => break (ExitReason::Failed("connection task ended".into()), stop_deadline(None)),
            },
            _ = sigterm.recv() => break (ExitReason::Signalled("SIGTERM".into()), tokio::time::Instant::now() + SIGNAL_GRACE),
            _ = sigint.recv() => break (ExitReason::Signalled("SIGINT".into()), tokio::time::Instant::now() + SIGNAL_GRACE),
            changed = sup_state.changed() => {
                if changed.is_err() {
                    break (ExitReason::Failed("opencode supervisor ended".into()), stop_deadline(None));
                }
                let st = sup_state.borrow_and_update().clone();
                match st {
                    SupervisorState::Ready { .. } if !running => {
                        running = true;
                        sink.state(SessionStatus::Running, "running", "");
                        state_tx.send_replace(report(SessionStatus::Running, "", false, watcher.as_ref().and_then(|w| w.head())));
                    }
                    SupervisorState::Failed { reason } => break (ExitReason::Failed(reason), stop_deadline(None)),
                    _ => {}
                }
            }
            changed = secrets_rx.changed() => {
                let latest = if changed.is_ok() { secrets_rx.borrow_and_update().clone() } else { None };
                if let Some(s) = latest {
                    supervisor.set_secrets(s.values).await;
                }
            }
        }
    };
    stop::shutdown(
        Shutdown {
            sink: &sink,
            state: &state_tx,
            reaper: &reaper,
            workspace: &config.workspace,
            branch: &bootstrap.branch,
            watcher,
            supervisor: Some(supervisor),
            ca_file: ca_file.as_deref(),
            connection,
            deadline,
        },
        final_for(&reason),
    )
    .await;
    drop(cred_server);
    Ok(reason)
}

struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn final_for(reason: &ExitReason) -> Final {
    match reason {
        ExitReason::Stopped {
            hibernate: true,
            reason,
        } => Final {
            status: SessionStatus::Hibernated,
            phase: "hibernated",
            reason: reason.clone(),
        },
        ExitReason::Stopped {
            hibernate: false,
            reason,
        } => Final {
            status: SessionStatus::Stopped,
            phase: "stopped",
            reason: reason.clone(),
        },
        ExitReason::Signalled(sig) => Final {
            status: SessionStatus::Stopped,
            phase: "stopped",
            reason: format!("agent received {sig}"),
        },
        ExitReason::Failed(reason) => Final {
            status: SessionStatus::Failed,
            phase: "failed",
            reason: reason.clone(),
        },
    }
}

fn stop_deadline(stop: Option<&Stop>) -> tokio::time::Instant {
    let grace = stop
        .filter(|s| s.grace_ms > 0)
        .map_or(DEFAULT_STOP_GRACE, |s| Duration::from_millis(s.grace_ms));
    // Leave a margin before the sandbox is killed.
    tokio::time::Instant::now() + grace.mul_f32(0.9)
}

/// Shutdown before the workspace or OpenCode exist.
async fn finish_early(
    sink: &RecordSink,
    state: &watch::Sender<kortix_proto::v1::StateReport>,
    reaper: &Reaper,
    config: &Config,
    connection: crate::connection::ConnectionHandle,
    deadline: tokio::time::Instant,
    end: Final,
) {
    stop::shutdown(
        Shutdown {
            sink,
            state,
            reaper,
            workspace: &config.workspace,
            branch: "",
            watcher: None,
            supervisor: None,
            ca_file: None,
            connection,
            deadline,
        },
        end,
    )
    .await;
}

fn credential_provider(gateway: Gateway) -> Provider {
    Arc::new(move |req: GitCredentialRequest| {
        let gateway = gateway.clone();
        Box::pin(async move {
            let mut client = gateway.client();
            client
                .git_credential(req)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| format!("GitCredential: {s}"))
        })
    })
}

/// gix asks from a blocking thread; the provider is async.
fn blocking_credentials(provider: Provider) -> CredentialFn {
    let handle = tokio::runtime::Handle::current();
    Arc::new(move |protocol: &str, host: &str, path: &str| {
        let req = GitCredentialRequest {
            protocol: protocol.to_owned(),
            host: host.to_owned(),
            path: path.to_owned(),
        };
        let resp = handle
            .block_on(async { tokio::time::timeout(Duration::from_secs(20), provider(req)).await });
        match resp {
            Ok(Ok(r)) => Ok((r.username, r.password)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("GitCredential timed out".into()),
        }
    })
}

fn prepare_repo(
    config: &Config,
    b: &Bootstrap,
    gateway: &Gateway,
    ca_file: Option<&Path>,
    socket: &Path,
) -> Result<(), String> {
    if let Some(path) = ca_file {
        std::fs::create_dir_all(&config.spool_dir)
            .map_err(|e| format!("creating {}: {e}", config.spool_dir.display()))?;
        std::fs::write(path, ca_bundle(&gateway.ca_pem()))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let helper = format!(
        "!{} git-credential --socket {}",
        shell_quote(&config.helper_exe),
        shell_quote(socket)
    );
    clone::configure_repo(
        &config.workspace,
        &RepoSetup {
            branch: &b.branch,
            author_name: &b.git_author_name,
            author_email: &b.git_author_email,
            credential_helper: &helper,
            ca_file,
        },
    )
    .map_err(|e| e.to_string())
}

/// The control plane's CA plus the system's roots, so OpenCode's git still reaches other
/// HTTPS hosts with the bundle that must point at our CA.
fn ca_bundle(kortix_ca: &str) -> String {
    const MAX_SYSTEM_BUNDLE: u64 = 8 * 1024 * 1024;
    let candidates = [
        std::env::var("GIT_SSL_CAINFO").ok(),
        std::env::var("SSL_CERT_FILE").ok(),
        Some("/etc/ssl/certs/ca-certificates.crt".into()),
    ];
    let system = candidates
        .into_iter()
        .flatten()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() <= MAX_SYSTEM_BUNDLE))
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let mut bundle = kortix_ca.trim_end().to_owned();
    bundle.push('\n');
    if !system.is_empty() {
        bundle.push_str(&system);
        if !system.ends_with('\n') {
            bundle.push('\n');
        }
    }
    bundle
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
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
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
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
