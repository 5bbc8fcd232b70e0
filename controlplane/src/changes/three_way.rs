//! The three-way merge of two commits, computed with every new object held in memory so that a
//! preview or a conflicting merge leaves the repository untouched.

use gix::{
    ObjectId,
    bstr::BStr,
    merge::{blob::builtin_driver::text::Labels, tree::TreatAsUnresolved},
};

use super::error::{ChangesError, GitContext};

/// Bytes of decoded objects to cache while merging; trees are read repeatedly by the
/// merge-base search, the two tree diffs and the tree edits.
const OBJECT_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The result of merging `theirs` into `ours`.
pub(crate) struct ThreeWay {
    /// A handle on the repository whose writes went to memory; it can read everything the
    /// merge produced.
    pub memory: gix::Repository,
    pub outcome: Outcome,
}

pub(crate) enum Outcome {
    /// The merged tree; it (and the blobs merged into it) live in `memory` only.
    Clean { tree: ObjectId },
    /// Paths git would also leave conflicted, sorted and without repeats.
    Conflicts(Vec<String>),
}

/// Merges `theirs` into `ours` like `git merge-tree --write-tree ours theirs` (ort, with
/// rename detection and recursive merge bases), without writing anything to disk.
pub(crate) fn merge_commits(
    repo: &gix::Repository,
    ours: ObjectId,
    theirs: ObjectId,
    our_label: &str,
    their_label: &str,
) -> Result<ThreeWay, ChangesError> {
    let action = || format!("merging {theirs} into {ours}");
    let mut memory = repo.clone().with_object_memory();
    memory.object_cache_size_if_unset(OBJECT_CACHE_BYTES);
    let options = memory.tree_merge_options().ctx(repo, action)?;
    let labels = Labels {
        ancestor: None,
        current: Some(BStr::new(our_label)),
        other: Some(BStr::new(their_label)),
    };
    let mut merged = memory
        .merge_commits(ours, theirs, labels, options.into())
        .ctx(repo, action)?;
    let how = TreatAsUnresolved::git();
    let outcome = if merged.tree_merge.has_unresolved_conflicts(how) {
        let mut paths: Vec<String> = merged
            .tree_merge
            .conflicts
            .iter()
            .filter(|c| c.is_unresolved(how))
            .flat_map(|c| {
                let (a, b) = c.changes_in_resolution();
                [a.source_location(), a.location(), b.source_location(), b.location()]
            })
            .map(|p| p.to_string())
            .collect();
        paths.sort();
        paths.dedup();
        Outcome::Conflicts(paths)
    } else {
        let tree = merged.tree_merge.tree.write().ctx(repo, action)?.detach();
        Outcome::Clean { tree }
    };
    drop(merged);
    Ok(ThreeWay { memory, outcome })
}

/// Copies the objects a merge created in memory into `repo`'s object database.
pub(crate) fn persist(repo: &gix::Repository, mut memory: gix::Repository) -> Result<usize, ChangesError> {
    use gix::objs::{Exists, Write};
    let Some(objects) = memory.objects.take_object_memory() else {
        return Ok(0);
    };
    let mut written = 0;
    for (id, (kind, data)) in objects.iter() {
        if repo.objects.exists(id) {
            continue;
        }
        repo.objects
            .write_buf_with_known_id(*kind, data, *id)
            .ctx(repo, || format!("writing merged object {id}"))?;
        written += 1;
    }
    Ok(written)
}
