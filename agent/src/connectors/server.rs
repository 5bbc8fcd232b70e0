//! The daemon's connector socket (private directory, mode 0600, peer uid checked, like the
//! credential socket): answers `kortix-agent mcp` by asking `AgentGateway`, and appends the
//! records of each call (kinds `connector_call` and `approval`) to the session's stream.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kortix_proto::v1::record::Body;
use kortix_proto::v1::{CallConnectorRequest, ListSessionConnectorsRequest};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{Answer, ConnectorInfo, MAX_LINE_BYTES, Request, SOCKET_NAME, ToolInfo};
use crate::credentials::server::peer_allowed;
use crate::enroll::Gateway;
use crate::records::RecordSink;

/// Answers one request (the daemon asks the control plane; tests answer themselves).
pub type Broker = Arc<dyn Fn(Request) -> BoxFuture<'static, Answer> + Send + Sync>;

const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The control plane bounds each upstream call; this bounds the whole exchange.
const RPC_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_CONCURRENT: usize = 16;

/// The served connector socket; dropping it stops serving.
pub type ConnectorServer = crate::private_socket::PrivateSocket;

/// Binds `<dir>/connectors.sock` (dir 0700, socket 0600) and serves it.
pub fn serve(
    dir: &Path,
    broker: Broker,
    sink: RecordSink,
) -> Result<ConnectorServer, crate::private_socket::SocketError> {
    let uid = nix::unistd::geteuid().as_raw();
    crate::private_socket::serve(dir, SOCKET_NAME, MAX_CONCURRENT, move |stream| {
        let (broker, sink) = (broker.clone(), sink.clone());
        async move { handle(stream, uid, &broker, &sink).await }
    })
}

async fn handle(stream: UnixStream, uid: u32, broker: &Broker, sink: &RecordSink) {
    if let Err(why) = peer_allowed(&stream, uid) {
        sink.agent(format!("connector request refused: {why}"));
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_LINE_BYTES as u64);
    let answer = match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Ok(req) => broker(req).await,
            Err(e) => Answer::Failed {
                error: format!("bad connector request: {e}"),
            },
        },
        _ => return,
    };
    let Ok(mut text) = serde_json::to_string(&answer) else {
        return;
    };
    text.push('\n');
    let _ = tokio::time::timeout(RPC_TIMEOUT, write.write_all(text.as_bytes())).await;
    let _ = write.shutdown().await;
}

/// The daemon's broker: `AgentGateway.ListSessionConnectors` / `CallConnector`, and the
/// call's records into the stream.
pub fn gateway_broker(gateway: Gateway, sink: RecordSink) -> Broker {
    Arc::new(move |req| {
        let (gateway, sink) = (gateway.clone(), sink.clone());
        Box::pin(async move {
            let mut client = gateway.client();
            match req {
                Request::List => {
                    let rpc = client.list_session_connectors(ListSessionConnectorsRequest {});
                    match tokio::time::timeout(RPC_TIMEOUT, rpc).await {
                        Ok(Ok(resp)) => Answer::Connectors {
                            connectors: resp
                                .into_inner()
                                .connectors
                                .into_iter()
                                .map(info)
                                .collect(),
                        },
                        Ok(Err(status)) => failed(&status),
                        Err(_) => timed_out(),
                    }
                }
                Request::Call {
                    connector,
                    tool,
                    args,
                } => {
                    let args_json = if args.is_null() {
                        "{}".to_owned()
                    } else {
                        args.to_string()
                    };
                    let rpc = client.call_connector(CallConnectorRequest {
                        connector,
                        tool,
                        args_json,
                    });
                    match tokio::time::timeout(RPC_TIMEOUT, rpc).await {
                        Ok(Ok(resp)) => {
                            let resp = resp.into_inner();
                            if let Some(a) = resp.approval_record {
                                sink.push(Body::Approval(a));
                            }
                            if let Some(c) = resp.call_record {
                                sink.push(Body::ConnectorCall(c));
                            }
                            Answer::Called {
                                status: resp.status,
                                text: resp.text,
                            }
                        }
                        Ok(Err(status)) => failed(&status),
                        Err(_) => timed_out(),
                    }
                }
            }
        })
    })
}

fn info(c: kortix_proto::v1::SessionConnector) -> ConnectorInfo {
    ConnectorInfo {
        slug: c.slug,
        name: c.name,
        provider: c.provider,
        unavailable: c.unavailable,
        tools: c
            .tools
            .into_iter()
            .map(|t| ToolInfo {
                input_schema: serde_json::from_str(&t.input_schema_json)
                    .unwrap_or(serde_json::Value::Null),
                name: t.name,
                description: t.description,
                risk: t.risk,
                policy: t.policy,
            })
            .collect(),
    }
}

fn failed(status: &tonic::Status) -> Answer {
    Answer::Failed {
        error: format!("the control plane refused: {}", status.message()),
    }
}

fn timed_out() -> Answer {
    Answer::Failed {
        error: format!(
            "the control plane did not answer within {}s",
            RPC_TIMEOUT.as_secs()
        ),
    }
}
