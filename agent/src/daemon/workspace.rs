//! The session's workspace: the credential socket for git, the clone of the session branch,
//! the repository set up for plain `git`, and the watcher that reports its commits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kortix_proto::v1::{Bootstrap, GitCredentialRequest, SessionStatus};

use crate::backoff::Backoff;
use crate::clone::{self, CloneSpec, CredentialFn, RepoSetup};
use crate::commits::{CommitWatcher, WatcherHandle};
use crate::config::Config;
use crate::credentials::{self, CredentialServer, Provider, RepoTarget};
use crate::enroll::Gateway;
use crate::process::Reaper;
use crate::records::RecordSink;

/// Clone attempts when the control plane cannot be reached, and the pauses between them.
const CLONE_ATTEMPTS: u32 = 4;
const CLONE_RETRY_FIRST: Duration = Duration::from_millis(500);
const CLONE_RETRY_MAX: Duration = Duration::from_secs(4);

pub(super) struct Workspace {
    /// Serves git's credential helper while the session lives.
    pub cred_server: Option<CredentialServer>,
    /// The socket `kortix-agent mcp` asks for connectors; `None` when it could not be bound
    /// (said in the records; OpenCode then runs without connectors).
    pub connector_server: Option<crate::connectors::server::ConnectorServer>,
    pub socket_path: PathBuf,
    /// CA bundle for an https remote (`GIT_SSL_CAINFO` would otherwise override the config).
    pub ca_file: Option<PathBuf>,
    pub watcher: Option<WatcherHandle>,
    pub clone_time: Duration,
}

/// Clones (or fetches) the session branch and prepares the repository. An error is the
/// reason the session fails.
pub(super) async fn prepare(
    config: &Config,
    bootstrap: &Bootstrap,
    gateway: &Gateway,
    reaper: &Reaper,
    sink: &RecordSink,
) -> Result<Workspace, String> {
    let provider = credential_provider(gateway.clone());
    let run_dir = config.spool_dir.join("run");
    let cred_server = RepoTarget::from_url(&bootstrap.repo_url).and_then(|target| {
        credentials::serve(&run_dir, target, provider.clone(), sink.clone())
            .map_err(|e| sink.agent(e.to_string()))
            .ok()
    });
    let socket_path = cred_server
        .as_ref()
        .map_or_else(|| run_dir.join("credential.sock"), |s| s.socket.clone());
    let connector_server = crate::connectors::server::serve(
        &run_dir,
        crate::connectors::server::gateway_broker(gateway.clone(), sink.clone()),
        sink.clone(),
    )
    .map_err(|e| sink.agent(format!("connector socket in {}: {e}", run_dir.display())))
    .ok();

    sink.state(
        SessionStatus::Provisioning,
        "cloning",
        bootstrap.branch.clone(),
    );
    let started = Instant::now();
    let https = bootstrap.repo_url.starts_with("https://");
    let spec = Arc::new(OwnedCloneSpec {
        repo_url: bootstrap.repo_url.clone(),
        branch: bootstrap.branch.clone(),
        default_branch: bootstrap.default_branch.clone(),
        workspace: config.workspace.clone(),
        ca_pem: https.then(|| gateway.ca_pem()),
        credentials: blocking_credentials(provider),
    });
    // A sandbox's network can come up a moment after its agent enrolls (a container on a
    // bridge the engine just created): a clone that could not reach the control plane is
    // tried again, a few times, before it fails the session.
    let mut backoff = Backoff::new(CLONE_RETRY_FIRST, CLONE_RETRY_MAX);
    let mut attempt = 1;
    let outcome = loop {
        let hold = reaper.own_children_only();
        let attempt_spec = spec.clone();
        let cloned = tokio::task::spawn_blocking(move || {
            let _hold = hold;
            clone::clone_or_fetch(&attempt_spec.borrowed())
        })
        .await
        .map_err(|e| format!("clone task failed: {e}"))?;
        match cloned {
            Ok(outcome) => break outcome,
            Err(e) if attempt < CLONE_ATTEMPTS && e.is_unreachable() => {
                let delay = backoff.next_delay();
                sink.agent(format!(
                    "clone attempt {attempt} of {CLONE_ATTEMPTS} could not reach the control \
                     plane ({e}); trying again in {} ms",
                    delay.as_millis()
                ));
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let clone_time = started.elapsed();
    sink.state(
        SessionStatus::Provisioning,
        "cloned",
        format!("{outcome:?} in {} ms", clone_time.as_millis()),
    );
    let ca_file = https.then(|| config.spool_dir.join("control-plane-ca.pem"));
    prepare_repo(config, bootstrap, gateway, ca_file.as_deref(), &socket_path)?;
    let watcher = match CommitWatcher::new(&config.workspace, &bootstrap.branch) {
        Ok(w) => Some(WatcherHandle::new(w, sink.clone())),
        Err(e) => {
            sink.agent(e.to_string());
            None
        }
    };
    Ok(Workspace {
        cred_server,
        connector_server,
        socket_path,
        ca_file,
        watcher,
        clone_time,
    })
}

/// What the blocking clone needs, owned so it can move to the blocking thread.
struct OwnedCloneSpec {
    repo_url: String,
    branch: String,
    default_branch: String,
    workspace: PathBuf,
    ca_pem: Option<String>,
    credentials: CredentialFn,
}

impl OwnedCloneSpec {
    fn borrowed(&self) -> CloneSpec<'_> {
        CloneSpec {
            repo_url: &self.repo_url,
            branch: &self.branch,
            default_branch: &self.default_branch,
            workspace: &self.workspace,
            ca_pem: self.ca_pem.as_deref(),
            credentials: self.credentials.clone(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
