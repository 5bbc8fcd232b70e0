//! Snapshots built on a real container engine (Podman's Docker-compatible service): the
//! template's Dockerfile with its build context plus the runtime layer, built once per hash
//! however many callers wait, reused while nothing changes, a failed build final until asked
//! again, and pruning. Needs podman (`scripts/test` installs it) and `target/<profile>/
//! kortix-agent` built.

mod support;

use kortix_controlplane::git::Repos;
use kortix_controlplane::sandbox::docker::DockerEngine;
use kortix_controlplane::snapshots::{Rebuild, RuntimeLayer, SnapshotConfig, Snapshots};
use kortix_controlplane::store::{Project, SnapshotStatus, Store, StoreOptions};
use kortix_manifest::ResolvedTemplate;
use kortix_tests::git::GitEnv;
use kortix_tests::podman::{TEST_BASE_IMAGE, podman};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn manifest() -> String {
    format!(
        r#"kortix_version = 1
[project]
name = "snap"

[[sandbox.templates]]
slug = "dev"
dockerfile = ".kortix/Dockerfile"
cpu = 1

[[sandbox.templates]]
slug = "broken"
dockerfile = "broken/Dockerfile"

[[sandbox.templates]]
slug = "plain"
image = "{TEST_BASE_IMAGE}"
"#
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    env: GitEnv,
    work: std::path::PathBuf,
    repos: Repos,
    store: Store,
    project: Project,
    snapshots: Snapshots,
}

async fn fixture() -> Fixture {
    let engine_env = match podman() {
        Ok(p) => p,
        Err(reason) => {
            kortix_tests::require::unavailable("a container engine (podman)", &reason);
            panic!("a container engine is needed: {reason}");
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("kortix.db"), StoreOptions::default())
        .await
        .unwrap();
    let repos = Repos::in_data_dir(dir.path()).unwrap();
    let env = GitEnv::new();
    let work = env.work_repo(dir.path(), "work");
    env.commit_file(&work, "kortix.toml", &manifest(), "manifest");
    env.commit_file(
        &work,
        ".kortix/Dockerfile",
        &format!("FROM {TEST_BASE_IMAGE}\nCOPY marker.txt /marker.txt\n"),
        "dockerfile",
    );
    env.commit_file(&work, ".kortix/marker.txt", "marker one\n", "marker");
    env.commit_file(
        &work,
        "broken/Dockerfile",
        &format!("FROM {TEST_BASE_IMAGE}\nRUN echo about to fail && exit 3\n"),
        "broken",
    );
    let account = store.create_person("owner", false).await.unwrap();
    let project = store
        .create_project(&account.id, "snap", "main")
        .await
        .unwrap();
    repos
        .import(&project.id, work.to_str().unwrap(), Some("main"))
        .await
        .unwrap();
    // The runtime layer: the agent as built, and a stand-in OpenCode binary (these tests
    // build and inspect images; booting them is the provider's tests' business).
    let opencode = dir.path().join("opencode");
    std::fs::write(&opencode, b"#!/bin/sh\necho 1.18.33\n").unwrap();
    let runtime = RuntimeLayer::load(&support::built_binary("kortix-agent"), &opencode).unwrap();
    let engine = DockerEngine::connect(Some(&engine_env.docker_host))
        .await
        .unwrap();
    let snapshots = Snapshots::new(
        store.clone(),
        repos.clone(),
        Arc::new(engine),
        Arc::new(runtime),
        SnapshotConfig {
            base_image: TEST_BASE_IMAGE.into(),
            build_timeout: Duration::from_secs(300),
        },
    );
    Fixture {
        _dir: dir,
        env,
        work,
        repos,
        store,
        project,
        snapshots,
    }
}

impl Fixture {
    async fn recipe(&self, slug: &str) -> kortix_controlplane::snapshots::Recipe {
        let m = kortix_manifest::parse(&manifest()).unwrap();
        let t = m.sandbox.template(slug).unwrap().clone();
        self.snapshots
            .recipe(&self.project, ResolvedTemplate::Template(&t))
            .await
            .unwrap()
    }

    /// Lands a commit of the work repository on the project's default branch.
    fn land(&self) {
        let bare = self.repos.path(&self.project.id).unwrap();
        self.env.ok(
            Path::new(&bare),
            &["fetch", "-q", self.work.to_str().unwrap(), "main:main"],
        );
    }
}

fn run_in(image: &str, args: &[&str]) -> String {
    let engine = podman().unwrap();
    let mut all = vec!["run", "--rm", "--entrypoint", args[0], image];
    all.extend_from_slice(&args[1..]);
    engine.cli(&all).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerfile_snapshot_is_built_once_and_reused_until_it_changes() {
    let f = fixture().await;
    let recipe = f.recipe("dev").await;
    assert!(recipe.name.starts_with("kortix-snap-"), "{}", recipe.name);

    // Three callers at once on a cold hash: one build, all get the active snapshot, and the
    // build's output reached each of them.
    let logs: Vec<Arc<Mutex<Vec<String>>>> = (0..3).map(|_| Arc::default()).collect();
    let mut waiters = Vec::new();
    for log in &logs {
        let (snapshots, recipe, log) = (f.snapshots.clone(), recipe.clone(), log.clone());
        waiters.push(tokio::spawn(async move {
            let sink: kortix_controlplane::sandbox::BuildLog =
                Arc::new(move |line: &str| log.lock().unwrap().push(line.to_owned()));
            snapshots.ensure(&recipe, Rebuild::Never, Some(sink)).await
        }));
    }
    for w in waiters {
        let snapshot = w.await.unwrap().unwrap();
        assert_eq!(snapshot.status, SnapshotStatus::Active);
    }
    let row = f
        .store
        .get_snapshot(&f.project.id, &recipe.hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.builds, 1, "one build for three waiters");
    assert!(row.size_bytes.unwrap() > 0);
    let builder_log = logs
        .iter()
        .map(|l| l.lock().unwrap().join("\n"))
        .find(|l| l.contains("COPY marker.txt"))
        .expect("the build's output reached a waiter");
    assert!(builder_log.contains("kortix-agent"), "{builder_log}");
    // On an engine that keeps images, the runtime's files come from the runtime image (built
    // once per fingerprint), not from the build context.
    assert!(
        builder_log.contains("COPY --from=kortix-runtime-"),
        "{builder_log}"
    );

    // The image is the user's Dockerfile (its context file) plus the runtime layer.
    assert_eq!(run_in(&recipe.name, &["cat", "/marker.txt"]), "marker one");
    assert_eq!(
        run_in(
            &recipe.name,
            &[
                "sh",
                "-c",
                "test -x /usr/local/bin/kortix-agent && git --version >/dev/null && pwd"
            ]
        ),
        "/workspace"
    );
    let engine = podman().unwrap();
    let entrypoint = engine
        .cli(&[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Entrypoint}}",
            &recipe.name,
        ])
        .unwrap();
    assert_eq!(entrypoint, r#"["/usr/local/bin/kortix-agent"]"#);

    // Unchanged: reused, no second build.
    let again = f
        .snapshots
        .ensure(&f.recipe("dev").await, Rebuild::Never, None)
        .await
        .unwrap();
    assert_eq!(
        (again.hash.as_str(), again.builds),
        (recipe.hash.as_str(), 1)
    );

    // A file of the build context changes: a new hash, a new build.
    f.env
        .commit_file(&f.work, ".kortix/marker.txt", "marker two\n", "marker two");
    f.land();
    let changed = f.recipe("dev").await;
    assert_ne!(changed.hash, recipe.hash);
    let built = f
        .snapshots
        .ensure(&changed, Rebuild::Never, None)
        .await
        .unwrap();
    assert_eq!(built.builds, 1);
    assert_eq!(run_in(&changed.name, &["cat", "/marker.txt"]), "marker two");

    // Pruning keeps what was used recently and removes the rest, row and image.
    assert!(
        f.snapshots
            .prune(Some(&f.project), Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty()
    );
    let removed = f
        .snapshots
        .prune(Some(&f.project), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(!engine.image_exists(&recipe.name));
    assert!(!engine.image_exists(&changed.name));
    assert!(f.snapshots.list(&f.project).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_fails_its_waiters_with_the_log_and_is_not_retried() {
    let f = fixture().await;
    let recipe = f.recipe("broken").await;
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let (snapshots, recipe) = (f.snapshots.clone(), recipe.clone());
        waiters.push(tokio::spawn(async move {
            snapshots.ensure(&recipe, Rebuild::Never, None).await
        }));
    }
    for w in waiters {
        let err = w.await.unwrap().unwrap_err().to_string();
        assert!(err.contains("failed to build"), "{err}");
        assert!(
            err.contains("about to fail"),
            "the log's tail is the reason: {err}"
        );
    }
    let row = f
        .store
        .get_snapshot(&f.project.id, &recipe.hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.status, row.builds), (SnapshotStatus::Failed, 1));

    // Asking again without a retry does not build.
    assert!(
        f.snapshots
            .ensure(&recipe, Rebuild::Never, None)
            .await
            .is_err()
    );
    let row = f
        .store
        .get_snapshot(&f.project.id, &recipe.hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.builds, 1, "no retry loop");
    // Asked to retry: one more build (which fails the same way).
    assert!(
        f.snapshots
            .ensure(&recipe, Rebuild::IfFailed, None)
            .await
            .is_err()
    );
    let row = f
        .store
        .get_snapshot(&f.project.id, &recipe.hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.builds, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_template_gets_the_runtime_layer() {
    let f = fixture().await;
    let recipe = f.recipe("plain").await;
    let snapshot = f
        .snapshots
        .ensure(&recipe, Rebuild::Never, None)
        .await
        .unwrap();
    assert_eq!(snapshot.status, SnapshotStatus::Active);
    assert_eq!(
        run_in(
            &recipe.name,
            &[
                "sh",
                "-c",
                "test -x /usr/local/bin/kortix-agent && test -x /opt/opencode/bin/opencode && echo ok"
            ]
        ),
        "ok"
    );
    // Removed by hand: the active row is built again rather than booted.
    podman().unwrap().cli(&["rmi", &recipe.name]).unwrap();
    let rebuilt = f
        .snapshots
        .ensure(&recipe, Rebuild::Never, None)
        .await
        .unwrap();
    assert_eq!(rebuilt.builds, 2);
    assert!(podman().unwrap().image_exists(&recipe.name));
    f.snapshots
        .prune(Some(&f.project), Duration::ZERO)
        .await
        .unwrap();
}

/// A provider that builds no images (here `external`) says in the session's records which
/// parts of the template it does not honour, instead of ignoring them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_images_says_what_it_ignores() {
    use kortix_proto::v1::{AttachRequest, LogStream, StartSessionRequest, record::Body};
    let ts = support::TestServer::start_with(|c| {
        c.sandbox = kortix_controlplane::config::SandboxKind::External;
    })
    .await;
    let token = ts.account("alice").await;
    let _work = support::app_with_model_config(&ts, &token, 1, |config| {
        let clone = config.ancestors().nth(3).unwrap();
        std::fs::write(
            clone.join("kortix.toml"),
            "kortix_version = 1\n[project]\nname = \"app\"\n[sandbox]\ndefault = \"dev\"\n\
             [[sandbox.templates]]\nslug = \"dev\"\ndockerfile = \".kortix/Dockerfile\"\ncpu = 2\nmemory = 4\n",
        )
        .unwrap();
    })
    .await;
    let session = ts
        .sessions(&token)
        .start_session(StartSessionRequest {
            project: "app".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut stream = ts
        .sessions(&token)
        .attach(AttachRequest {
            session_id: session.id.clone(),
            from_seq: 0,
            follow: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut lines = Vec::new();
    while let Some(r) = futures::StreamExt::next(&mut stream).await {
        if let Some(Body::Log(l)) = r.unwrap().body
            && l.stream == LogStream::Build as i32
        {
            lines.push(l.line);
        }
    }
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].contains("dockerfile .kortix/Dockerfile is not built"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("cpu = 2 is not enforced by the external provider"),
        "{lines:?}"
    );
    assert!(
        lines[2].contains("memory = 4 GiB is not enforced"),
        "{lines:?}"
    );
}
