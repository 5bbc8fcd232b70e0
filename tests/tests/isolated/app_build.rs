//! An `[[apps]]` build in the project's snapshot, shared by the image-booting providers'
//! tests (`sandbox_docker.rs`, `sandbox_daytona.rs`): the entry lands through a change
//! request; its build reads the file only the snapshot's Dockerfile put there and an
//! `[apps.env]` variable, and what it wrote is what `/apps/app/site/` serves; the snapshot
//! is reused, not built again.

use crate::support::{self, TestServer};
use kortix_proto::v1::*;
use std::time::Duration;

pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Lands the app through a CR, waits for its deployment and checks what it serves; `runs_in`
/// is what the log says the build ran in. Returns the deployment and its log, for the
/// caller's checks of where it ran and what was left behind.
pub async fn app_builds_in_the_snapshot(
    ts: &TestServer,
    token: &str,
    work: &std::path::Path,
    runs_in: &str,
) -> (DeploymentInfo, Vec<String>) {
    let clone = work.join("app");
    support::git_ok(&clone, &["fetch", "-q", "origin"]);
    support::git_ok(&clone, &["checkout", "-q", "-B", "add-site", "origin/main"]);
    let manifest = std::fs::read_to_string(clone.join("kortix.toml")).unwrap();
    std::fs::write(
        clone.join("kortix.toml"),
        format!(
            r#"{manifest}
[[apps]]
slug = "site"

  [apps.source]
  type = "git"
  root_path = "site"

  [apps.build]
  command = "sh build.sh"
  out_dir = "dist"

  [apps.env]
  GREETING = "hello from the snapshot"
"#
        ),
    )
    .unwrap();
    std::fs::create_dir_all(clone.join("site")).unwrap();
    std::fs::write(
        clone.join("site/build.sh"),
        r#"set -e
mkdir -p dist
cat /etc/kortix-marker > dist/index.html
printf '%s' "$GREETING" >> dist/index.html
echo "built on $(uname -n)"
"#,
    )
    .unwrap();
    support::git_ok(&clone, &["add", "."]);
    support::git_ok(&clone, &["commit", "-qm", "Add the site"]);
    support::git_ok(&clone, &["push", "-q", "origin", "add-site"]);
    support::merge_branch(ts, token, "app", "add-site").await;
    let (_, metrics) = support::http_get(&ts.url(), "/metrics").await;
    let builds_before = metric(&metrics, "kortix_snapshot_builds_total{outcome=\"active\"}");

    let deployment = support::eventually(
        "the site's deployment to end",
        Duration::from_secs(180),
        || async {
            let apps = ts
                .apps(token)
                .list_apps(ListAppsRequest {
                    project: "app".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .apps;
            apps.into_iter()
                .find(|a| a.slug == "site")
                .and_then(|a| a.latest)
                .filter(|d| d.status != "building")
        },
    )
    .await;
    let logs = ts
        .apps(token)
        .get_app_logs(GetAppLogsRequest {
            project: "app".into(),
            slug: "site".into(),
            deployment_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .lines;
    assert_eq!(deployment.status, "succeeded", "{deployment:?}: {logs:#?}");
    assert!(
        logs.iter().any(|l| l.contains(runs_in)),
        "{runs_in:?} in {logs:#?}"
    );
    let (status, body) = support::http_get(&ts.url(), "/apps/app/site/").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "built from the Dockerfile\nhello from the snapshot");
    let (_, metrics) = support::http_get(&ts.url(), "/metrics").await;
    assert_eq!(
        metric(&metrics, "kortix_snapshot_builds_total{outcome=\"active\"}"),
        builds_before,
        "the session's snapshot is reused for the build"
    );
    (deployment, logs)
}
