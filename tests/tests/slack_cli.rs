//! `kortix channels slack connect` and `kortix channels ls` against a real `kortix server`
//! started with `--slack-api-url` pointing at the local Slack stand-in.

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use kortix_controlplane::channels::slack::signature;
use kortix_tests::slack::SlackApi;
use serde_json::json;
use support::server_process::ServerProcess;
use support::{built_binary, eventually};

const SECRET: &str = "cli-signing-secret";
const TOKEN: &str = "xoxb-cli-token";

/// `kortix --json channels slack connect --project web` with `stdin` as its input.
fn connect(server: &ServerProcess, stdin: &str) -> std::process::Output {
    let mut child = Command::new(built_binary("kortix"))
        .args(["--json", "channels", "slack", "connect", "--project", "web"])
        .env("KORTIX_URL", server.url())
        .env("KORTIX_DATA_DIR", &server.data_dir)
        .env_remove("KORTIX_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
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
    let out = tokio::task::block_in_place(|| connect(&server, &format!("{TOKEN}\n{SECRET}\n")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the first line is the signing secret"),
        "{err}"
    );
    let out = tokio::task::block_in_place(|| connect(&server, "only-one-line\n"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected 2 lines"));

    let out = tokio::task::block_in_place(|| connect(&server, &format!("{SECRET}\n{TOKEN}\n")));
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
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let response = reqwest::Client::new()
        .post(&request_url)
        .header("content-type", "application/json")
        .header(signature::TIMESTAMP_HEADER, &ts)
        .header(
            signature::SIGNATURE_HEADER,
            signature::sign(SECRET.as_bytes(), &ts, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
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
