//! Getting and keeping a client certificate: a key pair that lives only in memory, `Enroll`
//! with the one-time bootstrap token over server-authenticated TLS (or, for an agent that
//! restarted inside its live sandbox, `Reenroll` with the renewal secret the last enrollment
//! returned), then mTLS channels, and `Renew` before the certificate expires. With several
//! gateway URLs (one per control-plane replica) every call goes to the current one, and a
//! lost stream moves the agent on to the next ([`Gateway::fail_over`]).

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kortix_proto::v1::agent_gateway_client::AgentGatewayClient;
use kortix_proto::v1::{EnrollRequest, EnrollResponse, ReenrollRequest, RenewRequest};
use rcgen::{CertificateParams, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::backoff::Backoff;
use crate::records::RecordSink;

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("generating the agent key pair or CSR: {0}")]
    Key(String),
    #[error("building the channel to {url}: {message}")]
    Channel { url: String, message: String },
    #[error("{call} at {url}: {status}")]
    Rpc {
        call: &'static str,
        url: String,
        status: Box<tonic::Status>,
    },
    #[error("{call} at {url} timed out after {timeout:?}")]
    Timeout {
        call: &'static str,
        url: String,
        timeout: Duration,
    },
    #[error("{call} at {url} returned an unusable certificate: {message}")]
    BadResponse {
        call: &'static str,
        url: String,
        message: String,
    },
}

impl EnrollError {
    /// Whether the control plane refused the credential itself (a used, unknown or expired
    /// bootstrap token; a wrong or used renewal secret): asking again, anywhere, cannot help.
    pub fn is_refused_credential(&self) -> bool {
        matches!(self, EnrollError::Rpc { status, .. } if matches!(
            status.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        ))
    }

    /// Whether retrying can help: a refused token or CSR will be refused again.
    pub fn is_retryable(&self) -> bool {
        match self {
            EnrollError::Rpc { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Internal
                    | tonic::Code::ResourceExhausted
            ),
            EnrollError::Timeout { .. } | EnrollError::Channel { .. } => true,
            EnrollError::Key(_) | EnrollError::BadResponse { .. } => false,
        }
    }
}

/// The agent's current certificate and key (PEM, memory only).
#[derive(Clone)]
pub struct AgentIdentity {
    pub session_id: String,
    pub chain_pem: String,
    pub ca_pem: String,
    key_pem: String,
    pub not_after_unix_s: i64,
    pub renew_after_unix_s: i64,
    /// The single-use secret for the next `Reenroll`, from `Enroll` and `Reenroll` only; the
    /// daemon takes it out and keeps it in its private file.
    pub renewal_secret: Option<String>,
}

impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("session_id", &self.session_id)
            .field("not_after_unix_s", &self.not_after_unix_s)
            .field("renew_after_unix_s", &self.renew_after_unix_s)
            .finish_non_exhaustive()
    }
}

fn new_key_and_csr() -> Result<(KeyPair, Vec<u8>), EnrollError> {
    let key = KeyPair::generate().map_err(|e| EnrollError::Key(e.to_string()))?;
    // The control plane ignores requested names; the session comes from the token.
    let params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| EnrollError::Key(e.to_string()))?;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| EnrollError::Key(e.to_string()))?;
    Ok((key, csr.der().to_vec()))
}

fn endpoint(
    url: &str,
    ca_pem: &str,
    identity: Option<&AgentIdentity>,
) -> Result<Endpoint, EnrollError> {
    let err = |message: String| EnrollError::Channel {
        url: url.to_owned(),
        message,
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.chain_pem, &id.key_pem));
    }
    Ok(Endpoint::from_shared(url.to_owned())
        .map_err(|e| err(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        // Keep-alives detect a dead peer on the long-lived Connect stream.
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

/// An mTLS channel for `identity`; it connects lazily and reconnects by itself.
pub fn mtls_channel(url: &str, identity: &AgentIdentity) -> Result<Channel, EnrollError> {
    Ok(endpoint(url, &identity.ca_pem, Some(identity))?.connect_lazy())
}

fn identity_from(
    call: &'static str,
    url: &str,
    key: KeyPair,
    resp: EnrollResponse,
    fallback_ca: &str,
) -> Result<AgentIdentity, EnrollError> {
    let bad = |message: String| EnrollError::BadResponse {
        call,
        url: url.to_owned(),
        message,
    };
    let chain =
        crate::tls::certs_from_pem(&resp.certificate_chain_pem).map_err(|e| bad(e.to_string()))?;
    if chain.is_empty() {
        return Err(bad("empty certificate chain".into()));
    }
    let ca_pem = if resp.ca_certificate_pem.trim().is_empty() {
        fallback_ca.to_owned()
    } else {
        resp.ca_certificate_pem
    };
    crate::tls::certs_from_pem(&ca_pem).map_err(|e| bad(e.to_string()))?;
    Ok(AgentIdentity {
        session_id: resp.session_id,
        chain_pem: resp.certificate_chain_pem,
        ca_pem,
        key_pem: key.serialize_pem(),
        not_after_unix_s: resp.not_after_unix_s,
        renew_after_unix_s: resp.renew_after_unix_s,
        renewal_secret: (!resp.renewal_secret.is_empty()).then_some(resp.renewal_secret),
    })
}

/// A server-authenticated (no client certificate) channel for `Enroll` and `Reenroll`.
async fn plain_channel(url: &str, ca_pem: &str) -> Result<Channel, EnrollError> {
    endpoint(url, ca_pem, None)?
        .connect()
        .await
        .map_err(|e| EnrollError::Channel {
            url: url.to_owned(),
            message: error_chain(&e),
        })
}

/// `call` with [`CALL_TIMEOUT`], its failures as [`EnrollError`].
async fn unary<T>(
    call: &'static str,
    url: &str,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, EnrollError> {
    Ok(tokio::time::timeout(CALL_TIMEOUT, fut)
        .await
        .map_err(|_| EnrollError::Timeout {
            call,
            url: url.to_owned(),
            timeout: CALL_TIMEOUT,
        })?
        .map_err(|status| EnrollError::Rpc {
            call,
            url: url.to_owned(),
            status: Box::new(status),
        })?
        .into_inner())
}

/// `Reenroll` once: the restarted agent of a live session, with the renewal secret the
/// last enrollment returned.
pub async fn reenroll(
    url: &str,
    ca_pem: &str,
    session_id: &str,
    renewal_secret: &str,
) -> Result<AgentIdentity, EnrollError> {
    let (key, csr_der) = new_key_and_csr()?;
    let channel = plain_channel(url, ca_pem).await?;
    let request = ReenrollRequest {
        session_id: session_id.to_owned(),
        renewal_secret: renewal_secret.to_owned(),
        csr_der,
        protocol_version: kortix_proto::PROTOCOL_VERSION,
        agent_version: AGENT_VERSION.to_owned(),
    };
    let resp = unary(
        "Reenroll",
        url,
        AgentGatewayClient::new(channel).reenroll(request),
    )
    .await?;
    identity_from("Reenroll", url, key, resp, ca_pem)
}

/// How the agent proves who it is when it (re-)enrolls.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    Bootstrap(&'a str),
    Renewal {
        session_id: &'a str,
        secret: &'a str,
    },
}

/// Enrolls (or re-enrolls) through any of `urls`, starting at `start` and moving on to the
/// next one after each failure, while failures are transient: a full round of failures
/// waits with capped, jittered backoff before the next, so no gateway is hammered. Returns
/// the identity and the index of the URL that answered.
pub async fn enroll_any(
    urls: &[String],
    start: usize,
    ca_pem: &str,
    credential: Credential<'_>,
    sink: &RecordSink,
    give_up_after: Duration,
) -> Result<(AgentIdentity, usize), EnrollError> {
    let deadline = tokio::time::Instant::now() + give_up_after;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let n = urls.len().max(1);
    let mut attempt = 0usize;
    loop {
        let index = (start + attempt) % n;
        let Some(url) = urls.get(index) else {
            return Err(EnrollError::Channel {
                url: String::new(),
                message: "no control plane URL".into(),
            });
        };
        let result = match credential {
            Credential::Bootstrap(token) => enroll(url, ca_pem, token).await,
            Credential::Renewal { session_id, secret } => {
                reenroll(url, ca_pem, session_id, secret).await
            }
        };
        match result {
            Ok(id) => return Ok((id, index)),
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                attempt += 1;
                // The next gateway at once while this round has untried ones; then back off.
                let delay = if !attempt.is_multiple_of(n) {
                    Duration::from_millis(50)
                } else {
                    backoff.next_delay()
                };
                sink.agent(format!(
                    "enroll failed ({e}); trying {} in {} ms",
                    urls[(start + attempt) % n],
                    delay.as_millis()
                ));
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `Enroll` once over server-authenticated TLS.
pub async fn enroll(
    url: &str,
    ca_pem: &str,
    bootstrap_token: &str,
) -> Result<AgentIdentity, EnrollError> {
    let (key, csr_der) = new_key_and_csr()?;
    let channel = plain_channel(url, ca_pem).await?;
    let request = EnrollRequest {
        bootstrap_token: bootstrap_token.to_owned(),
        csr_der,
        protocol_version: kortix_proto::PROTOCOL_VERSION,
        agent_version: AGENT_VERSION.to_owned(),
    };
    let resp = unary(
        "Enroll",
        url,
        AgentGatewayClient::new(channel).enroll(request),
    )
    .await?;
    identity_from("Enroll", url, key, resp, ca_pem)
}

/// `Enroll` at one URL with retries while failures are transient.
pub async fn enroll_with_retry(
    url: &str,
    ca_pem: &str,
    token: &str,
    sink: &RecordSink,
    give_up_after: Duration,
) -> Result<AgentIdentity, EnrollError> {
    enroll_any(
        &[url.to_owned()],
        0,
        ca_pem,
        Credential::Bootstrap(token),
        sink,
        give_up_after,
    )
    .await
    .map(|(id, _)| id)
}

/// `Renew` over the current mTLS channel with a fresh key.
pub async fn renew(
    url: &str,
    channel: Channel,
    current: &AgentIdentity,
) -> Result<AgentIdentity, EnrollError> {
    let (key, csr_der) = new_key_and_csr()?;
    let resp = unary(
        "Renew",
        url,
        AgentGatewayClient::new(channel).renew(RenewRequest { csr_der }),
    )
    .await?;
    let mut next = identity_from("Renew", url, key, resp, &current.ca_pem)?;
    next.renewal_secret = None;
    Ok(next)
}

/// The agent's way to the control plane: every gateway URL, the one in use, and the current
/// mTLS channel to it, replaced on renewal and on failover. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<GatewayInner>,
}

struct GatewayInner {
    urls: Vec<String>,
    current: RwLock<Current>,
}

struct Current {
    index: usize,
    channel: Channel,
    identity: AgentIdentity,
}

impl Gateway {
    /// One gateway URL.
    pub fn new(
        url: &str,
        identity: AgentIdentity,
    ) -> Result<(Gateway, GatewayKeeper), EnrollError> {
        Self::with_urls(vec![url.to_owned()], 0, identity)
    }

    /// Several gateway URLs (one per control-plane replica), starting with `urls[index]`.
    pub fn with_urls(
        urls: Vec<String>,
        index: usize,
        mut identity: AgentIdentity,
    ) -> Result<(Gateway, GatewayKeeper), EnrollError> {
        let index = if urls.is_empty() {
            0
        } else {
            index % urls.len()
        };
        let url = urls.get(index).ok_or_else(|| EnrollError::Channel {
            url: String::new(),
            message: "no control plane URL".into(),
        })?;
        let channel = mtls_channel(url, &identity)?;
        // The renewal secret is the daemon's to keep on disk, not the channel's to carry.
        identity.renewal_secret = None;
        let gateway = Gateway {
            inner: Arc::new(GatewayInner {
                current: RwLock::new(Current {
                    index,
                    channel,
                    identity,
                }),
                urls,
            }),
        };
        Ok((gateway.clone(), GatewayKeeper { gateway }))
    }

    fn current(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        // Every write replaces whole values: a poisoned lock still holds a consistent one.
        self.inner.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The gateway URL in use.
    pub fn url(&self) -> String {
        let current = self.current();
        self.inner.urls[current.index].clone()
    }

    /// Every gateway URL.
    pub fn urls(&self) -> &[String] {
        &self.inner.urls
    }

    pub fn client(&self) -> AgentGatewayClient<Channel> {
        AgentGatewayClient::new(self.current().channel.clone())
    }

    pub fn ca_pem(&self) -> String {
        self.current().identity.ca_pem.clone()
    }

    pub fn identity(&self) -> AgentIdentity {
        self.current().identity.clone()
    }

    /// The stream to `failed` was lost or could not be opened: moves on to the next gateway
    /// URL (if there is another and nobody moved on already). Returns the URL now in use.
    pub fn fail_over(&self, failed: &str) -> String {
        let urls = &self.inner.urls;
        let mut current = self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if urls.len() > 1 && urls[current.index] == failed {
            let next = (current.index + 1) % urls.len();
            match mtls_channel(&urls[next], &current.identity) {
                Ok(channel) => {
                    current.index = next;
                    current.channel = channel;
                }
                Err(e) => crate::diag::warn(&format!(
                    "cannot fail over to {}: {e}; staying with {failed}",
                    urls[next]
                )),
            }
        }
        urls[current.index].clone()
    }

    /// A renewed certificate: new calls use it (on the gateway in use); streams already open
    /// keep their connection.
    fn set_identity(&self, mut next: AgentIdentity) -> Result<(), EnrollError> {
        next.renewal_secret = None;
        let mut current = self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let channel = mtls_channel(&self.inner.urls[current.index], &next)?;
        current.channel = channel;
        current.identity = next;
        Ok(())
    }
}

/// Owns renewal: swaps in a new channel before the certificate expires.
pub struct GatewayKeeper {
    gateway: Gateway,
}

impl GatewayKeeper {
    pub async fn run(self, sink: RecordSink) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let current = self.gateway.identity();
            let now = unix_now();
            let lifetime = (current.not_after_unix_s - now).max(0);
            // Renew when told; if the server gave no hint, at two thirds of what is left.
            let at = if current.renew_after_unix_s > 0 {
                current.renew_after_unix_s
            } else {
                now + lifetime * 2 / 3
            };
            let wait = Duration::from_secs(at.saturating_sub(now).max(0) as u64);
            tokio::time::sleep(wait).await;
            loop {
                let url = self.gateway.url();
                let channel = self.gateway.current().channel.clone();
                match renew(&url, channel, &current).await {
                    Ok(next) => {
                        let until = next.not_after_unix_s;
                        match self.gateway.set_identity(next) {
                            Ok(()) => {
                                sink.agent(format!(
                                    "certificate renewed; valid until unix {until}"
                                ));
                                backoff.reset();
                                break;
                            }
                            Err(e) => sink.agent(format!("certificate renewed but unusable: {e}")),
                        }
                    }
                    Err(e) => {
                        let left = current.not_after_unix_s - unix_now();
                        sink.agent(format!(
                            "certificate renewal failed ({e}); {left}s of validity left"
                        ));
                    }
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An error with its sources, for transport errors whose top level says little.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Spool, SpoolOptions};

    fn self_signed() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A URL nothing listens on.
    fn dead_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://{}", listener.local_addr().unwrap())
    }

    #[tokio::test]
    async fn a_lost_gateway_moves_the_agent_to_the_next_one_once() {
        let (cert, key) = self_signed();
        let identity = AgentIdentity {
            session_id: "s".into(),
            chain_pem: cert.clone(),
            ca_pem: cert,
            key_pem: key,
            not_after_unix_s: 0,
            renew_after_unix_s: 0,
            renewal_secret: Some("kxr_secret".into()),
        };
        let urls: Vec<String> = ["https://a:1", "https://b:2", "https://c:3"]
            .map(String::from)
            .into();
        let (gateway, _keeper) = Gateway::with_urls(urls, 2, identity).unwrap();
        assert_eq!(gateway.url(), "https://c:3");
        assert_eq!(
            gateway.identity().renewal_secret,
            None,
            "not kept in memory"
        );
        assert_eq!(gateway.fail_over("https://c:3"), "https://a:1");
        // A second report of the same loss (another task saw it too) moves nothing.
        assert_eq!(gateway.fail_over("https://c:3"), "https://a:1");
        assert_eq!(gateway.fail_over("https://a:1"), "https://b:2");
        assert_eq!(gateway.url(), "https://b:2");

        let (single, _keeper) = Gateway::new("https://only:1", gateway.identity()).unwrap();
        assert_eq!(single.fail_over("https://only:1"), "https://only:1");
    }

    #[tokio::test]
    async fn enrollment_tries_every_gateway_and_gives_up_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let sink = RecordSink::new(Spool::open(dir.path(), SpoolOptions::default()).unwrap());
        sink.activate(0).unwrap();
        let (ca, _) = self_signed();
        let urls = vec![dead_url(), dead_url()];
        let started = tokio::time::Instant::now();
        let err = enroll_any(
            &urls,
            1,
            &ca,
            Credential::Bootstrap("kxb_unused"),
            &sink,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(!err.is_refused_credential(), "{err}");
        assert!(started.elapsed() < Duration::from_secs(15));
        let said: String = sink
            .next_batch()
            .iter()
            .filter_map(|r| match &r.body {
                Some(kortix_proto::v1::record::Body::Log(l)) => Some(l.line.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n");
        for url in &urls {
            assert!(said.contains(&format!("trying {url}")), "{said}");
        }
    }
}
