//! `[[apps]]` (experimental) through a real control plane on 127.0.0.1: a tiny static site
//! built by a shell command from the project's own repository, deployed by the sweep when
//! its manifest-derived hash changes (an `[apps.env]` change redeploys, a rename does not),
//! served at `/apps/<project>/<slug>/` and by `Host` header, a failing build that leaves the
//! previous deployment serving, `apps deploy` forcing one, rollbacks — and with the flag off,
//! 404 with a JSON error naming it.
//!
//! Builds run in namespaces where this machine allows them (`--isolation auto`), else as
//! plain child processes.

mod support;

use std::path::Path;
use std::time::Duration;

use kortix_proto::v1::*;
use support::{TestServer, eventually, git_ok};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);

const BUILD_SH: &str = r#"set -e
mkdir -p dist/docs
printf '<h1>%s</h1>' "$GREETING" > dist/index.html
printf 'body{}' > dist/style.css
printf 'docs' > dist/docs/index.html
echo "built for $GREETING"
"#;

fn manifest(name: &str, greeting: &str, command: &str, extra: &str) -> String {
    format!(
        r#"kortix_version = 1

[[apps]]
slug = "site"
name = "{name}"
domains = ["site.example.test"]

  [apps.source]
  type = "git"

  [apps.build]
  command = "{command}"
  out_dir = "dist"

  [apps.env]
  GREETING = "{greeting}"
{extra}"#
    )
}

const OTHER_APP: &str = r#"
[[apps]]
slug = "other"

  [apps.source]
  type = "git"
  root_path = "other"
"#;

/// A raw HTTP/1.1 GET with a chosen `Host`: status, headers (lower-cased names) and body.
async fn get(ts: &TestServer, path: &str, host: Option<&str>) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = ts.url().trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        host.unwrap_or(&authority)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("a response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Lands `files` on the default branch of `project` through a change request (the only way
/// there), from the clone in `clone`.
async fn land(ts: &TestServer, token: &str, clone: &Path, branch: &str, files: &[(&str, &str)]) {
    git_ok(clone, &["fetch", "-q", "origin"]);
    git_ok(clone, &["checkout", "-q", "-B", branch, "origin/main"]);
    for (path, text) in files {
        let file = clone.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    git_ok(clone, &["add", "."]);
    git_ok(clone, &["commit", "-qm", branch]);
    git_ok(clone, &["push", "-q", "origin", branch]);
    support::merge_branch(ts, token, "web", branch).await;
}

async fn apps(ts: &TestServer, token: &str) -> Vec<AppInfo> {
    ts.apps(token)
        .list_apps(ListAppsRequest {
            project: "web".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .apps
}

async fn app(ts: &TestServer, token: &str, slug: &str) -> AppInfo {
    apps(ts, token)
        .await
        .into_iter()
        .find(|a| a.slug == slug)
        .unwrap_or_else(|| panic!("no app {slug}"))
}

/// Waits until the site serves `body` at its root.
async fn serves(ts: &TestServer, body: &str) {
    eventually(&format!("the site to serve {body}"), WAIT, || async {
        let (status, _, got) = get(ts, "/apps/web/site/", None).await;
        (status == 200 && got == body).then_some(())
    })
    .await;
}

/// Runs the built `kortix` as `token`; it must succeed.
fn kortix(ts: &TestServer, token: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(support::built_binary("kortix"));
    cmd.args(args)
        .env("KORTIX_URL", ts.url())
        .env("KORTIX_TOKEN", token)
        .env("NO_COLOR", "1");
    let out = tokio::task::block_in_place(|| cmd.output()).expect("run kortix");
    assert!(
        out.status.success(),
        "kortix {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_flag_off_apps_answer_404_naming_it() {
    let ts = TestServer::start().await;
    let token = ts.account("alice").await;
    ts.projects(&token)
        .create_project(CreateProjectRequest {
            name: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for path in [
        "/apps/web/site/",
        "/apps/web/site/index.html",
        "/apps",
        "/apps/web/site",
    ] {
        let (status, head, body) = get(&ts, path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            json["error"]
                .as_str()
                .unwrap()
                .contains("KORTIX_APPS_EXPERIMENTAL=true"),
            "{json}"
        );
        assert_eq!(json["flag"], "KORTIX_APPS_EXPERIMENTAL");
    }
    let refused = ts
        .apps(&token)
        .list_apps(ListAppsRequest {
            project: "web".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("KORTIX_APPS_EXPERIMENTAL"),
        "{refused:?}"
    );
    // Someone who may not see the project learns nothing about it, flag or not.
    let stranger = ts.account("sam").await;
    let hidden = ts
        .apps(&stranger)
        .list_apps(ListAppsRequest {
            project: "web".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_site_deploys_on_hash_changes_serves_and_rolls_back() {
    let ts = TestServer::start_with(|c| {
        c.apps.enabled = true;
        c.apps.sweep_interval = Duration::from_millis(100);
        // Builds run in namespaces where the kernel allows it.
        c.isolation.mode = kortix_controlplane::sandbox::local::IsolationMode::Auto;
    })
    .await;
    let token = ts.account("alice").await;
    ts.projects(&token)
        .create_project(CreateProjectRequest {
            name: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let clone = work.path().join("web");
    git_ok(
        work.path(),
        &[
            "clone",
            "-q",
            &ts.git_url("web", &token),
            clone.to_str().unwrap(),
        ],
    );

    // The sweep deploys the new app: the build ran with [apps.env] and dist/ is served.
    land(
        &ts,
        &token,
        &clone,
        "add-site",
        &[
            ("kortix.toml", &manifest("Site", "hello", "sh build.sh", "")),
            ("build.sh", BUILD_SH),
        ],
    )
    .await;
    serves(&ts, "<h1>hello</h1>").await;
    let first = app(&ts, &token, "site").await.active.unwrap();
    assert_eq!(
        (first.status.as_str(), first.reason.as_str()),
        ("succeeded", "sweep")
    );
    assert_eq!(first.source_revision.len(), 40, "{first:?}");
    let logs = ts
        .apps(&token)
        .get_app_logs(GetAppLogsRequest {
            project: "web".into(),
            slug: "site".into(),
            deployment_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        logs.lines.iter().any(|l| l == "built for hello"),
        "{:?}",
        logs.lines
    );

    // What is served, and what is not.
    let (status, head, body) = get(&ts, "/apps/web/site/style.css", None).await;
    assert_eq!((status, body.as_str()), (200, "body{}"));
    assert!(head.contains("content-type: text/css"), "{head}");
    let (status, head, _) = get(&ts, "/apps/web/site/", None).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    let (status, head, _) = get(&ts, "/apps/web/site/docs", None).await;
    assert_eq!(status, 308);
    assert!(head.contains("location: /apps/web/site/docs/"), "{head}");
    assert_eq!(get(&ts, "/apps/web/site/docs/", None).await.2, "docs");
    for bad in [
        "/apps/web/site/missing.html",
        "/apps/web/site/%2e%2e/%2e%2e/kortix.db",
        "/apps/web/site/..%2f..%2fkortix.db",
        "/apps/web/nope/",
        "/apps/nope/site/",
    ] {
        let (status, head, _) = get(&ts, bad, None).await;
        assert_eq!(status, 404, "{bad}");
        assert!(head.contains("application/json"), "{bad}: {head}");
    }
    // By Host header, at the domain's root; other hosts reach the control plane as before.
    let (status, _, body) = get(&ts, "/", Some("site.example.test")).await;
    assert_eq!((status, body.as_str()), (200, "<h1>hello</h1>"));
    let (status, _, body) = get(&ts, "/docs/", Some("Site.Example.Test:80")).await;
    assert_eq!((status, body.as_str()), (200, "docs"));
    assert_ne!(
        get(&ts, "/", Some("other.example.test")).await.2,
        "<h1>hello</h1>"
    );

    // Renaming the app does not redeploy it. A second app landed in the same commit shows
    // when the sweep has seen that commit.
    std::fs::create_dir_all(clone.join("other")).unwrap();
    land(
        &ts,
        &token,
        &clone,
        "rename",
        &[
            (
                "kortix.toml",
                &manifest("Renamed site", "hello", "sh build.sh", OTHER_APP),
            ),
            ("other/index.html", "other"),
        ],
    )
    .await;
    eventually("the other app to be served", WAIT, || async {
        let (status, _, body) = get(&ts, "/apps/web/other/", None).await;
        (status == 200 && body == "other").then_some(())
    })
    .await;
    let site = app(&ts, &token, "site").await;
    assert_eq!(site.name, "Renamed site");
    assert_eq!(site.active.unwrap().id, first.id, "a rename redeployed");
    assert_eq!(site.latest.unwrap().id, first.id);

    // Changing [apps.env] redeploys.
    land(
        &ts,
        &token,
        &clone,
        "greet",
        &[(
            "kortix.toml",
            &manifest("Renamed site", "hi", "sh build.sh", OTHER_APP),
        )],
    )
    .await;
    serves(&ts, "<h1>hi</h1>").await;
    let second = app(&ts, &token, "site").await.active.unwrap();
    assert_ne!(second.id, first.id);
    assert_ne!(second.hash, first.hash);

    // `apps deploy` forces one with the same hash.
    let forced = ts
        .apps(&token)
        .deploy_app(DeployAppRequest {
            project: "web".into(),
            slug: "site".into(),
            wait: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            forced.status.as_str(),
            forced.reason.as_str(),
            forced.active
        ),
        ("succeeded", "manual", true),
        "{forced:?}"
    );
    assert_eq!(forced.hash, second.hash);

    // A failing build leaves the previous deployment serving.
    land(
        &ts,
        &token,
        &clone,
        "break",
        &[(
            "kortix.toml",
            &manifest("Renamed site", "broken", "sh build.sh && exit 7", OTHER_APP),
        )],
    )
    .await;
    let failed = eventually("the failing build to end", WAIT, || async {
        let site = app(&ts, &token, "site").await;
        site.latest.filter(|d| d.status == "failed")
    })
    .await;
    assert!(
        failed.failure_reason.contains("exited with status 7"),
        "{failed:?}"
    );
    assert!(!failed.active);
    let logs = ts
        .apps(&token)
        .get_app_logs(GetAppLogsRequest {
            project: "web".into(),
            slug: "site".into(),
            deployment_id: failed.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        logs.lines.iter().any(|l| l == "built for broken"),
        "{:?}",
        logs.lines
    );
    assert_eq!(get(&ts, "/apps/web/site/", None).await.2, "<h1>hi</h1>");
    assert_eq!(app(&ts, &token, "site").await.active.unwrap().id, forced.id);

    // Rollbacks step back through the successful deployments.
    let back = ts
        .apps(&token)
        .rollback_app(RollbackAppRequest {
            project: "web".into(),
            slug: "site".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((back.id.as_str(), back.active), (second.id.as_str(), true));
    let back = ts
        .apps(&token)
        .rollback_app(RollbackAppRequest {
            project: "web".into(),
            slug: "site".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.id, first.id);
    serves(&ts, "<h1>hello</h1>").await;
    let none_left = ts
        .apps(&token)
        .rollback_app(RollbackAppRequest {
            project: "web".into(),
            slug: "site".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(none_left.code(), Code::FailedPrecondition, "{none_left:?}");

    // The CLI's contract: `apps ls` an array, `apps deploy --wait` an object, `apps logs`
    // lines, `apps rollback` an object.
    let listed = kortix(&ts, &token, &["--json", "apps", "ls", "--project", "web"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let site = listed
        .as_array()
        .expect("an array")
        .iter()
        .find(|a| a["slug"] == "site")
        .unwrap()
        .clone();
    assert_eq!(site["active"]["id"], first.id.as_str());
    assert_eq!(site["latest"]["status"], "failed");
    assert!(
        site["url"].as_str().unwrap().ends_with("/apps/web/site/"),
        "{site}"
    );
    let out = kortix(&ts, &token, &["apps", "logs", "site", "--project", "web"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l == "built for broken"), "{text}");
    let mut deploy = std::process::Command::new(support::built_binary("kortix"));
    deploy
        .args([
            "--json",
            "apps",
            "deploy",
            "site",
            "--project",
            "web",
            "--wait",
        ])
        .env("KORTIX_URL", ts.url())
        .env("KORTIX_TOKEN", &token)
        .env("NO_COLOR", "1");
    let out = tokio::task::block_in_place(|| deploy.output()).unwrap();
    assert_eq!(out.status.code(), Some(1), "the build still fails");
    let deployed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (deployed["status"].as_str(), deployed["reason"].as_str()),
        (Some("failed"), Some("manual"))
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("exited with status 7"));

    // Deploying needs the manager role; a viewer may look.
    let viewer = ts.account("vic").await;
    ts.access(&token)
        .grant_access(GrantAccessRequest {
            project: "web".into(),
            person: "vic".into(),
            role: "viewer".into(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap();
    assert_eq!(apps(&ts, &viewer).await.len(), 2);
    let denied = ts
        .apps(&viewer)
        .deploy_app(DeployAppRequest {
            project: "web".into(),
            slug: "site".into(),
            wait: false,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    ts.stop().await;
}
