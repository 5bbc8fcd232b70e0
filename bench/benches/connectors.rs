//! What the connector broker adds to a call: a read tool of an `http` connector called
//! through the agent gateway (mTLS `AgentGateway.CallConnector` → broker: session, manifest,
//! catalog, policy, digest, upstream call, call log) against the same upstream request made
//! directly, as a sandbox would without the broker, interleaved in the same run on loopback.
//! The agent side is a simulated agent with a real enrolled identity; the in-sandbox hops
//! (`kortix-agent mcp` over stdio, the daemon's unix socket) are not in the measurement.
//!
//! `cargo bench --workspace --bench connectors` (`CALLS`, default 1000).

use std::time::{Duration, Instant};

use kortix_bench::api::Api;
use kortix_bench::provision::Cluster;
use kortix_controlplane::config::{SandboxKind, ServerConfig};
use kortix_proto::v1::CallConnectorRequest;
use kortix_proto::v1::agent_gateway_client::AgentGatewayClient;
use kortix_tests::git::GitEnv;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// The upstream: one small JSON document per request.
async fn upstream() -> anyhow::Result<u16> {
    let app = axum::Router::new().route(
        "/items/{id}",
        axum::routing::get(
            |axum::extract::Path(id): axum::extract::Path<String>| async move {
                format!("{{\"id\":\"{id}\",\"name\":\"item\"}}")
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(port)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let calls: usize = std::env::var("CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let port = upstream().await?;
    let work = tempfile::tempdir()?;
    let git = GitEnv::new();
    let repo = git.work_repo(work.path(), "source");
    git.commit_file(
        &repo,
        "spec.json",
        &serde_json::json!({
            "openapi": "3.0.3",
            "paths": {"/items/{id}": {"get": {"operationId": "getItem",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]}}}
        })
        .to_string(),
        "spec",
    );
    git.commit_file(
        &repo,
        "kortix.toml",
        &format!(
            "[[connectors]]\nslug = \"items\"\nprovider = \"http\"\nbase_url = \"http://127.0.0.1:{port}\"\nspec = \"spec.json\"\n"
        ),
        "connectors",
    );

    let mut config = ServerConfig::new(work.path().join("data"));
    config.listen = "127.0.0.1:0".parse()?;
    config.agent_listen = "127.0.0.1:0".parse()?;
    config.sandbox = SandboxKind::External;
    let server = kortix_controlplane::server::start(config).await?;
    let admin = std::fs::read_to_string(server.admin_token_path())?
        .trim()
        .to_string();
    let api = Api::connect(&server.public_url, &admin).await?;
    let project = api
        .import_project("bench", repo.to_str().unwrap_or_default())
        .await?
        .name;
    let cluster = Cluster::for_project(api, &work.path().join("data"), project);
    let agent = cluster.provision_agent("connectors").await?;
    let mut gateway = AgentGatewayClient::new(agent.enrolled.channel.clone());
    let direct = reqwest::Client::builder().build()?;
    let direct_url = format!("http://127.0.0.1:{port}/items/1");
    let request = || CallConnectorRequest {
        connector: "items".into(),
        tool: "getItem".into(),
        args_json: r#"{"id":"1"}"#.into(),
    };
    // Warm both paths (connections, catalog, statement caches).
    for _ in 0..100 {
        let answer = gateway.call_connector(request()).await?.into_inner();
        anyhow::ensure!(answer.status == "ok", "broker call: {answer:?}");
        direct.get(&direct_url).send().await?.bytes().await?;
    }
    eprintln!("warmed up; measuring {calls} calls each, interleaved");
    let (mut brokered, mut plain) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    for _ in 0..calls {
        let t = Instant::now();
        let answer = gateway.call_connector(request()).await?.into_inner();
        brokered.push(t.elapsed());
        anyhow::ensure!(answer.status == "ok", "broker call: {answer:?}");
        let t = Instant::now();
        direct.get(&direct_url).send().await?.bytes().await?;
        plain.push(t.elapsed());
    }
    brokered.sort();
    plain.sort();
    let (b50, b99) = (percentile(&brokered, 0.5), percentile(&brokered, 0.99));
    let (d50, d99) = (percentile(&plain, 0.5), percentile(&plain, 0.99));
    println!("connector read call, {calls} calls each (SQLite store, loopback):");
    println!(
        "  direct to the upstream:  p50 {}  p99 {}",
        ms(d50),
        ms(d99)
    );
    println!(
        "  through the broker:      p50 {}  p99 {}",
        ms(b50),
        ms(b99)
    );
    println!(
        "  added by the broker:     p50 {}  p99 {}  (goal: p99 ≤ 2 ms added: {})",
        ms(b50.saturating_sub(d50)),
        ms(b99.saturating_sub(d99)),
        if b99.saturating_sub(d99) <= Duration::from_millis(2) {
            "met"
        } else {
            "missed"
        }
    );
    drop(agent);
    server.shutdown().await;
    Ok(())
}
