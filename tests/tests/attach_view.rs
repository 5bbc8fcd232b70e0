//! The live view of a real session: the control plane, the `kortix-agent` binary, pinned
//! OpenCode and real git, with the scripted model. The session's records, as
//! `kortix --json sessions attach` prints them, are the fixture the golden test of the human
//! view renders (`cli/src/commands/sessions/attach/view.rs`); this test checks that the human
//! view of the live session shows what a person needs, and with `KORTIX_UPDATE_FIXTURES=1`
//! writes the fixture anew (`timeline/tests/fixtures/scripted-session.jsonl`).
//!
//! Needs `target/<profile>/kortix` and `kortix-agent` built (`scripts/test` builds them first).

mod support;

use kortix_proto::v1::*;
use kortix_tests::{ScriptedModel, Turn};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use support::{TestServer, built_binary, eventually};

const PROMPT: &str = "Create hello.txt, commit it and push it.";
const BASH: &str = "git add hello.txt && git commit -q -m 'Add hello.txt' && git push -q origin HEAD \
                    && echo pushed && git log --format=%s -1";
const REPLY: &str = "Created hello.txt.\nCommitted and pushed it to the session branch.";

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../timeline/tests/fixtures/scripted-session.jsonl")
}

fn kortix(ts: &TestServer, args: &[&str]) -> Output {
    let mut cmd = Command::new(built_binary("kortix"));
    cmd.args(args)
        .env("KORTIX_URL", ts.url())
        .env("KORTIX_DATA_DIR", ts.data_dir())
        .env_remove("KORTIX_TOKEN")
        .env("NO_COLOR", "1");
    let out = tokio::task::block_in_place(|| cmd.output()).expect("run kortix");
    assert!(
        out.status.success(),
        "kortix {args:?} exited {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_session_reads_well_in_attach() {
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let ts = TestServer::start_with(support::use_real_agent).await;
    let token = ts.admin_token.clone();
    let _work = support::app_with_model_config(&ts, &token, model.port(), |_| {}).await;
    let session = ts
        .sessions(&token)
        .start_session(StartSessionRequest {
            project: "app".into(),
            prompt: PROMPT.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ws = ts
        .data_dir()
        .join("sandboxes")
        .join(&session.id)
        .join("workspace");
    model.push([
        Turn::write_file(ws.join("hello.txt").display().to_string(), "hello\n"),
        Turn::bash(BASH),
        Turn::text(REPLY),
    ]);
    // The closing turn answered and the session idle again: the conversation is complete.
    eventually(
        "the model's closing turn",
        Duration::from_secs(240),
        || async {
            let s = ts.session(&token, &session.id).await;
            assert_ne!(
                s.status,
                SessionStatus::Failed as i32,
                "{}",
                s.failure_reason
            );
            (model.calls() >= 3 && model.remaining_turns() == 0).then_some(())
        },
    )
    .await;
    let id = session.id.clone();
    eventually("the reply recorded", Duration::from_secs(60), || async {
        let out = kortix(&ts, &["--json", "sessions", "attach", &id, "--no-follow"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // The agent records the pushed commit when it notices it, which under load can be
        // after OpenCode went idle: wait for both, the idle after the closing reply.
        let committed = text.contains("\"kind\":\"commit\"");
        let idle = text
            .lines()
            .rev()
            .take_while(|l| !l.contains("Committed and pushed"))
            .any(|l| l.contains("\"session.idle\""));
        (committed && idle).then_some(())
    })
    .await;
    ts.sessions(&token)
        .stop_session(StopSessionRequest { id: id.clone() })
        .await
        .unwrap();
    eventually("stopped", Duration::from_secs(60), || async {
        let s = ts.session(&token, &id).await;
        (s.status == SessionStatus::Stopped as i32).then_some(())
    })
    .await;

    let json = kortix(&ts, &["--json", "sessions", "attach", &id, "--no-follow"]);
    let json = String::from_utf8(json.stdout).unwrap();
    let human = kortix(&ts, &["sessions", "attach", &id, "--no-follow"]);
    let human = String::from_utf8(human.stdout).unwrap();

    if std::env::var_os("KORTIX_UPDATE_FIXTURES").is_some() {
        let data_dir = ts.data_dir().display().to_string();
        let fixture = json.replace(&data_dir, "/data");
        std::fs::write(fixture_path(), fixture).expect("write the fixture");
    }
    assert!(human.contains(PROMPT), "prompt shown:\n{human}");
    for line in REPLY.lines() {
        assert!(
            human.lines().any(|l| l.ends_with(line)),
            "assistant text coalesced into whole lines ({line:?}):\n{human}"
        );
    }
    // Not a terminal: the command is whole, wrapped onto indented lines.
    assert!(
        human.replace("\n  ", "").contains(BASH),
        "bash command in full:\n{human}"
    );
    assert!(
        human
            .lines()
            .any(|l| l.trim_end().ends_with("Add hello.txt")),
        "bash output shown:\n{human}"
    );
    assert!(
        human.contains("commit") && human.contains("Add hello.txt (+1 -0, 1 file), pushed"),
        "commit shown:\n{human}"
    );
    assert!(!human.contains("plugin.added"), "no noise:\n{human}");
    assert!(
        !human.contains("SIGTERM") && human.contains("stopped: stopped by user"),
        "a normal stop reads as a stop:\n{human}"
    );

    ts.stop().await;
}
