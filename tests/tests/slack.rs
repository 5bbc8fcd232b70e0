//! Driving a project from Slack, end to end: the real control plane, the real agent, real
//! OpenCode with the scripted model, and a strict local stand-in for Slack's Web API
//! (`kortix_tests::slack`), since Slack is not reachable from here. Events are signed with
//! Slack's algorithm (checked against Slack's documented example in the verifier's unit
//! tests).

mod support;

use std::time::Duration;

use kortix_controlplane::channels::slack::signature;
use kortix_controlplane::config::ServerConfig;
use kortix_proto::v1::*;
use kortix_tests::slack::{Ephemeral, SlackApi, describe};
use kortix_tests::{ScriptedModel, Turn};
use serde_json::{Value, json};
use support::{TestServer, eventually};

const BOT_TOKEN: &str = "xoxb-test-0000-bot-token";
const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const CHANNEL: &str = "C0TEST";
const WAIT: Duration = Duration::from_secs(240);

struct Fixture {
    ts: TestServer,
    /// The replica Slack's requests reach (a load balancer's choice): `ts` unless a test
    /// moves it.
    slack_reaches: String,
    token: String,
    slack: SlackApi,
    http: reqwest::Client,
    _work: tempfile::TempDir,
}

async fn setup(model: &ScriptedModel) -> Fixture {
    setup_with(model, None, |_| {}, |_| {}).await
}

/// A control plane with the real agent, posting to the Slack stand-in at `slack_url`, on
/// PostgreSQL at `database_url` when given; with the master key of `replica_of` (replicas
/// share it: the Slack binding is sealed under it); `adjust` has the last word on its config.
async fn slack_server(
    slack_url: &str,
    database_url: Option<String>,
    replica_of: Option<&TestServer>,
    adjust: impl FnOnce(&mut ServerConfig),
) -> TestServer {
    let url = slack_url.to_string();
    let key = replica_of.map(|ts| std::fs::read(ts.data_dir().join("master.key")).unwrap());
    TestServer::start_with(|c| {
        support::use_real_agent(c);
        c.slack_api_url = url;
        c.database_url = database_url;
        if let Some(key) = key {
            std::fs::create_dir_all(&c.data_dir).unwrap();
            let path = c.data_dir.join("master.key");
            std::fs::write(&path, key).unwrap();
            std::fs::set_permissions(&path, {
                let mut p = std::fs::metadata(&path).unwrap().permissions();
                std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o600);
                p
            })
            .unwrap();
        }
        adjust(c);
    })
    .await
}

/// [`setup`] on PostgreSQL at `database_url` when given, with `adjust` given the work tree's
/// OpenCode config before it is committed and `server` the control plane's config.
async fn setup_with(
    model: &ScriptedModel,
    database_url: Option<String>,
    adjust: impl FnOnce(&std::path::Path),
    server: impl FnOnce(&mut ServerConfig),
) -> Fixture {
    let slack = SlackApi::start(BOT_TOKEN).await.unwrap();
    let ts = slack_server(slack.url(), database_url, None, server).await;
    let token = ts.account("alice").await;
    let work = support::app_with_model_config(&ts, &token, model.port(), adjust).await;
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
        slack_reaches: ts.url(),
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
            .post(format!("{}{path}", self.slack_reaches))
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

    /// A signed form post to the interactivity URL (slash commands and button clicks).
    async fn interactivity(&self, form: &str) -> u16 {
        self.post_signed(
            "/v1/webhooks/slack/app/interactivity",
            form,
            "application/x-www-form-urlencoded",
            now_secs(),
            SIGNING_SECRET,
            &[],
        )
        .await
        .0
    }

    async fn command(&self, text: &str) -> u16 {
        self.command_as("U0ALICE", text).await
    }

    async fn command_as(&self, user: &str, text: &str) -> u16 {
        let form = format!(
            "command=%2Fkortix&text={}&user_id={user}&channel_id={CHANNEL}&team_id=T0TEST",
            text.replace(' ', "+")
        );
        self.interactivity(&form).await
    }

    /// Waits for an answer to `user` only containing `needle`.
    async fn ephemeral_containing(&self, user: &str, needle: &str) -> Ephemeral {
        eventually(
            &format!("an ephemeral to {user} containing {needle:?}"),
            WAIT,
            || async {
                self.slack
                    .ephemerals()
                    .into_iter()
                    .find(|e| e.user == user && e.text.contains(needle))
            },
        )
        .await
    }

    /// `user` clicks Approve and is told `says` (to them only); the approval stays pending.
    async fn refused_approval(
        &self,
        user: &str,
        thread_ts: &str,
        buttons_ts: &str,
        approval_id: &str,
        says: &str,
    ) {
        let status = self
            .click(user, thread_ts, buttons_ts, "approval:approve", approval_id)
            .await;
        assert_eq!(status, 200);
        self.ephemeral_containing(user, says).await;
        let approvals = self.approvals().await;
        let ours = approvals.iter().find(|a| a.id == approval_id).unwrap();
        assert_eq!(ours.state, "pending");
    }

    /// `/kortix link` as Slack user `user`, the code redeemed with `token`: the code and
    /// what it linked.
    async fn link(&self, user: &str, token: &str) -> (String, LinkSlackUserResponse) {
        assert_eq!(self.command_as(user, "link").await, 200);
        let answer = self
            .ephemeral_containing(user, "kortix channels slack link ")
            .await;
        let code = answer
            .text
            .split("kortix channels slack link ")
            .nth(1)
            .unwrap()
            .trim_end_matches('`')
            .to_string();
        let linked = self
            .ts
            .channels(token)
            .link_slack_user(LinkSlackUserRequest { code: code.clone() })
            .await
            .unwrap()
            .into_inner();
        (code, linked)
    }

    /// `user` clicks button `action_id` (value `value`) on message `message_ts` of the thread:
    /// a signed `block_actions` interaction, as Slack sends it.
    async fn click(
        &self,
        user: &str,
        thread_ts: &str,
        message_ts: &str,
        action_id: &str,
        value: &str,
    ) -> u16 {
        let payload = json!({
            "type": "block_actions",
            "team": {"id": "T0TEST"},
            "user": {"id": user},
            "channel": {"id": CHANNEL},
            "container": {
                "type": "message", "channel_id": CHANNEL,
                "message_ts": message_ts, "thread_ts": thread_ts,
            },
            "message": {"ts": message_ts, "thread_ts": thread_ts},
            "actions": [{
                "type": "button", "action_id": action_id, "value": value,
                "block_id": "b1", "action_ts": "1700000300.000001",
            }],
        });
        let form = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        self.interactivity(&form).await
    }

    async fn approvals(&self) -> Vec<ApprovalInfo> {
        self.ts
            .approvals(&self.token)
            .list_approvals(ListApprovalsRequest {
                project: "app".into(),
                state: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .approvals
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
    f.ephemeral_containing("U0ALICE", &session.id).await;
    // Each command is answered by its own task, so the help may land after the listing.
    f.ephemeral_containing("U0ALICE", "`/kortix stop [SESSION]`")
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

/// A reply in the thread of a hibernated session resumes it: the same session and branch in
/// a new sandbox (`resuming`, then `running`) with its uncommitted work and conversation put
/// back, the reply as its next prompt, and the answer in the thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_a_hibernated_session_resumes_it() {
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let f = setup_with(
        &model,
        None,
        |_| {},
        |c| {
            c.timings.idle_timeout = Duration::from_secs(3);
        },
    )
    .await;
    let thread_ts = "1700000500.000100";
    model.push([
        Turn::bash("echo 'work in progress' > draft.txt"),
        Turn::text("Drafted draft.txt; the codeword is HERON-7."),
    ]);
    let (status, _) = f
        .event(
            &mention("Ev0301", thread_ts, "start a draft, do not commit it"),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    f.reply_containing(thread_ts, "the codeword is HERON-7")
        .await;
    let sessions = f.sessions().await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let id = sessions[0].id.clone();

    // Idle, it hibernates; its agent saves the draft and the conversation on the way out.
    let hibernated =
        f.ts.wait_status(&f.token, &id, SessionStatus::Hibernated, WAIT)
            .await;
    assert!(hibernated.resumable, "{hibernated:?}");
    let saved = hibernated.saved.expect("a save");
    assert!(
        !saved.wip_commit.is_empty() && saved.conversation_bytes > 0,
        "{saved:?}"
    );
    let last_seq =
        f.ts.stored_records(&f.token, &id, 1)
            .await
            .last()
            .unwrap()
            .seq;

    // A reply in its thread brings the same session back, with the reply as its prompt.
    model.push([Turn::text("Resumed: the codeword was HERON-7.")]);
    let before = model.calls();
    let reply_ts = "1700000500.000200";
    let (status, _) = f
        .event(
            &reply("Ev0302", thread_ts, reply_ts, "what was the codeword?"),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    let woken = eventually("the session to leave hibernation", WAIT, || async {
        let s = f.ts.session(&f.token, &id).await;
        (s.status != SessionStatus::Hibernated as i32).then_some(s)
    })
    .await;
    assert!(
        [
            SessionStatus::Resuming as i32,
            SessionStatus::Running as i32
        ]
        .contains(&woken.status),
        "{woken:?}"
    );
    let running =
        f.ts.wait_status(&f.token, &id, SessionStatus::Running, WAIT)
            .await;
    assert_eq!(running.resumes, 1, "{running:?}");
    assert_eq!(running.branch, id);

    // The model hears the reply with the earlier conversation before it.
    let heard = eventually("the reply as the next prompt", WAIT, || async {
        let text = model.last_request_text();
        (model.calls() > before && text.contains("what was the codeword?")).then_some(text)
    })
    .await;
    assert!(heard.contains("HERON-7"), "{heard}");
    assert!(heard.contains("start a draft, do not commit it"), "{heard}");

    // The thread says it resumes the session, then gets the answer; the reply gets ✅.
    f.reply_containing(thread_ts, "Resumed: the codeword was HERON-7.")
        .await;
    assert!(
        f.slack
            .calls()
            .iter()
            .any(|c| c.method == "chat.postMessage"
                && c.body["text"] == format!("⏳ Resuming session `{id}`").as_str()),
        "{}",
        describe(&f.slack.thread(CHANNEL, thread_ts))
    );
    eventually("✅ on the reply", WAIT, || async {
        (f.slack.reactions(CHANNEL, reply_ts) == ["white_check_mark"]).then_some(())
    })
    .await;
    assert_eq!(f.sessions().await.len(), 1, "no fresh session");

    // The new sandbox put the draft and the conversation back; the records go on.
    let after = f.ts.stored_records(&f.token, &id, last_seq + 1).await;
    support::assert_restored(&after);
    f.ts.stop().await;
}

/// An HTTP API with one write operation (`POST /api/deploys`), described by an OpenAPI
/// document the project keeps in its repository: the connector whose calls need approval.
/// Returns its port and the bodies it received.
async fn deploys_api() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    let app = axum::Router::new().route(
        "/api/deploys",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| async move {
            kept.lock().unwrap().push(body.clone());
            axum::Json(json!({"deployed": body}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

fn deploy_call() -> Turn {
    Turn::tool(
        "kortix_call",
        json!({"connector": "ops", "tool": "createDeploy", "args": {"body": {"env": "prod"}}}),
    )
}

/// The approval buttons' message in the thread: (its ts, the approval id).
fn approval_message(slack: &SlackApi, thread_ts: &str) -> Option<(String, String)> {
    slack.thread(CHANNEL, thread_ts).into_iter().find_map(|m| {
        let buttons = m
            .blocks
            .as_array()?
            .iter()
            .find(|b| b["type"] == "actions")?;
        let approve = buttons["elements"]
            .as_array()?
            .iter()
            .find(|e| e["text"]["text"] == "Approve")?;
        Some((m.ts.clone(), approve["value"].as_str()?.to_string()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_approvals_are_decided_with_slack_buttons() {
    let (api_port, deployed) = deploys_api().await;
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let f = setup_with(
        &model,
        None,
        |config| {
            let root = config.ancestors().nth(3).unwrap();
            let spec = json!({
                "openapi": "3.0.3",
                "info": {"title": "ops", "version": "1"},
                "servers": [{"url": format!("http://127.0.0.1:{api_port}/api")}],
                "paths": {"/deploys": {"post": {
                    "operationId": "createDeploy", "summary": "Deploy an environment",
                    "requestBody": {"required": true, "content": {"application/json": {"schema":
                        {"type": "object", "properties": {"env": {"type": "string"}}}}}},
                }}},
            });
            std::fs::write(root.join("ops.json"), spec.to_string()).unwrap();
            let manifest = root.join("kortix.toml");
            let mut text = std::fs::read_to_string(&manifest).unwrap_or_default();
            text.push_str(
                "\n[[connectors]]\nslug = \"ops\"\nprovider = \"openapi\"\nspec = \"ops.json\"\n",
            );
            std::fs::write(manifest, text).unwrap();
        },
        |_| {},
    )
    .await;

    // The agent's write call waits for approval; the thread gets the buttons.
    model.push([deploy_call(), Turn::text("The deploy waits for approval.")]);
    let thread_ts = "1700000200.000100";
    let (status, _) = f
        .event(&mention("Ev0101", thread_ts, "deploy to prod"), &[])
        .await;
    assert_eq!(status, 200);
    let (buttons_ts, approval_id) = eventually("the approval buttons", WAIT, || async {
        approval_message(&f.slack, thread_ts)
    })
    .await;
    let pending = f.approvals().await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(
        (pending[0].id.as_str(), pending[0].state.as_str()),
        (approval_id.as_str(), "pending")
    );
    let question = f
        .slack
        .thread(CHANNEL, thread_ts)
        .into_iter()
        .find(|m| m.ts == buttons_ts)
        .unwrap();
    assert!(
        question.text.contains("*ops.createDeploy*"),
        "{}",
        question.text
    );
    f.reply_containing(thread_ts, "The deploy waits for approval.")
        .await;

    // Bob has no linked account: told to link it, and nothing is decided.
    f.refused_approval(
        "U0BOB",
        thread_ts,
        &buttons_ts,
        &approval_id,
        "Link your account first",
    )
    .await;
    assert!(
        deployed.lock().unwrap().is_empty(),
        "not run before approval"
    );

    // Alice links hers: `/kortix link` answers her alone with a code she redeems with her
    // own login; a code works once.
    let (code, linked) = f.link("U0ALICE", &f.token).await;
    assert_eq!(
        (linked.project.as_str(), linked.slack_user.as_str()),
        ("app", "U0ALICE")
    );
    let again =
        f.ts.channels(&f.token)
            .link_slack_user(LinkSlackUserRequest { code })
            .await
            .unwrap_err();
    assert_eq!(again.code(), tonic::Code::NotFound, "{again:?}");

    // Carol is linked but only a viewer of the project: her person may not decide approvals,
    // so her click decides nothing either.
    let carol = f.ts.account("carol").await;
    f.ts.access(&f.token)
        .grant_access(GrantAccessRequest {
            project: "app".into(),
            person: "carol".into(),
            role: "viewer".into(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap();
    f.link("U0CAROL", &carol).await;
    f.refused_approval(
        "U0CAROL",
        thread_ts,
        &buttons_ts,
        &approval_id,
        "Could not decide approval",
    )
    .await;

    // Alice approves: the same path as `kortix approvals approve` (her permission, the
    // audit log, the session told); the message says who approved, without buttons; the
    // agent makes the call again, it runs once, and its answer reaches the thread.
    model.push([deploy_call(), Turn::text("Deployed prod after approval.")]);
    assert_eq!(
        f.click(
            "U0ALICE",
            thread_ts,
            &buttons_ts,
            "approval:approve",
            &approval_id
        )
        .await,
        200
    );
    f.reply_containing(thread_ts, "Deployed prod after approval.")
        .await;
    assert_eq!(*deployed.lock().unwrap(), [json!({"env": "prod"})]);
    let decided = f.approvals().await;
    let ours = decided.iter().find(|a| a.id == approval_id).unwrap();
    assert_eq!(ours.state, "used", "{decided:?}");
    assert!(ours.decided_by.starts_with("person:"), "{ours:?}");
    let updated = eventually("the buttons' message says who approved", WAIT, || async {
        f.slack
            .thread(CHANNEL, thread_ts)
            .into_iter()
            .find(|m| m.ts == buttons_ts && m.text.contains("Approved by <@U0ALICE> (alice)"))
    })
    .await;
    assert!(
        updated
            .blocks
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["type"] != "actions"),
        "no buttons left: {:?}",
        updated.blocks
    );
    let audit =
        f.ts.audit(&f.token)
            .list_audit(ListAuditRequest {
                project: "app".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
    assert!(
        audit.iter().any(|e| e.action == "connector.approve"
            && e.target == approval_id
            && e.actor_name == "alice"
            && e.from == "slack:U0ALICE"),
        "{audit:?}"
    );
    assert!(audit.iter().any(|e| e.action == "channel.slack.link"));
    // A second click on a decided approval changes nothing and says so.
    assert_eq!(
        f.click(
            "U0ALICE",
            thread_ts,
            &buttons_ts,
            "approval:deny",
            &approval_id
        )
        .await,
        200
    );
    f.ephemeral_containing("U0ALICE", "only pending approvals")
        .await;
    assert_eq!(deployed.lock().unwrap().len(), 1);
    f.ts.stop().await;
}

/// Two replicas on one PostgreSQL: the session runs with its agent on replica A (which
/// follows the thread); a reply that Slack delivers to replica B still reaches the agent
/// (through the store's command queue) and its answer reaches the thread (A's follower picks
/// the turn B stored up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_on_another_replica_reaches_the_agent() {
    let Some(db) = kortix_tests::pg::Database::create().await else {
        return;
    };
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let mut f = setup_with(&model, Some(db.url.clone()), |_| {}, |_| {}).await;
    let b = slack_server(f.slack.url(), Some(db.url.clone()), Some(&f.ts), |_| {}).await;

    model.push([Turn::text("Hello from the session on A.")]);
    let thread_ts = "1700000400.000100";
    let (status, _) = f
        .event(&mention("Ev0201", thread_ts, "say hello"), &[])
        .await;
    assert_eq!(status, 200);
    f.reply_containing(thread_ts, "Hello from the session on A.")
        .await;

    f.slack_reaches = b.url();
    model.push([Turn::text("Answered a reply that came through B.")]);
    f.steer(
        "Ev0202",
        thread_ts,
        "1700000400.000200",
        "a reply through replica B",
        "Answered a reply that came through B.",
    )
    .await;
    assert!(
        model
            .requests()
            .iter()
            .any(|r| r.body.to_string().contains("a reply through replica B")),
        "the reply reached the model"
    );
    assert_eq!(f.sessions().await.len(), 1);
    eventually("✅ on the reply", WAIT, || async {
        (f.slack.reactions(CHANNEL, "1700000400.000200") == ["white_check_mark"]).then_some(())
    })
    .await;
    b.stop().await;
    f.ts.stop().await;
    db.drop_now().await;
}
