//! How fast Slack's events are acknowledged: signed Events API requests at a steady 50 per
//! second (open loop: each sent at its scheduled time, whatever the earlier ones are doing),
//! each a thread reply with a new `event_id` — verified, claimed in the store, answered 200,
//! then looked at in the background (the thread is not the bot's, so no session starts).
//! The baseline, interleaved at the same rate on the same server and route: the same
//! request with a bad signature (project lookup, credential decryption, HMAC, 401).
//!
//! `cargo bench --workspace --bench slack_ack` (`EVENTS`, default 1500, `RATE` per second,
//! default 50; SQLite in a temp dir, sandboxes external: nothing boots).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kortix_bench::api::Api;
use kortix_bench::stats::{Latency, fmt_ms};
use kortix_controlplane::channels::slack::signature;
use kortix_controlplane::config::{SandboxKind, ServerConfig};
use kortix_proto::v1::ConnectSlackRequest;
use kortix_proto::v1::channel_service_client::ChannelServiceClient;
use tokio::sync::Mutex;

const SECRET: &str = "bench-signing-secret";

fn event(n: usize) -> String {
    serde_json::json!({
        "type": "event_callback",
        "event_id": format!("EvBench{n:08}"),
        "authorizations": [{"user_id": "UBOT", "is_bot": true}],
        "event": {
            "type": "message", "channel_type": "channel", "user": "U1", "channel": "C1",
            "ts": format!("1700000000.{n:06}"), "thread_ts": "1600000000.000001",
            "text": "a reply in a thread the bot does not own",
        },
    })
    .to_string()
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    body: String,
    secret: &str,
) -> anyhow::Result<(u16, Duration)> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        .to_string();
    let sig = signature::sign(secret.as_bytes(), &ts, body.as_bytes());
    let started = Instant::now();
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .header(signature::TIMESTAMP_HEADER, ts)
        .header(signature::SIGNATURE_HEADER, sig)
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    response.bytes().await?;
    Ok((status, started.elapsed()))
}

async fn run() -> anyhow::Result<()> {
    let events: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let rate: u64 = std::env::var("RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let work = tempfile::tempdir()?;
    let mut config = ServerConfig::new(work.path().join("data"));
    config.listen = "127.0.0.1:0".parse()?;
    config.agent_listen = "127.0.0.1:0".parse()?;
    config.sandbox = SandboxKind::External;
    // Nothing is posted to Slack in this run; an unroutable API keeps it that way.
    config.slack_api_url = "http://127.0.0.1:9/api".into();
    let server = kortix_controlplane::server::start(config).await?;
    let url = server.public_url.clone();
    let admin = std::fs::read_to_string(server.admin_token_path())?
        .trim()
        .to_string();
    let api = Api::connect(&url, &admin).await?;
    api.create_project("web").await?;
    let channel = tonic::transport::Endpoint::from_shared(url.clone())?
        .connect()
        .await?;
    let value: tonic::metadata::MetadataValue<_> = format!("Bearer {admin}").parse()?;
    ChannelServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", value.clone());
        Ok(req)
    })
    .connect_slack(ConnectSlackRequest {
        project: "web".into(),
        signing_secret: SECRET.into(),
        bot_token: "xoxb-bench".into(),
    })
    .await?;
    let endpoint = format!("{url}/v1/webhooks/slack/web");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    // Warm the connection pool and the statement caches.
    for n in 0..100 {
        post(&http, &endpoint, event(1_000_000 + n), SECRET).await?;
        post(&http, &endpoint, event(2_000_000 + n), "wrong").await?;
    }
    eprintln!("slack_ack: {events} events at {rate}/s, each with an interleaved baseline request");
    let acks = Arc::new(Mutex::new(Latency::new()));
    let refusals = Arc::new(Mutex::new(Latency::new()));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(events);
    let wall = Instant::now();
    for n in 0..events {
        tick.tick().await;
        let (http, endpoint, acks, refusals) = (
            http.clone(),
            endpoint.clone(),
            acks.clone(),
            refusals.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (status, took) = post(&http, &endpoint, event(n), SECRET).await?;
            anyhow::ensure!(status == 200, "event {n} answered {status}");
            acks.lock().await.record(took);
            let (status, took) = post(&http, &endpoint, event(n), "wrong").await?;
            anyhow::ensure!(status == 401, "bad signature answered {status}");
            refusals.lock().await.record(took);
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = wall.elapsed();
    let acks = acks.lock().await.summary();
    let refusals = refusals.lock().await.summary();
    println!(
        "Slack event acknowledgement, {events} events in {:.1} s ({:.1}/s offered)",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
    println!("| request | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (name, s) in [
        ("signed event: verify, claim event_id, 200", &acks),
        ("baseline: bad signature, 401", &refusals),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            fmt_ms(s.p50_us),
            fmt_ms(s.p90_us),
            fmt_ms(s.p99_us),
            fmt_ms(s.max_us),
        );
    }
    println!(
        "| ratio event / baseline | {:.2} | | {:.2} | |",
        acks.p50_us as f64 / refusals.p50_us.max(1) as f64,
        acks.p99_us as f64 / refusals.p99_us.max(1) as f64,
    );
    server.shutdown().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}
