//! The gRPC connection every client command shares: channel (plain h2 or TLS), bearer-token
//! interceptor, deadlines, and the runtime that drives a command.

pub mod credentials;
pub mod error;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kortix_proto::v1::access_service_client::AccessServiceClient;
use kortix_proto::v1::account_service_client::AccountServiceClient;
use kortix_proto::v1::change_request_service_client::ChangeRequestServiceClient;
use kortix_proto::v1::member_service_client::MemberServiceClient;
use kortix_proto::v1::project_service_client::ProjectServiceClient;
use kortix_proto::v1::secret_service_client::SecretServiceClient;
use kortix_proto::v1::session_service_client::SessionServiceClient;
use kortix_proto::v1::snapshot_service_client::SnapshotServiceClient;
use kortix_proto::v1::trigger_service_client::TriggerServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};

pub use error::CliError;

use crate::Global;

/// TCP connect (and TLS handshake) budget.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for ordinary unary calls.
pub const UNARY_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for calls that do real work on the server (imports).
pub const LONG_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest PEM file accepted for `--ca-cert`.
const MAX_CA_BYTES: u64 = 1024 * 1024;

/// What a client command needs from the global flags.
#[derive(Debug, Clone)]
pub struct Context {
    pub url: String,
    pub token_flag: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub json: bool,
}

impl Context {
    pub fn from_global(global: &Global) -> Self {
        Context {
            url: global.url.trim().to_owned(),
            token_flag: global.token.clone(),
            data_dir: global.data_dir.clone(),
            ca_cert: global.ca_cert.clone(),
            json: global.json,
        }
    }
}

/// Runs one client command to completion on a fresh runtime. A closed stdout ends the
/// command quietly with success, like other Unix filters; other errors exit 1 with their
/// message on stderr.
pub fn run_async<F>(fut: F) -> anyhow::Result<ExitCode>
where
    F: Future<Output = Result<ExitCode, CliError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    match runtime.block_on(fut) {
        Ok(code) => Ok(code),
        Err(CliError::BrokenPipe) => Ok(ExitCode::SUCCESS),
        // A refusal is an outcome, not a malfunction: its one-line reason stands alone.
        Err(CliError::Refused(reason)) => {
            crate::output::note(&reason);
            Ok(ExitCode::FAILURE)
        }
        Err(err) => Err(anyhow::Error::new(err)),
    }
}

/// Adds `authorization: Bearer <token>` to every call on the channel.
#[derive(Clone, Debug)]
pub struct BearerAuth {
    header: Option<MetadataValue<Ascii>>,
}

impl BearerAuth {
    pub fn new(token: Option<&str>) -> Result<Self, CliError> {
        let header = match token {
            None => None,
            Some(token) => {
                let mut value =
                    MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                        CliError::Input(
                            "the token contains characters that cannot be sent in a header".into(),
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(BearerAuth { header })
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.header {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

type Authed = InterceptedService<Channel, BearerAuth>;

/// A connected client: hands out service stubs that share one HTTP/2 connection.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    auth: BearerAuth,
    url: String,
}

impl Client {
    /// Resolves the token and connects (fails fast when nothing listens at the URL).
    pub async fn connect(ctx: &Context) -> Result<Self, CliError> {
        let token = credentials::resolve_token(
            ctx.token_flag.as_deref(),
            &ctx.url,
            ctx.data_dir.as_deref(),
        )?
        .map(|(token, _)| token);
        Self::connect_with_token(ctx, token.as_deref()).await
    }

    /// Connects sending exactly `token` (used by `login` to check a token before saving it).
    pub async fn connect_with_token(ctx: &Context, token: Option<&str>) -> Result<Self, CliError> {
        let auth = BearerAuth::new(token)?;
        let endpoint = endpoint(&ctx.url, ctx.ca_cert.as_deref())?;
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT * 2, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                return Err(CliError::Connect {
                    url: ctx.url.clone(),
                    detail: error::chain(&e),
                });
            }
            Err(_) => {
                return Err(CliError::Connect {
                    url: ctx.url.clone(),
                    detail: format!("no answer within {}s", (CONNECT_TIMEOUT * 2).as_secs()),
                });
            }
        };
        Ok(Client {
            channel,
            auth,
            url: ctx.url.clone(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn accounts(&self) -> AccountServiceClient<Authed> {
        AccountServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn audit(&self) -> kortix_proto::v1::audit_service_client::AuditServiceClient<Authed> {
        kortix_proto::v1::audit_service_client::AuditServiceClient::with_interceptor(
            self.channel.clone(),
            self.auth.clone(),
        )
    }

    pub fn members(&self) -> MemberServiceClient<Authed> {
        MemberServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn access(&self) -> AccessServiceClient<Authed> {
        AccessServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn projects(&self) -> ProjectServiceClient<Authed> {
        ProjectServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn connectors(
        &self,
    ) -> kortix_proto::v1::connector_service_client::ConnectorServiceClient<Authed> {
        kortix_proto::v1::connector_service_client::ConnectorServiceClient::with_interceptor(
            self.channel.clone(),
            self.auth.clone(),
        )
    }

    pub fn approvals(
        &self,
    ) -> kortix_proto::v1::approval_service_client::ApprovalServiceClient<Authed> {
        kortix_proto::v1::approval_service_client::ApprovalServiceClient::with_interceptor(
            self.channel.clone(),
            self.auth.clone(),
        )
    }

    pub fn secrets(&self) -> SecretServiceClient<Authed> {
        SecretServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn apps(&self) -> kortix_proto::v1::app_service_client::AppServiceClient<Authed> {
        kortix_proto::v1::app_service_client::AppServiceClient::with_interceptor(
            self.channel.clone(),
            self.auth.clone(),
        )
    }

    pub fn snapshots(&self) -> SnapshotServiceClient<Authed> {
        SnapshotServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn sessions(&self) -> SessionServiceClient<Authed> {
        SessionServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn change_requests(&self) -> ChangeRequestServiceClient<Authed> {
        ChangeRequestServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn channels(
        &self,
    ) -> kortix_proto::v1::channel_service_client::ChannelServiceClient<Authed> {
        kortix_proto::v1::channel_service_client::ChannelServiceClient::with_interceptor(
            self.channel.clone(),
            self.auth.clone(),
        )
    }

    pub fn triggers(&self) -> TriggerServiceClient<Authed> {
        TriggerServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// Awaits a unary call built with [`unary`], enforcing [`UNARY_TIMEOUT`] on our side too.
    pub async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, CliError> {
        self.call_within(what, UNARY_TIMEOUT, fut).await
    }

    /// Like [`Client::call`] with an explicit deadline (pair it with [`unary_within`]).
    pub async fn call_within<T>(
        &self,
        what: &str,
        timeout: Duration,
        fut: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, CliError> {
        // A little slack so the server's own DEADLINE_EXCEEDED normally arrives first.
        match tokio::time::timeout(timeout + Duration::from_secs(2), fut).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(CliError::rpc(&self.url, status)),
            Err(_) => Err(CliError::Timeout {
                url: self.url.clone(),
                what: what.to_owned(),
                after: timeout,
            }),
        }
    }
}

/// A request carrying the unary deadline as `grpc-timeout`, so the server stops working on it
/// when we stop waiting.
pub fn unary<T>(message: T) -> Request<T> {
    unary_within(message, UNARY_TIMEOUT)
}

pub fn unary_within<T>(message: T, timeout: Duration) -> Request<T> {
    let mut req = Request::new(message);
    req.set_timeout(timeout);
    req
}

/// `--url` as clap checks it, so a malformed one is a usage error (exit 2): an `http` or
/// `https` scheme and a host.
pub fn parse_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("expected http://HOST:PORT or https://HOST (the scheme is missing)".into());
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(format!(
            "expected http://HOST:PORT or https://HOST, not a {scheme}:// URL"
        ));
    }
    if rest.split(['/', '?', '#']).next().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(url.to_owned())
}

/// The endpoint for `url`: plain HTTP/2 for `http://`, rustls (aws-lc) for `https://` with
/// either the given CA or the webpki roots.
fn endpoint(url: &str, ca_cert: Option<&std::path::Path>) -> Result<Endpoint, CliError> {
    let bad = |reason: String| CliError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let tls = match scheme.as_deref() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad("expected http://HOST:PORT or https://HOST".into())),
    };
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| bad(error::chain(&e)))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        // Detects a dead peer on long `attach` streams where no data may flow for a while.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .user_agent(format!("kortix-cli/{}", env!("CARGO_PKG_VERSION")))
        .map_err(|e| bad(error::chain(&e)))?;
    if tls {
        let mut config = ClientTlsConfig::new().timeout(CONNECT_TIMEOUT);
        config = match ca_cert {
            Some(path) => config.ca_certificate(read_ca(path)?),
            None => config.with_webpki_roots(),
        };
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| bad(error::chain(&e)))?;
    } else if let Some(path) = ca_cert {
        return Err(CliError::Input(format!(
            "--ca-cert {} needs an https:// URL, got {url}",
            path.display()
        )));
    }
    Ok(endpoint)
}

fn read_ca(path: &std::path::Path) -> Result<Certificate, CliError> {
    let meta = std::fs::metadata(path).map_err(|e| CliError::file(path, "read", &e))?;
    if meta.len() > MAX_CA_BYTES {
        return Err(CliError::File {
            path: path.to_path_buf(),
            action: "read",
            detail: format!("larger than {MAX_CA_BYTES} bytes"),
        });
    }
    let pem = std::fs::read(path).map_err(|e| CliError::file(path, "read", &e))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(CliError::File {
            path: path.to_path_buf(),
            action: "use",
            detail: "no PEM certificate in it".into(),
        });
    }
    Ok(Certificate::from_pem(pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_is_added_to_every_request() {
        let mut auth = BearerAuth::new(Some("kx_secret")).expect("ascii token");
        let req = auth.call(Request::new(())).expect("intercept");
        let value = req.metadata().get("authorization").expect("header");
        assert_eq!(value.to_str().expect("ascii"), "Bearer kx_secret");
    }

    #[test]
    fn no_token_means_no_header() {
        let mut auth = BearerAuth::new(None).expect("none");
        let req = auth.call(Request::new(())).expect("intercept");
        assert!(req.metadata().get("authorization").is_none());
    }

    #[test]
    fn token_with_newline_is_refused() {
        let err = BearerAuth::new(Some("a\nb")).expect_err("bad header");
        assert!(err.to_string().contains("cannot be sent"), "{err}");
    }

    #[test]
    fn unary_requests_carry_a_deadline() {
        let req = unary(());
        assert_eq!(
            req.metadata().get("grpc-timeout").map(|v| v.to_str().ok()),
            Some(Some("30000000u"))
        );
    }

    #[test]
    fn rejects_urls_without_a_known_scheme() {
        for url in ["127.0.0.1:8008", "ftp://h", "grpc://h:1"] {
            let err = endpoint(url, None).expect_err(url);
            assert!(err.to_string().starts_with("invalid --url"), "{err}");
        }
    }

    #[test]
    fn url_flag_needs_a_scheme_and_a_host() {
        assert_eq!(
            parse_url(" http://127.0.0.1:8008 ").as_deref(),
            Ok("http://127.0.0.1:8008")
        );
        assert!(parse_url("HTTPS://kortix.example.com/").is_ok());
        for bad in ["127.0.0.1:8008", "ftp://h", "http://", "https:///x", ""] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ca_cert_needs_https() {
        let err = endpoint(
            "http://127.0.0.1:1",
            Some(std::path::Path::new("/nonexistent")),
        )
        .expect_err("plain http");
        assert!(err.to_string().contains("needs an https:// URL"), "{err}");
    }

    #[test]
    fn https_endpoint_builds_with_public_roots() {
        endpoint("https://kortix.example.com", None).expect("tls endpoint");
    }
}
