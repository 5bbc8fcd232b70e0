//! PostgreSQL goes away under a running control plane and comes back: a real `kortix server`
//! process on a PostgreSQL cluster of the test's own (made with `initdb`, so the shared server
//! on 5432 is never touched), the real `kortix-agent`, pinned OpenCode and a scripted model
//! whose bash tool prints numbered lines across the outage.
//!
//! Needs `target/<profile>/kortix` and `kortix-agent` built (`scripts/test` builds them first)
//! and PostgreSQL's server binaries (`/usr/lib/postgresql/<version>/bin`).

mod support;

use kortix_tests::pg_cluster::PrivateCluster;
use kortix_tests::{ScriptedModel, Turn};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use support::eventually;
use support::server_process::{ServerProcess, model_repo};

const LINES: usize = 400;

/// Every `line-N` the bash tool printed, with how many times the stored records carry it.
fn printed_lines(records: &[Value]) -> BTreeMap<usize, usize> {
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
            Value::Object(fields) => fields.values().for_each(|f| strings(f, out)),
            _ => {}
        }
    }
    let mut seen = BTreeMap::new();
    for r in records {
        let mut texts = Vec::new();
        strings(&r["data"], &mut texts);
        for word in texts.iter().flat_map(|t| t.split_whitespace()) {
            if let Some(n) = word.strip_prefix("line-").and_then(|n| n.parse().ok()) {
                *seen.entry(n).or_default() += 1;
            }
        }
    }
    seen
}

/// A restart of PostgreSQL mid-stream: meanwhile the API answers with a clear error and the
/// process does not panic; the agent keeps its records in its spool; afterwards the session
/// is still running and its stream is complete, gap-free and duplicate-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_rides_out_a_postgresql_restart() {
    let Some(cluster) = PrivateCluster::create() else {
        return;
    };
    let model = ScriptedModel::start(vec![
        // Output for ~20 s, so records flow across the outage.
        Turn::bash(format!(
            "for i in $(seq 1 {LINES}); do echo line-$i; sleep 0.05; done"
        )),
        Turn::text("Printed the lines."),
    ])
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let repo = model_repo(root.path(), &model);
    let url = cluster.url();
    let mut server = ServerProcess::start(root.path(), &["--database-url", &url]);
    server.wait_ready().await;
    let id = server.start_app_session(&repo);
    eventually("the first lines", Duration::from_secs(120), || async {
        (printed_lines(&server.records(&id)).len() >= 20).then_some(())
    })
    .await;

    cluster.stop("fast");
    // While the database is away the API says so, clearly, and the server stays up.
    let refused = eventually(
        "the API to report the database outage",
        Duration::from_secs(60),
        || async {
            let out = server.cli(&["sessions", "info", &id]);
            (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).to_string())
        },
    )
    .await;
    assert!(
        refused.contains("answered, but the database is unavailable"),
        "a clear error during the outage: {refused}"
    );
    // The bash tool keeps printing meanwhile; the agent keeps what it cannot deliver in its
    // spool until the control plane acknowledges it.
    cluster.start();

    let records = eventually(
        "every line once the database is back",
        Duration::from_secs(180),
        || async {
            // `None` while the control plane cannot read them yet (the database is coming back).
            let records = server.try_records(&id).ok()?;
            (printed_lines(&records).len() == LINES).then_some(records)
        },
    )
    .await;
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=records.len() as u64).collect::<Vec<_>>(),
        "gap-free and duplicate-free"
    );
    let lines = printed_lines(&records);
    assert_eq!(
        lines.keys().copied().collect::<Vec<_>>(),
        (1..=LINES).collect::<Vec<_>>(),
        "every printed line is stored"
    );
    let s = server.json(&["sessions", "info", &id]);
    assert_eq!(s["status"], "running", "the session rode it out: {s}");
    assert!(
        !server.log_contains("panicked"),
        "no panic: {}",
        server.log_tail()
    );

    server.json(&["sessions", "stop", &id]);
    eventually("the session to stop", Duration::from_secs(60), || async {
        let s = server.json(&["sessions", "info", &id]);
        (s["status"] == "stopped").then_some(())
    })
    .await;
}
