//! What authorization adds to a call, on SQLite and on PostgreSQL, interleaved in one run:
//!
//! - the whole call it guards: `GetProject` over gRPC from a client on loopback,
//!   authenticated and checked;
//! - the call's authorization path, in-process on the server's own store: the bearer token
//!   resolved (from the replica's token cache once warm, as the server does) and the
//!   permission check (`permissions::project`: the project read with the caller's account
//!   role and grant);
//! - the same call with the check skipped: the project read alone (`find_project`).
//!
//! Added = authorization path − unchecked read; its share is added / (whole call − added),
//! i.e. relative to the call without the check.
//!
//! All of it under the records load generator's traffic: `LOAD_AGENTS` simulated agents
//! (default 20) stream log records through the agent gateway to the same server, paced to
//! `LOAD_RATE` records/s in all (default 10,000), as `kortix-loadgen records` does, while the
//! calls are timed (`LOAD_AGENTS=0` times an idle server).
//!
//! `cargo bench --workspace --bench authz` (`CALLS`, default 5000; PostgreSQL at
//! `KORTIX_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`, in a
//! database the benchmark creates and drops; skipped with a note when unreachable).

use std::time::{Duration, Instant};

use std::sync::Arc;

use kortix_bench::api::Api;
use kortix_bench::provision::{Cluster, LiveAgent};
use kortix_bench::streamer::{self, StreamConfig, StreamTotals};
use kortix_controlplane::auth::Authenticator;
use kortix_controlplane::config::{SandboxKind, ServerConfig};
use kortix_controlplane::permissions::{self, Action};
use kortix_controlplane::store::Store;
use kortix_proto::v1::account_service_client::AccountServiceClient;
use kortix_proto::v1::{AddMemberRequest, CreateAccountRequest, GrantAccessRequest};
use kortix_tests::pg::Database;
use tonic::transport::Channel;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// Creates a person through the API as the server admin; returns their first token.
async fn person(channel: &Channel, admin: &str, name: &str) -> anyhow::Result<String> {
    Ok(
        AccountServiceClient::with_interceptor(channel.clone(), bearer(admin))
            .create_account(CreateAccountRequest { name: name.into() })
            .await?
            .into_inner()
            .token,
    )
}

fn bearer(token: &str) -> impl tonic::service::Interceptor + Clone {
    let value: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("ascii token");
    move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", value.clone());
        Ok(req)
    }
}

/// The records load running beside the timed calls.
#[derive(Clone, Copy)]
struct Load {
    agents: u64,
    rate: f64,
}

/// Brings `load.agents` simulated agents up and streams their records until the returned
/// sender is told to stop; answers how many records were acknowledged meanwhile.
async fn start_load(
    api: Api,
    data_dir: &std::path::Path,
    load: Load,
) -> anyhow::Result<(tokio::sync::watch::Sender<bool>, Arc<StreamTotals>)> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let totals = Arc::new(StreamTotals::default());
    if load.agents == 0 {
        return Ok((stop, totals));
    }
    let cluster = Cluster::new(api, data_dir, "authz-load").await?;
    let mut agents: Vec<LiveAgent> = Vec::new();
    for i in 0..load.agents {
        agents.push(cluster.provision_agent(&format!("load-{i}")).await?);
    }
    let n = agents.len() as f64;
    for (i, agent) in agents.into_iter().enumerate() {
        tokio::spawn(streamer::run(
            agent,
            StreamConfig {
                batch: 20,
                record_bytes: 200,
                window: 8,
                rate: load.rate / n,
                phase: i as f64 / n,
            },
            totals.clone(),
            Vec::new(),
            cluster.errors.clone(),
            stopped.clone(),
        ));
    }
    Ok((stop, totals))
}

async fn measure(
    label: &str,
    database_url: Option<&str>,
    calls: usize,
    load: Load,
) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let mut config = ServerConfig::new(work.path().join("data"));
    config.listen = "127.0.0.1:0".parse()?;
    config.agent_listen = "127.0.0.1:0".parse()?;
    config.sandbox = SandboxKind::External;
    config.database_url = database_url.map(str::to_string);
    let server = kortix_controlplane::server::start(config).await?;
    let url = server.public_url.clone();
    let admin = std::fs::read_to_string(server.admin_token_path())?
        .trim()
        .to_string();
    let channel = tonic::transport::Endpoint::from_shared(url.clone())?
        .connect()
        .await?;
    // The owner's project, read by a collaborator with a grant and an account membership:
    // the check reads both.
    let owner = person(&channel, &admin, "owner").await?;
    let reader = person(&channel, &admin, "reader").await?;
    let owner_api = Api::connect(&url, &owner).await?;
    owner_api.create_project("web").await?;
    kortix_proto::v1::member_service_client::MemberServiceClient::with_interceptor(
        channel.clone(),
        bearer(&owner),
    )
    .add_member(AddMemberRequest {
        account: String::new(),
        person: "reader".into(),
        role: "member".into(),
    })
    .await?;
    kortix_proto::v1::access_service_client::AccessServiceClient::with_interceptor(
        channel,
        bearer(&owner),
    )
    .grant_access(GrantAccessRequest {
        project: "web".into(),
        person: "reader".into(),
        role: "viewer".into(),
        expires_in_seconds: 0,
    })
    .await?;
    let reader_api = Api::connect(&url, &reader).await?;
    let (stop_load, load_totals) =
        start_load(owner_api.clone(), &work.path().join("data"), load).await?;

    eprintln!(
        "{label}: server up, people and project made, {} agents streaming",
        load.agents
    );
    let store = Store::open(&work.path().join("data"), database_url).await?;
    let authenticator = Authenticator::new(store.clone());
    let authorized = async || -> anyhow::Result<()> {
        let principal = authenticator.authenticate(&reader).await?;
        let caller = principal.caller(Action::ViewProject).expect("a person");
        permissions::project(&store, &caller, "web").await?;
        Ok(())
    };
    // Warm every path (connections, statement caches, the token cache).
    for _ in 0..200 {
        reader_api.get_project("web").await?;
        authorized().await?;
        store.find_project("web").await?;
    }
    eprintln!("{label}: warmed up");
    let acked_before = load_totals.acked.load(std::sync::atomic::Ordering::Relaxed);
    let timed_from = Instant::now();
    // Interleaved, so all see the same machine.
    let mut call = Vec::with_capacity(calls);
    let mut authz = Vec::with_capacity(calls);
    let mut unchecked = Vec::with_capacity(calls);
    for i in 0..calls {
        let t = Instant::now();
        reader_api.get_project("web").await?;
        call.push(t.elapsed());
        // Whichever runs right after the gRPC call shares the machine with the server's own
        // work on it: the two sides take turns going first.
        for checked in [i % 2 == 0, i % 2 == 1] {
            let t = Instant::now();
            if checked {
                authorized().await?;
                authz.push(t.elapsed());
            } else {
                store.find_project("web").await?;
                unchecked.push(t.elapsed());
            }
        }
    }
    let acked = load_totals.acked.load(std::sync::atomic::Ordering::Relaxed) - acked_before;
    let _ = stop_load.send(true);
    eprintln!(
        "{label}: the load streamed {:.0} records/s while the calls were timed",
        acked as f64 / timed_from.elapsed().as_secs_f64()
    );
    for v in [&mut call, &mut authz, &mut unchecked] {
        v.sort();
    }
    for (name, v) in [
        ("GetProject over gRPC (the whole call)", &call),
        (
            "token + permission check (the project read with roles)",
            &authz,
        ),
        ("the project read alone (check skipped)", &unchecked),
    ] {
        println!(
            "| {label} | {name} | {} | {} | {} |",
            us(percentile(v, 0.5)),
            us(percentile(v, 0.9)),
            us(percentile(v, 0.99)),
        );
    }
    let added = |p: f64| percentile(&authz, p).saturating_sub(percentile(&unchecked, p));
    let share = |p: f64| {
        let without = percentile(&call, p).saturating_sub(added(p));
        100.0 * added(p).as_secs_f64() / without.as_secs_f64()
    };
    println!(
        "| {label} | added by authorization | {} | {} | {} |",
        us(added(0.5)),
        us(added(0.9)),
        us(added(0.99)),
    );
    println!(
        "| {label} | added, share of the unchecked call | {:.1} % | {:.1} % | {:.1} % |",
        share(0.5),
        share(0.9),
        share(0.99),
    );
    store.close().await;
    server.shutdown().await;
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let calls = std::env::var("CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let env = |name: &str, default: f64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(default)
    };
    let load = Load {
        agents: env("LOAD_AGENTS", 20.0) as u64,
        rate: env("LOAD_RATE", 10_000.0),
    };
    println!(
        "Authorization per call, {calls} calls each, interleaved, while {} agents stream {} records/s",
        load.agents, load.rate
    );
    println!("| store | what | p50 | p90 | p99 |");
    println!("|---|---|---|---|---|");
    measure("SQLite", None, calls, load).await?;

    let Some(db) = Database::create().await else {
        println!("(PostgreSQL unreachable: skipped)");
        return Ok(());
    };
    let result = measure("PostgreSQL", Some(&db.url), calls, load).await;
    db.drop_now().await;
    result
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}
