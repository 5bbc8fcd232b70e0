//! The control plane's ground floor through its real public interfaces: accounts and tokens,
//! projects (empty and imported), git hosting with the real `git`, and secrets.

mod support;

use kortix_proto::v1::*;
use support::{TestServer, git, git_ok};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_is_private_and_creates_accounts() {
    let ts = TestServer::start().await;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(ts.running().admin_token_path())
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let db = std::fs::read(ts.data_dir().join("kortix.db")).unwrap();
    assert!(
        !db.windows(ts.admin_token.len())
            .any(|w| w == ts.admin_token.as_bytes()),
        "the admin token must be stored only as a hash"
    );
    let alice = ts.account("alice").await;
    let me = ts
        .accounts(&alice)
        .who_am_i(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.name, "alice");
    assert!(!me.server_admin);
    let err = ts
        .accounts(&alice)
        .create_account(CreateAccountRequest { name: "bob".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_unauthenticated() {
    let ts = TestServer::start().await;
    let alice = ts.account("alice").await;
    let unknown = format!("kxp_{}", "A".repeat(43));
    for token in ["", "garbage", "kxp_short", unknown.as_str(), "kxb_AAAA"] {
        let err = ts
            .projects(token)
            .list_projects(ListProjectsRequest {})
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::Unauthenticated,
            "token {token:?}: {err:?}"
        );
    }
    let created = ts
        .accounts(&alice)
        .create_token(CreateTokenRequest {
            name: "ci".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    ts.projects(&created.token)
        .list_projects(ListProjectsRequest {})
        .await
        .unwrap();
    ts.accounts(&alice)
        .revoke_token(RevokeTokenRequest {
            id: created.info.unwrap().id,
        })
        .await
        .unwrap();
    let err = ts
        .projects(&created.token)
        .list_projects(ListProjectsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_are_per_account_and_names_unique() {
    let ts = TestServer::start().await;
    let alice = ts.account("alice").await;
    let bob = ts.account("bob").await;
    let p = ts
        .projects(&alice)
        .create_project(CreateProjectRequest {
            name: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.default_branch, "main");
    assert!(p.git_url.ends_with("/git/web.git"), "{}", p.git_url);
    let info = ts
        .projects(&alice)
        .get_project(GetProjectRequest {
            project: "web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(info.manifest_error.is_empty(), "{}", info.manifest_error);
    let manifest: serde_json::Value = serde_json::from_str(&info.manifest_json).unwrap();
    assert_eq!(manifest["kortix_version"], 1);
    assert_eq!(manifest["errors"], serde_json::json!([]));

    let dup = ts
        .projects(&bob)
        .create_project(CreateProjectRequest {
            name: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    // Names are unique across accounts (they are the git URL), so a taken name is said to be
    // taken — worded as a name, not as a project bob could see — while the project itself
    // stays invisible to him.
    assert_eq!(
        dup.message(),
        "project name 'web' is already taken (names are unique across all accounts)"
    );
    for project in ["web", p.id.as_str()] {
        let hidden = ts
            .projects(&bob)
            .get_project(GetProjectRequest {
                project: project.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(hidden.code(), Code::NotFound);
        assert_eq!(hidden.message(), format!("project '{project}' not found"));
    }
    let bad = ts
        .projects(&alice)
        .create_project(CreateProjectRequest {
            name: "../etc".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    ts.stop().await;
}

/// A source repo with `main`, `feature`, a lightweight and an annotated tag.
fn source_repo(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    git_ok(&src, &["init", "-q", "-b", "trunk"]);
    std::fs::write(
        src.join("kortix.toml"),
        "kortix_version = 1\n[opencode]\nconfig_dir = \"agents\"\n",
    )
    .unwrap();
    git_ok(&src, &["add", "."]);
    git_ok(&src, &["commit", "-qm", "first"]);
    git_ok(&src, &["tag", "v1"]);
    git_ok(&src, &["tag", "-a", "v1-annotated", "-m", "annotated"]);
    git_ok(&src, &["checkout", "-qb", "feature"]);
    std::fs::write(src.join("f.txt"), "feature\n").unwrap();
    git_ok(&src, &["add", "."]);
    git_ok(&src, &["commit", "-qm", "feature work"]);
    git_ok(&src, &["checkout", "-q", "trunk"]);
    src
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_clone_push_and_the_default_branch_guard() {
    let ts = TestServer::start().await;
    let alice = ts.account("alice").await;
    let bob = ts.account("bob").await;
    let work = tempfile::tempdir().unwrap();
    let src = source_repo(work.path());
    // A local path reads the server's disk: only the admin may import one, also on a
    // loopback server; other accounts import from http(s) URLs.
    for source in [
        src.display().to_string(),
        format!("file://{}", src.display()),
    ] {
        let refused = ts
            .projects(&alice)
            .create_project(CreateProjectRequest {
                name: "mine".into(),
                import_source: source,
                default_branch: String::new(),
                account: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains("admin"), "{}", refused.message());
    }
    let owner = ts.admin_token.clone();
    let p = ts
        .projects(&owner)
        .create_project(CreateProjectRequest {
            name: "imported".into(),
            import_source: src.display().to_string(),
            default_branch: String::new(),
            account: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.default_branch, "trunk", "the source's HEAD branch");

    let clone = work.path().join("clone");
    git_ok(
        work.path(),
        &[
            "clone",
            "-q",
            &ts.git_url("imported", &owner),
            clone.to_str().unwrap(),
        ],
    );
    let refs = git_ok(&clone, &["ls-remote", "origin"]);
    for r in [
        "refs/heads/trunk",
        "refs/heads/feature",
        "refs/tags/v1",
        "refs/tags/v1-annotated",
    ] {
        assert!(refs.contains(r), "{r} missing from {refs}");
    }
    assert_eq!(
        git_ok(&clone, &["rev-parse", "origin/feature"]),
        git_ok(&src, &["rev-parse", "feature"])
    );

    // A new branch pushes; the default branch is refused with the way forward.
    git_ok(&clone, &["checkout", "-qb", "topic"]);
    std::fs::write(clone.join("t.txt"), "topic\n").unwrap();
    git_ok(&clone, &["add", "."]);
    git_ok(&clone, &["commit", "-qm", "topic"]);
    git_ok(&clone, &["push", "-q", "origin", "topic"]);
    let refused = git(&clone, &["push", "origin", "topic:trunk"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("change request"), "{stderr}");

    // Other accounts and bad passwords get nothing.
    let other = git(work.path(), &["ls-remote", &ts.git_url("imported", &bob)]);
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("not found"),
        "{other:?}"
    );
    let wrong = git(
        work.path(),
        &["ls-remote", &ts.git_url("imported", "kxp_wrong")],
    );
    assert!(!wrong.status.success());

    // The manifest is read from the default branch head.
    let info = ts
        .projects(&owner)
        .get_project(GetProjectRequest {
            project: "imported".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let manifest: serde_json::Value = serde_json::from_str(&info.manifest_json).unwrap();
    assert_eq!(manifest["opencode"]["config_dir"], "agents");
    assert_eq!(info.head_sha, git_ok(&src, &["rev-parse", "trunk"]).trim());
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_validated_and_listed_by_name() {
    let ts = TestServer::start().await;
    let alice = ts.account("alice").await;
    let bob = ts.account("bob").await;
    ts.projects(&alice)
        .create_project(CreateProjectRequest {
            name: "app".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let value = "sk-live-THIS-MUST-NOT-LEAK-0123456789";
    let set = ts
        .secrets(&alice)
        .set_secret(SetSecretRequest {
            project: "app".into(),
            name: "OPENAI_API_KEY".into(),
            value: value.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.name, "OPENAI_API_KEY");
    for (name, why) in [
        ("lower", "lowercase"),
        ("KORTIX_TOKEN", "reserved"),
        // These would replace the sandbox's own environment (agent, OpenCode, shell, git).
        ("PATH", "reserved"),
        ("HOME", "reserved"),
        ("LD_PRELOAD", "reserved"),
        ("LD_LIBRARY_PATH", "reserved"),
        ("GIT_DIR", "reserved"),
        ("GIT_SSL_NO_VERIFY", "reserved"),
        ("OPENCODE_CONFIG_DIR", "reserved"),
        ("1ABC", "leading digit"),
        (&*"A".repeat(65), "too long"),
    ] {
        let err = ts
            .secrets(&alice)
            .set_secret(SetSecretRequest {
                project: "app".into(),
                name: name.into(),
                value: "v".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{why}: {err:?}");
        assert!(err.message().contains(why) || why != "reserved", "{err:?}");
    }
    let reserved = ts
        .secrets(&alice)
        .set_secret(SetSecretRequest {
            project: "app".into(),
            name: "KORTIX_X".into(),
            value: "v".into(),
        })
        .await
        .unwrap_err();
    assert!(
        reserved.message().contains("KORTIX_"),
        "{}",
        reserved.message()
    );
    let listed = ts
        .secrets(&alice)
        .list_secrets(ListSecretsRequest {
            project: "app".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.secrets.len(), 1);
    let hidden = ts
        .secrets(&bob)
        .list_secrets(ListSecretsRequest {
            project: "app".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);

    // Not in the database file in plaintext (WAL included).
    for file in ["kortix.db", "kortix.db-wal"] {
        if let Ok(bytes) = std::fs::read(ts.data_dir().join(file)) {
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "plaintext secret found in {file}"
            );
        }
    }
    ts.secrets(&alice)
        .delete_secret(DeleteSecretRequest {
            project: "app".into(),
            name: "OPENAI_API_KEY".into(),
        })
        .await
        .unwrap();
    let gone = ts
        .secrets(&alice)
        .delete_secret(DeleteSecretRequest {
            project: "app".into(),
            name: "OPENAI_API_KEY".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_need_no_token() {
    let ts = TestServer::start().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ts.channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    ts.stop().await;
}

/// A 100,000-character name used to end in "h2 protocol error": the validation message
/// echoed the whole name back in the `grpc-message` trailer, past the client's header list
/// limit. Every reference is now bounded before it is looked up, and messages are capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_names_get_the_validation_message() {
    let ts = TestServer::start().await;
    let alice = ts.account("alice").await;
    let huge = "a".repeat(100_000);
    let created = ts
        .projects(&alice)
        .create_project(CreateProjectRequest {
            name: huge.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(created.code(), Code::InvalidArgument, "{created:?}");
    assert!(
        created.message().contains("at most 64 characters"),
        "{}",
        created.message()
    );
    let info = ts
        .projects(&alice)
        .get_project(GetProjectRequest {
            project: huge.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(info.code(), Code::InvalidArgument, "{info:?}");
    let secret = ts
        .secrets(&alice)
        .set_secret(SetSecretRequest {
            project: huge.clone(),
            name: "A".into(),
            value: "v".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(secret.code(), Code::InvalidArgument, "{secret:?}");
    let session = ts
        .sessions(&alice)
        .start_session(StartSessionRequest {
            project: huge.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(session.code(), Code::InvalidArgument, "{session:?}");
    for status in [&created, &info, &secret, &session] {
        assert!(
            status.message().len() <= 1024,
            "{} bytes",
            status.message().len()
        );
    }
    ts.stop().await;
}
