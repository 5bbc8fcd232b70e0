//! What merging a change request would do, without doing it.

use gix::ObjectId;

use super::{
    ancestry::branch_commit,
    error::ChangesError,
    three_way::{self, Outcome},
};

/// The answer to "can `head` be merged into `base` right now, and how?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergePreview {
    pub base_sha: ObjectId,
    pub head_sha: ObjectId,
    /// `None` for unrelated histories, which are never mergeable.
    pub merge_base: Option<ObjectId>,
    /// `base` is an ancestor of `head` (and they differ): merging just moves `base`.
    pub fast_forward: bool,
    /// `head` is already contained in `base`: there is nothing to merge.
    pub already_merged: bool,
    /// A merge would succeed now (fast-forward or clean three-way merge).
    pub mergeable: bool,
    /// Paths a three-way merge would leave conflicted; empty unless `mergeable` is false
    /// because of conflicts.
    pub conflicting_paths: Vec<String>,
}

/// Previews merging branch `head_branch` into `base_branch` (short names). Merged objects stay
/// in memory; no ref and no object on disk changes.
pub fn preview_merge(
    repo: &gix::Repository,
    base_branch: &str,
    head_branch: &str,
) -> Result<MergePreview, ChangesError> {
    let base_sha = branch_commit(repo, base_branch)?;
    let head_sha = branch_commit(repo, head_branch)?;
    let work = three_way::working_handle(repo);
    let commit_graph = three_way::commit_graph(&work)?;
    let mut graph = work.revision_graph(commit_graph.as_ref());
    let mb = if base_sha == head_sha {
        Some(base_sha)
    } else {
        three_way::merge_base(&work, &mut graph, base_sha, head_sha)?
    };
    let already_merged = mb == Some(head_sha);
    let fast_forward = !already_merged && mb == Some(base_sha);
    let mut preview = MergePreview {
        base_sha,
        head_sha,
        merge_base: mb,
        fast_forward,
        already_merged,
        mergeable: fast_forward,
        conflicting_paths: Vec::new(),
    };
    if mb.is_none() || already_merged || fast_forward {
        return Ok(preview);
    }
    match three_way::merge_commits(
        &work,
        &mut graph,
        base_sha,
        head_sha,
        base_branch,
        head_branch,
    )? {
        Outcome::Clean { .. } => preview.mergeable = true,
        Outcome::Conflicts(paths) => preview.conflicting_paths = paths,
    }
    Ok(preview)
}
