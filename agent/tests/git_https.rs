//! Git over HTTPS the way a session does it: gix clones through the control plane's CA with a
//! just-in-time token, and plain `git push` gets the token from `kortix-agent git-credential`
//! through the daemon's socket, which asks `AgentGateway.GitCredential`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kortix_agent::clone::{self, CloneOutcome, CloneSpec, RepoSetup};
use kortix_agent::credentials::{self, Provider, RepoTarget};
use kortix_agent::enroll::{self, Gateway};
use kortix_agent::process::{ReapMode, Reaper};
use kortix_agent::records::{RecordSink, Spool, SpoolOptions};
use kortix_proto::v1::{Bootstrap, GitCredentialRequest};
use support::TestGateway;
use support::git_http::GitHttpServer;

fn git(dir: &Path, args: &[&str]) -> String {
    kortix_tests::git::GitEnv::new().ok(dir, args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_clone_and_push_use_just_in_time_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let repos = root.join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    let bare = repos.join("p1.git");
    git(root, &["init", "-q", "--bare", bare.to_str().unwrap()]);
    git(&bare, &["config", "http.receivepack", "true"]);
    let seed = root.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    git(&seed, &["init", "-q"]);
    std::fs::write(seed.join("README.md"), "# p1\n").unwrap();
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-q", "-m", "seed"]);
    git(
        &seed,
        &["push", "-q", bare.to_str().unwrap(), "main:sess-h"],
    );

    let gw = TestGateway::start(
        "sess-h",
        Bootstrap::default(),
        BTreeMap::new(),
        Duration::from_secs(3600),
    )
    .await;
    let server = GitHttpServer::start(
        repos.clone(),
        &gw.server_chain_pem,
        &gw.server_key_pem,
        "x-kortix-session",
        "jit-token-abc",
    )
    .await;
    let repo_url = format!("{}/p1.git", server.url);
    let identity = enroll::enroll(&gw.url, &gw.ca_pem, &gw.token)
        .await
        .unwrap();
    let (gateway, _keeper) = Gateway::new(&gw.url, identity).unwrap();
    let provider: Provider = {
        let gateway = gateway.clone();
        Arc::new(move |req: GitCredentialRequest| {
            let gateway = gateway.clone();
            Box::pin(async move {
                gateway
                    .client()
                    .git_credential(req)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| s.to_string())
            })
        })
    };

    // gix clone over HTTPS, trusting only the control plane's CA, credentials on demand.
    let ws = root.join("workspace");
    let creds: clone::CredentialFn = {
        let provider = provider.clone();
        let handle = tokio::runtime::Handle::current();
        Arc::new(move |protocol: &str, host: &str, path: &str| {
            let req = GitCredentialRequest {
                protocol: protocol.into(),
                host: host.into(),
                path: path.into(),
            };
            handle
                .block_on(provider(req))
                .map(|r| (r.username, r.password))
        })
    };
    let (url, ws2, ca) = (repo_url.clone(), ws.clone(), gw.ca_pem.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        clone::clone_or_fetch(&CloneSpec {
            repo_url: &url,
            branch: "sess-h",
            default_branch: "main",
            workspace: &ws2,
            ca_pem: Some(&ca),
            credentials: creds,
        })
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(outcome, CloneOutcome::Cloned);
    assert_eq!(
        std::fs::read_to_string(ws.join("README.md")).unwrap(),
        "# p1\n"
    );
    let requests = server.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|(_, _, authorized)| !authorized),
        "the server challenged first: {requests:?}"
    );
    assert!(requests.iter().any(|(_, _, authorized)| *authorized));
    let asked = gw.with(|s| s.credential_requests.clone());
    assert_eq!(asked.len(), 1);
    assert_eq!(
        (asked[0].protocol.as_str(), asked[0].host.as_str()),
        (
            "https",
            format!(
                "127.0.0.1:{}",
                server
                    .url
                    .split(':')
                    .nth(2)
                    .unwrap()
                    .split('/')
                    .next()
                    .unwrap()
            )
            .as_str()
        )
    );

    // Plain git push through the helper binary and the daemon's socket.
    let dir = root.join("state");
    let sink = RecordSink::new(Spool::open(&dir.join("spool"), SpoolOptions::default()).unwrap());
    sink.activate(0).unwrap();
    let cred_server = credentials::serve(
        &dir.join("run"),
        RepoTarget::from_url(&repo_url).unwrap(),
        provider,
        sink.clone(),
    )
    .unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &gw.ca_pem).unwrap();
    let helper = format!(
        "!'{}' git-credential --socket '{}'",
        env!("CARGO_BIN_EXE_kortix-agent"),
        cred_server.socket.display()
    );
    clone::configure_repo(
        &ws,
        &RepoSetup {
            branch: "sess-h",
            author_name: "Kortix Agent",
            author_email: "agent@kortix.invalid",
            credential_helper: &helper,
            ca_file: Some(&ca_file),
        },
    )
    .unwrap();
    std::fs::write(ws.join("work.txt"), "done\n").unwrap();
    let commit = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&ws)
            .env("HOME", root)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    commit(&["add", "work.txt"]);
    commit(&["commit", "-q", "-m", "work"]);
    let reaper = Reaper::start(ReapMode::OwnChildren).unwrap();
    // The repo config's empty `credential.helper` first clears any helper from the user's
    // global config: the daemon's helper is the only source.
    assert!(
        kortix_agent::stop::push(
            &reaper,
            &sink,
            &ws,
            "sess-h",
            Some(&ca_file),
            Duration::from_secs(60)
        )
        .await
        .is_ok(),
        "{:?}",
        drain(&sink)
    );
    assert_eq!(
        git(&bare, &["rev-parse", "refs/heads/sess-h"]),
        git(&ws, &["rev-parse", "HEAD"])
    );
    // gix asked once for the clone; the socket asked once and served the push's later
    // requests from its in-memory cache. Nothing reached the disk.
    assert_eq!(
        gw.with(|s| s.credential_requests.len()),
        2,
        "clone asked once, the helper's first get once"
    );
    let config = std::fs::read_to_string(ws.join(".git/config")).unwrap();
    assert!(!config.contains("jit-token-abc"));
}

fn drain(sink: &RecordSink) -> Vec<String> {
    sink.next_batch()
        .into_iter()
        .map(|r| format!("{:?}", r.body))
        .collect()
}
