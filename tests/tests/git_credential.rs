//! Git for people: `kortix projects clone` against a real control plane, then `git pull` of
//! work merged through a change request, with real git and no token typed or on the command
//! line (the clone's credential helper is `kortix git-credential`, by absolute path, and
//! `kortix` is not on PATH).
//!
//! Needs `target/<profile>/kortix` built (`scripts/test` builds it first).

mod support;

use kortix_proto::v1::{ChangeRequestRef, OpenChangeRequestRequest};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::{TestServer, built_binary, git_ok};

/// A person's environment: their own HOME (where `kortix login` saves the token), no
/// KORTIX_TOKEN, a PATH without kortix, and git that never prompts.
fn person(cmd: &mut Command, home: &Path) {
    cmd.env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Person")
        .env("GIT_AUTHOR_EMAIL", "person@example.com")
        .env("GIT_COMMITTER_NAME", "Person")
        .env("GIT_COMMITTER_EMAIL", "person@example.com")
        .stdin(Stdio::null());
}

fn run(mut cmd: Command) -> Output {
    let out = tokio::task::block_in_place(|| cmd.output()).expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} exited {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn kortix(ts: &TestServer, home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(built_binary("kortix"));
    person(&mut cmd, home);
    cmd.current_dir(home).arg("--url").arg(ts.url()).args(args);
    run(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_pulls_merged_work_without_a_typed_token() {
    let ts = TestServer::start().await;
    let token = ts.account("alice").await;
    let seed = support::app_with_model_config(&ts, &token, 9, |_| {}).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();

    kortix(&ts, h, &["login", "--token", &token]);
    let cloned = kortix(&ts, h, &["--json", "projects", "clone", "app"]);
    let cloned: serde_json::Value = serde_json::from_slice(&cloned.stdout).unwrap();
    let dir = h.join("app");
    assert_eq!(
        cloned,
        serde_json::json!({"project": "app", "dir": dir.display().to_string()})
    );
    // git's `!command` form, naming this kortix by its absolute path.
    let helpers = git_ok(&dir, &["config", "--get-all", "credential.helper"]);
    let helper = helpers.lines().last().unwrap();
    let exe = built_binary("kortix").display().to_string();
    assert!(helper.starts_with(&format!("!'{exe}' --url ")), "{helpers}");
    assert!(helper.ends_with(" git-credential"), "{helpers}");
    assert!(
        !helpers.contains(&token),
        "no token in the config: {helpers}"
    );

    // Work lands on main through a change request, from someone else's checkout.
    let other = seed.path().join("app");
    git_ok(&other, &["checkout", "-qb", "feature", "origin/main"]);
    std::fs::write(other.join("FEATURE.md"), "merged work\n").unwrap();
    git_ok(&other, &["add", "FEATURE.md"]);
    git_ok(&other, &["commit", "-qm", "Add the feature"]);
    git_ok(&other, &["push", "-q", "origin", "feature"]);
    let cr = ts
        .crs(&token)
        .open_change_request(OpenChangeRequestRequest {
            project: "app".into(),
            branch: "feature".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    ts.crs(&token)
        .merge_change_request(ChangeRequestRef {
            project: "app".into(),
            number: cr.number,
        })
        .await
        .unwrap();

    let mut pull = Command::new("git");
    person(&mut pull, h);
    pull.current_dir(&dir).args(["pull", "-q", "--ff-only"]);
    run(pull);
    assert_eq!(
        std::fs::read_to_string(dir.join("FEATURE.md")).unwrap(),
        "merged work\n"
    );

    // The helper answers for this control plane only, and ignores store/erase.
    let ask = |op: &str, host: &str| {
        let mut cmd = Command::new(built_binary("kortix"));
        person(&mut cmd, h);
        cmd.arg("--url")
            .arg(ts.url())
            .args(["git-credential", op])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        write!(stdin, "protocol=http\nhost={host}\npath=git/app.git\n\n").unwrap();
        drop(stdin);
        let out = tokio::task::block_in_place(|| child.wait_with_output()).unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let own = ts.url().trim_start_matches("http://").to_owned();
    assert_eq!(
        ask("get", &own),
        format!("username=kortix\npassword={token}\n")
    );
    assert_eq!(ask("get", "example.com"), "");
    assert_eq!(ask("store", &own), "");
    assert_eq!(ask("erase", &own), "");
    ts.stop().await;
}
