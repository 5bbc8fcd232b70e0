//! Benchmark (ignored by default): how soon `kortix sessions new --wait` and `kortix sessions
//! stop --wait` return after the control plane stored the state change (`started_at` /
//! `ended_at` of the session), against the baseline of polling GetSession with the backoff
//! `--wait` used before (250 ms, ×1.5 per poll, up to 5 s), in the same run, on sessions of the
//! real agent and pinned OpenCode.
//!
//! `cargo test -p kortix-tests --test bench_wait -- --ignored --nocapture`
//!
//! Needs `target/<profile>/kortix` and `kortix-agent` built.

mod support;

use kortix_proto::v1::*;
use kortix_tests::ScriptedModel;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{TestServer, built_binary};

const ROUNDS: usize = 8;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs `kortix --json ARGS` to completion; the JSON it printed and when it exited.
fn kortix(ts: &TestServer, args: &[&str]) -> (serde_json::Value, i64) {
    let out = tokio::task::block_in_place(|| {
        Command::new(built_binary("kortix"))
            .arg("--json")
            .args(args)
            .env("KORTIX_URL", ts.url())
            .env("KORTIX_DATA_DIR", ts.data_dir())
            .env_remove("KORTIX_TOKEN")
            .output()
    })
    .expect("run kortix");
    let exited = now_ms();
    assert!(
        out.status.success(),
        "kortix {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        serde_json::from_slice(&out.stdout).expect("one JSON document"),
        exited,
    )
}

/// The baseline: GetSession until `done`, sleeping 250 ms × 1.5ⁿ (at most 5 s) in between.
async fn poll_until(ts: &TestServer, token: &str, id: &str, done: fn(i32) -> bool) -> i64 {
    let mut delay = Duration::from_millis(250);
    loop {
        let s = ts.session(token, id).await;
        if done(s.status) {
            return now_ms();
        }
        tokio::time::sleep(delay).await;
        delay = delay.mul_f64(1.5).min(Duration::from_secs(5));
    }
}

fn running(status: i32) -> bool {
    status != SessionStatus::Provisioning as i32
}

fn ended(status: i32) -> bool {
    [
        SessionStatus::Stopped,
        SessionStatus::Hibernated,
        SessionStatus::Failed,
    ]
    .iter()
    .any(|s| *s as i32 == status)
}

fn percentile(mut v: Vec<i64>, p: f64) -> i64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn report(what: &str, samples: Vec<i64>) {
    println!(
        "{what:<44} p50 {:>5} ms  max {:>5} ms  (n={}, {:?})",
        percentile(samples.clone(), 0.5),
        percentile(samples.clone(), 1.0),
        samples.len(),
        samples
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
async fn wait_returns_right_after_the_state_change() {
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let ts = TestServer::start_with(support::use_real_agent).await;
    let token = ts.admin_token.clone();
    let _work = support::app_with_model_config(&ts, &token, model.port(), |_| {}).await;
    let (mut new_watch, mut stop_watch, mut new_poll, mut stop_poll) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        // `kortix sessions new --wait` / `sessions stop --wait`, following WatchSession.
        let (started, returned) = kortix(&ts, &["sessions", "new", "-p", "app", "--wait"]);
        let id = started["id"].as_str().expect("session id").to_owned();
        let s = ts.session(&token, &id).await;
        assert_eq!(
            s.status,
            SessionStatus::Running as i32,
            "{}",
            s.failure_reason
        );
        new_watch.push(returned - s.started_unix_ms);
        let (_, returned) = kortix(&ts, &["sessions", "stop", &id, "--wait"]);
        let s = ts.session(&token, &id).await;
        stop_watch.push(returned - s.ended_unix_ms);

        // The baseline on the same server: poll with the old backoff.
        let s = ts
            .sessions(&token)
            .start_session(StartSessionRequest {
                project: "app".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let returned = poll_until(&ts, &token, &s.id, running).await;
        new_poll.push(returned - ts.session(&token, &s.id).await.started_unix_ms);
        ts.sessions(&token)
            .stop_session(StopSessionRequest { id: s.id.clone() })
            .await
            .unwrap();
        let returned = poll_until(&ts, &token, &s.id, ended).await;
        stop_poll.push(returned - ts.session(&token, &s.id).await.ended_unix_ms);
    }
    println!("state stored → command returned, {ROUNDS} sessions each:");
    report("sessions new --wait (WatchSession)", new_watch);
    report("baseline: poll with backoff until running", new_poll);
    report("sessions stop --wait (WatchSession)", stop_watch);
    report("baseline: poll with backoff until stopped", stop_poll);
    ts.stop().await;
}
