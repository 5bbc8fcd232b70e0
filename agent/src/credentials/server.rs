//! The daemon side of the credential helper: a unix socket (private directory, mode 0600,
//! peer uid checked) that answers git's `get` with a just-in-time token from
//! `AgentGateway.GitCredential`. Tokens stay in memory; only the configured repository's
//! protocol and host get one, so git never hands the token to another server.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kortix_proto::v1::{GitCredentialRequest, GitCredentialResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::protocol::{Attributes, MAX_INPUT_BYTES, is_complete};
use crate::records::RecordSink;

/// Fetches a credential for a request (the daemon calls `AgentGateway.GitCredential`).
pub type Provider = Arc<
    dyn Fn(GitCredentialRequest) -> BoxFuture<'static, Result<GitCredentialResponse, String>>
        + Send
        + Sync,
>;

const READ_TIMEOUT: Duration = Duration::from_secs(5);
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(20);
/// A cached token is reused while it has at least this long to live.
const REUSE_MARGIN_S: i64 = 60;
const MAX_CONCURRENT: usize = 16;

/// The one remote credentials are handed out for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoTarget {
    pub protocol: String,
    /// `host` or `host:port`, as git sends it.
    pub host: String,
    pub path: String,
}

impl RepoTarget {
    pub fn from_url(url: &str) -> Option<RepoTarget> {
        let (protocol, rest) = url.split_once("://")?;
        if protocol != "https" && protocol != "http" {
            return None;
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if host.is_empty() {
            return None;
        }
        Some(RepoTarget {
            protocol: protocol.to_owned(),
            host: host.to_ascii_lowercase(),
            path: path.to_owned(),
        })
    }

    fn matches(&self, attrs: &Attributes) -> bool {
        attrs.get("protocol") == Some(self.protocol.as_str())
            && attrs
                .get("host")
                .is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
    }
}

/// The served credential socket; dropping it stops serving.
pub type CredentialServer = crate::private_socket::PrivateSocket;
pub use crate::private_socket::SocketError;

/// Binds `<dir>/credential.sock` (dir made 0700, socket 0600) and serves it.
pub fn serve(
    dir: &Path,
    target: RepoTarget,
    provider: Provider,
    sink: RecordSink,
) -> Result<CredentialServer, SocketError> {
    let state = Arc::new(ServerState {
        target,
        provider,
        sink,
        cache: Mutex::new(None),
        uid: nix::unistd::geteuid().as_raw(),
    });
    crate::private_socket::serve(dir, "credential.sock", MAX_CONCURRENT, move |stream| {
        let state = state.clone();
        async move { state.handle(stream).await }
    })
}

struct ServerState {
    target: RepoTarget,
    provider: Provider,
    sink: RecordSink,
    cache: Mutex<Option<GitCredentialResponse>>,
    uid: u32,
}

/// Whether a peer may ask: only processes of the daemon's own user.
pub fn peer_allowed(stream: &UnixStream, uid: u32) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("cannot read peer credentials: {e}"))?;
    if cred.uid() != uid {
        return Err(format!(
            "peer uid {} (pid {:?}) is not the agent's uid {uid}",
            cred.uid(),
            cred.pid()
        ));
    }
    Ok(())
}

impl ServerState {
    async fn handle(&self, mut stream: UnixStream) {
        if let Err(why) = peer_allowed(&stream, self.uid) {
            self.sink
                .agent(format!("credential request refused: {why}"));
            return;
        }
        let input = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await {
            Ok(Ok(input)) => input,
            _ => return,
        };
        let answer = match Attributes::parse(&input) {
            Ok(attrs) => self.answer(&attrs).await,
            Err(e) => {
                self.sink.agent(format!("credential request refused: {e}"));
                Attributes::default()
            }
        };
        let _ = tokio::time::timeout(READ_TIMEOUT, stream.write_all(&answer.to_bytes())).await;
        let _ = stream.shutdown().await;
    }

    async fn answer(&self, attrs: &Attributes) -> Attributes {
        let mut out = Attributes::default();
        if !self.target.matches(attrs) {
            // Not our remote: say nothing, so git tries whatever else it has.
            return out;
        }
        match self.credential(attrs).await {
            Ok(resp) => {
                out.set("username", resp.username);
                out.set("password", resp.password);
                if resp.expires_unix_s > 0 {
                    out.set("password_expiry_utc", resp.expires_unix_s.to_string());
                }
            }
            Err(e) => {
                self.sink.agent(format!(
                    "git credential for {}://{} unavailable: {e}",
                    self.target.protocol, self.target.host
                ));
                // Stop git from prompting: there is no one to answer.
                out.set("quit", "1");
            }
        }
        out
    }

    async fn credential(&self, attrs: &Attributes) -> Result<GitCredentialResponse, String> {
        let now = crate::enroll::unix_now();
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && c.expires_unix_s - now > REUSE_MARGIN_S
        {
            return Ok(c.clone());
        }
        let request = GitCredentialRequest {
            protocol: self.target.protocol.clone(),
            host: self.target.host.clone(),
            path: attrs
                .get("path")
                .filter(|p| !p.is_empty())
                .unwrap_or(&self.target.path)
                .to_owned(),
        };
        let resp = tokio::time::timeout(PROVIDER_TIMEOUT, (self.provider)(request))
            .await
            .map_err(|_| format!("GitCredential timed out after {PROVIDER_TIMEOUT:?}"))??;
        if resp.password.is_empty() {
            return Err("control plane returned an empty token".into());
        }
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(resp.clone());
        Ok(resp)
    }
}

async fn read_request(stream: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_INPUT_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "credential request too large",
            ));
        }
        if is_complete(&buf) {
            return Ok(buf);
        }
    }
}
