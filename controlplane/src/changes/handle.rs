//! Per-operation repository handles and the blob caches diffs and merges need, set up for the
//! speed of one change-request operation.
//!
//! gix's convenience constructors for these caches first build an index from all of `HEAD`'s
//! tree, only to find `.gitattributes` files in it; on a large repository that costs more
//! than the whole change-request diff. Here attributes come from the repository's
//! `info/attributes`, the global configuration and the top-level `.gitattributes` of the tree
//! being diffed or merged into, which is where projects keep them.

use gix::{ObjectId, bstr::BStr};

use super::error::{ChangesError, GitContext};

/// Bytes of decoded objects to cache per operation: a merge reads the same trees in the
/// merge-base search, two tree diffs, the three-dot diff and the tree edits.
const OBJECT_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// A handle of its own for one operation, with an object cache that all its steps share.
pub(crate) fn cached(repo: &gix::Repository) -> gix::Repository {
    let mut handle = repo.clone();
    handle.object_cache_size_if_unset(OBJECT_CACHE_BYTES);
    handle
}

/// A blob-diff cache for tree diffs (rename detection), with attributes as described above,
/// taken from the tree of `attributes_from` (a commit or tree).
pub(crate) fn diff_resource_cache(
    repo: &gix::Repository,
    attributes_from: ObjectId,
) -> Result<gix::diff::blob::Platform, ChangesError> {
    let attributes = attribute_stack(repo, attributes_from)?;
    gix::diff::resource_cache(
        repo,
        gix::diff::blob::pipeline::Mode::ToGit,
        attributes,
        Default::default(),
    )
    .ctx(repo, || "preparing the blob diff cache".to_owned())
}

/// A blob-merge cache for three-way merges into `attributes_from`. Only git's built-in merge
/// drivers (text, binary, union) are available: the control plane never runs external merge
/// commands.
pub(crate) fn merge_resource_cache(
    repo: &gix::Repository,
    attributes_from: ObjectId,
) -> Result<gix::merge::blob::Platform, ChangesError> {
    let action = || "preparing the blob merge cache".to_owned();
    let attributes = attribute_stack(repo, attributes_from)?;
    let filter = gix::filter::plumbing::Pipeline::new(
        repo.command_context().ctx(repo, action)?,
        repo.object_hash(),
        gix::filter::Pipeline::options(repo).ctx(repo, action)?,
    );
    let pipeline = gix::merge::blob::Pipeline::new(
        Default::default(),
        filter,
        gix::merge::blob::pipeline::Options {
            large_file_threshold_bytes: repo.big_file_threshold().ctx(repo, action)?,
        },
    );
    Ok(gix::merge::blob::Platform::new(
        pipeline,
        gix::merge::blob::pipeline::Mode::ToGit,
        attributes,
        Vec::new(),
        Default::default(),
    ))
}

fn attribute_stack(
    repo: &gix::Repository,
    attributes_from: ObjectId,
) -> Result<gix::worktree::Stack, ChangesError> {
    let action = || format!("reading the attributes of {attributes_from}");
    let mut index = gix::index::State::new(repo.object_hash());
    let root = repo
        .find_object(attributes_from)
        .and_then(|o| o.peel_to_tree())
        .ctx(repo, action)?;
    if let Some(entry) = root.find_entry(".gitattributes")
        && entry.mode().is_blob()
    {
        index.dangerously_push_entry(
            Default::default(),
            entry.object_id(),
            gix::index::entry::Flags::empty(),
            gix::index::entry::Mode::FILE,
            BStr::new(".gitattributes"),
        );
    }
    repo.attributes_only(
        &index,
        gix::worktree::stack::state::attributes::Source::IdMapping,
    )
    .map(|stack| stack.detach())
    .ctx(repo, action)
}
