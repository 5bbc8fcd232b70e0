//! `kortix channels slack connect`, `link` and `kortix channels ls` against a real `kortix
//! server` process started with `--slack-api-url` pointing at the local Slack stand-in, and a
//! Slack thread that keeps being followed across a control plane killed and restarted.

mod support;

use std::time::Duration;

use kortix_controlplane::channels::slack::signature;
use kortix_tests::slack::{SlackApi, describe};
use kortix_tests::{ScriptedModel, Turn};
use nix::sys::signal::Signal;
use serde_json::json;
use support::eventually;
use support::server_process::{ServerProcess, model_repo};

const SECRET: &str = "cli-signing-secret";
const TOKEN: &str = "xoxb-cli-token";
const WAIT: Duration = Duration::from_secs(180);

/// `kortix --json channels slack connect --project PROJECT` with `stdin` as its input.
fn connect(server: &ServerProcess, project: &str, stdin: &str) -> std::process::Output {
    server.cli_with_input(
        &[
            "--json",
            "channels",
            "slack",
            "connect",
            "--project",
            project,
        ],
        Some(stdin),
    )
}

fn now_secs() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

/// POSTs a signed Slack request to `url`; its status.
async fn post_signed(url: &str, content_type: &str, body: String) -> u16 {
    let ts = now_secs();
    reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .header(signature::TIMESTAMP_HEADER, &ts)
        .header(
            signature::SIGNATURE_HEADER,
            signature::sign(SECRET.as_bytes(), &ts, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_cli_binds_and_lists() {
    let slack = SlackApi::start(TOKEN).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(root.path(), &["--slack-api-url", slack.url()]);
    server.wait_ready().await;
    server.json(&["projects", "create", "web"]);
    assert_eq!(
        server.json(&["channels", "ls", "--project", "web"]),
        json!([])
    );

    // The lines swapped: refused with a message saying which line is which.
    let out =
        tokio::task::block_in_place(|| connect(&server, "web", &format!("{TOKEN}\n{SECRET}\n")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the first line is the signing secret"),
        "{err}"
    );
    let out = tokio::task::block_in_place(|| connect(&server, "web", "only-one-line\n"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected 2 lines"));

    let out =
        tokio::task::block_in_place(|| connect(&server, "web", &format!("{SECRET}\n{TOKEN}\n")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let connected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let request_url = format!("{}/v1/webhooks/slack/web", server.url());
    assert_eq!(
        connected,
        json!({
            "project": "web",
            "request_url": request_url,
            "interactivity_url": format!("{request_url}/interactivity"),
        })
    );
    let listed = server.json(&["channels", "ls", "--project", "web"]);
    assert_eq!(listed[0]["kind"], "slack");
    assert_eq!(listed[0]["request_url"], request_url.as_str());
    assert_eq!(listed[0]["threads"], json!([]));

    // A mention with nothing to do is answered, to its author only, through --slack-api-url.
    let body = json!({
        "type": "event_callback", "event_id": "EvCli1",
        "authorizations": [{"user_id": "UBOT", "is_bot": true}],
        "event": {"type": "app_mention", "user": "U1", "channel": "C1", "ts": "1.0",
                  "text": "<@UBOT>"},
    })
    .to_string();
    assert_eq!(
        post_signed(&request_url, "application/json", body).await,
        200
    );
    let ephemeral = eventually("the ephemeral answer", Duration::from_secs(30), || async {
        slack.ephemerals().first().cloned()
    })
    .await;
    assert_eq!(
        (ephemeral.channel.as_str(), ephemeral.user.as_str()),
        ("C1", "U1")
    );
    assert!(ephemeral.text.starts_with("Tell me what to do"));
}

/// The control plane is killed (SIGKILL) while a session started from a Slack thread runs,
/// and restarted on the same data directory: the thread's follower is taken over from the
/// store once the dead process's lease runs out, and the final answer still arrives.
/// Also links a Slack user with `kortix channels slack link`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_thread_is_followed_across_a_control_plane_restart() {
    let model = ScriptedModel::start(vec![
        // Busy for a few seconds, so the answer comes while the control plane is down.
        Turn::bash("for i in $(seq 1 60); do echo line-$i; sleep 0.05; done"),
        Turn::text("Finished across the restart."),
    ])
    .unwrap();
    let slack = SlackApi::start(TOKEN).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let repo = model_repo(root.path(), &model);
    let mut server = ServerProcess::start(root.path(), &["--slack-api-url", slack.url()]);
    server.wait_ready().await;
    server.import_app(&repo);
    let out = connect(&server, "app", &format!("{SECRET}\n{TOKEN}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let request_url = format!("{}/v1/webhooks/slack/app", server.url());

    let thread_ts = "1700000500.000100";
    let mention = json!({
        "type": "event_callback", "event_id": "EvRestart1",
        "authorizations": [{"user_id": "UBOT", "is_bot": true}],
        "event": {"type": "app_mention", "user": "U1", "channel": "C1", "ts": thread_ts,
                  "text": "<@UBOT> print some lines"},
    });
    assert_eq!(
        post_signed(&request_url, "application/json", mention.to_string()).await,
        200
    );
    assert!(
        tokio::task::block_in_place(|| model.wait_for_calls(1, Duration::from_secs(120))),
        "the model was never asked"
    );
    server.signal(Signal::SIGKILL);
    server.wait_exit(Duration::from_secs(10)).await;
    assert!(
        !slack
            .thread("C1", thread_ts)
            .iter()
            .any(|m| m.text.contains("Finished across the restart.")),
        "answered before the restart"
    );
    server.restart().await;

    let answer = eventually("the final answer after the restart", WAIT, || async {
        slack
            .thread("C1", thread_ts)
            .into_iter()
            .find(|m| !m.text.starts_with('⏳') && m.text.contains("Finished across the restart."))
    })
    .await;
    assert!(answer.text.contains("Branch `"), "{}", answer.text);
    eventually("✅ on the mention", WAIT, || async {
        (slack.reactions("C1", thread_ts) == ["white_check_mark"]).then_some(())
    })
    .await;
    let answers = slack
        .thread("C1", thread_ts)
        .iter()
        .filter(|m| m.text.contains("Finished across the restart.") && !m.text.starts_with('⏳'))
        .count();
    assert_eq!(answers, 1, "{}", describe(&slack.thread("C1", thread_ts)));

    // `/kortix link` in Slack, redeemed with the CLI by the signed-in person.
    let form = "command=%2Fkortix&text=link&user_id=U1&channel_id=C1&team_id=T1".to_string();
    let interactivity = format!("{request_url}/interactivity");
    assert_eq!(
        post_signed(&interactivity, "application/x-www-form-urlencoded", form).await,
        200
    );
    let code = eventually("the link code", WAIT, || async {
        slack.ephemerals().into_iter().find_map(|e| {
            let rest = e.text.split("kortix channels slack link ").nth(1)?;
            Some(rest.trim_end_matches('`').to_string())
        })
    })
    .await;
    let linked = server.json(&["channels", "slack", "link", &code]);
    assert_eq!(linked, json!({"project": "app", "slack_user": "U1"}));
    let again = server.cli(&["channels", "slack", "link", &code]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no such Slack link code"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
