//! Driving a project from Slack, end to end: the real control plane, the real agent, real
//! OpenCode with the scripted model, and a strict local stand-in for Slack's Web API
//! (`kortix_tests::slack`), since Slack is not reachable from here. Events are signed with
//! Slack's algorithm (checked against Slack's documented example in the verifier's unit
//! tests).

mod support;

use std::time::Duration;

use kortix_controlplane::channels::slack::signature;
use kortix_proto::v1::*;
use kortix_tests::slack::{SlackApi, describe};
use kortix_tests::{ScriptedModel, Turn};
use serde_json::{Value, json};
use support::{TestServer, eventually};

const BOT_TOKEN: &str = "xoxb-test-0000-bot-token";
const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const CHANNEL: &str = "C0TEST";
const WAIT: Duration = Duration::from_secs(240);

struct Fixture {
    ts: TestServer,
    token: String,
    slack: SlackApi,
    http: reqwest::Client,
    _work: tempfile::TempDir,
}

async fn setup(model: &ScriptedModel) -> Fixture {
    let slack = SlackApi::start(BOT_TOKEN).await.unwrap();
    let url = slack.url().to_string();
    let ts = TestServer::start_with(|c| {
        support::use_real_agent(c);
        c.slack_api_url = url;
    })
    .await;
    let token = ts.account("alice").await;
    let work = support::app_with_model_config(&ts, &token, model.port(), |_| {}).await;
    let connected = ts
        .channels(&token)
        .connect_slack(ConnectSlackRequest {
            project: "app".into(),
            signing_secret: SIGNING_SECRET.into(),
            bot_token: BOT_TOKEN.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        connected.request_url,
        format!("{}/v1/webhooks/slack/app", ts.url())
    );
    assert_eq!(
        connected.interactivity_url,
        format!("{}/v1/webhooks/slack/app/interactivity", ts.url())
    );
    Fixture {
        ts,
        token,
        slack,
        http: reqwest::Client::new(),
        _work: work,
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl Fixture {
    /// POSTs `body` to `path` signed at `timestamp` (with `secret`), with extra headers.
    async fn post_signed(
        &self,
        path: &str,
        body: &str,
        content_type: &str,
        timestamp: i64,
        secret: &str,
        extra: &[(&str, &str)],
    ) -> (u16, String) {
        let ts = timestamp.to_string();
        let mut req = self
            .http
            .post(format!("{}{path}", self.ts.url()))
            .header("content-type", content_type)
            .header(signature::TIMESTAMP_HEADER, &ts)
            .header(
                signature::SIGNATURE_HEADER,
                signature::sign(secret.as_bytes(), &ts, body.as_bytes()),
            )
            .body(body.to_string());
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let response = req.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn event(&self, envelope: &Value, extra: &[(&str, &str)]) -> (u16, String) {
        self.post_signed(
            "/v1/webhooks/slack/app",
            &envelope.to_string(),
            "application/json",
            now_secs(),
            SIGNING_SECRET,
            extra,
        )
        .await
    }

    async fn command(&self, text: &str) -> u16 {
        let form = format!(
            "command=%2Fkortix&text={}&user_id=U0ALICE&channel_id={CHANNEL}&team_id=T0TEST",
            text.replace(' ', "+")
        );
        self.post_signed(
            "/v1/webhooks/slack/app/interactivity",
            &form,
            "application/x-www-form-urlencoded",
            now_secs(),
            SIGNING_SECRET,
            &[],
        )
        .await
        .0
    }

    async fn sessions(&self) -> Vec<Session> {
        self.ts
            .sessions(&self.token)
            .list_sessions(ListSessionsRequest {
                project: "app".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .sessions
    }

    async fn threads(&self) -> Vec<ChannelThread> {
        let bindings = self
            .ts
            .channels(&self.token)
            .list_channels(ListChannelsRequest {
                project: "app".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .bindings;
        assert_eq!(bindings.len(), 1);
        assert_eq!(bindings[0].kind, "slack");
        bindings[0].threads.clone()
    }

    /// Sends a reply in the thread (acknowledged with 200) and waits for the bot's answer
    /// containing `answer`.
    async fn steer(&self, event_id: &str, thread_ts: &str, ts: &str, text: &str, answer: &str) {
        let (status, _) = self.event(&reply(event_id, thread_ts, ts, text), &[]).await;
        assert_eq!(status, 200);
        self.reply_containing(thread_ts, answer).await;
    }

    /// Waits for a reply in the thread containing `needle` (not a progress message, whose
    /// steps quote the agent's text too).
    async fn reply_containing(&self, thread_ts: &str, needle: &str) -> String {
        eventually(&format!("a reply containing {needle:?}"), WAIT, || async {
            let thread = self.slack.thread(CHANNEL, thread_ts);
            thread
                .iter()
                .find(|m| !m.text.starts_with('⏳') && m.text.contains(needle))
                .map(|m| m.text.clone())
        })
        .await
    }
}

fn mention(event_id: &str, ts: &str, text: &str) -> Value {
    json!({
        "type": "event_callback",
        "team_id": "T0TEST",
        "event_id": event_id,
        "event_time": now_secs(),
        "authorizations": [{"user_id": "U0BOT", "is_bot": true}],
        "event": {
            "type": "app_mention", "user": "U0ALICE", "channel": CHANNEL,
            "ts": ts, "text": format!("<@U0BOT> {text}"),
        },
    })
}

fn reply(event_id: &str, thread_ts: &str, ts: &str, text: &str) -> Value {
    json!({
        "type": "event_callback",
        "team_id": "T0TEST",
        "event_id": event_id,
        "event_time": now_secs(),
        "authorizations": [{"user_id": "U0BOT", "is_bot": true}],
        "event": {
            "type": "message", "channel_type": "channel", "user": "U0ALICE",
            "channel": CHANNEL, "ts": ts, "thread_ts": thread_ts, "text": text,
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_thread_drives_one_session() {
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let f = setup(&model).await;

    // Slack's URL check.
    let (status, body) = f
        .event(
            &json!({"type": "url_verification", "challenge": "ch4llenge", "token": "x"}),
            &[],
        )
        .await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"challenge":"ch4llenge"}"#)
    );

    // Bad and stale signatures: 401, nothing stored, nothing started.
    let first = mention("Ev0001", "1700000100.000100", "create hello.txt");
    let body = first.to_string();
    for (timestamp, secret) in [
        (now_secs(), "not-the-signing-secret"),
        (now_secs() - 6 * 60, SIGNING_SECRET),
        (now_secs() + 6 * 60, SIGNING_SECRET),
    ] {
        let (status, _) = f
            .post_signed(
                "/v1/webhooks/slack/app",
                &body,
                "application/json",
                timestamp,
                secret,
                &[],
            )
            .await;
        assert_eq!(status, 401);
    }
    let unsigned = f
        .http
        .post(format!("{}/v1/webhooks/slack/app", f.ts.url()))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    assert!(f.sessions().await.is_empty());
    assert!(f.slack.calls().is_empty(), "{:?}", f.slack.calls());

    // A mention starts a session; the thread shows a placeholder, progress and the answer.
    model.push([
        Turn::bash(
            "echo hello > hello.txt && git add hello.txt && git commit -q -m 'Add hello.txt' && git push -q origin HEAD",
        ),
        Turn::text("Created hello.txt and pushed it."),
    ]);
    let (status, _) = f.event(&first, &[]).await;
    assert_eq!(status, 200);
    let thread_ts = "1700000100.000100";
    let answer = f.reply_containing(thread_ts, "Created hello.txt").await;
    let sessions = f.sessions().await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let session = &sessions[0];
    assert!(
        answer.contains(&format!("Branch `{}`", session.id)),
        "{answer}"
    );
    assert!(answer.contains("1 file(s) changed, +1 −0"), "{answer}");
    assert_eq!(session.launched_by, "slack:U0ALICE");
    let thread = f.slack.thread(CHANNEL, thread_ts);
    let progress = &thread[0];
    assert!(progress.edits >= 1, "{}", describe(&thread));
    eventually("the progress message's last state", WAIT, || async {
        let progress = f.slack.thread(CHANNEL, thread_ts)[0].clone();
        progress.text.starts_with("✅ Finished").then_some(())
    })
    .await;
    eventually("✅ on the mention", WAIT, || async {
        (f.slack.reactions(CHANNEL, thread_ts) == ["white_check_mark"]).then_some(())
    })
    .await;
    let progress_updates: Vec<_> = f
        .slack
        .calls()
        .into_iter()
        .filter(|c| c.method == "chat.update" && c.error.is_none())
        .collect();
    assert!(
        progress_updates.iter().any(|c| c.body["text"]
            .as_str()
            .unwrap_or_default()
            .contains("🔧 bash")),
        "progress showed the tool step: {progress_updates:?}"
    );

    // The progress message changed at most once a second.
    let progress_ts = progress.ts.clone();
    let updates: Vec<_> = f
        .slack
        .calls()
        .into_iter()
        .filter(|c| {
            c.method == "chat.update"
                && c.error.is_none()
                && c.body["ts"] == progress_ts.as_str()
                && c.body["text"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with('⏳')
        })
        .map(|c| c.at)
        .collect();
    assert!(updates.len() >= 2, "{}", describe(&thread));
    for pair in updates.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(950),
            "progress updated {:?} apart",
            pair[1] - pair[0]
        );
    }

    // Slack's retry of the same event starts nothing.
    let (status, _) = f
        .event(
            &first,
            &[
                ("x-slack-retry-num", "1"),
                ("x-slack-retry-reason", "http_timeout"),
            ],
        )
        .await;
    assert_eq!(status, 200);

    // A reply in the thread steers the same session.
    model.push([Turn::text("Bye from the same session.")]);
    f.steer(
        "Ev0002",
        thread_ts,
        "1700000100.000200",
        "now say bye",
        "Bye from the same session.",
    )
    .await;
    assert_eq!(f.sessions().await.len(), 1);
    let threads = f.threads().await;
    assert_eq!(threads.len(), 1);
    assert_eq!(threads[0].session_id, session.id);
    assert_eq!(threads[0].asked_by, "U0ALICE");
    assert!(
        model
            .requests()
            .iter()
            .any(|r| r.body.to_string().contains("now say bye")),
        "the reply reached the model"
    );

    // A 429 storm: every call is refused for a while; the final message still arrives.
    model.push([Turn::text("Answer through the storm.")]);
    f.slack.rate_limit_next(12, 1);
    f.steer(
        "Ev0003",
        thread_ts,
        "1700000100.000300",
        "one more",
        "Answer through the storm.",
    )
    .await;
    assert!(
        f.slack
            .calls()
            .iter()
            .filter(|c| c.error.as_deref() == Some("ratelimited"))
            .count()
            >= 12
    );
    assert_eq!(f.sessions().await.len(), 1);

    // The slash command: help, this channel's sessions, stop.
    assert_eq!(f.command("help").await, 200);
    assert_eq!(f.command("sessions").await, 200);
    eventually("the sessions listing", WAIT, || async {
        f.slack
            .ephemerals()
            .iter()
            .find(|e| e.text.contains(&session.id) && e.user == "U0ALICE")
            .map(drop)
    })
    .await;
    // Each command is answered by its own task, so the help may land after the listing.
    eventually("the help", WAIT, || async {
        f.slack
            .ephemerals()
            .iter()
            .any(|e| e.text.contains("`/kortix stop [SESSION]`"))
            .then_some(())
    })
    .await;
    assert_eq!(f.command(&format!("stop {}", session.id)).await, 200);
    eventually("the session stops", WAIT, || async {
        let s = f.ts.session(&f.token, &session.id).await;
        (s.status == SessionStatus::Stopped as i32).then_some(())
    })
    .await;
    eventually("no live threads", WAIT, || async {
        f.threads().await.is_empty().then_some(())
    })
    .await;

    // A reply to the ended session's thread starts a fresh session, told it has no memory.
    model.push([Turn::text("Fresh start here.")]);
    f.steer(
        "Ev0004",
        thread_ts,
        "1700000100.000400",
        "are you there?",
        "Fresh start here.",
    )
    .await;
    let sessions = f.sessions().await;
    assert_eq!(sessions.len(), 2);
    let fresh = sessions.iter().find(|s| s.id != session.id).unwrap();
    assert!(fresh.prompt.contains("no memory"), "{}", fresh.prompt);
    assert!(fresh.prompt.ends_with("are you there?"));
    assert_eq!(f.threads().await[0].session_id, fresh.id);
    f.ts.stop().await;
}
