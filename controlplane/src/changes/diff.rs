//! Which files differ between two trees, with renames paired up — the shared first step of
//! [`super::stats`] and [`super::unified`].

use gix::{
    ObjectId,
    bstr::{BString, ByteSlice},
    diff::tree_with_rewrites::ChangeRef,
    objs::tree::{EntryKind, EntryMode},
};

use super::{
    error::{ChangesError, GitContext},
    handle,
};

/// What happened to a file between the two sides of a diff (git's `--name-status` letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileStatus {
    Added,
    Modified,
    Deleted,
    Renamed,
    Copied,
    /// The kind of entry changed (regular file, symlink, submodule) at the same path.
    TypeChanged,
}

impl FileStatus {
    /// git's one-letter code (`A`, `M`, `D`, `R`, `C`, `T`).
    pub fn letter(self) -> char {
        match self {
            FileStatus::Added => 'A',
            FileStatus::Modified => 'M',
            FileStatus::Deleted => 'D',
            FileStatus::Renamed => 'R',
            FileStatus::Copied => 'C',
            FileStatus::TypeChanged => 'T',
        }
    }
}

/// One side of a changed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Side {
    pub path: BString,
    pub mode: EntryMode,
    pub id: ObjectId,
}

/// A changed file; `old` is absent for additions and `new` for deletions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub status: FileStatus,
    pub old: Option<Side>,
    pub new: Option<Side>,
}

impl Entry {
    /// The path the entry is reported and sorted under (the destination of a rename).
    pub fn path(&self) -> &BString {
        match (&self.new, &self.old) {
            (Some(side), _) | (None, Some(side)) => &side.path,
            (None, None) => unreachable!("an entry always has at least one side"),
        }
    }
}

/// The tree a commit (or tag, or tree) id stands for.
pub(crate) fn tree_of<'r>(
    repo: &'r gix::Repository,
    id: ObjectId,
) -> Result<gix::Tree<'r>, ChangesError> {
    repo.find_object(id)
        .and_then(|o| o.peel_to_tree())
        .ctx(repo, || format!("reading the tree of {id}"))
}

/// The files that differ from `from` to `to` (both tree-ish), in git's output order (by path),
/// with renames detected as `git diff` does by default (50% similarity, no copies).
pub(crate) fn changed_entries(
    repo: &gix::Repository,
    from: ObjectId,
    to: ObjectId,
) -> Result<Vec<Entry>, ChangesError> {
    let action = || format!("diffing {from} against {to}");
    let old_tree = tree_of(repo, from)?;
    let new_tree = tree_of(repo, to)?;
    let mut resource_cache = handle::diff_resource_cache(repo, to)?;
    let options = gix::diff::tree_with_rewrites::Options {
        location: Some(gix::diff::tree::recorder::Location::Path),
        rewrites: Some(gix::diff::Rewrites::default()),
    };
    let mut entries = Vec::new();
    gix::diff::tree_with_rewrites(
        gix::objs::TreeRefIter::from_bytes(&old_tree.data, repo.object_hash()),
        gix::objs::TreeRefIter::from_bytes(&new_tree.data, repo.object_hash()),
        &mut resource_cache,
        &mut Default::default(),
        &repo.objects,
        |change| {
            entries.extend(entry_of(change));
            Ok(std::ops::ControlFlow::Continue(()))
        },
        options,
    )
    .map_err(gix::Error::from_error)
    .ctx(repo, action)?;
    // Rewrites are reported after everything else; git lists a rename where its destination
    // sorts. Byte order of full paths is git's tree order for non-tree entries.
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(entries)
}

/// Trees themselves are not files: their contents are reported one by one.
fn entry_of(change: ChangeRef<'_>) -> Option<Entry> {
    let side = |path: &[u8], mode: EntryMode, id: ObjectId| {
        (!mode.is_tree()).then(|| Side {
            path: path.as_bstr().to_owned(),
            mode,
            id,
        })
    };
    match change {
        ChangeRef::Addition {
            location,
            entry_mode,
            id,
            ..
        } => Some(Entry {
            status: FileStatus::Added,
            old: None,
            new: Some(side(location, entry_mode, id)?),
        }),
        ChangeRef::Deletion {
            location,
            entry_mode,
            id,
            ..
        } => Some(Entry {
            status: FileStatus::Deleted,
            old: Some(side(location, entry_mode, id)?),
            new: None,
        }),
        ChangeRef::Modification {
            location,
            previous_entry_mode,
            previous_id,
            entry_mode,
            id,
        } => {
            let old = side(location, previous_entry_mode, previous_id);
            let new = side(location, entry_mode, id);
            let status = match (&old, &new) {
                (Some(o), Some(n)) if kind_class(o.mode) != kind_class(n.mode) => {
                    FileStatus::TypeChanged
                }
                (Some(_), Some(_)) => FileStatus::Modified,
                (Some(_), None) => FileStatus::Deleted,
                (None, Some(_)) => FileStatus::Added,
                (None, None) => return None,
            };
            Some(Entry { status, old, new })
        }
        ChangeRef::Rewrite {
            source_location,
            source_entry_mode,
            source_id,
            entry_mode,
            id,
            location,
            copy,
            ..
        } => Some(Entry {
            status: if copy {
                FileStatus::Copied
            } else {
                FileStatus::Renamed
            },
            old: Some(side(source_location, source_entry_mode, source_id)?),
            new: Some(side(location, entry_mode, id)?),
        }),
    }
}

/// Regular files of either executable bit are one kind; symlinks and submodules are others.
pub(crate) fn kind_class(mode: EntryMode) -> u8 {
    match mode.kind() {
        EntryKind::Blob | EntryKind::BlobExecutable => 0,
        EntryKind::Link => 1,
        EntryKind::Commit => 2,
        EntryKind::Tree => 3,
    }
}
