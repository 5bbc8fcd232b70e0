//! The three-way merge of two commits, computed with every new object held in memory so that a
//! preview or a conflicting merge leaves the repository untouched.

use gix::{
    ObjectId,
    bstr::BStr,
    merge::{blob::builtin_driver::text::Labels, tree::TreatAsUnresolved},
};

use super::{
    error::{ChangesError, GitContext},
    handle,
};

/// The commit-graph file of `work`, if it has one and it is enabled, for [`Graph`]s.
pub(crate) fn commit_graph(
    work: &gix::Repository,
) -> Result<Option<gix::commitgraph::Graph>, ChangesError> {
    work.commit_graph_if_enabled()
        .ctx(work, || "loading the commit-graph".to_owned())
}

/// The best merge base of `ours` and `theirs` found through `graph`.
pub(crate) fn merge_base(
    work: &gix::Repository,
    graph: &mut Graph<'_, '_>,
    ours: ObjectId,
    theirs: ObjectId,
) -> Result<Option<ObjectId>, ChangesError> {
    work.merge_base_with_graph(ours, theirs, graph)
        .map(|id| id.map(gix::Id::detach))
        .ctx(work, || {
            format!("finding the merge base of {ours} and {theirs}")
        })
}

/// A handle for one merge whose object writes stay in memory until [`persist`]ed.
pub(crate) fn working_handle(repo: &gix::Repository) -> gix::Repository {
    handle::cached(repo).with_object_memory()
}

/// The commit graph of one merge; sharing it between the merge-base search and the merge
/// saves decoding the same commits twice.
pub(crate) type Graph<'a, 'cache> = gix::revwalk::Graph<
    'a,
    'cache,
    gix::revwalk::graph::Commit<gix::revision::plumbing::merge_base::Flags>,
>;

pub(crate) enum Outcome {
    /// The merged tree; it (and the blobs merged into it) live in the working handle's
    /// memory only.
    Clean { tree: ObjectId },
    /// Paths git would also leave conflicted, sorted and without repeats.
    Conflicts(Vec<String>),
}

/// Merges `theirs` into `ours` like `git merge-tree --write-tree ours theirs` (ort, with
/// rename detection and recursive merge bases), through gix's merge plumbing so that the
/// blob caches come from [`handle`]. `work` must come from [`working_handle`], so that
/// nothing reaches the disk.
pub(crate) fn merge_commits(
    work: &gix::Repository,
    graph: &mut Graph<'_, '_>,
    ours: ObjectId,
    theirs: ObjectId,
    our_label: &str,
    their_label: &str,
) -> Result<Outcome, ChangesError> {
    let action = || format!("merging {theirs} into {ours}");
    let options = work.tree_merge_options().ctx(work, action)?;
    let options: gix::merge::commit::Options = options.into();
    let labels = Labels {
        ancestor: None,
        current: Some(BStr::new(our_label)),
        other: Some(BStr::new(their_label)),
    };
    let mut diff_cache = handle::diff_resource_cache(work, ours)?;
    let mut blob_merge = handle::merge_resource_cache(work, ours)?;
    let mut merged = gix::merge::plumbing::commit(
        ours,
        theirs,
        labels,
        graph,
        &mut diff_cache,
        &mut blob_merge,
        work,
        // Only names virtual merge bases in conflict markers, which are never committed.
        &mut |id| id.to_hex_with_len(12).to_string(),
        options.into(),
    )
    .ctx(work, action)?;
    let how = TreatAsUnresolved::git();
    if merged.tree_merge.has_unresolved_conflicts(how) {
        let mut paths: Vec<String> = merged
            .tree_merge
            .conflicts
            .iter()
            .filter(|c| c.is_unresolved(how))
            .flat_map(|c| {
                let (a, b) = c.changes_in_resolution();
                [
                    a.source_location(),
                    a.location(),
                    b.source_location(),
                    b.location(),
                ]
            })
            .map(|p| p.to_string())
            .collect();
        paths.sort();
        paths.dedup();
        return Ok(Outcome::Conflicts(paths));
    }
    // Every entry of the merged trees comes from an existing tree or a blob the merge just
    // wrote, so gix's per-entry existence checks of `Editor::write` would only cost time.
    let tree = merged
        .tree_merge
        .tree
        .write(|tree| work.write_object(tree).map(gix::Id::detach))
        .ctx(work, action)?;
    Ok(Outcome::Clean { tree })
}

/// Copies the objects a merge created in `work`'s memory into `repo`'s object database.
pub(crate) fn persist(
    repo: &gix::Repository,
    mut work: gix::Repository,
) -> Result<usize, ChangesError> {
    use gix::objs::Write;
    let Some(objects) = work.objects.take_object_memory() else {
        return Ok(0);
    };
    let mut written = 0;
    for (id, (kind, data)) in objects.iter() {
        // Not finding a new object is the normal case; don't rescan the pack directory for it.
        if repo.objects.exists_without_refresh(id) {
            continue;
        }
        repo.objects
            .write_buf_with_known_id(*kind, data, *id)
            .ctx(repo, || format!("writing merged object {id}"))?;
        written += 1;
    }
    Ok(written)
}
