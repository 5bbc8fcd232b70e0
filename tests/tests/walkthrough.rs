//! The README's walkthrough, command for command, with the real `kortix` binary against a real
//! control plane running the real `kortix-agent` and pinned OpenCode. Only the model provider
//! is scripted.
//!
//! Needs `target/<profile>/kortix` and `kortix-agent` built (`scripts/test` builds them first).

mod support;

use kortix_tests::{ScriptedModel, Turn, opencode_config};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{TestServer, built_binary, git_ok};

/// `kortix` as a user on this machine runs it: no token given, so it uses the local server's
/// admin token from the data directory.
struct Cli {
    url: String,
    data_dir: PathBuf,
}

impl Cli {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(built_binary("kortix"));
        cmd.args(args)
            .env("KORTIX_URL", &self.url)
            .env("KORTIX_DATA_DIR", &self.data_dir)
            .env_remove("KORTIX_TOKEN")
            .env("HOME", self.data_dir.parent().unwrap_or(&self.data_dir))
            .env("NO_COLOR", "1");
        cmd
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kortix");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        // The control plane runs on this test's runtime: wait off its workers.
        tokio::task::block_in_place(|| child.wait_with_output()).expect("kortix output")
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_with_stdin(args, None)
    }

    fn ok_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kortix {args:?} exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail; its standard error.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(!out.status.success(), "kortix {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kortix {args:?} printed no JSON ({e}): {out}"))
    }
}

/// The user's existing repository, with an OpenCode configuration that uses `model`.
fn users_repo(dir: &Path, model: &ScriptedModel) -> PathBuf {
    let repo = dir.join("myapp");
    std::fs::create_dir_all(&repo).unwrap();
    git_ok(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "# myapp\n").unwrap();
    std::fs::write(repo.join("kortix.toml"), "[project]\nname = \"myapp\"\n").unwrap();
    opencode_config(&repo.join(".kortix/opencode"), model.port()).unwrap();
    git_ok(&repo, &["add", "-A"]);
    git_ok(&repo, &["commit", "-qm", "Initial commit"]);
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_works() {
    let model = ScriptedModel::start(vec![
        Turn::bash(
            "printf 'Pass --verbose for more output.\\n' > VERBOSE.md && git add VERBOSE.md \
             && git commit -q -m 'Add a --verbose flag' && git push -q origin HEAD",
        ),
        Turn::text("Added the flag."),
    ])
    .unwrap();
    let ts = TestServer::start_with(support::use_real_agent).await;
    let home = tempfile::tempdir().unwrap();
    let repo = users_repo(home.path(), &model);
    let cli = Cli {
        url: ts.url(),
        data_dir: ts.data_dir(),
    };

    // 1. Import the repository.
    let project = cli.json(&[
        "projects",
        "create",
        "myapp",
        "--import",
        repo.to_str().unwrap(),
    ]);
    assert_eq!(project["name"], "myapp");
    assert_eq!(project["default_branch"], "main");

    // 2. A provider key, from stdin.
    cli.ok_with_stdin(
        &["secrets", "set", "ANTHROPIC_API_KEY", "--project", "myapp"],
        Some("sk-test-not-a-real-key"),
    );
    let names = cli.json(&["secrets", "ls", "--project", "myapp"]);
    assert!(names.to_string().contains("ANTHROPIC_API_KEY"), "{names}");
    assert!(
        !names.to_string().contains("sk-test"),
        "values never listed: {names}"
    );

    // 3. A session with a prompt, waiting for its agent.
    let session = cli.json(&[
        "sessions",
        "new",
        "--project",
        "myapp",
        "--prompt",
        "Add a --verbose flag to the CLI",
        "--wait",
    ]);
    assert_eq!(session["status"], "running", "{session}");
    let id = session["id"].as_str().unwrap().to_string();
    assert_eq!(session["branch"], id);

    // 4. Attach and watch until the commit is pushed.
    let mut attach = cli
        .command(&["--json", "sessions", "attach", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = attach.stdout.take().unwrap();
    let commit = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut kinds = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("attach output");
            let record: serde_json::Value =
                serde_json::from_str(&line).expect("one JSON record per line");
            let kind = record["kind"].as_str().unwrap_or_default().to_string();
            kinds.push(kind.clone());
            if kind == "commit" {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "no commit record in time; saw {kinds:?}"
            );
        }
        panic!("attach ended without a commit record; saw {kinds:?}");
    })
    .await
    .unwrap();
    let _ = attach.kill();
    let _ = attach.wait();
    assert!(
        commit.to_string().contains("Add a --verbose flag"),
        "{commit}"
    );

    // Steering: the chat prompt reaches the model.
    model.push([Turn::text("Documented it too.")]);
    let calls_before = model.calls();
    let sent = cli.json(&[
        "sessions",
        "chat",
        &id,
        "Also document the flag in the README",
    ]);
    let prompt_id = sent["prompt_id"].as_str().unwrap().to_string();
    let seen = tokio::task::block_in_place(|| {
        model.wait_for_calls(calls_before + 1, Duration::from_secs(60))
    });
    assert!(seen, "the chat prompt never reached the model");
    // The model answered it, so the agent has acked it: the prompt reads as delivered once.
    let status = cli.json(&["sessions", "prompt-status", &id, &prompt_id]);
    assert_eq!(status["state"], "delivered", "{status}");
    assert_eq!(status["sends"], 1, "{status}");
    assert!(status["delivered_at"].is_string(), "{status}");
    let human = cli.ok(&["sessions", "prompt-status", &id, &prompt_id]);
    assert!(human.contains("delivered"), "{human}");
    let unknown = cli.fails(&["sessions", "prompt-status", &id, "no-such-prompt"]);
    assert!(
        unknown.contains("not found") || unknown.contains("NotFound"),
        "{unknown}"
    );

    // 5. Review and land.
    let cr = cli.json(&["cr", "open", "--project", "myapp", "--session", &id]);
    let number = cr["number"].as_u64().unwrap().to_string();
    assert_eq!(cr["state"], "open", "{cr}");
    let diff = cli.ok(&["cr", "diff", &number, "--project", "myapp"]);
    assert!(diff.contains("+Pass --verbose for more output."), "{diff}");
    let merged = cli.json(&["cr", "merge", &number, "--project", "myapp"]);
    assert_eq!(merged["state"], "merged", "{merged}");
    let stopped = cli.json(&["sessions", "stop", &id, "--wait"]);
    assert_eq!(stopped["id"], id.as_str());
    assert_eq!(stopped["status"], "stopped", "{stopped}");

    // 6. The work is on the default branch, in a checkout of one's own; pulling needs no
    //    token typed (git asks `kortix git-credential`).
    let check = home.path().join("myapp-kortix");
    let cloned = cli.json(&["projects", "clone", "myapp", check.to_str().unwrap()]);
    assert_eq!(cloned["dir"], check.display().to_string().as_str());
    assert!(check.join("VERBOSE.md").is_file());
    git_ok(&check, &["pull", "-q"]);
    ts.stop().await;
}
