use super::*;
use kortix_tests::git::GitEnv;

fn author() -> Author {
    Author {
        name: "Ada".into(),
        email: "ada@example.com".into(),
    }
}

fn repos() -> (tempfile::TempDir, Repos) {
    let dir = tempfile::tempdir().unwrap();
    let repos = Repos::in_data_dir(dir.path()).unwrap();
    (dir, repos)
}

const MANIFEST: &str = "kortix_version = 1\n[project]\nname = \"demo\"\n";

#[test]
fn create_empty_puts_the_manifest_at_the_head() {
    let (_dir, repos) = repos();
    let head = repos
        .create_empty("p1", "main", MANIFEST, &author())
        .unwrap();
    assert_eq!(repos.branch_head("p1", "main").unwrap(), Some(head));
    assert_eq!(repos.head_branch("p1").unwrap().as_deref(), Some("main"));
    assert_eq!(
        repos
            .read_file_at_branch("p1", "main", "kortix.toml")
            .unwrap(),
        Some(MANIFEST.as_bytes().to_vec())
    );
    assert_eq!(
        repos.read_file_at_branch("p1", "main", "nope.txt").unwrap(),
        None
    );
    assert_eq!(
        repos.list_branches("p1").unwrap(),
        vec![Branch {
            name: "main".into(),
            head
        }]
    );

    // The git program agrees: a valid repository whose HEAD is main with one file.
    let env = GitEnv::new();
    let path = repos.path("p1").unwrap();
    assert_eq!(env.ok(&path, &["symbolic-ref", "HEAD"]), "refs/heads/main");
    assert_eq!(
        env.ok(&path, &["ls-tree", "--name-only", "main"]),
        "kortix.toml"
    );
    assert_eq!(
        env.ok(&path, &["log", "--format=%an <%ae>", "main"]),
        "Ada <ada@example.com>"
    );
    env.ok(&path, &["fsck", "--strict"]);

    // A second create for the same project is refused, and nothing is left in staging.
    let err = repos
        .create_empty("p1", "main", MANIFEST, &author())
        .unwrap_err();
    assert!(matches!(err, RepoError::AlreadyExists { .. }), "{err:?}");
    let leftovers: Vec<_> = std::fs::read_dir(repos.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(leftovers, vec!["p1.git".to_owned()]);
}

#[test]
fn create_empty_validates_its_inputs() {
    let (_dir, repos) = repos();
    assert!(matches!(
        repos.create_empty("../x", "main", MANIFEST, &author()),
        Err(RepoError::Name(_))
    ));
    assert!(matches!(
        repos.create_empty("p", "bad..name", MANIFEST, &author()),
        Err(RepoError::Name(_))
    ));
    let bad_author = Author {
        name: "Eve <evil>".into(),
        email: "e@x".into(),
    };
    assert!(matches!(
        repos.create_empty("p", "main", MANIFEST, &bad_author),
        Err(RepoError::InvalidAuthor(_))
    ));
    assert!(!repos.exists("p").unwrap());
}

#[test]
fn cut_branch_creates_once_and_refuses_existing() {
    let (_dir, repos) = repos();
    let head = repos
        .create_empty("p1", "main", MANIFEST, &author())
        .unwrap();
    assert_eq!(repos.cut_branch("p1", "main", "sess-1").unwrap(), head);
    assert_eq!(repos.branch_head("p1", "sess-1").unwrap(), Some(head));
    let err = repos.cut_branch("p1", "main", "sess-1").unwrap_err();
    assert!(matches!(err, RepoError::BranchExists { .. }), "{err:?}");
    let err = repos.cut_branch("p1", "nope", "sess-2").unwrap_err();
    assert!(matches!(err, RepoError::BranchNotFound { .. }), "{err:?}");
    let err = repos.cut_branch("p1", "main", "HEAD").unwrap_err();
    assert!(matches!(err, RepoError::Name(_)), "{err:?}");
    let err = repos.cut_branch("nope", "main", "x").unwrap_err();
    assert!(matches!(err, RepoError::NotFound { .. }), "{err:?}");
    let names: Vec<_> = repos
        .list_branches("p1")
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["main", "sess-1"]);
}

#[test]
fn read_file_at_branch_reads_nested_files_and_bounds_size() {
    let (dir, repos) = repos();
    let env = GitEnv::new();
    let work = env.work_repo(dir.path(), "work");
    env.commit_file(&work, "kortix.toml", MANIFEST, "manifest");
    env.commit_file(&work, ".kortix/opencode/agent.md", "agent\n", "agent");
    let big = "x".repeat(MAX_READ_FILE as usize + 1);
    env.commit_file(&work, "big.bin", &big, "big");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(repos.import("p2", work.to_str().unwrap(), None))
        .unwrap();

    assert_eq!(
        repos
            .read_file_at_branch("p2", "main", ".kortix/opencode/agent.md")
            .unwrap()
            .as_deref(),
        Some(&b"agent\n"[..])
    );
    assert!(matches!(
        repos.read_file_at_branch("p2", "main", ".kortix"),
        Err(RepoError::NotAFile { .. })
    ));
    assert!(matches!(
        repos.read_file_at_branch("p2", "main", "big.bin"),
        Err(RepoError::FileTooLarge { size, .. }) if size == MAX_READ_FILE + 1
    ));
    for bad in [
        "",
        "/kortix.toml",
        "../kortix.toml",
        "a//b",
        "./kortix.toml",
        "a/",
    ] {
        assert!(
            matches!(
                repos.read_file_at_branch("p2", "main", bad),
                Err(RepoError::InvalidPath { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        repos.read_file_at_branch("p2", "other", "kortix.toml"),
        Err(RepoError::BranchNotFound { .. })
    ));
}

#[tokio::test]
async fn import_keeps_all_branches_tags_and_the_default_branch() {
    let (dir, repos) = repos();
    let env = GitEnv::new();
    let work = env.work_repo(dir.path(), "work");
    let first = env.ok(&work, &["rev-parse", "HEAD"]);
    env.ok(&work, &["checkout", "-q", "-b", "develop"]);
    let develop = env.commit_file(&work, "dev.txt", "dev\n", "dev work");
    env.ok(&work, &["tag", "light", &first]);
    env.ok(&work, &["tag", "-a", "v1.0", "-m", "release one", &develop]);
    // The source's HEAD is on develop: that becomes the default branch.
    let imported = repos
        .import("p3", work.to_str().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(imported.default_branch, "develop");
    assert_eq!(imported.head.to_string(), develop);

    let path = repos.path("p3").unwrap();
    let refs = env.ok(
        &path,
        &[
            "for-each-ref",
            "--format=%(refname) %(objecttype) %(objectname)",
        ],
    );
    let annotated = env.ok(&work, &["rev-parse", "v1.0"]);
    let expected = [
        format!("refs/heads/develop commit {develop}"),
        format!("refs/heads/main commit {first}"),
        format!("refs/tags/light commit {first}"),
        format!("refs/tags/v1.0 tag {annotated}"),
    ];
    assert_eq!(refs.lines().collect::<Vec<_>>(), expected);
    assert_eq!(
        env.ok(&path, &["symbolic-ref", "HEAD"]),
        "refs/heads/develop"
    );
    let remotes = env.run(&path, &["config", "--get-regexp", "^remote\\."]);
    assert_eq!(
        remotes.status.code(),
        Some(1),
        "no remote may be left configured"
    );
    assert!(remotes.stdout.is_empty());
    env.ok(&path, &["fsck", "--strict"]);

    // An explicit default branch wins; a missing one is refused and leaves nothing behind.
    let imported = repos
        .import("p4", &format!("file://{}", work.display()), Some("main"))
        .await
        .unwrap();
    assert_eq!(imported.default_branch, "main");
    assert_eq!(repos.head_branch("p4").unwrap().as_deref(), Some("main"));
    let err = repos
        .import("p5", work.to_str().unwrap(), Some("release"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no branch \"release\""), "{err}");
    assert!(!repos.exists("p5").unwrap());
    assert_eq!(
        std::fs::read_dir(repos.root()).unwrap().count(),
        2,
        "only p3 and p4 remain"
    );
}

#[tokio::test]
async fn import_from_a_bare_repo_and_refusals() {
    let (dir, repos) = repos();
    let env = GitEnv::new();
    let work = env.work_repo(dir.path(), "work");
    let bare = dir.path().join("bare.git");
    env.ok(
        dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let imported = repos
        .import("b1", bare.to_str().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(imported.default_branch, "main");

    let empty = dir.path().join("empty.git");
    env.ok(
        dir.path(),
        &["init", "-q", "--bare", empty.to_str().unwrap()],
    );
    let err = repos
        .import("b2", empty.to_str().unwrap(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no branches"), "{err}");
    assert!(!repos.exists("b2").unwrap());

    let err = repos.import("b3", "/no/such/repo", None).await.unwrap_err();
    assert!(matches!(err, RepoError::Import { .. }), "{err:?}");

    let not_a_repo = tempfile::tempdir().unwrap();
    let err = repos
        .import("b4", not_a_repo.path().to_str().unwrap(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::ImportCommand { .. }), "{err:?}");
    assert!(err.to_string().contains("clone"), "{err}");

    let err = repos
        .import("b1", work.to_str().unwrap(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::AlreadyExists { .. }), "{err:?}");
    let names: Vec<_> = std::fs::read_dir(repos.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["b1.git"]);
}

#[test]
fn delete_repo_removes_it() {
    let (_dir, repos) = repos();
    repos
        .create_empty("gone", "main", MANIFEST, &author())
        .unwrap();
    assert!(repos.delete_repo("gone").unwrap());
    assert!(!repos.exists("gone").unwrap());
    assert!(!repos.delete_repo("gone").unwrap());
    assert!(matches!(
        repos.branch_head("gone", "main"),
        Err(RepoError::NotFound { .. })
    ));
    assert_eq!(std::fs::read_dir(repos.root()).unwrap().count(), 0);
}
