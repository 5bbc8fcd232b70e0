//! One simulated agent: a key pair in memory, enrollment, and the Connect stream.

use kortix_proto::v1::{
    AgentFrame, Bootstrap, ControlFrame, EnrollRequest, Heartbeat, Hello, Record, RecordBatch,
    SessionStatus, StateReport, agent_frame::Frame as In, agent_gateway_client::AgentGatewayClient,
    control_frame::Frame as Out,
};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Streaming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    Status(#[from] tonic::Status),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    #[error("protocol: {0}")]
    Protocol(String),
}

/// An agent that has enrolled: its identity and an mTLS channel to the gateway.
#[derive(Clone)]
pub struct EnrolledAgent {
    pub session_id: String,
    pub channel: Channel,
    pub key_pem: String,
    pub chain_pem: String,
}

fn endpoint(url: &str, tls: ClientTlsConfig) -> Result<Endpoint, SimError> {
    Ok(Endpoint::from_shared(url.to_string())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true))
}

/// A CSR (DER) for a fresh key pair, asking for a name the CA must ignore.
pub fn csr() -> Result<(rcgen::KeyPair, Vec<u8>), SimError> {
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec!["requested.invalid".to_string()])?;
    let der = params.serialize_request(&key)?.der().to_vec();
    Ok((key, der))
}

/// Enrolls with a bootstrap token over server-authenticated TLS, then opens an mTLS channel.
pub async fn enroll(
    agent_url: &str,
    ca_pem: &str,
    bootstrap_token: &str,
) -> Result<EnrolledAgent, SimError> {
    let plain = enrollment_channel(agent_url, ca_pem).await?;
    enroll_over(plain, agent_url, ca_pem, bootstrap_token).await
}

/// A server-authenticated (no client certificate) channel to the gateway, good for `Enroll`.
/// Many simulated agents may share one: HTTP/2 multiplexes their calls.
pub async fn enrollment_channel(agent_url: &str, ca_pem: &str) -> Result<Channel, SimError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = Certificate::from_pem(ca_pem);
    Ok(
        endpoint(agent_url, ClientTlsConfig::new().ca_certificate(ca))?
            .connect()
            .await?,
    )
}

/// Enrolls over an existing [`enrollment_channel`], then opens this agent's own mTLS channel.
pub async fn enroll_over(
    plain: Channel,
    agent_url: &str,
    ca_pem: &str,
    bootstrap_token: &str,
) -> Result<EnrolledAgent, SimError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = Certificate::from_pem(ca_pem);
    let (key, csr) = csr()?;
    let response = AgentGatewayClient::new(plain)
        .enroll(EnrollRequest {
            bootstrap_token: bootstrap_token.to_string(),
            csr_der: csr,
            protocol_version: kortix_proto::PROTOCOL_VERSION,
            agent_version: "sim".into(),
        })
        .await?
        .into_inner();
    let key_pem = key.serialize_pem();
    let identity = Identity::from_pem(&response.certificate_chain_pem, &key_pem);
    let channel = endpoint(
        agent_url,
        ClientTlsConfig::new().ca_certificate(ca).identity(identity),
    )?
    .connect()
    .await?;
    Ok(EnrolledAgent {
        session_id: response.session_id,
        channel,
        key_pem,
        chain_pem: response.certificate_chain_pem,
    })
}

/// The sending half of a Connect stream (cheap to clone).
#[derive(Clone)]
pub struct FrameSender {
    tx: mpsc::Sender<AgentFrame>,
}

/// The receiving half of a Connect stream.
pub struct FrameReceiver {
    rx: Streaming<ControlFrame>,
}

impl FrameSender {
    pub async fn send(&self, frame: In) -> Result<(), SimError> {
        self.tx
            .send(AgentFrame { frame: Some(frame) })
            .await
            .map_err(|_| SimError::Protocol("stream closed".into()))
    }

    pub async fn send_records(&self, records: Vec<Record>) -> Result<(), SimError> {
        self.send(In::Records(RecordBatch { records })).await
    }

    pub async fn heartbeat(&self, nonce: u64, idle_ms: u64) -> Result<(), SimError> {
        self.send(In::Heartbeat(Heartbeat {
            nonce,
            idle_ms,
            opencode_alive: true,
            opencode_restarts: 0,
        }))
        .await
    }

    /// Acks command `command` (a Prompt's or Stop's `command`).
    pub async fn ack(&self, command: &kortix_proto::v1::CommandRef) -> Result<(), SimError> {
        self.send(In::CommandAck(kortix_proto::v1::CommandAck {
            command_id: command.id.clone(),
            command_seq: command.seq,
        }))
        .await
    }

    /// Reports the session running, as a real agent does once OpenCode is up.
    pub async fn report_running(&self) -> Result<(), SimError> {
        self.send(In::State(StateReport {
            status: SessionStatus::Running as i32,
            reason: String::new(),
            r#final: false,
            head_sha: String::new(),
        }))
        .await
    }
}

impl FrameReceiver {
    /// The next control frame; `None` when the control plane ended the stream. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Out>, SimError> {
        Ok(self.rx.message().await?.and_then(|f| f.frame))
    }
}

/// An open Connect stream.
pub struct AgentConnection {
    pub bootstrap: Bootstrap,
    tx: mpsc::Sender<AgentFrame>,
    rx: Streaming<ControlFrame>,
}

impl EnrolledAgent {
    pub fn client(&self) -> AgentGatewayClient<Channel> {
        AgentGatewayClient::new(self.channel.clone())
    }

    /// Opens Connect, says Hello (as an agent that does not ack commands) and waits for the
    /// Bootstrap.
    pub async fn connect(&self, last_assigned_seq: u64) -> Result<AgentConnection, SimError> {
        self.connect_with(last_assigned_seq, false).await
    }

    /// [`EnrolledAgent::connect`], saying whether the agent acks commands (it must then
    /// answer each Prompt and Stop that carries a command with [`AgentConnection::ack`]).
    pub async fn connect_with(
        &self,
        last_assigned_seq: u64,
        acks_commands: bool,
    ) -> Result<AgentConnection, SimError> {
        let (tx, rx) = mpsc::channel(64);
        tx.send(AgentFrame {
            frame: Some(In::Hello(Hello {
                protocol_version: kortix_proto::PROTOCOL_VERSION,
                agent_version: "sim".into(),
                last_assigned_seq,
                acks_commands,
            })),
        })
        .await
        .map_err(|_| SimError::Protocol("stream closed".into()))?;
        let mut inbound = self
            .client()
            .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| SimError::Protocol("stream ended before Bootstrap".into()))?;
        let bootstrap = match first.frame {
            Some(Out::Bootstrap(b)) => b,
            other => {
                return Err(SimError::Protocol(format!(
                    "first frame was not Bootstrap: {other:?}"
                )));
            }
        };
        Ok(AgentConnection {
            bootstrap,
            tx,
            rx: inbound,
        })
    }
}

impl AgentConnection {
    pub async fn send(&self, frame: In) -> Result<(), SimError> {
        self.tx
            .send(AgentFrame { frame: Some(frame) })
            .await
            .map_err(|_| SimError::Protocol("stream closed".into()))
    }

    pub async fn send_records(&self, records: Vec<Record>) -> Result<(), SimError> {
        self.send(In::Records(RecordBatch { records })).await
    }

    pub async fn heartbeat(&self, nonce: u64, idle_ms: u64) -> Result<(), SimError> {
        self.send(In::Heartbeat(Heartbeat {
            nonce,
            idle_ms,
            opencode_alive: true,
            opencode_restarts: 0,
        }))
        .await
    }

    /// Acks command `command` (a Prompt's or Stop's `command`).
    pub async fn ack(&self, command: &kortix_proto::v1::CommandRef) -> Result<(), SimError> {
        self.send(In::CommandAck(kortix_proto::v1::CommandAck {
            command_id: command.id.clone(),
            command_seq: command.seq,
        }))
        .await
    }

    /// The next control frame; `None` when the control plane ended the stream.
    pub async fn next(&mut self) -> Result<Option<Out>, SimError> {
        Ok(self.rx.message().await?.and_then(|f| f.frame))
    }

    /// Reads control frames until an Ack for at least `seq`.
    pub async fn wait_ack(&mut self, seq: u64) -> Result<u64, SimError> {
        loop {
            match self.next().await? {
                Some(Out::Ack(a)) if a.seq >= seq => return Ok(a.seq),
                Some(_) => {}
                None => {
                    return Err(SimError::Protocol(
                        "stream ended while waiting for an ack".into(),
                    ));
                }
            }
        }
    }

    /// Drops the stream (as a broken connection would).
    pub fn close(self) {}

    /// Separates the halves so one task can send while another (or a `select!`) receives.
    pub fn split(self) -> (Bootstrap, FrameSender, FrameReceiver) {
        (
            self.bootstrap,
            FrameSender { tx: self.tx },
            FrameReceiver { rx: self.rx },
        )
    }
}

/// A log record with the given seq.
pub fn log_record(seq: u64, line: impl Into<String>) -> Record {
    Record {
        seq,
        ts_unix_ms: kortix_controlplane::clock::now_ms(),
        body: Some(kortix_proto::v1::record::Body::Log(
            kortix_proto::v1::LogLine {
                stream: kortix_proto::v1::LogStream::Stdout as i32,
                line: line.into(),
            },
        )),
    }
}
