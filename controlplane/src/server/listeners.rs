//! The two listeners: public (gRPC API, git smart HTTP, webhooks, metrics) and agents (mTLS
//! gRPC). Both keep serving until `drained` fires, which the shutdown sequence sends only
//! after this replica's sandboxes have pushed and flushed.

use super::{ServerError, signalled};
use crate::ca::Ca;
use crate::gateway::Gateway;
use crate::public::PublicServices;
use kortix_proto::v1 as pb;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Agent record batches are at most 4 MiB and a saved conversation at most 8 MiB
/// (`SaveWork`, `LoadConversation`); leave headroom for framing.
const MAX_AGENT_MESSAGE: usize = crate::store::MAX_CONVERSATION_BYTES + 1024 * 1024;

/// A bound listener and the address it got (port 0 resolves here).
pub(super) struct Bound {
    pub listener: TcpListener,
    pub addr: SocketAddr,
}

pub(super) async fn bind(addr: SocketAddr) -> Result<Bound, ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    Ok(Bound { listener, addr })
}

/// Serves the public services on every listener in `bound` (the host's, and the container
/// network gateway's when there is one).
pub(super) fn serve_public(
    bound: impl IntoIterator<Item = Bound>,
    public: PublicServices,
    drained: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ServerError> {
    let router = public
        .router()
        .map_err(|e| ServerError::Setup(format!("reflection: {e}")))?;
    let serving = bound.into_iter().map(|bound| {
        use axum::serve::ListenerExt;
        let addr = bound.addr;
        // Without TCP_NODELAY a small unary answer waits out Nagle's delay against the
        // client's delayed ACK: ~40 ms added to every API call.
        let listener = bound.listener.tap_io(move |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, %addr, "TCP_NODELAY on a public connection");
            }
        });
        let serve = axum::serve(
            listener,
            router
                .clone()
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signalled(drained.clone()));
        async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, %addr, "public listener failed");
            }
        }
    });
    let serving: Vec<_> = serving.collect();
    Ok(tokio::spawn(async move {
        futures::future::join_all(serving).await;
    }))
}

/// mTLS with the control plane's CA; `Enroll` works without a client certificate. The
/// server certificate names the hosts of every URL agents are given.
pub(super) fn serve_agents<'a>(
    bound: impl IntoIterator<Item = Bound>,
    agent_urls: impl IntoIterator<Item = &'a str>,
    ca: &Ca,
    gateway: Gateway,
    drained: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ServerError> {
    let mut names = vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "::1".to_string(),
    ];
    for url in agent_urls
        .into_iter()
        .flat_map(crate::config::agent_url_list)
    {
        if let Some(host) = host_of(url)
            && !names.contains(&host)
        {
            names.push(host);
        }
    }
    let server_cert = ca.issue_server_cert(&names)?;
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &server_cert.cert_pem,
            &server_cert.key_pem,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(ca.cert_pem()))
        .client_auth_optional(true);
    let agent_service = pb::agent_gateway_server::AgentGatewayServer::new(gateway)
        .max_decoding_message_size(MAX_AGENT_MESSAGE)
        .max_encoding_message_size(MAX_AGENT_MESSAGE);
    let mut server = tonic::transport::Server::builder()
        .tls_config(tls)
        .map_err(|e| ServerError::Setup(e.to_string()))?
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .tcp_nodelay(true);
    // `Server::tcp_nodelay` does not apply to a caller-supplied listener; without it every
    // small frame waits out Nagle's delay.
    let incoming = futures::stream::select_all(bound.into_iter().map(|bound| {
        tonic::transport::server::TcpIncoming::from(bound.listener).with_nodelay(Some(true))
    }));
    let router = server.add_service(agent_service);
    Ok(tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, signalled(drained))
            .await
        {
            tracing::error!(error = %e, "agent listener failed");
        }
    }))
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.split("://").nth(1)?;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_handles_ports_and_ipv6() {
        assert_eq!(
            super::host_of("https://10.0.0.5:8009").as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(
            super::host_of("https://cp.example.com").as_deref(),
            Some("cp.example.com")
        );
        assert_eq!(
            super::host_of("https://[::1]:8009/x").as_deref(),
            Some("::1")
        );
        assert_eq!(super::host_of("nonsense"), None);
    }
}
