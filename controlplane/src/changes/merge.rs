//! Merging a change request: fast-forward when possible, otherwise a three-way merge commit,
//! with the base branch moved only by compare-and-swap against the commit the merge was
//! computed from.

use std::time::Duration;

use gix::ObjectId;

use super::{
    ancestry::peel_to_commit,
    error::{ChangesError, GitContext},
    handle,
    three_way::{self, Outcome},
    unified::{self, MAX_UNIFIED_DIFF_BYTES},
};
use crate::backoff::{Backoff, Jitter};
use crate::git::{
    names,
    refs::{self, Expected, RefError},
};

/// How many times [`merge_with_retry`] recomputes a merge after losing the race for the base.
pub const MERGE_RETRIES: u32 = 3;

/// The pause between retries: 10 ms doubled each time, plus up to the same again.
const RETRY_BACKOFF: Backoff = Backoff::new(
    Duration::from_millis(10),
    Duration::from_millis(10 << MERGE_RETRIES),
    Jitter::Over(1.0),
);

/// The identity and time written as author and committer of merge commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeSignature {
    pub name: String,
    pub email: String,
    pub time: gix::date::Time,
}

impl MergeSignature {
    /// A signature stamped with the current time, in UTC.
    pub fn now(name: impl Into<String>, email: impl Into<String>) -> Self {
        MergeSignature {
            name: name.into(),
            email: email.into(),
            time: gix::date::Time::now_utc(),
        }
    }

    fn to_gix(&self) -> gix::actor::Signature {
        gix::actor::Signature {
            name: self.name.as_str().into(),
            email: self.email.as_str().into(),
            time: self.time,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeKind {
    /// The base branch was an ancestor of the head and now points at it.
    FastForward,
    /// A new commit with parents `[base, head]` was written and the base points at it.
    MergeCommit,
}

/// What a successful merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeOutcome {
    pub kind: MergeKind,
    /// Where the base branch points now: the head (fast-forward) or the merge commit.
    pub new_base_sha: ObjectId,
    /// The head commit that was merged (the branch may have moved on since).
    pub merged_head_sha: ObjectId,
    /// The unified three-dot diff `base...head` as it was when the merge was made, for the
    /// change request's record; later moves of either branch do not change it.
    pub diff_at_merge: String,
}

/// Why a merge did not happen. In every case the base branch is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("merge conflict in: {}", paths.join(", "))]
    Conflict { paths: Vec<String> },
    /// Someone else moved the base branch between reading it and swapping it.
    #[error("default branch moved, retry: {branch} was {expected} when the merge was computed, now {}", actual.map_or_else(|| "deleted".to_owned(), |a| a.to_string()))]
    BaseMoved {
        branch: String,
        expected: ObjectId,
        actual: Option<ObjectId>,
    },
    #[error("nothing to merge: {head} is already contained in {base}")]
    NothingToMerge { base: String, head: String },
    #[error(transparent)]
    Repo(#[from] ChangesError),
}

impl From<RefError> for MergeError {
    fn from(err: RefError) -> Self {
        MergeError::Repo(err.into())
    }
}

impl From<names::NameError> for MergeError {
    fn from(err: names::NameError) -> Self {
        MergeError::Repo(err.into())
    }
}

/// Merges branch `head_branch` into `base_branch` (short names) once. `message` is appended
/// to the generated "Merge branch '<head>' into <base>" line of a merge commit;
/// `signature` is author and committer.
pub fn merge(
    repo: &gix::Repository,
    base_branch: &str,
    head_branch: &str,
    message: &str,
    signature: &MergeSignature,
) -> Result<MergeOutcome, MergeError> {
    let base_ref = names::branch_ref(base_branch)?;
    let (base_tip, base) = branch_tip(repo, base_branch)?;
    let (_, head) = branch_tip(repo, head_branch)?;
    // One handle for every step, so they share its object cache; its writes stay in memory
    // until the merge is known to succeed.
    let work = three_way::working_handle(repo);
    let commit_graph = three_way::commit_graph(&work)?;
    let mut graph = work.revision_graph(commit_graph.as_ref());
    let mb = if base == head {
        Some(base)
    } else {
        three_way::merge_base(&work, &mut graph, base, head)?
    };
    let mb = mb.ok_or_else(|| ChangesError::NoMergeBase {
        base,
        head,
        repo: repo.path().to_owned(),
    })?;
    if mb == head {
        return Err(MergeError::NothingToMerge {
            base: base_branch.to_owned(),
            head: head_branch.to_owned(),
        });
    }
    if mb == base {
        let diff_at_merge = unified::render(&work, mb, head, MAX_UNIFIED_DIFF_BYTES)?;
        let log = format!("merge {head_branch}: Fast-forward");
        swap_base(repo, &base_ref, base_tip, head, &log)?;
        return Ok(MergeOutcome {
            kind: MergeKind::FastForward,
            new_base_sha: head,
            merged_head_sha: head,
            diff_at_merge,
        });
    }

    // The diff to record and the merge are independent reads of the same objects; render the
    // diff on a second thread with a handle of its own so that it costs no extra latency.
    let sync = repo.clone().into_sync();
    let (diff_at_merge, merged) = std::thread::scope(|scope| {
        let diff = scope.spawn(move || {
            let repo = handle::cached(&sync.to_thread_local());
            unified::render(&repo, mb, head, MAX_UNIFIED_DIFF_BYTES)
        });
        let merged =
            three_way::merge_commits(&work, &mut graph, base, head, base_branch, head_branch);
        let diff = diff
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (diff, merged)
    });
    let tree = match merged? {
        Outcome::Clean { tree } => tree,
        Outcome::Conflicts(paths) => return Err(MergeError::Conflict { paths }),
    };
    let diff_at_merge = diff_at_merge?;
    let signature = signature.to_gix();
    let commit = gix::objs::Commit {
        tree,
        parents: [base, head].into_iter().collect(),
        author: signature.clone(),
        committer: signature,
        encoding: None,
        message: commit_message(base_branch, head_branch, message).into(),
        extra_headers: Vec::new(),
    };
    let commit_id = work
        .write_object(&commit)
        .ctx(repo, || {
            format!("writing the merge commit of {head} into {base}")
        })?
        .detach();
    drop(graph);
    three_way::persist(repo, work)?;
    let log = format!("merge {head_branch}: Merge made by the 'ort' strategy.");
    swap_base(repo, &base_ref, base_tip, commit_id, &log)?;
    Ok(MergeOutcome {
        kind: MergeKind::MergeCommit,
        new_base_sha: commit_id,
        merged_head_sha: head,
        diff_at_merge,
    })
}

/// [`merge`], recomputed up to [`MERGE_RETRIES`] more times when another writer moved the base
/// branch first, with jittered exponential backoff in between.
pub fn merge_with_retry(
    repo: &gix::Repository,
    base_branch: &str,
    head_branch: &str,
    message: &str,
    signature: &MergeSignature,
) -> Result<MergeOutcome, MergeError> {
    let mut attempt = 0;
    loop {
        match merge(repo, base_branch, head_branch, message, signature) {
            Err(MergeError::BaseMoved { .. }) if attempt < MERGE_RETRIES => {
                std::thread::sleep(RETRY_BACKOFF.pause(attempt));
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// The ref value (for the compare-and-swap) and the commit it stands for.
fn branch_tip(repo: &gix::Repository, branch: &str) -> Result<(ObjectId, ObjectId), ChangesError> {
    let tip = refs::resolve_branch(repo, branch)?.ok_or_else(|| ChangesError::BranchNotFound {
        branch: branch.to_owned(),
        repo: repo.path().to_owned(),
    })?;
    Ok((tip, peel_to_commit(repo, tip)?))
}

fn swap_base(
    repo: &gix::Repository,
    base_ref: &str,
    expected: ObjectId,
    new: ObjectId,
    log: &str,
) -> Result<(), MergeError> {
    refs::update_ref(repo, base_ref, Expected::MustEqual(expected), new, log).map_err(|err| {
        match err {
            RefError::Moved { name, actual, .. } => MergeError::BaseMoved {
                branch: name,
                expected,
                actual,
            },
            other => other.into(),
        }
    })
}

fn commit_message(base_branch: &str, head_branch: &str, message: &str) -> String {
    let mut text = format!("Merge branch '{head_branch}' into {base_branch}\n");
    let extra = message.trim();
    if !extra.is_empty() {
        text.push('\n');
        text.push_str(extra);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::super::{
        preview::{MergePreview, preview_merge},
        testutil::Fixture,
    };
    use super::*;

    fn platform() -> MergeSignature {
        MergeSignature {
            name: "Kortix".into(),
            email: "kortix@localhost".into(),
            time: gix::date::Time::new(1_700_000_100, 0),
        }
    }

    /// `main` and `topic` fork at a root with three files; each side then edits its own file.
    fn diverged() -> Fixture {
        let fx = Fixture::new();
        fx.commit(
            "main",
            &[
                ("a.txt", "a\n"),
                ("b.txt", "b\n"),
                ("shared.txt", "1\n2\n3\n"),
            ],
            "root",
        );
        fx.branch("topic", "main");
        fx.commit("main", &[("a.txt", "a on main\n")], "main edits a");
        fx.commit(
            "topic",
            &[("b.txt", "b on topic\n"), ("t.txt", "new\n")],
            "topic edits b",
        );
        fx
    }

    fn is_ancestor(repo: &gix::Repository, ancestor: ObjectId, of: ObjectId) -> bool {
        use super::super::ancestry::merge_base;
        merge_base(repo, ancestor, of).unwrap() == Some(ancestor)
    }

    #[test]
    fn fast_forward_moves_base_to_head() {
        let fx = Fixture::new();
        fx.commit("main", &[("a.txt", "a\n")], "root");
        fx.branch("topic", "main");
        let head = fx.commit("topic", &[("a.txt", "a\nmore\n")], "topic");
        let expected_diff = fx.git(&["diff", "--no-color", "--no-ext-diff", "main...topic"]);
        let repo = fx.open();

        let preview = preview_merge(&repo, "main", "topic").unwrap();
        assert!(preview.fast_forward && preview.mergeable && !preview.already_merged);

        let out = merge(&repo, "main", "topic", "", &platform()).unwrap();
        assert_eq!(out.kind, MergeKind::FastForward);
        assert_eq!((out.new_base_sha, out.merged_head_sha), (head, head));
        assert_eq!(fx.sha("main"), head);
        assert_eq!(out.diff_at_merge, expected_diff);

        let again = merge(&repo, "main", "topic", "", &platform()).unwrap_err();
        assert!(
            matches!(again, MergeError::NothingToMerge { .. }),
            "{again:?}"
        );
        assert!(
            preview_merge(&repo, "main", "topic")
                .unwrap()
                .already_merged
        );
    }

    #[test]
    fn true_merge_writes_a_commit_like_git() {
        let fx = diverged();
        let (base, head) = (fx.sha("main"), fx.sha("topic"));
        let git_tree = fx.git(&["merge-tree", "--write-tree", "main", "topic"]);
        let git_tree = git_tree.lines().next().unwrap().to_owned();
        let expected_diff = fx.git(&["diff", "--no-color", "--no-ext-diff", "main...topic"]);
        let repo = fx.open();

        let preview = preview_merge(&repo, "main", "topic").unwrap();
        assert_eq!(
            preview,
            MergePreview {
                base_sha: base,
                head_sha: head,
                merge_base: Some(fx.sha("main~1")),
                fast_forward: false,
                already_merged: false,
                mergeable: true,
                conflicting_paths: vec![],
            }
        );

        let out = merge(&repo, "main", "topic", "CR #7: edit b\n", &platform()).unwrap();
        assert_eq!(out.kind, MergeKind::MergeCommit);
        assert_eq!(out.merged_head_sha, head);
        assert_eq!(fx.sha("main"), out.new_base_sha);
        assert_eq!(out.diff_at_merge, expected_diff);

        let parents = fx.git(&["rev-list", "--parents", "-n", "1", "main"]);
        assert_eq!(
            parents.trim(),
            format!("{} {base} {head}", out.new_base_sha)
        );
        assert_eq!(fx.git(&["rev-parse", "main^{tree}"]).trim(), git_tree);
        assert_eq!(
            fx.git(&["log", "-1", "--format=%an <%ae>|%cn <%ce>|%at|%B", "main"]),
            "Kortix <kortix@localhost>|Kortix <kortix@localhost>|1700000100|\
             Merge branch 'topic' into main\n\nCR #7: edit b\n\n"
        );
        fx.git(&["fsck", "--strict", "--no-dangling"]);

        // The recorded diff is what the CR showed at merge time, even after the head moves on.
        fx.commit("topic", &[("later.txt", "after the merge\n")], "later work");
        let now = fx.git(&["diff", "--no-color", "--no-ext-diff", "main...topic"]);
        assert_ne!(now, expected_diff);
        assert_eq!(out.diff_at_merge, expected_diff);
    }

    #[test]
    fn conflicts_are_listed_and_nothing_moves() {
        let fx = Fixture::new();
        fx.commit(
            "main",
            &[("shared.txt", "1\n2\n3\n"), ("other.txt", "o\n")],
            "root",
        );
        fx.branch("topic", "main");
        fx.commit(
            "main",
            &[("shared.txt", "1\nmain\n3\n"), ("other.txt", "o2\n")],
            "main",
        );
        fx.commit(
            "topic",
            &[("shared.txt", "1\ntopic\n3\n"), ("t.txt", "t\n")],
            "topic",
        );
        let base = fx.sha("main");
        let objects_before = fx.git(&["count-objects", "-v"]);
        let repo = fx.open();

        let preview = preview_merge(&repo, "main", "topic").unwrap();
        assert!(!preview.mergeable && !preview.fast_forward);
        assert_eq!(preview.conflicting_paths, ["shared.txt"]);

        let err = merge_with_retry(&repo, "main", "topic", "", &platform()).unwrap_err();
        match &err {
            MergeError::Conflict { paths } => assert_eq!(paths, &["shared.txt"]),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(err.to_string().contains("shared.txt"));
        assert_eq!(fx.sha("main"), base);
        assert_eq!(
            fx.git(&["count-objects", "-v"]),
            objects_before,
            "nothing written"
        );
    }

    #[test]
    fn previews_write_nothing() {
        let fx = diverged();
        let before = fx.git(&["count-objects", "-v"]);
        let repo = fx.open();
        assert!(preview_merge(&repo, "main", "topic").unwrap().mergeable);
        assert_eq!(fx.git(&["count-objects", "-v"]), before);
    }

    #[test]
    fn stale_base_is_refused_as_moved() {
        let fx = diverged();
        let stale = fx.sha("main~1");
        let repo = fx.open();
        let err = swap_base(&repo, "refs/heads/main", stale, fx.sha("topic"), "m").unwrap_err();
        assert!(
            matches!(&err, MergeError::BaseMoved { expected, actual: Some(a), .. } if *expected == stale && *a == fx.sha("main")),
            "{err:?}"
        );
        assert!(err.to_string().contains("default branch moved, retry"));
    }

    #[test]
    fn missing_branches_and_unrelated_histories() {
        let fx = diverged();
        fx.orphan_commit("alien", &[("x", "x\n")], "unrelated");
        let repo = fx.open();
        let err = merge(&repo, "main", "nope", "", &platform()).unwrap_err();
        assert!(
            matches!(err, MergeError::Repo(ChangesError::BranchNotFound { .. })),
            "{err:?}"
        );
        let err = merge(&repo, "main", "alien", "", &platform()).unwrap_err();
        assert!(
            matches!(err, MergeError::Repo(ChangesError::NoMergeBase { .. })),
            "{err:?}"
        );
        let preview = preview_merge(&repo, "main", "alien").unwrap();
        assert!(!preview.mergeable && preview.merge_base.is_none());
    }

    /// Two change requests merged at the same moment from two threads: with retries both land;
    /// without, each loser sees BaseMoved. Either way no merged commit is ever lost.
    #[test]
    fn concurrent_merges_never_lose_a_commit() {
        for retry in [true, false] {
            for round in 0..4 {
                let fx = Fixture::new();
                fx.commit("main", &[("base.txt", "base\n")], "root");
                for i in 0..2 {
                    fx.branch(&format!("cr{i}"), "main");
                    fx.commit(
                        &format!("cr{i}"),
                        &[(&format!("cr{i}.txt"), "work\n")],
                        "work",
                    );
                }
                // Make both merges true merges, not fast-forwards.
                fx.commit("main", &[("main.txt", "main\n")], "main moves");
                let barrier = Arc::new(Barrier::new(2));
                let threads: Vec<_> = (0..2)
                    .map(|i| {
                        let (path, barrier) = (fx.bare.clone(), barrier.clone());
                        std::thread::spawn(move || {
                            let repo = gix::open(path).unwrap();
                            let head = format!("cr{i}");
                            barrier.wait();
                            if retry {
                                merge_with_retry(&repo, "main", &head, "", &platform())
                            } else {
                                merge(&repo, "main", &head, "", &platform())
                            }
                        })
                    })
                    .collect();
                let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
                let repo = fx.open();
                let main = fx.sha("main");
                for (i, result) in results.iter().enumerate() {
                    match result {
                        Ok(out) => {
                            assert!(
                                is_ancestor(&repo, out.new_base_sha, main),
                                "round {round}: lost {out:?}"
                            );
                            assert!(is_ancestor(&repo, fx.sha(&format!("cr{i}")), main));
                        }
                        Err(MergeError::BaseMoved { .. }) if !retry => {}
                        Err(other) => {
                            panic!("round {round} retry={retry}: cr{i} failed: {other:?}")
                        }
                    }
                }
                assert!(results.iter().any(Result::is_ok));
                if retry {
                    assert!(results.iter().all(Result::is_ok), "{results:?}");
                }
                fx.git(&["fsck", "--strict", "--no-dangling"]);
            }
        }
    }
}
