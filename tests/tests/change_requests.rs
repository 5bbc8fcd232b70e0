//! Change requests through the API against real repositories pushed with the real `git`:
//! fast-forward, true merge, conflicts, double merges, concurrent merges, diffs of merged CRs,
//! renames and binary files.

mod support;

use kortix_proto::v1::*;
use std::path::{Path, PathBuf};
use support::{TestServer, git_ok};
use tonic::Code;

struct Fixture {
    ts: TestServer,
    token: String,
    work: tempfile::TempDir,
    clone: PathBuf,
}

impl Fixture {
    /// A project `app` whose `main` has one commit with `shared.txt` and `image.bin`.
    async fn new() -> Fixture {
        let ts = TestServer::start().await;
        // Local-path imports are the admin's (they read the server's disk).
        let token = ts.admin_token.clone();
        let work = tempfile::tempdir().unwrap();
        let seed = work.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        git_ok(&seed, &["init", "-q", "-b", "main"]);
        std::fs::write(seed.join("shared.txt"), lines(1..=20)).unwrap();
        std::fs::write(
            seed.join("notes.md"),
            "# Notes\n\nfirst\nsecond\nthird\nfourth\nfifth\n",
        )
        .unwrap();
        std::fs::write(seed.join("image.bin"), [0u8, 1, 2, 3, 0, 255, 7]).unwrap();
        git_ok(&seed, &["add", "-A"]);
        git_ok(&seed, &["commit", "-qm", "seed"]);
        ts.projects(&token)
            .create_project(CreateProjectRequest {
                name: "app".into(),
                import_source: seed.display().to_string(),
                ..Default::default()
            })
            .await
            .unwrap();
        let clone = work.path().join("app");
        git_ok(
            work.path(),
            &[
                "clone",
                "-q",
                &ts.git_url("app", &token),
                clone.to_str().unwrap(),
            ],
        );
        Fixture {
            ts,
            token,
            work,
            clone,
        }
    }

    /// Commits `edit` on a new branch `name` forked from `from` and pushes it.
    fn branch(&self, name: &str, from: &str, message: &str, edit: impl FnOnce(&Path)) -> String {
        git_ok(&self.clone, &["fetch", "-q", "origin"]);
        git_ok(
            &self.clone,
            &["checkout", "-q", "-B", name, &format!("origin/{from}")],
        );
        edit(&self.clone);
        git_ok(&self.clone, &["add", "-A"]);
        git_ok(&self.clone, &["commit", "-qm", message]);
        git_ok(&self.clone, &["push", "-q", "-f", "origin", name]);
        git_ok(&self.clone, &["rev-parse", "HEAD"])
            .trim()
            .to_string()
    }

    async fn open(&self, branch: &str) -> ChangeRequest {
        self.ts
            .crs(&self.token)
            .open_change_request(OpenChangeRequestRequest {
                project: "app".into(),
                branch: branch.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    fn cr_ref(number: u64) -> ChangeRequestRef {
        ChangeRequestRef {
            project: "app".into(),
            number,
        }
    }

    async fn merge(&self, number: u64) -> Result<ChangeRequest, tonic::Status> {
        self.ts
            .crs(&self.token)
            .merge_change_request(Self::cr_ref(number))
            .await
            .map(|r| r.into_inner())
    }

    async fn detail(&self, number: u64) -> ChangeRequestDetail {
        self.ts
            .crs(&self.token)
            .get_change_request(Self::cr_ref(number))
            .await
            .unwrap()
            .into_inner()
    }

    async fn diff(&self, number: u64) -> DiffResponse {
        self.ts
            .crs(&self.token)
            .get_diff(Self::cr_ref(number))
            .await
            .unwrap()
            .into_inner()
    }

    fn main_tip(&self) -> String {
        let out = git_ok(&self.clone, &["ls-remote", "origin", "refs/heads/main"]);
        out.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

fn lines(range: std::ops::RangeInclusive<u32>) -> String {
    range.map(|i| format!("line {i}\n")).collect()
}

fn replace_line(path: &Path, n: u32, with: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let out: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i as u32 + 1 == n {
                format!("{with}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(path, out).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_forward_then_a_second_merge_is_refused() {
    let f = Fixture::new().await;
    let head = f.branch("feature", "main", "Add feature", |d| {
        std::fs::write(d.join("feature.txt"), "feature\n").unwrap();
    });
    let cr = f.open("feature").await;
    assert_eq!(cr.title, "Add feature");
    assert_eq!(cr.state, ChangeRequestState::Open as i32);
    let preview =
        f.ts.crs(&f.token)
            .merge_preview(Fixture::cr_ref(cr.number))
            .await
            .unwrap()
            .into_inner();
    assert!(preview.mergeable && preview.fast_forward);

    let merged = f.merge(cr.number).await.unwrap();
    assert_eq!(merged.state, ChangeRequestState::Merged as i32);
    assert_eq!(
        merged.merge_commit, head,
        "a fast-forward moves main to the head commit"
    );
    assert_eq!(f.main_tip(), head);
    // The merge is in the owning account's audit log, with the commit it landed.
    let log =
        f.ts.audit(&f.token)
            .list_audit(ListAuditRequest {
                project: "app".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
    let merge = &log[0];
    assert_eq!(
        (
            merge.action.as_str(),
            merge.target.clone(),
            merge.detail.as_str()
        ),
        (
            "change_request.merge",
            format!("#{}", cr.number),
            head.as_str()
        )
    );

    let again = f.merge(cr.number).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert!(
        again.message().contains("already merged"),
        "{}",
        again.message()
    );
    assert_eq!(f.main_tip(), head, "nothing moved");
    f.ts.stop().await;
}

/// A change request lands commits: a branch with none that the default branch lacks — level
/// with it, or already merged — has nothing to review and is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_with_nothing_ahead_is_refused() {
    let f = Fixture::new().await;
    git_ok(
        &f.clone,
        &["push", "-q", "origin", "origin/main:refs/heads/level"],
    );
    let feature = f.branch("feature", "main", "Add feature", |d| {
        std::fs::write(d.join("feature.txt"), "feature\n").unwrap();
    });
    let cr = f.open("feature").await;
    f.merge(cr.number).await.unwrap();
    for branch in ["level", "feature"] {
        let refused =
            f.ts.crs(&f.token)
                .open_change_request(OpenChangeRequestRequest {
                    project: "app".into(),
                    branch: branch.into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::FailedPrecondition,
            "{branch}: {refused:?}"
        );
        assert_eq!(
            refused.message(),
            format!("{branch} has no commits that main does not have; there is nothing to review")
        );
    }
    assert_eq!(f.main_tip(), feature);
    f.ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn true_merge_writes_a_merge_commit_with_both_parents() {
    let f = Fixture::new().await;
    let head = f.branch("feature", "main", "Edit line 2", |d| {
        replace_line(&d.join("shared.txt"), 2, "feature 2")
    });
    let cr = f.open("feature").await;
    // main moves on elsewhere in the same file, through another CR.
    f.branch("other", "main", "Edit line 19", |d| {
        replace_line(&d.join("shared.txt"), 19, "other 19")
    });
    let other = f.open("other").await;
    let base = f.merge(other.number).await.unwrap().merge_commit;

    let merged = f.merge(cr.number).await.unwrap();
    assert_eq!(merged.state, ChangeRequestState::Merged as i32);
    assert_eq!(f.main_tip(), merged.merge_commit);
    git_ok(&f.clone, &["fetch", "-q", "origin"]);
    let parents = git_ok(
        &f.clone,
        &["rev-list", "--parents", "-n1", &merged.merge_commit],
    );
    let parents: Vec<&str> = parents.split_whitespace().skip(1).collect();
    assert_eq!(parents, [base.as_str(), head.as_str()]);
    let text = git_ok(
        &f.clone,
        &["show", &format!("{}:shared.txt", merged.merge_commit)],
    );
    assert!(
        text.contains("feature 2") && text.contains("other 19"),
        "{text}"
    );
    f.ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_named_and_nothing_changes() {
    let f = Fixture::new().await;
    f.branch("ours", "main", "Ours", |d| {
        replace_line(&d.join("shared.txt"), 5, "ours")
    });
    f.branch("theirs", "main", "Theirs", |d| {
        replace_line(&d.join("shared.txt"), 5, "theirs")
    });
    let ours = f.open("ours").await;
    let theirs = f.open("theirs").await;
    f.merge(ours.number).await.unwrap();
    let before = f.main_tip();

    let detail = f.detail(theirs.number).await;
    assert!(!detail.mergeable);
    assert_eq!(detail.conflicting_paths, ["shared.txt"]);
    let refused = f.merge(theirs.number).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("shared.txt"),
        "{}",
        refused.message()
    );
    assert_eq!(f.main_tip(), before, "the default branch did not move");
    assert_eq!(
        f.detail(theirs.number).await.change_request.unwrap().state,
        ChangeRequestState::Open as i32
    );
    f.ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_merges_never_lose_an_update() {
    let f = Fixture::new().await;
    let a = f.branch("a", "main", "A", |d| {
        std::fs::write(d.join("a.txt"), "a\n").unwrap()
    });
    let b = f.branch("b", "main", "B", |d| {
        std::fs::write(d.join("b.txt"), "b\n").unwrap()
    });
    let (cra, crb) = (f.open("a").await, f.open("b").await);
    let (ra, rb) = tokio::join!(f.merge(cra.number), f.merge(crb.number));
    let landed: Vec<&str> = [(&ra, &a), (&rb, &b)]
        .iter()
        .filter(|(r, _)| r.is_ok())
        .map(|(_, sha)| sha.as_str())
        .collect();
    assert!(
        !landed.is_empty(),
        "at least one merge lands: {ra:?} {rb:?}"
    );
    for r in [&ra, &rb] {
        if let Err(status) = r {
            // A refused merge says why and can be retried.
            assert!(
                matches!(status.code(), Code::Aborted | Code::FailedPrecondition),
                "{status:?}"
            );
        }
    }
    git_ok(&f.clone, &["fetch", "-q", "origin"]);
    for sha in &landed {
        let ok = support::git(
            &f.clone,
            &["merge-base", "--is-ancestor", sha, "origin/main"],
        );
        assert!(ok.status.success(), "merged commit {sha} is on main");
    }
    // Retrying the refused one (if any) lands it too: nothing was lost.
    if ra.is_err() {
        f.merge(cra.number).await.unwrap();
    }
    if rb.is_err() {
        f.merge(crb.number).await.unwrap();
    }
    git_ok(&f.clone, &["fetch", "-q", "origin"]);
    for sha in [&a, &b] {
        let ok = support::git(
            &f.clone,
            &["merge-base", "--is-ancestor", sha, "origin/main"],
        );
        assert!(ok.status.success(), "{sha} is on main");
    }
    f.ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_diff_is_frozen_and_stats_show_renames_and_binaries() {
    let f = Fixture::new().await;
    f.branch("feature", "main", "Rename, binary and text", |d| {
        std::fs::rename(d.join("notes.md"), d.join("docs.md")).unwrap();
        std::fs::write(d.join("image.bin"), [0u8, 9, 9, 9, 0, 255]).unwrap();
        replace_line(&d.join("shared.txt"), 10, "ten");
    });
    let cr = f.open("feature").await;
    let before = f.diff(cr.number).await;
    let by_path = |files: &[FileChange], p: &str| files.iter().find(|c| c.path == p).cloned();
    let renamed = by_path(&before.files, "docs.md").expect("rename listed under its new path");
    assert_eq!(renamed.status, "renamed");
    assert_eq!(renamed.old_path, "notes.md");
    assert_eq!((renamed.insertions, renamed.deletions), (0, 0));
    let binary = by_path(&before.files, "image.bin").unwrap();
    assert!(binary.binary);
    assert_eq!(binary.status, "modified");
    let text = by_path(&before.files, "shared.txt").unwrap();
    assert_eq!((text.insertions, text.deletions), (1, 1));
    assert!(
        before.diff.contains("rename from notes.md"),
        "{}",
        before.diff
    );
    assert!(before.diff.contains("Binary files"), "{}", before.diff);

    f.merge(cr.number).await.unwrap();
    // The branch moves on after the merge; the merged CR's diff is what was merged.
    f.branch("feature", "feature", "Later work", |d| {
        std::fs::write(d.join("later.txt"), "later\n").unwrap()
    });
    let after = f.diff(cr.number).await;
    assert_eq!(after.diff, before.diff);
    assert!(by_path(&after.files, "later.txt").is_none());
    let _ = &f.work;
    f.ts.stop().await;
}
