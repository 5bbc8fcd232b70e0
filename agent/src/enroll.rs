//! Getting and keeping a client certificate: a key pair that lives only in memory, `Enroll`
//! with the one-time bootstrap token over server-authenticated TLS, then mTLS channels, and
//! `Renew` before the certificate expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kortix_proto::v1::agent_gateway_client::AgentGatewayClient;
use kortix_proto::v1::{EnrollRequest, EnrollResponse, RenewRequest};
use rcgen::{CertificateParams, KeyPair};
use tokio::sync::watch;
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
    })
}

/// `Enroll` once over server-authenticated TLS.
pub async fn enroll(
    url: &str,
    ca_pem: &str,
    bootstrap_token: &str,
) -> Result<AgentIdentity, EnrollError> {
    let (key, csr_der) = new_key_and_csr()?;
    let channel =
        endpoint(url, ca_pem, None)?
            .connect()
            .await
            .map_err(|e| EnrollError::Channel {
                url: url.to_owned(),
                message: error_chain(&e),
            })?;
    let request = EnrollRequest {
        bootstrap_token: bootstrap_token.to_owned(),
        csr_der,
        protocol_version: kortix_proto::PROTOCOL_VERSION,
        agent_version: AGENT_VERSION.to_owned(),
    };
    let resp = tokio::time::timeout(
        CALL_TIMEOUT,
        AgentGatewayClient::new(channel).enroll(request),
    )
    .await
    .map_err(|_| EnrollError::Timeout {
        call: "Enroll",
        url: url.to_owned(),
        timeout: CALL_TIMEOUT,
    })?
    .map_err(|status| EnrollError::Rpc {
        call: "Enroll",
        url: url.to_owned(),
        status: Box::new(status),
    })?
    .into_inner();
    identity_from("Enroll", url, key, resp, ca_pem)
}

/// `Enroll` with retries while failures are transient.
pub async fn enroll_with_retry(
    url: &str,
    ca_pem: &str,
    token: &str,
    sink: &RecordSink,
    give_up_after: Duration,
) -> Result<AgentIdentity, EnrollError> {
    let deadline = tokio::time::Instant::now() + give_up_after;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match enroll(url, ca_pem, token).await {
            Ok(id) => return Ok(id),
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                let delay = backoff.next_delay();
                sink.agent(format!(
                    "enroll failed ({e}); retrying in {} ms",
                    delay.as_millis()
                ));
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `Renew` over the current mTLS channel with a fresh key.
pub async fn renew(
    url: &str,
    channel: Channel,
    current: &AgentIdentity,
) -> Result<AgentIdentity, EnrollError> {
    let (key, csr_der) = new_key_and_csr()?;
    let resp = tokio::time::timeout(
        CALL_TIMEOUT,
        AgentGatewayClient::new(channel).renew(RenewRequest { csr_der }),
    )
    .await
    .map_err(|_| EnrollError::Timeout {
        call: "Renew",
        url: url.to_owned(),
        timeout: CALL_TIMEOUT,
    })?
    .map_err(|status| EnrollError::Rpc {
        call: "Renew",
        url: url.to_owned(),
        status: Box::new(status),
    })?
    .into_inner();
    identity_from("Renew", url, key, resp, &current.ca_pem)
}

/// The agent's way to the control plane: the current mTLS channel, replaced on renewal.
#[derive(Clone)]
pub struct Gateway {
    url: String,
    channel: watch::Receiver<Channel>,
    identity: watch::Receiver<AgentIdentity>,
}

impl Gateway {
    pub fn new(
        url: &str,
        identity: AgentIdentity,
    ) -> Result<(Gateway, GatewayKeeper), EnrollError> {
        let channel = mtls_channel(url, &identity)?;
        let (channel_tx, channel_rx) = watch::channel(channel);
        let (identity_tx, identity_rx) = watch::channel(identity);
        Ok((
            Gateway {
                url: url.to_owned(),
                channel: channel_rx,
                identity: identity_rx,
            },
            GatewayKeeper {
                url: url.to_owned(),
                channel: channel_tx,
                identity: identity_tx,
            },
        ))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn client(&self) -> AgentGatewayClient<Channel> {
        AgentGatewayClient::new(self.channel.borrow().clone())
    }

    pub fn ca_pem(&self) -> String {
        self.identity.borrow().ca_pem.clone()
    }

    pub fn identity(&self) -> AgentIdentity {
        self.identity.borrow().clone()
    }
}

/// Owns renewal: swaps in a new channel before the certificate expires. Streams already open
/// keep their connection; new calls use the new certificate.
pub struct GatewayKeeper {
    url: String,
    channel: watch::Sender<Channel>,
    identity: watch::Sender<AgentIdentity>,
}

impl GatewayKeeper {
    pub async fn run(self, sink: RecordSink) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let current = self.identity.borrow().clone();
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
                let channel = self.channel.borrow().clone();
                match renew(&self.url, channel, &current).await {
                    Ok(next) => match mtls_channel(&self.url, &next) {
                        Ok(ch) => {
                            sink.agent(format!(
                                "certificate renewed; valid until unix {}",
                                next.not_after_unix_s
                            ));
                            self.channel.send_replace(ch);
                            self.identity.send_replace(next);
                            backoff.reset();
                            break;
                        }
                        Err(e) => sink.agent(format!("certificate renewed but unusable: {e}")),
                    },
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
