//! How two commits relate: their merge base, and how far each is ahead of the other.

use gix::ObjectId;

use super::error::{ChangesError, GitContext};
use crate::git::refs;

/// Counts of commits reachable from one side but not the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AheadBehind {
    /// Commits in `head` that `base` does not contain (what a merge would bring in).
    pub ahead: usize,
    /// Commits in `base` that `head` does not contain (how stale the head is).
    pub behind: usize,
}

/// The commit `refs/heads/<branch>` points at, peeled to a commit.
pub fn branch_commit(repo: &gix::Repository, branch: &str) -> Result<ObjectId, ChangesError> {
    let id = refs::resolve_branch(repo, branch)?.ok_or_else(|| ChangesError::BranchNotFound {
        branch: branch.to_owned(),
        repo: repo.path().to_owned(),
    })?;
    peel_to_commit(repo, id)
}

/// Follows tags so that callers can pass any commit-ish object.
pub(crate) fn peel_to_commit(
    repo: &gix::Repository,
    id: ObjectId,
) -> Result<ObjectId, ChangesError> {
    repo.find_object(id)
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id)
        .ctx(repo, || format!("peeling {id} to a commit"))
}

/// The best common ancestor of `base` and `head` (what `git merge-base` prints), or `None` for
/// unrelated histories.
pub fn merge_base(
    repo: &gix::Repository,
    base: ObjectId,
    head: ObjectId,
) -> Result<Option<ObjectId>, ChangesError> {
    if base == head {
        return Ok(Some(base));
    }
    repo.merge_base(base, head)
        .map(|id| id.map(gix::Id::detach))
        .ctx(repo, || {
            format!("finding the merge base of {base} and {head}")
        })
}

/// The merge base that `base...head` diffs from; an error for unrelated histories, as in git.
pub fn three_dot_base(
    repo: &gix::Repository,
    base: ObjectId,
    head: ObjectId,
) -> Result<ObjectId, ChangesError> {
    merge_base(repo, base, head)?.ok_or_else(|| ChangesError::NoMergeBase {
        base,
        head,
        repo: repo.path().to_owned(),
    })
}

/// How many commits `head` has that `base` lacks, and the reverse
/// (`git rev-list --left-right --count base...head`, swapped).
pub fn ahead_behind(
    repo: &gix::Repository,
    base: ObjectId,
    head: ObjectId,
) -> Result<AheadBehind, ChangesError> {
    Ok(AheadBehind {
        ahead: count_only_in(repo, head, base)?,
        behind: count_only_in(repo, base, head)?,
    })
}

fn count_only_in(
    repo: &gix::Repository,
    tip: ObjectId,
    hidden: ObjectId,
) -> Result<usize, ChangesError> {
    let action = || format!("counting commits in {tip} but not in {hidden}");
    let walk = repo
        .rev_walk([tip])
        .with_hidden([hidden])
        .all()
        .ctx(repo, action)?;
    let mut count = 0;
    for info in walk {
        info.ctx(repo, action)?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::Fixture;
    use super::*;

    #[test]
    fn merge_base_and_counts_follow_history() {
        let fx = Fixture::new();
        fx.commit("main", &[("a.txt", "1\n")], "root");
        fx.branch("topic", "main");
        let root = fx.sha("main");
        fx.commit("main", &[("a.txt", "2\n")], "main 1");
        fx.commit("main", &[("b.txt", "b\n")], "main 2");
        fx.commit("topic", &[("c.txt", "c\n")], "topic 1");
        let (main, topic) = (fx.sha("main"), fx.sha("topic"));
        let repo = fx.open();

        assert_eq!(merge_base(&repo, main, topic).unwrap(), Some(root));
        assert_eq!(merge_base(&repo, main, main).unwrap(), Some(main));
        assert_eq!(
            ahead_behind(&repo, main, topic).unwrap(),
            AheadBehind {
                ahead: 1,
                behind: 2
            }
        );
        assert_eq!(
            ahead_behind(&repo, main, main).unwrap(),
            AheadBehind {
                ahead: 0,
                behind: 0
            }
        );
        assert_eq!(branch_commit(&repo, "topic").unwrap(), topic);
        assert!(matches!(
            branch_commit(&repo, "nope"),
            Err(ChangesError::BranchNotFound { .. })
        ));
        assert!(matches!(
            branch_commit(&repo, "../x"),
            Err(ChangesError::Ref(_))
        ));
    }

    #[test]
    fn unrelated_histories_have_no_base() {
        let fx = Fixture::new();
        fx.commit("main", &[("a.txt", "1\n")], "root");
        fx.orphan_commit("other", &[("z.txt", "z\n")], "other root");
        let (main, other) = (fx.sha("main"), fx.sha("other"));
        let repo = fx.open();
        assert_eq!(merge_base(&repo, main, other).unwrap(), None);
        assert!(matches!(
            three_dot_base(&repo, main, other),
            Err(ChangesError::NoMergeBase { .. })
        ));
    }
}
