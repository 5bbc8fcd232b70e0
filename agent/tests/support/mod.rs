//! A real `AgentGateway` server for the agent's tests: its own CA (rcgen), TLS on 127.0.0.1:0
//! with optional client certificates, enrollment that signs the agent's CSR, a record store
//! that acks the highest contiguous seq (gap records cover their range), prompts and stops on
//! demand, git credentials and a secrets watch.
#![allow(dead_code)]

pub mod git_http;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use kortix_proto::v1::agent_gateway_server::{AgentGateway, AgentGatewayServer};
use kortix_proto::v1::{
    Ack, AgentFrame, Bootstrap, ControlFrame, EnrollRequest, EnrollResponse, GitCredentialRequest,
    GitCredentialResponse, Heartbeat, HeartbeatAck, Hello, Record, ReenrollRequest, RenewRequest,
    SecretsUpdate, StateReport, WatchSecretsRequest, agent_frame, control_frame, record::Body,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, IsCa, Issuer, KeyPair,
    SanType,
};
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

#[derive(Default)]
pub struct GwState {
    pub enrolls: u32,
    pub renewals: u32,
    pub connects: u32,
    pub hellos: Vec<Hello>,
    pub records: BTreeMap<u64, Record>,
    pub acked: u64,
    pub reports: Vec<StateReport>,
    pub heartbeats: Vec<Heartbeat>,
    /// Command ids the agent acked, in order.
    pub command_acks: Vec<String>,
    pub credential_requests: Vec<GitCredentialRequest>,
    pub duplicates: u64,
    /// When set, `Connect` answers with this (the session ended, the certificate is revoked).
    pub refuse: Option<Status>,
}

impl GwState {
    /// Advances the ack over contiguous records; a gap record covers its range.
    fn advance(&mut self) {
        while let Some(r) = self.records.get(&(self.acked + 1)) {
            self.acked = match &r.body {
                Some(Body::Gap(g)) if g.from_seq == r.seq && g.to_seq >= r.seq => g.to_seq,
                _ => r.seq,
            };
        }
    }
}

pub struct TestGateway {
    pub url: String,
    /// The gateway's own certificate chain and key (valid for 127.0.0.1), reused by the
    /// test git server.
    pub server_chain_pem: String,
    pub server_key_pem: String,
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    pub token: String,
    pub state: Arc<Mutex<GwState>>,
    control: broadcast::Sender<ControlFrame>,
    kick: Arc<Notify>,
    secrets: watch::Sender<SecretsUpdate>,
    pub bootstrap: Arc<Mutex<Bootstrap>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_lifetime: Duration,
}

#[derive(Clone)]
struct Service {
    ca: Arc<Ca>,
    token: String,
    session_id: String,
    state: Arc<Mutex<GwState>>,
    control: broadcast::Sender<ControlFrame>,
    kick: Arc<Notify>,
    secrets: watch::Receiver<SecretsUpdate>,
    bootstrap: Arc<Mutex<Bootstrap>>,
}

impl TestGateway {
    pub async fn start(
        session_id: &str,
        bootstrap: Bootstrap,
        secrets: BTreeMap<String, String>,
        cert_lifetime: Duration,
    ) -> TestGateway {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kortix test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca_pem = ca_cert.pem();
        let ca_der = ca_cert.der().to_vec();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let mut server_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        server_params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
        // The server presents its chain with the CA, so a fingerprint can pin it.
        let chain_pem = format!("{}{}", server_cert.pem(), ca_pem);

        let state = Arc::new(Mutex::new(GwState::default()));
        let (control, _) = broadcast::channel(64);
        let kick = Arc::new(Notify::new());
        let (secrets_tx, secrets_rx) = watch::channel(SecretsUpdate {
            secrets: secrets.into_iter().collect(),
            version: 1,
        });
        let bootstrap = Arc::new(Mutex::new(bootstrap));
        let token = "bootstrap-token-1".to_owned();
        let svc = Service {
            ca: Arc::new(Ca {
                issuer,
                cert_pem: ca_pem.clone(),
                cert_lifetime,
            }),
            token: token.clone(),
            session_id: session_id.to_owned(),
            state: state.clone(),
            control: control.clone(),
            kick: kick.clone(),
            secrets: secrets_rx,
            bootstrap: bootstrap.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&chain_pem, server_key.serialize_pem()))
            .client_ca_root(Certificate::from_pem(&ca_pem))
            .client_auth_optional(true);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(AgentGatewayServer::new(svc));
        tokio::spawn(async move {
            // Without TCP_NODELAY on accepted sockets, Nagle plus delayed ACKs add ~40 ms to
            // small request/response exchanges (tonic sets it only on listeners it binds).
            let incoming = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                |s| {
                    if let Ok(s) = &s {
                        let _ = s.set_nodelay(true);
                    }
                    s
                },
            );
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        TestGateway {
            url: format!("https://127.0.0.1:{}", addr.port()),
            server_chain_pem: chain_pem,
            server_key_pem: server_key.serialize_pem(),
            ca_pem,
            ca_der,
            token,
            state,
            control,
            kick,
            secrets: secrets_tx,
            bootstrap,
            stop: Some(stop),
        }
    }

    pub fn send(&self, frame: control_frame::Frame) {
        let _ = self.control.send(ControlFrame { frame: Some(frame) });
    }

    /// Drops every open Connect stream (the agent must reconnect).
    pub fn kick(&self) {
        self.kick.notify_waiters();
    }

    pub fn set_secrets(&self, secrets: BTreeMap<String, String>, version: u64) {
        self.secrets.send_replace(SecretsUpdate {
            secrets: secrets.into_iter().collect(),
            version,
        });
    }

    pub fn with<R>(&self, f: impl FnOnce(&GwState) -> R) -> R {
        f(&self.state.lock().unwrap())
    }

    /// From now on `Connect` is refused with `status`.
    pub fn refuse(&self, status: Status) {
        self.state.lock().unwrap().refuse = Some(status);
    }

    /// Polls `cond` on the state until true or `timeout`.
    pub async fn wait(&self, timeout: Duration, what: &str, cond: impl Fn(&GwState) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.with(&cond) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let summary = self.with(|s| {
                    format!(
                        "{} records, acked {}, reports {:?}, last records {:?}",
                        s.records.len(),
                        s.acked,
                        s.reports,
                        s.records.values().rev().take(8).collect::<Vec<_>>()
                    )
                });
                panic!("timed out waiting for {what}: {summary}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn require_client_cert<T>(req: &Request<T>) -> Result<(), Status> {
    match req.peer_certs() {
        Some(certs) if !certs.is_empty() => Ok(()),
        _ => Err(Status::unauthenticated("client certificate required")),
    }
}

impl Service {
    fn sign(&self, csr_der: Vec<u8>) -> Result<EnrollResponse, Status> {
        let mut csr = CertificateSigningRequestParams::from_der(&csr_der.into())
            .map_err(|e| Status::invalid_argument(format!("CSR: {e}")))?;
        csr.params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://kortix/session/{}", self.session_id)
                .try_into()
                .unwrap(),
        )];
        let now = time::OffsetDateTime::now_utc();
        csr.params.not_before = now - time::Duration::minutes(1);
        csr.params.not_after = now + self.ca.cert_lifetime;
        let cert = csr
            .signed_by(&self.ca.issuer)
            .map_err(|e| Status::internal(e.to_string()))?;
        let not_after = csr.params.not_after.unix_timestamp();
        let lifetime = self.ca.cert_lifetime.as_secs() as i64;
        Ok(EnrollResponse {
            session_id: self.session_id.clone(),
            certificate_chain_pem: format!("{}{}", cert.pem(), self.ca.cert_pem),
            ca_certificate_pem: self.ca.cert_pem.clone(),
            not_after_unix_s: not_after,
            renew_after_unix_s: not_after - lifetime / 3,
            renewal_secret: String::new(),
        })
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AgentGateway for Service {
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let req = req.into_inner();
        if req.bootstrap_token != self.token {
            return Err(Status::unauthenticated("bad bootstrap token"));
        }
        self.state.lock().unwrap().enrolls += 1;
        Ok(Response::new(self.sign(req.csr_der)?))
    }

    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<EnrollResponse>, Status> {
        require_client_cert(&req)?;
        self.state.lock().unwrap().renewals += 1;
        Ok(Response::new(self.sign(req.into_inner().csr_der)?))
    }

    async fn reenroll(
        &self,
        _req: Request<ReenrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        Err(Status::permission_denied(
            "this test gateway does not re-enroll",
        ))
    }

    type ConnectStream = BoxStream<ControlFrame>;

    async fn connect(
        &self,
        req: Request<Streaming<AgentFrame>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        require_client_cert(&req)?;
        if let Some(status) = self.state.lock().unwrap().refuse.clone() {
            return Err(status);
        }
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel::<Result<ControlFrame, Status>>(64);
        let svc = self.clone();
        tokio::spawn(async move {
            let hello = match inbound.message().await {
                Ok(Some(AgentFrame {
                    frame: Some(agent_frame::Frame::Hello(h)),
                })) => h,
                _ => {
                    let _ = tx.send(Err(Status::invalid_argument("Hello first"))).await;
                    return;
                }
            };
            let mut control = svc.control.subscribe();
            let bootstrap = {
                let mut st = svc.state.lock().unwrap();
                st.connects += 1;
                st.hellos.push(hello);
                let mut b = svc.bootstrap.lock().unwrap().clone();
                b.acked_seq = st.acked;
                b
            };
            let _ = tx
                .send(Ok(ControlFrame {
                    frame: Some(control_frame::Frame::Bootstrap(bootstrap)),
                }))
                .await;
            loop {
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(frame)) => {
                            let reply = svc.on_frame(frame);
                            if let Some(reply) = reply && tx.send(Ok(reply)).await.is_err() {
                                return;
                            }
                        }
                        // The agent half-closed: end ours too.
                        Ok(None) | Err(_) => return,
                    },
                    frame = control.recv() => {
                        if let Ok(frame) = frame && tx.send(Ok(frame)).await.is_err() {
                            return;
                        }
                    }
                    _ = svc.kick.notified() => {
                        let _ = tx.send(Err(Status::unavailable("kicked by the test"))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn git_credential(
        &self,
        req: Request<GitCredentialRequest>,
    ) -> Result<Response<GitCredentialResponse>, Status> {
        require_client_cert(&req)?;
        self.state
            .lock()
            .unwrap()
            .credential_requests
            .push(req.into_inner());
        Ok(Response::new(GitCredentialResponse {
            username: "x-kortix-session".into(),
            password: "jit-token-abc".into(),
            expires_unix_s: time::OffsetDateTime::now_utc().unix_timestamp() + 300,
        }))
    }

    type WatchSecretsStream = BoxStream<SecretsUpdate>;

    async fn watch_secrets(
        &self,
        req: Request<WatchSecretsRequest>,
    ) -> Result<Response<Self::WatchSecretsStream>, Status> {
        require_client_cert(&req)?;
        let mut rx = self.secrets.clone();
        let (tx, out) = mpsc::channel(8);
        tokio::spawn(async move {
            loop {
                let update = rx.borrow_and_update().clone();
                if tx.send(Ok(update)).await.is_err() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    /// This gateway's project has no connectors.
    async fn list_session_connectors(
        &self,
        req: Request<kortix_proto::v1::ListSessionConnectorsRequest>,
    ) -> Result<Response<kortix_proto::v1::ListSessionConnectorsResponse>, Status> {
        require_client_cert(&req)?;
        Ok(Response::new(
            kortix_proto::v1::ListSessionConnectorsResponse::default(),
        ))
    }

    async fn call_connector(
        &self,
        req: Request<kortix_proto::v1::CallConnectorRequest>,
    ) -> Result<Response<kortix_proto::v1::CallConnectorResponse>, Status> {
        require_client_cert(&req)?;
        let connector = req.into_inner().connector;
        Err(Status::not_found(format!(
            "this test gateway has no connector {connector:?}"
        )))
    }

    async fn save_work(
        &self,
        req: Request<kortix_proto::v1::SaveWorkRequest>,
    ) -> Result<Response<kortix_proto::v1::SaveWorkResponse>, Status> {
        require_client_cert(&req)?;
        Ok(Response::new(kortix_proto::v1::SaveWorkResponse {}))
    }

    async fn load_conversation(
        &self,
        req: Request<kortix_proto::v1::LoadConversationRequest>,
    ) -> Result<Response<kortix_proto::v1::LoadConversationResponse>, Status> {
        require_client_cert(&req)?;
        Err(Status::not_found(
            "this test gateway keeps no conversations",
        ))
    }
}

impl Service {
    fn on_frame(&self, frame: AgentFrame) -> Option<ControlFrame> {
        let mut st = self.state.lock().unwrap();
        match frame.frame? {
            agent_frame::Frame::Records(batch) => {
                assert!(
                    batch.records.len() <= 1024,
                    "batch of {} records",
                    batch.records.len()
                );
                for r in batch.records {
                    match st.records.entry(r.seq) {
                        std::collections::btree_map::Entry::Occupied(_) => st.duplicates += 1,
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert(r);
                        }
                    }
                }
                st.advance();
                Some(ControlFrame {
                    frame: Some(control_frame::Frame::Ack(Ack { seq: st.acked })),
                })
            }
            agent_frame::Frame::Heartbeat(h) => {
                let nonce = h.nonce;
                st.heartbeats.push(h);
                Some(ControlFrame {
                    frame: Some(control_frame::Frame::HeartbeatAck(HeartbeatAck { nonce })),
                })
            }
            agent_frame::Frame::State(r) => {
                st.reports.push(r);
                None
            }
            agent_frame::Frame::CommandAck(a) => {
                st.command_acks.push(a.command_id);
                None
            }
            agent_frame::Frame::Hello(_) => None,
        }
    }
}
